#!/usr/bin/env python3
"""Writes the ModernBERT golden fixtures: tiny random `ModernBertModel` checkpoints in
`tests/fixtures/encoders/modernbert*/` and a nomic-ai/modernbert-embed-base-shaped
sentence-transformers layout in `tests/fixtures/sentence-transformers/modernbert-embed/`.

Run by hand, never in CI; the outputs are committed. From the repository root:

    HF_HUB_OFFLINE=1 ~/.cache/safeformers/venv-torch/bin/python scripts/make_modernbert_fixtures.py

The venv is the one `scripts/make_model_fixtures.py` describes, with sentence-transformers
installed into it (made with torch 2.15.0, transformers 5.25.0, sentence-transformers 6.3.0,
tokenizers 0.23.3, numpy 2.4.6, CPython 3.11.7; the exact versions are written into every
`outputs.json`). ModernBERT is part of Transformers itself (`model_type: "modernbert"`, no
`auto_map`), so the references come from Transformers' own `ModernBertModel` with the eager
attention path (the additive-mask softmax; the flash-attention path is never used).

Nothing is fetched from the Hub. The tokenizer is the model fixtures' byte-level BPE
(`tests/fixtures/models/roberta/tokenizer.json`, 561 ids) with its five specials renamed to
ModernBERT's (`[CLS]` 0, `[PAD]` 1, `[SEP]` 2, `[UNK]` 3, `[MASK]` 4) and ModernBERT's
`TemplateProcessing` post-processor (`[CLS] $A [SEP]`, pair `[CLS] $A [SEP] $B:1 [SEP]:1`);
`tokenizer_config.json` as ModernBERT's (`PreTrainedTokenizerFast`, `model_input_names`
`input_ids` and `attention_mask`: no `token_type_ids`).

What it writes:

* `tests/fixtures/encoders/<name>/` for each entry of `ENCODERS`: `config.json` in the form the
  Hub's checkpoints have (Transformers 4.48's keys `global_attn_every_n_layers`,
  `global_rope_theta`, `local_rope_theta`, or Transformers 5's `layer_types` and per-type
  `rope_parameters` for `modernbert-v5`), `model.safetensors` with the tensor names of the Hub's
  `ModernBertModel` checkpoints (nomic-ai/modernbert-embed-base, Alibaba-NLP/gte-modernbert-base:
  no `model.` prefix), the tokenizer files, and `outputs.json` in the format of
  `tests/fixtures/models/bert/outputs.json`: a single sequence of 44 tokens and a right-padded
  batch of 20, 41 and 7 tokens, both longer than every sliding window.
* `tests/fixtures/sentence-transformers/modernbert-embed/`: Transformer, mean Pooling, Normalize,
  prompts `query` = `"search_query: "` and `document` = `"search_document: "`, with
  `outputs.json` in the format of `tests/fixtures/sentence-transformers/qwen3-embedding/outputs.json`.

Random models: every parameter (norm weights and biases too, and the padding row of the word
embeddings) is redrawn from a normal distribution under a fixed seed (matrices σ 0.3; vectors
σ 0.1, around 1 for norm weights). The config is written by hand in the Hub's form, the model is
reloaded from the written folder with `ModernBertModel.from_pretrained`, and its state dict must
equal the generated one, so the outputs are those of the files as committed.

Checks before anything is written (the script refuses to write otherwise):

* an independent NumPy (float64) forward pass written here from the architecture's description
  (layer 0 without attention norm, pre-norm layers, rotate-half rotary with the global or local
  base per layer, a key `j` visible to query `i` in a local layer when `|i - j| <= local_attention
  // 2` and it is not padding, uniform weights over every key for a query that sees none, GeGLU
  with the activation on the first half of `Wi`, final norm) matches Transformers within 1e-4 at
  every position, padded ones included;
* Transformers' sdpa path matches the eager one at every real position within 1e-5;
* every row of the padded batch matches the same sequence run alone at its real positions;
* each sliding window actually changes the result (the same model with `local_attention` larger
  than the sequences gives outputs differing by more than 1e-2);
* the sentence-transformers embeddings from `SentenceTransformer(folder).encode` match a hand
  computation (prompt + text, mean over real tokens, L2 normalisation, truncation) within 1e-5.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
ENCODERS_OUT = REPO / "tests" / "fixtures" / "encoders"
ST_OUT = REPO / "tests" / "fixtures" / "sentence-transformers"
SOURCE_TOKENIZER = REPO / "tests" / "fixtures" / "models" / "roberta"
GENERATOR = "scripts/make_modernbert_fixtures.py"
SEED = 20251216

# RoBERTa's specials renamed to ModernBERT's, keeping the ids.
RENAME = {"<s>": "[CLS]", "<pad>": "[PAD]", "</s>": "[SEP]", "<unk>": "[UNK]", "<mask>": "[MASK]"}

SINGLE = ("Where does Sarah live? She lives in London, near the river, and she reads books about "
          "history, science and art every day.")
BATCH = [
    "The quick brown fox jumps over the lazy dog.",
    "Clara moved from Paris to New York in 2019, near the river, and she works there as an "
    "engineer at a small company.",
    "Hello world!",
]

# One entry per encoder folder. `form` is "legacy" (the Hub's Transformers-4.48 config keys) or
# "v5" (what Transformers 5 saves: `layer_types` and per-type `rope_parameters`).
ENCODERS = [
    {
        # modernbert-embed-base in small: no biases, global every 3rd layer (0 global, 1 and 2
        # local), bases 160000 / 10000, a 6-head attention of head_dim 8.
        "name": "modernbert", "form": "legacy", "hidden_size": 48, "num_hidden_layers": 3,
        "num_attention_heads": 6, "intermediate_size": 40, "global_attn_every_n_layers": 3,
        "local_attention": 8, "global_rope_theta": 160000.0, "local_rope_theta": 10000.0,
        "norm_bias": False, "attention_bias": False, "mlp_bias": False,
        "hidden_activation": "gelu", "norm_eps": 1e-5, "max_position_embeddings": 128,
    },
    {
        # Every bias on, global every 2nd layer (0 and 2 global, 1 local), 3 heads of head_dim 12,
        # small bases so rotary turns fast, the tanh GELU.
        "name": "modernbert-biases", "form": "legacy", "hidden_size": 36, "num_hidden_layers": 3,
        "num_attention_heads": 3, "intermediate_size": 28, "global_attn_every_n_layers": 2,
        "local_attention": 10, "global_rope_theta": 1000.0, "local_rope_theta": 100.0,
        "norm_bias": True, "attention_bias": True, "mlp_bias": True,
        "hidden_activation": "gelu_pytorch_tanh", "norm_eps": 1e-6, "max_position_embeddings": 64,
    },
    {
        # Transformers 5's form with an explicit `layer_types` whose layer 0 is local (which no
        # `global_attn_every_n_layers` can give), per-type `rope_parameters`, norm and MLP biases
        # but no attention biases.
        "name": "modernbert-v5", "form": "v5", "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 24,
        "layer_types": ["sliding_attention", "full_attention"],
        "local_attention": 16, "global_rope_theta": 10000.0, "local_rope_theta": 500.0,
        "norm_bias": True, "attention_bias": False, "mlp_bias": True,
        "hidden_activation": "gelu", "norm_eps": 1e-5, "max_position_embeddings": 128,
    },
]

# nomic-ai/modernbert-embed-base in small, for the sentence-transformers layout.
ST_MODEL = {
    "name": "modernbert-embed", "form": "legacy", "hidden_size": 48, "num_hidden_layers": 3,
    "num_attention_heads": 3, "intermediate_size": 64, "global_attn_every_n_layers": 3,
    "local_attention": 8, "global_rope_theta": 160000.0, "local_rope_theta": 10000.0,
    "norm_bias": False, "attention_bias": False, "mlp_bias": False,
    "hidden_activation": "gelu", "norm_eps": 1e-5, "max_position_embeddings": 128,
}
ST_PROMPTS = {"query": "search_query: ", "document": "search_document: "}
ST_TEXTS = [
    "What is the capital of France?",
    "The capital of France is Paris, and the capital of Germany is Berlin; the train to Berlin "
    "leaves at nine.",
    "Rust is a safe and fast programming language.",
    "Hello world!",
]
ST_TRUNCATE_DIM = 16


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def versions() -> dict:
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
    }


def round_sig(x: float, digits: int = 8) -> float:
    return float(f"{x:.{digits}g}")


def floats(t) -> list:
    arr = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    return np.vectorize(round_sig, otypes=[float])(arr.astype(np.float32)).tolist()


def tensor_json(t, dtype=float) -> dict:
    """A tensor as {"shape": [...], "data": nested lists}, floats to 8 significant digits."""
    arr = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    data = floats(arr) if dtype is float else arr.astype(np.int64).tolist()
    return {"shape": list(arr.shape), "data": data}


def write_json(path: Path, value, indent=2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    separators = None if indent else (",", ":")
    text = json.dumps(value, indent=indent, ensure_ascii=False, separators=separators)
    path.write_text(text + "\n", encoding="utf-8")


def randomize(model, seed: int) -> None:
    """Redraws every parameter so none is an exact 0 or 1 (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                mean = 1.0 if "norm" in name.lower() and name.endswith("weight") else 0.0
                p.copy_(mean + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


def modernbert_tokenizer_json() -> str:
    """The RoBERTa fixture BPE with ModernBERT's special-token names and post-processor."""
    from tokenizers import Tokenizer, processors

    doc = json.loads((SOURCE_TOKENIZER / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = doc["model"]["vocab"]
    for old, new in RENAME.items():
        vocab[new] = vocab.pop(old)
    for token in doc["added_tokens"]:
        token["content"] = RENAME[token["content"]]
        # As ModernBERT's (and RoBERTa's) mask token: it takes the space before it.
        token["lstrip"] = token["content"] == "[MASK]"
    doc["post_processor"] = None
    tok = Tokenizer.from_str(json.dumps(doc))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return tok.to_str(pretty=True)


def save_tokenizer(folder: Path, model_max_length: int) -> dict:
    """Writes tokenizer.json, tokenizer_config.json and special_tokens_map.json; returns the
    special-token ids."""
    from tokenizers import Tokenizer

    text = modernbert_tokenizer_json()
    (folder / "tokenizer.json").write_text(text + "\n", encoding="utf-8")
    tok = Tokenizer.from_str(text)
    ids = {name: tok.token_to_id(name) for name in RENAME.values()}
    decoder = {}
    for name in sorted(RENAME.values(), key=ids.get):
        decoder[str(ids[name])] = {
            "content": name, "lstrip": name == "[MASK]", "normalized": False, "rstrip": False,
            "single_word": False, "special": True,
        }
    write_json(folder / "tokenizer_config.json", {
        "added_tokens_decoder": decoder,
        "clean_up_tokenization_spaces": True,
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": model_max_length,
        "pad_token": "[PAD]",
        "sep_token": "[SEP]",
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": "[UNK]",
    })
    write_json(folder / "special_tokens_map.json", {
        "cls_token": "[CLS]", "mask_token": "[MASK]", "pad_token": "[PAD]", "sep_token": "[SEP]",
        "unk_token": "[UNK]",
    })
    return ids


# --------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------


def legacy_config(spec: dict, vocab_size: int, ids: dict) -> dict:
    """config.json as the Hub's ModernBertModel checkpoints have it (Transformers 4.48 keys)."""
    return {
        "architectures": ["ModernBertModel"],
        "attention_bias": spec["attention_bias"],
        "attention_dropout": 0.0,
        "bos_token_id": ids["[CLS]"],
        "classifier_activation": "gelu",
        "classifier_bias": False,
        "classifier_dropout": 0.0,
        "classifier_pooling": "mean",
        "cls_token_id": ids["[CLS]"],
        "decoder_bias": True,
        "deterministic_flash_attn": False,
        "embedding_dropout": 0.0,
        "eos_token_id": ids["[SEP]"],
        "global_attn_every_n_layers": spec["global_attn_every_n_layers"],
        "global_rope_theta": spec["global_rope_theta"],
        "gradient_checkpointing": False,
        "hidden_activation": spec["hidden_activation"],
        "hidden_size": spec["hidden_size"],
        "initializer_cutoff_factor": 2.0,
        "initializer_range": 0.02,
        "intermediate_size": spec["intermediate_size"],
        "layer_norm_eps": spec["norm_eps"],
        "local_attention": spec["local_attention"],
        "local_rope_theta": spec["local_rope_theta"],
        "max_position_embeddings": spec["max_position_embeddings"],
        "mlp_bias": spec["mlp_bias"],
        "mlp_dropout": 0.0,
        "model_type": "modernbert",
        "norm_bias": spec["norm_bias"],
        "norm_eps": spec["norm_eps"],
        "num_attention_heads": spec["num_attention_heads"],
        "num_hidden_layers": spec["num_hidden_layers"],
        "pad_token_id": ids["[PAD]"],
        "position_embedding_type": "absolute",
        "reference_compile": None,
        "sep_token_id": ids["[SEP]"],
        "sparse_pred_ignore_index": -100,
        "sparse_prediction": False,
        "torch_dtype": "float32",
        "transformers_version": "4.48.0",
        "vocab_size": vocab_size,
    }


def transformers_config(spec: dict, vocab_size: int, ids: dict):
    """The ModernBertConfig a spec describes (for the v5 form, saved as Transformers 5 saves it)."""
    from transformers import ModernBertConfig

    common = dict(
        vocab_size=vocab_size, hidden_size=spec["hidden_size"],
        intermediate_size=spec["intermediate_size"], num_hidden_layers=spec["num_hidden_layers"],
        num_attention_heads=spec["num_attention_heads"], hidden_activation=spec["hidden_activation"],
        max_position_embeddings=spec["max_position_embeddings"], norm_eps=spec["norm_eps"],
        norm_bias=spec["norm_bias"], attention_bias=spec["attention_bias"], mlp_bias=spec["mlp_bias"],
        local_attention=spec["local_attention"], pad_token_id=ids["[PAD]"],
        bos_token_id=ids["[CLS]"], eos_token_id=ids["[SEP]"], cls_token_id=ids["[CLS]"],
        sep_token_id=ids["[SEP]"], classifier_pooling="mean",
        architectures=["ModernBertModel"],
    )
    if spec["form"] == "v5":
        return ModernBertConfig(**common, layer_types=list(spec["layer_types"]), rope_parameters={
            "full_attention": {"rope_type": "default", "rope_theta": spec["global_rope_theta"]},
            "sliding_attention": {"rope_type": "default", "rope_theta": spec["local_rope_theta"]},
        })
    return ModernBertConfig(
        **common, global_attn_every_n_layers=spec["global_attn_every_n_layers"],
        global_rope_theta=spec["global_rope_theta"], local_rope_theta=spec["local_rope_theta"],
    )


# --------------------------------------------------------------------------------------------
# The independent NumPy reference
# --------------------------------------------------------------------------------------------


def np_layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps) * weight
    return y + bias if bias is not None else y


def np_activation(name, x):
    if name == "gelu":
        erf = np.vectorize(math.erf)
        return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))
    if name == "gelu_pytorch_tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    raise ValueError(name)


def np_rotary(x, theta):
    """Rotate-half rotary on [batch, length, heads, head_dim], positions 0..length."""
    length, dim = x.shape[1], x.shape[-1]
    inv_freq = 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    angles = np.arange(length, dtype=np.float64)[:, None] * inv_freq[None, :]
    cos = np.cos(np.concatenate([angles, angles], -1))[None, :, None, :]
    sin = np.sin(np.concatenate([angles, angles], -1))[None, :, None, :]
    half = dim // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], -1)
    return x * cos + rotated * sin


def np_attention(q, k, v, mask, window):
    """softmax over the keys a query sees (not padding, and |i - j| <= window when local);
    uniform over every key for a query that sees none, as the additive finfo.min mask gives."""
    batch, length, heads, dim = q.shape
    out = np.zeros_like(q)
    pos = np.arange(length)
    near = np.ones((length, length), bool) if window is None else (
        np.abs(pos[:, None] - pos[None, :]) <= window)
    for b in range(batch):
        visible = near & mask[b].astype(bool)[None, :]
        for h in range(heads):
            scores = q[b, :, h] @ k[b, :, h].T / math.sqrt(dim)
            for i in range(length):
                if not visible[i].any():
                    out[b, i, h] = v[b, :, h].mean(0)
                    continue
                s = scores[i, visible[i]]
                w = np.exp(s - s.max())
                out[b, i, h] = (w / w.sum()) @ v[b, visible[i], h]
    return out


def np_forward(state: dict, spec: dict, layer_types: list[str], ids, mask):
    sd = {k: v.detach().double().numpy() for k, v in state.items()}
    eps, heads = spec["norm_eps"], spec["num_attention_heads"]

    def norm(prefix, x):
        return np_layer_norm(x, sd[prefix + ".weight"], sd.get(prefix + ".bias"), eps)

    def linear(prefix, x):
        y = x @ sd[prefix + ".weight"].T
        return y + sd[prefix + ".bias"] if prefix + ".bias" in sd else y

    x = norm("embeddings.norm", sd["embeddings.tok_embeddings.weight"][ids])
    batch, length, hidden = x.shape
    for i, kind in enumerate(layer_types):
        p = f"layers.{i}"
        h = x if i == 0 else norm(p + ".attn_norm", x)
        qkv = linear(p + ".attn.Wqkv", h).reshape(batch, length, 3, heads, hidden // heads)
        local = kind == "sliding_attention"
        theta = spec["local_rope_theta"] if local else spec["global_rope_theta"]
        q, k = np_rotary(qkv[:, :, 0], theta), np_rotary(qkv[:, :, 1], theta)
        window = spec["local_attention"] // 2 if local else None
        attn = np_attention(q, k, qkv[:, :, 2], mask, window).reshape(batch, length, hidden)
        x = x + linear(p + ".attn.Wo", attn)
        up = linear(p + ".mlp.Wi", norm(p + ".mlp_norm", x))
        inner, gate = np.split(up, 2, axis=-1)
        x = x + linear(p + ".mlp.Wo", np_activation(spec["hidden_activation"], inner) * gate)
    return norm("final_norm", x)


# --------------------------------------------------------------------------------------------
# Encoder folders
# --------------------------------------------------------------------------------------------


def write_model_folder(folder: Path, spec: dict, seed: int):
    """Writes config, weights and tokenizer; returns the model reloaded from the folder and its
    tokenizer."""
    from transformers import AutoTokenizer, ModernBertModel

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    ids = save_tokenizer(folder, spec["max_position_embeddings"])
    tokenizer = AutoTokenizer.from_pretrained(folder)
    vocab_size = len(tokenizer)
    config = transformers_config(spec, vocab_size, ids)
    torch.manual_seed(seed)
    model = ModernBertModel._from_config(config, attn_implementation="eager")
    randomize(model, seed)
    model.eval()
    model.save_pretrained(folder, safe_serialization=True)
    if spec["form"] == "legacy":
        write_json(folder / "config.json", legacy_config(spec, vocab_size, ids))
    loaded = ModernBertModel.from_pretrained(folder, attn_implementation="eager").eval()
    theirs, ours = loaded.state_dict(), model.state_dict()
    if theirs.keys() != ours.keys() or any(not torch.equal(theirs[k], ours[k]) for k in ours):
        raise SystemExit(f"{folder.name}: the reloaded state dict differs from the generated one")
    expected_types = spec.get("layer_types") or [
        "sliding_attention" if i % spec["global_attn_every_n_layers"] else "full_attention"
        for i in range(spec["num_hidden_layers"])]
    if loaded.config.layer_types != expected_types:
        raise SystemExit(f"{folder.name}: layer types {loaded.config.layer_types}")
    rope = {kind: loaded.config.rope_parameters[kind]["rope_theta"] for kind in set(expected_types)}
    want = {"full_attention": spec["global_rope_theta"], "sliding_attention": spec["local_rope_theta"]}
    if any(rope[kind] != want[kind] for kind in rope):
        raise SystemExit(f"{folder.name}: rope bases {rope}")
    if loaded.config.sliding_window != spec["local_attention"] // 2:
        raise SystemExit(f"{folder.name}: sliding window {loaded.config.sliding_window}")
    return loaded, tokenizer


def run(model, enc):
    with torch.no_grad():
        return model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state


def check_case(name, model, spec, enc, hidden) -> None:
    """The NumPy reference, sdpa, each row alone, and that the windows matter."""
    from transformers import ModernBertModel

    mask = enc["attention_mask"].numpy()
    reference = np_forward(model.state_dict(), spec, model.config.layer_types,
                           enc["input_ids"].numpy(), mask)
    diff = float(np.abs(reference - hidden.double().numpy()).max())
    if diff > 1e-4:
        raise SystemExit(f"{name}: NumPy reference and Transformers differ by {diff}")
    real = enc["attention_mask"].bool()
    sdpa = copy.deepcopy(model)
    sdpa.config._attn_implementation = "sdpa"
    sdpa_diff = float((run(sdpa, enc) - hidden)[real].abs().max())
    if sdpa_diff > 1e-5:
        raise SystemExit(f"{name}: sdpa and eager differ by {sdpa_diff} at real positions")
    alone_diff = 0.0
    for row in range(enc["input_ids"].shape[0]):
        n = int(real[row].sum())
        single = {"input_ids": enc["input_ids"][row:row + 1, :n],
                  "attention_mask": enc["attention_mask"][row:row + 1, :n]}
        alone_diff = max(alone_diff, float((run(model, single)[0] - hidden[row, :n]).abs().max()))
    if alone_diff > 1e-5:
        raise SystemExit(f"{name}: a batch row differs from its sequence alone by {alone_diff}")
    if "sliding_attention" in model.config.layer_types:
        wide_config = copy.deepcopy(model.config)
        wide_config.local_attention = 4 * enc["input_ids"].shape[1]
        wide = ModernBertModel._from_config(wide_config, attn_implementation="eager").eval()
        wide.load_state_dict(model.state_dict())
        effect = float((run(wide, enc) - hidden)[real].abs().max())
        if effect < 1e-2:
            raise SystemExit(f"{name}: the sliding window changes the outputs by only {effect}")
    else:
        effect = 0.0
    print(f"  {name}: NumPy vs Transformers {diff:.1e}, sdpa vs eager {sdpa_diff:.1e}, "
          f"batch vs alone {alone_diff:.1e}, window effect {effect:.2f}")


def encoder_case(name, model, tokenizer, spec, texts) -> dict:
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    if "token_type_ids" in enc:
        raise SystemExit(f"{name}: the tokenizer returned token_type_ids")
    hidden = run(model, enc)
    check_case(name, model, spec, enc, hidden)
    return {
        "texts": list(texts),
        "tokens": [tokenizer.convert_ids_to_tokens(row) for row in enc["input_ids"].tolist()],
        "inputs": {k: tensor_json(enc[k], dtype=int) for k in ("input_ids", "attention_mask")},
        "outputs": {"last_hidden_state": tensor_json(hidden)},
    }


def write_encoder(spec: dict, seed: int, meta: dict) -> None:
    folder = ENCODERS_OUT / spec["name"]
    model, tokenizer = write_model_folder(folder, spec, seed)
    doc = {
        "generator": GENERATOR,
        "versions": meta,
        "model": spec["name"],
        "class": type(model).__name__,
        "seed": seed,
        "cases": {
            "single": encoder_case(f"{spec['name']}/single", model, tokenizer, spec, [SINGLE]),
            "batch": encoder_case(f"{spec['name']}/batch", model, tokenizer, spec, BATCH),
        },
    }
    write_json(folder / "outputs.json", doc, indent=None)
    print(f"wrote {folder.relative_to(REPO)}")


# --------------------------------------------------------------------------------------------
# The sentence-transformers layout
# --------------------------------------------------------------------------------------------


def write_st_modules(folder: Path, hidden: int) -> None:
    write_json(folder / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ])
    write_json(folder / "sentence_bert_config.json", {"max_seq_length": 128, "do_lower_case": False})
    write_json(folder / "1_Pooling" / "config.json", {
        "word_embedding_dimension": hidden, "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False, "include_prompt": True,
    })
    (folder / "2_Normalize").mkdir(parents=True, exist_ok=True)
    write_json(folder / "config_sentence_transformers.json", {
        "prompts": ST_PROMPTS, "default_prompt_name": None, "similarity_fn_name": "cosine",
    })


def st_by_hand(model, tokenizer, prompt, truncate_dim=None, normalize_after=False):
    """Transformers alone: prompt + text, right-padded batch, mean over real tokens (prompt
    included), L2 normalisation, truncation, optional normalisation again."""
    enc = tokenizer([prompt + t for t in ST_TEXTS], padding=True, return_tensors="pt")
    hidden = run(model, enc)
    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    x = (hidden * mask).sum(1) / mask.sum(1)
    x = torch.nn.functional.normalize(x, p=2, dim=-1)
    if truncate_dim is not None:
        x = x[:, :truncate_dim]
    if normalize_after:
        x = torch.nn.functional.normalize(x, p=2, dim=-1)
    return x.numpy()


def st_case(name: str, st_model, hand, **kwargs) -> dict:
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    got = st_model.encode(ST_TEXTS, convert_to_numpy=True, **kwargs)
    diff = float(np.abs(got - hand).max())
    if diff > 1e-5:
        raise SystemExit(f"{name}: sentence-transformers and the hand computation differ by {diff}")
    print(f"  {name}: sentence-transformers vs by hand max abs diff {diff:.2e}")
    return {"name": name, **kwargs, "embeddings": floats(got)}


def write_st_layout(spec: dict, seed: int, meta: dict) -> None:
    from sentence_transformers import SentenceTransformer

    folder = ST_OUT / spec["name"]
    model, tokenizer = write_model_folder(folder, spec, seed)
    write_st_modules(folder, spec["hidden_size"])
    lengths = [len(tokenizer(ST_PROMPTS["document"] + t)["input_ids"]) for t in ST_TEXTS]
    if max(lengths) <= spec["local_attention"] // 2 + 1:
        raise SystemExit(f"{spec['name']}: texts of {lengths} tokens do not reach past the window")
    st = SentenceTransformer(str(folder), device="cpu")
    st8 = SentenceTransformer(str(folder), device="cpu", truncate_dim=ST_TRUNCATE_DIM)
    cases = [
        st_case("default", st, st_by_hand(model, tokenizer, "")),
        st_case("query", st, st_by_hand(model, tokenizer, ST_PROMPTS["query"]), prompt_name="query"),
        st_case("document", st, st_by_hand(model, tokenizer, ST_PROMPTS["document"]),
                prompt_name="document"),
        st_case("truncate_dim", st8, st_by_hand(model, tokenizer, "", ST_TRUNCATE_DIM),
                truncate_dim=ST_TRUNCATE_DIM),
        st_case("truncate_dim_normalized", st8,
                st_by_hand(model, tokenizer, "", ST_TRUNCATE_DIM, True),
                truncate_dim=ST_TRUNCATE_DIM, normalize_embeddings=True),
        st_case("truncate_dim_query", st8,
                st_by_hand(model, tokenizer, ST_PROMPTS["query"], ST_TRUNCATE_DIM),
                prompt_name="query", truncate_dim=ST_TRUNCATE_DIM),
    ]
    write_json(folder / "outputs.json", {
        "generator": GENERATOR, "versions": meta, "layout": spec["name"], "seed": seed,
        "texts": ST_TEXTS, "prompts": ST_PROMPTS, "default_prompt_name": None, "cases": cases,
    }, indent=1)
    print(f"wrote {folder.relative_to(REPO)}")


def main() -> None:
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    meta = versions()
    for i, spec in enumerate(ENCODERS):
        write_encoder(spec, SEED + i, meta)
    write_st_layout(ST_MODEL, SEED + len(ENCODERS), meta)


if __name__ == "__main__":
    main()
