#!/usr/bin/env python3
"""Writes the sentence-transformers layouts of tiny Qwen3 embedding models into
`tests/fixtures/sentence-transformers/`, with the embeddings sentence-transformers gives for them.

Run by hand, never in CI; the outputs are committed. From the repository root:

    HF_HUB_OFFLINE=1 ~/.cache/safeformers/venv-torch/bin/python scripts/make_sentence_transformers_fixtures.py

The venv is the one `scripts/make_model_fixtures.py` describes, with `sentence-transformers`
installed into it (`~/.cache/safeformers/venv-torch/bin/pip install sentence-transformers`; this
was made with sentence-transformers 6.3.0, transformers 5.25.0, torch 2.15.0; the exact versions
are written into every `outputs.json`).

Nothing is fetched from the Hub. The tokenizer is the decoder fixtures' byte-level BPE
(`tests/fixtures/decoders/qwen3/tokenizer.json`) with a post-processor that appends `<|eos|>` to
every sequence, as Qwen3-Embedding's tokenizer appends `<|endoftext|>`, and `padding_side` left.
Each model is a randomly initialised `Qwen3Model` (every parameter redrawn under a fixed seed, as
`make_decoder_fixtures.py` does), saved without the `model.` prefix as Qwen3-Embedding's
checkpoints are. See `tests/fixtures/sentence-transformers/README.md` for the layouts.

Every reference embedding is computed twice: by `SentenceTransformer(folder).encode(...)`, and
by hand with Transformers alone (prompt prepended, left-padded batch, last real token,
`Dense` layers, L2 normalization, truncation); the script refuses to write if the two differ by
more than 1e-5.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "sentence-transformers"
SOURCE_TOKENIZER = REPO / "tests" / "fixtures" / "decoders" / "qwen3"
GENERATOR = "scripts/make_sentence_transformers_fixtures.py"
SEED = 20251207

PAD, EOS = "<|pad|>", "<|eos|>"
QUERY_PROMPT = "Instruct: Given a question, retrieve passages that answer it\nQuery:"
TEXTS = [
    "What is the capital of France?",
    "The capital of France is Paris.",
    "Rust is a safe and fast programming language.",
    "Hello world!",
]


def versions() -> dict:
    import safetensors
    import sentence_transformers
    import tokenizers
    import transformers

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
    }


def round_sig(x: float, digits: int = 8) -> float:
    return float(f"{x:.{digits}g}")


def floats(t) -> list:
    arr = np.asarray(t, dtype=np.float32)
    return np.vectorize(round_sig, otypes=[float])(arr).tolist()


def write_json(path: Path, value, indent=2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=indent, ensure_ascii=False) + "\n", encoding="utf-8")


def randomize(module, generator) -> None:
    """Matrices σ 0.3, vectors σ 0.1 (around 1 for norm weights), as the decoder fixtures."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim == 1:
                mean = 1.0 if "norm" in name.lower() and name.endswith("weight") else 0.0
                p.copy_(mean + 0.1 * torch.randn(p.shape, generator=generator))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=generator))


def save_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, processors

    tok = Tokenizer.from_file(str(SOURCE_TOKENIZER / "tokenizer.json"))
    eos_id = tok.token_to_id(EOS)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"$A {EOS}", pair=f"$A {EOS} $B:1 {EOS}:1",
                                      special_tokens=[(EOS, eos_id)]),
    ])
    tok.save(str(folder / "tokenizer.json"))
    config = json.loads((SOURCE_TOKENIZER / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    config["padding_side"] = "left"
    config["model_max_length"] = 128
    write_json(folder / "tokenizer_config.json", config)
    shutil.copy(SOURCE_TOKENIZER / "special_tokens_map.json", folder / "special_tokens_map.json")


def qwen3_config(ids: dict):
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=384, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=12, max_position_embeddings=128,
        rms_norm_eps=1e-6, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, **ids,
    )


def write_transformer(folder: Path, seed: int):
    from transformers import AutoTokenizer, Qwen3Model

    folder.mkdir(parents=True)
    save_tokenizer(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = {
        "bos_token_id": tokenizer.convert_tokens_to_ids("<|bos|>"),
        "eos_token_id": tokenizer.convert_tokens_to_ids(EOS),
        "pad_token_id": tokenizer.convert_tokens_to_ids(PAD),
    }
    torch.manual_seed(seed)
    model = Qwen3Model._from_config(qwen3_config(ids), attn_implementation="eager")
    randomize(model, torch.Generator().manual_seed(seed))
    model.eval()
    model.save_pretrained(folder, safe_serialization=True)
    # Qwen3-Embedding names the causal-LM class although its checkpoint is the bare model.
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config["architectures"] = ["Qwen3ForCausalLM"]
    write_json(config_path, config)
    write_json(folder / "sentence_bert_config.json", {"max_seq_length": 128, "do_lower_case": False})
    return model, tokenizer


def write_modules(folder: Path, dense: list[dict], prompts: dict, default_prompt_name) -> None:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    for layer in dense:
        idx = len(modules)
        modules.append({"idx": idx, "name": str(idx), "path": f"{idx}_Dense",
                        "type": "sentence_transformers.models.Dense"})
    modules.append({"idx": len(modules), "name": str(len(modules)), "path": f"{len(modules)}_Normalize",
                    "type": "sentence_transformers.models.Normalize"})
    write_json(folder / "modules.json", modules)
    write_json(folder / "1_Pooling" / "config.json", {
        "word_embedding_dimension": 32, "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": True, "include_prompt": True,
    })
    (folder / modules[-1]["path"]).mkdir(parents=True, exist_ok=True)
    write_json(folder / "config_sentence_transformers.json", {
        "prompts": prompts, "default_prompt_name": default_prompt_name,
        "similarity_fn_name": "cosine",
    })


def write_dense(folder: Path, index: int, layer: dict, generator) -> torch.nn.Linear:
    from safetensors.torch import save_file

    linear = torch.nn.Linear(layer["in"], layer["out"], bias=layer["bias"])
    randomize(linear, generator)
    sub = folder / f"{index}_Dense"
    sub.mkdir(parents=True)
    write_json(sub / "config.json", {
        "in_features": layer["in"], "out_features": layer["out"], "bias": layer["bias"],
        "activation_function": layer["activation"],
    })
    tensors = {"linear.weight": linear.weight.detach().contiguous()}
    if layer["bias"]:
        tensors["linear.bias"] = linear.bias.detach().contiguous()
    save_file(tensors, str(sub / "model.safetensors"))
    return linear


ACTIVATIONS = {
    "torch.nn.modules.activation.Tanh": torch.tanh,
    "torch.nn.modules.linear.Identity": lambda x: x,
}


def by_hand(model, tokenizer, dense, texts, prompt, truncate_dim=None, normalize_after=False):
    """Transformers alone: prompt + text, left-padded batch (positions 0..L, no position ids),
    last token, Dense layers, Normalize, truncation, optional normalization."""
    batch = tokenizer([prompt + t for t in texts], padding=True, return_tensors="pt")
    assert tokenizer.padding_side == "left"
    with torch.no_grad():
        hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        x = hidden[:, -1]
        for linear, activation in dense:
            x = ACTIVATIONS[activation](linear(x))
        x = torch.nn.functional.normalize(x, p=2, dim=-1)
        if truncate_dim is not None:
            x = x[:, :truncate_dim]
        if normalize_after:
            x = torch.nn.functional.normalize(x, p=2, dim=-1)
    return x.numpy()


def case(name: str, st_model, hand, **kwargs) -> dict:
    got = st_model.encode(TEXTS, convert_to_numpy=True, **{k: v for k, v in kwargs.items() if v is not None})
    diff = float(np.abs(got - hand).max())
    if diff > 1e-5:
        raise SystemExit(f"{name}: sentence-transformers and the hand computation differ by {diff}")
    print(f"  {name}: sentence-transformers vs by hand max abs diff {diff:.2e}")
    return {"name": name, **{k: v for k, v in kwargs.items() if v is not None},
            "embeddings": floats(got)}


def write_layout(name: str, seed: int, dense_layers: list[dict], prompts: dict, default_prompt_name,
                 meta: dict) -> None:
    from sentence_transformers import SentenceTransformer

    folder = OUT / name
    if folder.exists():
        shutil.rmtree(folder)
    model, tokenizer = write_transformer(folder, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    dense = [(write_dense(folder, 2 + i, layer, generator), layer["activation"])
             for i, layer in enumerate(dense_layers)]
    write_modules(folder, dense_layers, prompts, default_prompt_name)

    st = SentenceTransformer(str(folder), device="cpu")
    default_prompt = prompts.get(default_prompt_name, "") if default_prompt_name else ""
    cases = [
        case("default", st, by_hand(model, tokenizer, dense, TEXTS, default_prompt)),
        case("query", st, by_hand(model, tokenizer, dense, TEXTS, prompts["query"]), prompt_name="query"),
        case("document", st, by_hand(model, tokenizer, dense, TEXTS, prompts["document"]),
             prompt_name="document"),
    ]
    if dense_layers:
        st8 = SentenceTransformer(str(folder), device="cpu", truncate_dim=8)
        cases.append(case("truncate_dim", st8, by_hand(model, tokenizer, dense, TEXTS, default_prompt, 8),
                          truncate_dim=8))
        cases.append(case("truncate_dim_normalized", st8,
                          by_hand(model, tokenizer, dense, TEXTS, default_prompt, 8, True),
                          truncate_dim=8, normalize_embeddings=True))
    write_json(folder / "outputs.json", {
        "generator": GENERATOR, "versions": meta, "layout": name, "seed": seed, "texts": TEXTS,
        "prompts": prompts, "default_prompt_name": default_prompt_name, "cases": cases,
    }, indent=1)
    print(f"wrote {name}")


def main() -> None:
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    meta = versions()
    # Qwen3-Embedding's layout: Transformer, last-token Pooling, Normalize; a query prompt, no
    # default prompt.
    write_layout("qwen3-embedding", SEED, [], {"query": QUERY_PROMPT, "document": ""}, None, meta)
    # With two Dense layers (32 → 24 with bias and Tanh, 24 → 16 without bias, Identity) before
    # Normalize, and the query prompt as the default.
    write_layout("qwen3-embedding-dense", SEED + 1, [
        {"in": 32, "out": 24, "bias": True, "activation": "torch.nn.modules.activation.Tanh"},
        {"in": 24, "out": 16, "bias": False, "activation": "torch.nn.modules.linear.Identity"},
    ], {"query": QUERY_PROMPT, "document": ""}, "query", meta)


if __name__ == "__main__":
    main()
