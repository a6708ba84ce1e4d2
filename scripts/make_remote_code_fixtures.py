#!/usr/bin/env python3
"""Writes the golden fixtures of the NomicBert and GTE "new" remote-code architectures:
tiny random checkpoints in `tests/fixtures/encoders/` and sentence-transformers layouts in
`tests/fixtures/sentence-transformers/`, with the outputs the models' own Python code gives.

Run by hand, never in CI; the outputs are committed. From the repository root:

    ~/.cache/safeformers/venv-torch/bin/pip install einops      # the Nomic code imports it
    HF_HUB_OFFLINE=1 ~/.cache/safeformers/venv-torch/bin/python scripts/make_remote_code_fixtures.py

The venv is the one `scripts/make_model_fixtures.py` describes (this was made with torch 2.15.0,
transformers 5.25.0, sentence-transformers 6.3.0, tokenizers 0.23.3, safetensors 0.8.0, numpy
2.4.6, einops 0.8.2, CPython 3.11.7; the exact versions are written into every JSON file).

The reference is the models' remote code itself, read from `../shared/reference/remote-code/`
(override with `SAFEFORMERS_REMOTE_CODE_REFERENCE`): `nomic_bert/` (nomic-ai/nomic-bert-2048's
`modeling_hf_nomic_bert.py`, verbatim) and `gte_new/` (the nearest copy found of
Alibaba-NLP/new-impl's `modeling.py`; see its SOURCES.md). The script checks their sha256,
copies them to a temporary folder, applies each folder's `compat-5.23.patch` there (it adds
`get_extended_attention_mask`, which transformers 5 removed, and refills GTE's non-persistent
buffers after meta-device loading) and imports them with Transformers' dynamic-module loader.
None of that code is copied into the repository: every fixture folder keeps the Hub's
cross-repo `auto_map` (`nomic-ai/nomic-bert-2048--...`, `Alibaba-NLP/new-impl--...`) and holds
no `.py` file. Nothing is fetched from the Hub.

What it writes:

* `tests/fixtures/encoders/{nomic-bert*,gte-new*}/`: `config.json` (written directly in the
  Hub's form: the real `model_type`, `architectures` and `auto_map`; Transformers 5's
  `save_pretrained` would rewrite `rope_scaling`), `model.safetensors` (the bare model's
  `state_dict()`, no prefix, as the real checkpoints), the tokenizer files of a committed
  fixture tokenizer (`tests/fixtures/models/bert`, WordPiece, or `xlm-roberta`, Unigram), and
  `outputs.json` in the format of `tests/fixtures/models/bert/outputs.json`: the last hidden
  state for one sequence and for a right-padded batch of three.
* `tests/fixtures/sentence-transformers/{nomic-embed,gte-embed}/`: the layouts of
  nomic-embed-text-v1.5 (mean pooling, the model card's task prompts) and gte-base-en-v1.5
  (CLS pooling), with `outputs.json` in the format of
  `tests/fixtures/sentence-transformers/qwen3-embedding/outputs.json`.

Every parameter is redrawn under a fixed seed (matrices N(0, 0.2²), vectors N(0, 0.1²), norm
weights around 1), so a loader that drops a bias or a norm cannot pass by accident. Each
output is computed on a fresh copy of the model: Nomic's dynamic-NTK rotary module keeps state
between calls, and a fresh copy makes every case depend only on its own inputs.

Checks before anything is written:
* loading each folder back through `AutoModel.from_pretrained(..., trust_remote_code=True)` (in
  a temporary copy whose `auto_map` names the local modules) gives the same tensors and
  outputs, so the tensor names are the ones the real code reads;
* each config detail the folder is meant to pin down (interleaving, NTK scaling, the norm
  type, ...) matters: changing it moves the batch output by more than 1e-3, and switching
  Nomic's dynamic NTK off leaves the single case (shorter than `max_trained_positions`) as it is;
* every sentence-transformers embedding equals a hand computation (the model's last hidden
  state, mean or CLS pooling, truncation, normalization) within 1e-5.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
ENCODERS = REPO / "tests" / "fixtures" / "encoders"
ST_OUT = REPO / "tests" / "fixtures" / "sentence-transformers"
TOKENIZERS = REPO / "tests" / "fixtures" / "models"
REFERENCE = Path(os.environ.get("SAFEFORMERS_REMOTE_CODE_REFERENCE",
                                REPO.parent / "shared" / "reference" / "remote-code"))
GENERATOR = "scripts/make_remote_code_fixtures.py"
SEED = 20251216

# sha256 of the reference files, as listed in each folder's SOURCES.md.
REFERENCE_FILES = {
    "nomic_bert": {
        "modeling_hf_nomic_bert.py": "3b24a366c4cc31b869466ccfb7bbb8879e138c97f8de06c83d4fa1e31a21f149",
        "configuration_hf_nomic_bert.py": "f7871694b8de3d3df4ac6640313d5799ce323261a0fb90c5cc567ecc34a0039e",
    },
    "gte_new": {
        "modeling.py": "d7bcb4b282b5e0649b8347c31216b7762bac7b994ea30e0cea8953ee7ec55fca",
        "configuration.py": "3e6df250cf1099a844889a6b7d5918880a1346a0c7313e9cb8f8cfa27271d6cb",
    },
}

# Test inputs, as in scripts/make_model_fixtures.py. With the WordPiece tokenizer the batch is
# 9, 12 and 19 tokens long (padded to 19); the single sequence is 12.
SINGLE = "My name is Sarah and I live in London."
BATCH = [
    "Hello world!",
    "The quick brown fox jumps over the lazy dog.",
    "Clara moved from Paris to New York in 2019, near the river.",
]
# Sentence-transformers inputs, as in scripts/make_sentence_transformers_fixtures.py.
ST_TEXTS = [
    "What is the capital of France?",
    "The capital of France is Paris.",
    "Rust is a safe and fast programming language.",
    "Hello world!",
]
# The task prefixes of nomic-embed-text-v1.5's model card.
NOMIC_PROMPTS = {
    "search_query": "search_query: ",
    "search_document": "search_document: ",
    "classification": "classification: ",
    "clustering": "clustering: ",
}
TRUNCATE_DIM = 8


# --------------------------------------------------------------------------------------------
# Configs, in the Hub's form
# --------------------------------------------------------------------------------------------

NOMIC_REPO = "nomic-ai/nomic-bert-2048"
NOMIC_AUTO_MAP = {
    "AutoConfig": "configuration_hf_nomic_bert.NomicBertConfig",
    "AutoModel": "modeling_hf_nomic_bert.NomicBertModel",
    "AutoModelForMaskedLM": "modeling_hf_nomic_bert.NomicBertForPreTraining",
    "AutoModelForSequenceClassification": "modeling_hf_nomic_bert.NomicBertForSequenceClassification",
    "AutoModelForMultipleChoice": "modeling_hf_nomic_bert.NomicBertForMultipleChoice",
    "AutoModelForQuestionAnswering": "modeling_hf_nomic_bert.NomicBertForQuestionAnswering",
    "AutoModelForTokenClassification": "modeling_hf_nomic_bert.NomicBertForTokenClassification",
}
# nomic-embed-text-v1.5's config.json with the sizes shrunk (12 layers of 768 -> below).
NOMIC_V15 = {
    "activation_function": "swiglu",
    "architectures": ["NomicBertModel"],
    "attn_pdrop": 0.0,
    "bos_token_id": None,
    "causal": False,
    "dense_seq_output": True,
    "embd_pdrop": 0.0,
    "eos_token_id": None,
    "fused_bias_fc": True,
    "fused_dropout_add_ln": True,
    "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-12,
    "max_trained_positions": 2048,
    "mlp_fc1_bias": False,
    "mlp_fc2_bias": False,
    "model_type": "nomic_bert",
    "n_embd": 32,
    "n_head": 4,
    "n_inner": 40,
    "n_layer": 2,
    "n_positions": 8192,
    "pad_vocab_size_multiple": 64,
    "parallel_block": False,
    "parallel_block_tied_norm": False,
    "prenorm": False,
    "qkv_proj_bias": False,
    "reorder_and_upcast_attn": False,
    "resid_pdrop": 0.0,
    "rotary_emb_base": 1000,
    "rotary_emb_fraction": 1.0,
    "rotary_emb_interleaved": False,
    "rotary_emb_scale_base": None,
    "rotary_scaling_factor": None,
    "scale_attn_by_inverse_layer_idx": False,
    "scale_attn_weights": True,
    "summary_activation": None,
    "summary_first_dropout": 0.0,
    "summary_proj_to_labels": True,
    "summary_type": "cls_index",
    "summary_use_proj": True,
    "torch_dtype": "float32",
    "transformers_version": "4.34.0",
    "type_vocab_size": 2,
    "use_cache": True,
    "use_flash_attn": True,
    "use_rms_norm": False,
    "use_xentropy": True,
    "vocab_size": 204,
}

GTE_REPO = "Alibaba-NLP/new-impl"
GTE_AUTO_MAP = {
    "AutoConfig": "configuration.NewConfig",
    "AutoModel": "modeling.NewModel",
    "AutoModelForMaskedLM": "modeling.NewForMaskedLM",
    "AutoModelForMultipleChoice": "modeling.NewForMultipleChoice",
    "AutoModelForQuestionAnswering": "modeling.NewForQuestionAnswering",
    "AutoModelForSequenceClassification": "modeling.NewForSequenceClassification",
    "AutoModelForTokenClassification": "modeling.NewForTokenClassification",
}
# gte-base-en-v1.5's config.json with the sizes shrunk (12 layers of 768 -> below).
GTE_BASE_EN = {
    "architectures": ["NewModel"],
    "attention_probs_dropout_prob": 0.0,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 48,
    "initializer_range": 0.02,
    "intermediate_size": 64,
    "layer_norm_eps": 1e-12,
    "layer_norm_type": "layer_norm",
    "max_position_embeddings": 8192,
    "model_type": "new",
    "num_attention_heads": 6,
    "num_hidden_layers": 2,
    "pack_qkv": True,
    "pad_token_id": 0,
    "position_embedding_type": "rope",
    "rope_scaling": {"factor": 2.0, "type": "ntk"},
    "rope_theta": 500000,
    "torch_dtype": "float32",
    "transformers_version": "4.39.1",
    "type_vocab_size": 0,
    "unpad_inputs": False,
    "use_memory_efficient_attention": False,
    "vocab_size": 204,
}

# name -> (architecture, tokenizer folder, config changes, description, checks). A check is
# (what, config changes, which cases must change): changing the detail must move the
# batch output by > 1e-3 (and the single one too, or leave it equal, as the flag says).
# Switching rms_norm to layer_norm loads the RMSNorm weights into LayerNorms with zero biases.
NOMIC_FOLDERS = {
    "nomic-bert": ("nomic", "bert", {}, (
        "nomic-embed-text-v1.5 shape: SwiGLU (n_inner 40, gated width rounded up to 256), no "
        "biases in Wqkv/out_proj/fc11/fc12/fc2, rotary over the whole head, rotate-half, base "
        "1000, vocab 204 padded to 256 rows (pad_vocab_size_multiple 64)"),
        [("rotary_emb_interleaved", {"rotary_emb_interleaved": True}, "both")]),
    "nomic-bert-interleaved": ("nomic", "bert", {
        "activation_function": "gelu", "n_embd": 48, "n_head": 3, "n_inner": 72,
        "qkv_proj_bias": True, "mlp_fc1_bias": True, "mlp_fc2_bias": True,
        "rotary_emb_interleaved": True, "rotary_emb_fraction": 0.5, "rotary_emb_base": 10000,
        "layer_norm_epsilon": 1e-5, "pad_vocab_size_multiple": 1,
    }, (
        "GPT-J-interleaved rotary on half of each 16-wide head (8 dims), base 10000; 3 heads; "
        "biases everywhere; plain GELU MLP fc1 48->72->fc2"),
        [("rotary_emb_interleaved", {"rotary_emb_interleaved": False}, "both"),
         ("rotary_emb_fraction", {"rotary_emb_fraction": 1.0}, "both")]),
    "nomic-bert-ntk": ("nomic", "bert", {
        "activation_function": "geglu", "n_embd": 48, "n_head": 6, "n_inner": 100,
        "qkv_proj_bias": True, "mlp_fc1_bias": True, "mlp_fc2_bias": False,
        "rotary_scaling_factor": 2.0, "max_trained_positions": 16, "pad_vocab_size_multiple": 1,
    }, (
        "dynamic NTK: rotary_scaling_factor 2 with max_trained_positions 16, so the padded batch "
        "(19) is rescaled and the single sequence (12) is not; GeGLU (n_inner 100 -> 256); 6 "
        "heads; biases in Wqkv/out_proj and fc11/fc12 but not fc2"),
        [("rotary_scaling_factor", {"rotary_scaling_factor": None}, "batch only")]),
}
GTE_FOLDERS = {
    "gte-new": ("gte", "bert", {}, (
        "gte-base-en-v1.5 shape: NTK rope_scaling factor 2 (applied at every length), "
        "rope_theta 500000, type_vocab_size 0, 6 heads of 8, GELU, LayerNorm"),
        [("rope_scaling", {"rope_scaling": None}, "both")]),
    "gte-new-rms": ("gte", "bert", {
        "hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 48,
        "hidden_act": "silu", "layer_norm_type": "rms_norm", "layer_norm_eps": 1e-6,
        "rope_scaling": None, "rope_theta": 10000.0, "type_vocab_size": 2,
        "max_position_embeddings": 512,
    }, (
        "layer_norm_type rms_norm (attn_ln/mlp_ln are RMSNorm, the embedding norm stays a "
        "LayerNorm), no rope scaling, rope_theta 10000, type_vocab_size 2, SiLU"),
        [("rms_norm", {"layer_norm_type": "layer_norm"}, "both")]),
    "gte-new-multilingual": ("gte", "xlm-roberta", {
        "hidden_size": 36, "num_attention_heads": 3, "intermediate_size": 40,
        "rope_scaling": {"factor": 8.0, "type": "ntk"}, "rope_theta": 20000,
        "type_vocab_size": 1, "pad_token_id": 1, "vocab_size": 233,
    }, (
        "gte-multilingual-base manner: Unigram tokenizer (pad id 1), type_vocab_size 1, NTK "
        "factor 8, rope_theta 20000, 3 heads of 12"),
        [("rope_scaling", {"rope_scaling": None}, "both")]),
    "gte-new-ntk-mixed": ("gte", "bert", {
        "hidden_size": 40, "num_attention_heads": 5, "intermediate_size": 56,
        "hidden_act": "gelu_new", "rope_scaling": {"factor": 4.0, "type": "ntk", "mixed_b": 0.75},
        "rope_theta": 10000.0, "type_vocab_size": 2, "max_position_embeddings": 512,
    }, (
        "NTK with mixed_b 0.75 (per-frequency scaling, base unchanged), factor 4; 5 heads of 8; "
        "tanh GELU (gelu_new); type_vocab_size 2"),
        [("mixed_b", {"rope_scaling": {"factor": 4.0, "type": "ntk"}}, "both")]),
}


def hub_config(arch: str, changes: dict) -> dict:
    changes = copy.deepcopy(changes)
    if arch == "nomic":
        config = {**NOMIC_V15, **changes}
        config["auto_map"] = {k: f"{NOMIC_REPO}--{v}" for k, v in NOMIC_AUTO_MAP.items()}
    else:
        config = {**copy.deepcopy(GTE_BASE_EN), **changes}
        config["auto_map"] = {k: f"{GTE_REPO}--{v}" for k, v in GTE_AUTO_MAP.items()}
    return dict(sorted(config.items()))


def local_config(arch: str, config: dict) -> dict:
    """The same config with `auto_map` naming the modules next to it (for temporary copies)."""
    local = dict(config)
    local["auto_map"] = dict(NOMIC_AUTO_MAP if arch == "nomic" else GTE_AUTO_MAP)
    return local


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def versions() -> dict:
    import einops
    import safetensors
    import sentence_transformers
    import tokenizers
    import transformers

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "einops": einops.__version__,
    }


def reference_versions(arch: str) -> dict:
    """What ran, by file hash; added to `versions` of every outputs.json of that architecture."""
    folder = "nomic_bert" if arch == "nomic" else "gte_new"
    repo = NOMIC_REPO if arch == "nomic" else GTE_REPO
    files = ", ".join(f"{name} sha256:{digest}" for name, digest in REFERENCE_FILES[folder].items())
    return {"remote_code": f"{repo} ({files}) + compat-5.23.patch"}


def round_sig(x: float, digits: int = 8) -> float:
    return float(f"{x:.{digits}g}")


def tensor_json(t, dtype=float) -> dict:
    arr = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    if dtype is float:
        data = np.vectorize(round_sig, otypes=[float])(arr.astype(np.float32)).tolist()
    else:
        data = arr.astype(np.int64).tolist()
    return {"shape": list(arr.shape), "data": data}


def floats(arr) -> list:
    return np.vectorize(round_sig, otypes=[float])(np.asarray(arr, dtype=np.float32)).tolist()


def write_json(path: Path, value, indent=None, sort_keys=False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    separators = None if indent is not None else (",", ":")
    text = json.dumps(value, indent=indent, ensure_ascii=False, separators=separators, sort_keys=sort_keys)
    path.write_text(text + "\n", encoding="utf-8")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------
# The reference code, in a temporary folder
# --------------------------------------------------------------------------------------------


class Reference:
    """The patched remote code of both architectures, importable from a temporary folder."""

    def __init__(self, workdir: Path):
        self.code = {}
        for folder, files in REFERENCE_FILES.items():
            source = REFERENCE / folder
            for name, digest in files.items():
                if not (source / name).exists():
                    raise SystemExit(f"{source / name} is missing; set SAFEFORMERS_REMOTE_CODE_REFERENCE")
                if sha256(source / name) != digest:
                    raise SystemExit(f"{source / name}: sha256 differs from SOURCES.md")
            target = workdir / folder
            target.mkdir(parents=True)
            for name in files:
                shutil.copy(source / name, target / name)
            subprocess.run(["patch", "-s", "-p1", "-d", str(target), "-i", str(source / "compat-5.23.patch")],
                           check=True)
            self.code[folder] = target

    def files(self, arch: str) -> list[Path]:
        folder = self.code["nomic_bert" if arch == "nomic" else "gte_new"]
        return sorted(folder.glob("*.py"))

    def classes(self, arch: str):
        from transformers.dynamic_module_utils import get_class_from_dynamic_module

        if arch == "nomic":
            folder = str(self.code["nomic_bert"])
            return (get_class_from_dynamic_module(NOMIC_AUTO_MAP["AutoConfig"], folder),
                    get_class_from_dynamic_module(NOMIC_AUTO_MAP["AutoModel"], folder))
        folder = str(self.code["gte_new"])
        return (get_class_from_dynamic_module(GTE_AUTO_MAP["AutoConfig"], folder),
                get_class_from_dynamic_module(GTE_AUTO_MAP["AutoModel"], folder))

    def build(self, arch: str, config: dict):
        config_cls, model_cls = self.classes(arch)
        # A deep copy: Transformers 5 adds `rope_type`/`rope_theta` to `rope_scaling` in place.
        fields = {k: copy.deepcopy(v) for k, v in config.items()
                  if k not in ("auto_map", "architectures", "model_type", "transformers_version", "torch_dtype")}
        if arch == "nomic":
            model = model_cls(config_cls(**fields), add_pooling_layer=False)
        else:
            model = model_cls(config_cls(**fields, attn_implementation="eager"))
        return model.eval()


def randomize(model, seed: int) -> None:
    """Redraws every parameter: matrices N(0, 0.2²), vectors N(0, 0.1²), norm weights N(1, 0.1²)."""
    norms = tuple(m for m in {type(m) for m in model.modules()}
                  if m is torch.nn.LayerNorm or m.__name__ == "RMSNorm")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module_name, module in model.named_modules():
            for name, p in module.named_parameters(recurse=False):
                if p.ndim == 1:
                    mean = 1.0 if isinstance(module, norms) and name == "weight" else 0.0
                    p.copy_(mean + 0.1 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(0.2 * torch.randn(p.shape, generator=g))


def tokenizer_for(source: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOKENIZERS / source)


def copy_tokenizer(source: str, folder: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(TOKENIZERS / source / name, folder / name)


def save_weights(model, folder: Path) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


def forward(model, inputs: dict) -> torch.Tensor:
    """The last hidden state of a fresh copy (Nomic's dynamic NTK keeps state between calls)."""
    with torch.no_grad():
        return copy.deepcopy(model)(**inputs).last_hidden_state


def encode(tokenizer, texts: list[str]) -> dict:
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}


# --------------------------------------------------------------------------------------------
# Encoder folders
# --------------------------------------------------------------------------------------------


def run_case(model, tokenizer, texts: list[str]) -> tuple[dict, torch.Tensor]:
    inputs = encode(tokenizer, texts)
    hidden = forward(model, inputs)
    return {
        "texts": list(texts),
        "tokens": [tokenizer.convert_ids_to_tokens(row) for row in inputs["input_ids"].tolist()],
        "inputs": {k: tensor_json(v, dtype=int) for k, v in inputs.items()},
        "outputs": {"last_hidden_state": tensor_json(hidden)},
    }, hidden


def reload_check(ref: Reference, arch: str, config: dict, folder: Path, model, cases: dict, tokenizer) -> None:
    """Loads the folder through AutoModel + trust_remote_code (a temporary copy with a local
    auto_map) and checks it holds the same tensors and gives the same outputs."""
    from transformers import AutoModel

    with tempfile.TemporaryDirectory() as tmp:
        copy_dir = Path(tmp) / folder.name
        shutil.copytree(folder, copy_dir)
        write_json(copy_dir / "config.json", local_config(arch, config), indent=2, sort_keys=True)
        for path in ref.files(arch):
            shutil.copy(path, copy_dir / path.name)
        kwargs = {} if arch == "nomic" else {"attn_implementation": "eager"}
        loaded = AutoModel.from_pretrained(str(copy_dir), trust_remote_code=True, **kwargs).eval()
        ours, theirs = model.state_dict(), loaded.state_dict()
        if ours.keys() != theirs.keys() or any(not torch.equal(ours[k], theirs[k]) for k in ours):
            raise SystemExit(f"{folder.name}: AutoModel.from_pretrained does not read back the same tensors")
        for name, (texts, hidden) in cases.items():
            diff = float((forward(loaded, encode(tokenizer, texts)) - hidden).abs().max())
            if diff > 1e-6:
                raise SystemExit(f"{folder.name}/{name}: reloaded model differs by {diff}")


def sensitivity_check(ref: Reference, arch: str, config: dict, model, name: str, checks, cases) -> None:
    """Each detail the folder pins down must matter: changed, the outputs move."""
    state = model.state_dict()
    for what, changes, expect in checks:
        other = ref.build(arch, {**config, **changes})
        result = other.load_state_dict(state, strict=False)
        # Only a LayerNorm standing in for an RMSNorm may lack tensors (its biases, left at 0).
        if result.unexpected_keys or any(not k.endswith("_ln.bias") for k in result.missing_keys):
            raise SystemExit(f"{name}: with {what} changed the weights do not fit: {result}")
        for case, (texts, hidden) in cases.items():
            diff = float((forward(other, encode(tokenizer_of[name], texts)) - hidden).abs().max())
            must_change = expect == "both" or case == "batch"
            if must_change and diff < 1e-3:
                raise SystemExit(f"{name}: changing {what} moves the {case} case only by {diff}")
            if not must_change and diff > 1e-6:
                raise SystemExit(f"{name}: changing {what} moves the {case} case by {diff}")
            print(f"  {name}: changing {what} moves the {case} case by {diff:.3g}")


tokenizer_of: dict = {}


def write_encoder(ref: Reference, name: str, spec, seed: int, meta: dict) -> dict:
    arch, tok_source, changes, description, checks = spec
    config = hub_config(arch, changes)
    folder = ENCODERS / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    tokenizer = tokenizer_for(tok_source)
    tokenizer_of[name] = tokenizer
    if config["vocab_size"] != len(tokenizer):
        raise SystemExit(f"{name}: vocab_size {config['vocab_size']} but the tokenizer has {len(tokenizer)}")
    torch.manual_seed(seed)
    model = ref.build(arch, config)
    randomize(model, seed)
    write_json(folder / "config.json", config, indent=2, sort_keys=True)
    save_weights(model, folder)
    copy_tokenizer(tok_source, folder)
    single, single_hidden = run_case(model, tokenizer, [SINGLE])
    batch, batch_hidden = run_case(model, tokenizer, BATCH)
    cases = {"single": ([SINGLE], single_hidden), "batch": (BATCH, batch_hidden)}
    reload_check(ref, arch, config, folder, model, cases, tokenizer)
    sensitivity_check(ref, arch, config, model, name, checks, cases)
    write_json(folder / "outputs.json", {
        "generator": GENERATOR,
        "versions": {**meta, **reference_versions(arch)},
        "model": name,
        "class": "NomicBertModel" if arch == "nomic" else "NewModel",
        "seed": seed,
        "cases": {"single": single, "batch": batch},
    })
    print(f"wrote encoders/{name}")
    return {"name": name, "description": description, "config": config}


# --------------------------------------------------------------------------------------------
# Sentence-transformers layouts
# --------------------------------------------------------------------------------------------


def by_hand(model, tokenizer, texts, prompt, pooling, truncate_dim=None, normalize=False) -> np.ndarray:
    """The model's last hidden state, pooled, truncated and normalized without sentence-transformers."""
    inputs = encode(tokenizer, [prompt + t for t in texts])
    hidden = forward(model, inputs)
    if pooling == "mean":
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        x = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    else:
        x = hidden[:, 0]
    if truncate_dim is not None:
        x = x[:, :truncate_dim]
    if normalize:
        x = torch.nn.functional.normalize(x, p=2, dim=-1)
    return x.numpy()


def st_case(name: str, st_model, hand: np.ndarray, **kwargs) -> dict:
    given = {k: v for k, v in kwargs.items() if v is not None}
    got = st_model.encode(ST_TEXTS, convert_to_numpy=True, **given)
    diff = float(np.abs(got - hand).max())
    if diff > 1e-5:
        raise SystemExit(f"{name}: sentence-transformers and the hand computation differ by {diff}")
    print(f"  {name}: sentence-transformers vs by hand max abs diff {diff:.2e}")
    return {"name": name, **given, "embeddings": floats(got)}


def write_st_files(folder: Path, dim: int, pooling: str, prompts: dict, meta: dict) -> None:
    write_json(folder / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ], indent=2)
    write_json(folder / "sentence_bert_config.json", {"max_seq_length": 8192, "do_lower_case": False}, indent=2)
    write_json(folder / "1_Pooling" / "config.json", {
        "word_embedding_dimension": dim,
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }, indent=2)
    write_json(folder / "config_sentence_transformers.json", {
        "__version__": {"sentence_transformers": meta["sentence_transformers"],
                        "transformers": meta["transformers"], "pytorch": meta["torch"]},
        "prompts": prompts,
        "default_prompt_name": None,
    }, indent=2)


def write_layout(ref: Reference, name: str, arch: str, pooling: str, prompts: dict, seed: int, meta: dict) -> None:
    from sentence_transformers import SentenceTransformer

    config = hub_config(arch, {})
    folder = ST_OUT / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    tokenizer = tokenizer_for("bert")
    torch.manual_seed(seed)
    model = ref.build(arch, config)
    randomize(model, seed)
    write_json(folder / "config.json", config, indent=2, sort_keys=True)
    save_weights(model, folder)
    copy_tokenizer("bert", folder)
    dim = config["n_embd"] if arch == "nomic" else config["hidden_size"]
    write_st_files(folder, dim, pooling, prompts, meta)

    with tempfile.TemporaryDirectory() as tmp:
        copy_dir = Path(tmp) / name
        shutil.copytree(folder, copy_dir)
        write_json(copy_dir / "config.json", local_config(arch, config), indent=2, sort_keys=True)
        for path in ref.files(arch):
            shutil.copy(path, copy_dir / path.name)
        st = SentenceTransformer(str(copy_dir), device="cpu", trust_remote_code=True)
        st_short = SentenceTransformer(str(copy_dir), device="cpu", trust_remote_code=True,
                                       truncate_dim=TRUNCATE_DIM)
        cases = [st_case("default", st, by_hand(model, tokenizer, ST_TEXTS, "", pooling))]
        for prompt_name, prompt in prompts.items():
            cases.append(st_case(prompt_name, st, by_hand(model, tokenizer, ST_TEXTS, prompt, pooling),
                                 prompt_name=prompt_name))
        cases.append(st_case("truncate_dim", st_short,
                             by_hand(model, tokenizer, ST_TEXTS, "", pooling, TRUNCATE_DIM),
                             truncate_dim=TRUNCATE_DIM))
        cases.append(st_case("truncate_dim_normalized", st_short,
                             by_hand(model, tokenizer, ST_TEXTS, "", pooling, TRUNCATE_DIM, True),
                             truncate_dim=TRUNCATE_DIM, normalize_embeddings=True))
    write_json(folder / "outputs.json", {
        "generator": GENERATOR, "versions": {**meta, **reference_versions(arch)}, "layout": name,
        "seed": seed, "texts": ST_TEXTS, "prompts": prompts, "default_prompt_name": None, "cases": cases,
    }, indent=1)
    print(f"wrote sentence-transformers/{name}")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        # Transformers copies dynamic modules into HF_MODULES_CACHE: keep it out of ~/.cache.
        os.environ["HF_MODULES_CACHE"] = str(Path(tmp) / "modules")
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(1)
        ref = Reference(Path(tmp) / "reference")
        meta = versions()
        for i, (name, spec) in enumerate({**NOMIC_FOLDERS, **GTE_FOLDERS}.items()):
            write_encoder(ref, name, spec, SEED + i, meta)
        write_layout(ref, "nomic-embed", "nomic", "mean", NOMIC_PROMPTS, SEED + 100, meta)
        write_layout(ref, "gte-embed", "gte", "cls", {}, SEED + 101, meta)


if __name__ == "__main__":
    main()
