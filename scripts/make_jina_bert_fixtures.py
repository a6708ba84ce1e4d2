#!/usr/bin/env python3
"""Writes the JinaBert v2 golden fixtures: tiny random checkpoints in
`tests/fixtures/encoders/jina-bert-*/` and a jina-embeddings-v2-shaped sentence-transformers
layout in `tests/fixtures/sentence-transformers/jina-embed/`.

Run by hand, never in CI; the outputs are committed. From the repository root:

    HF_HUB_OFFLINE=1 ~/.cache/safeformers/venv-torch/bin/python scripts/make_jina_bert_fixtures.py

The venv is the one `scripts/make_model_fixtures.py` describes, with sentence-transformers in it
(made with torch 2.15.0, transformers 5.25.0, sentence-transformers 6.3.0, tokenizers 0.23.3,
safetensors 0.8.0, numpy 2.4.6, CPython 3.11.7; the exact versions are written into every
`outputs.json`). Nothing is fetched from the Hub and no Jina AI code is run: none is available
(`shared/reference/remote-code/jina_bert/SOURCES.md`).

The goldens come from OUR NumPy reference, `scripts/jina_bert_reference.py` (float64), written from
the maths SOURCES.md records. Before anything is written the script checks that reference:

* ALiBi slopes by hand: 12 heads give 2^-1..2^-8 then 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5; 6 heads
  2^-2, 2^-4, 2^-6, 2^-8, 2^-1, 2^-3; and the reference's recursion equals the closed form of
  `scripts/jina_bert_torch.py` for 1..64 heads.
* Every case against `scripts/jina_bert_torch.py`, our separate torch re-implementation
  (float32, `scaled_dot_product_attention`): max abs diff ≤ 1e-5 or the script stops.
* That each golden catches the mistakes known in other ports: a port taking the GLU activation
  from `hidden_act` (TEI), activating the second half of `gated_layers` (the qk-post-norm code
  model's layout), candle's slopes, the power-of-two slope formula used for 6 or 12 heads, or no
  ALiBi at all, must each be
  off by more than 1e-2 somewhere in the folder's outputs, or the script stops.

What it writes:

* `encoders/jina-bert-geglu/`, `jina-bert-reglu/`, `jina-bert-12heads/`: `config.json` in the
  Hub's form (`model_type` `bert`, `position_embedding_type` `alibi`, `feed_forward_type`, the real
  cross-repo `auto_map` into `jinaai/jina-bert-implementation`, `architectures`
  `JinaBertForMaskedLM`, as jina-embeddings-v2-base-en's), `model.safetensors` with the real
  checkpoints' tensor names (no prefix: `embeddings.*`, `encoder.layer.N.attention.self.*`,
  `encoder.layer.N.mlp.{gated_layers,wo,layernorm}`, `pooler.dense`), the BERT fixture tokenizer
  (`tests/fixtures/models/bert`, WordPiece, 204 ids; jina-embeddings-v2 uses a BERT WordPiece
  tokenizer) with `model_max_length` 8192, and `outputs.json` (inputs and `last_hidden_state`
  for one sequence and a right-padded batch of three, the longest 76 tokens) in the format of
  `tests/fixtures/models/bert/outputs.json`.
* `sentence-transformers/jina-embed/`: the same kind of checkpoint in jina-embeddings-v2's
  layout (Transformer, mean Pooling; no Normalize, no prompts). Its embeddings are computed by
  `SentenceTransformer.encode` on a TEMPORARY copy whose `auto_map` points at
  `scripts/jina_bert_torch.py`, and by hand from the NumPy reference (mean pooling, truncation,
  normalization); the script refuses to write if they differ by more than 1e-5.

Weights: every tensor is drawn from a normal distribution with NumPy's PCG64 under a fixed seed
(matrices σ 0.2, see MATRIX_SIGMA; vectors σ 0.1, around 1 for LayerNorm weights), so no bias is 0
and no LayerNorm weight is 1.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
sys.path.insert(0, str(SCRIPTS))

import jina_bert_reference as ref  # noqa: E402

ENCODERS = REPO / "tests" / "fixtures" / "encoders"
ST_OUT = REPO / "tests" / "fixtures" / "sentence-transformers"
BERT_TOKENIZER = REPO / "tests" / "fixtures" / "models" / "bert"
GENERATOR = "scripts/make_jina_bert_fixtures.py"
SEED = 20251215
TORCH_TOLERANCE = 1e-5
# σ of the weight matrices. Smaller than the 0.4 of make_model_fixtures.py: with 0.4 the 3-layer,
# 48-wide ReGLU model is so ill-conditioned that float32 itself is 1.7e-4 away from the float64
# truth (torch and our reference agree to 1e-13 in float64), beyond the tests' 1e-4; with 0.2
# float32 stays within 1e-5 of it.
MATRIX_SIGMA = 0.2
TRAP_MARGIN = 1e-2

SINGLE = "My name is Sarah and I live in London."
# 76 tokens with [CLS] and [SEP], so ALiBi distances reach 75.
LONG = (
    "Where does Sarah live? She lives in London, near the river. Clara moved from Paris to New York "
    "in 2019. Clara works in Paris as an engineer at a small company. The capital of France is Paris, "
    "and the capital of Germany is Berlin. The weather is nice today, so we walk to the park."
)
BATCH = ["Hello world!", "The quick brown fox jumps over the lazy dog.", LONG]

# The Hub's cross-repo auto_map of jina-embeddings-v2-base-en / small-en.
IMPL = "jinaai/jina-bert-implementation"
AUTO_MAP = {
    "AutoConfig": f"{IMPL}--configuration_bert.JinaBertConfig",
    "AutoModelForMaskedLM": f"{IMPL}--modeling_bert.JinaBertForMaskedLM",
    "AutoModel": f"{IMPL}--modeling_bert.JinaBertModel",
    "AutoModelForSequenceClassification": f"{IMPL}--modeling_bert.JinaBertForSequenceClassification",
}
# Per folder: head counts 4, 6 and 12 (6 and 12 are not powers of two); `hidden_act` is the real
# checkpoints' "gelu" with reglu (so a port reading hidden_act uses GELU where ReLU is meant), and
# "relu" with geglu in jina-bert-12heads (the opposite mistake).
CONFIGS = {
    "jina-bert-geglu": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40,
                            feed_forward_type="geglu", hidden_act="gelu", layer_norm_eps=1e-12,
                            max_position_embeddings=8192),
    "jina-bert-reglu": dict(hidden_size=48, num_hidden_layers=3, num_attention_heads=6, intermediate_size=36,
                            feed_forward_type="reglu", hidden_act="gelu", layer_norm_eps=1e-12,
                            max_position_embeddings=512),
    "jina-bert-12heads": dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=12, intermediate_size=64,
                              feed_forward_type="geglu", hidden_act="relu", layer_norm_eps=1e-5,
                              max_position_embeddings=8192),
}
ST_CONFIG = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40,
                 feed_forward_type="geglu", hidden_act="gelu", layer_norm_eps=1e-12, max_position_embeddings=8192)
ST_TEXTS = [
    "What is the capital of France?",
    "The capital of France is Paris.",
    "Rust is a safe and fast programming language.",
    "Hello world!",
]


def versions() -> dict:
    import safetensors
    import sentence_transformers
    import tokenizers
    import torch
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


def floats(arr) -> list:
    return np.vectorize(round_sig, otypes=[float])(np.asarray(arr, dtype=np.float32)).tolist()


def tensor_json(arr, dtype=float) -> dict:
    arr = np.asarray(arr)
    return {"shape": list(arr.shape), "data": floats(arr) if dtype is float else arr.astype(np.int64).tolist()}


def write_json(path: Path, value, indent=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(value, indent=indent, ensure_ascii=False, separators=None if indent else (",", ":"))
    path.write_text(text + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------
# Checkpoint and config
# --------------------------------------------------------------------------------------------


def hub_config(c: dict, vocab_size: int) -> dict:
    """config.json with jina-embeddings-v2-base-en's keys, in its order."""
    return {
        "_name_or_path": IMPL,
        "model_max_length": 8192,
        "architectures": ["JinaBertForMaskedLM"],
        "attention_probs_dropout_prob": 0.0,
        "auto_map": AUTO_MAP,
        "classifier_dropout": None,
        "gradient_checkpointing": False,
        "hidden_act": c["hidden_act"],
        "hidden_dropout_prob": 0.1,
        "hidden_size": c["hidden_size"],
        "initializer_range": 0.02,
        "intermediate_size": c["intermediate_size"],
        "layer_norm_eps": c["layer_norm_eps"],
        "max_position_embeddings": c["max_position_embeddings"],
        "model_type": "bert",
        "num_attention_heads": c["num_attention_heads"],
        "num_hidden_layers": c["num_hidden_layers"],
        "pad_token_id": 0,
        "position_embedding_type": "alibi",
        "torch_dtype": "float32",
        "transformers_version": "4.26.0",
        "type_vocab_size": 2,
        "use_cache": True,
        "vocab_size": vocab_size,
        "feed_forward_type": c["feed_forward_type"],
        "emb_pooler": "mean",
    }


def tensor_shapes(c: dict, vocab_size: int) -> list[tuple[str, tuple]]:
    h, i = c["hidden_size"], c["intermediate_size"]
    shapes = [
        ("embeddings.word_embeddings.weight", (vocab_size, h)),
        ("embeddings.token_type_embeddings.weight", (2, h)),
        ("embeddings.LayerNorm.weight", (h,)),
        ("embeddings.LayerNorm.bias", (h,)),
    ]
    for n in range(c["num_hidden_layers"]):
        p = f"encoder.layer.{n}"
        for proj in ("query", "key", "value"):
            shapes += [(f"{p}.attention.self.{proj}.weight", (h, h)), (f"{p}.attention.self.{proj}.bias", (h,))]
        shapes += [
            (f"{p}.attention.output.dense.weight", (h, h)),
            (f"{p}.attention.output.dense.bias", (h,)),
            (f"{p}.attention.output.LayerNorm.weight", (h,)),
            (f"{p}.attention.output.LayerNorm.bias", (h,)),
            (f"{p}.mlp.gated_layers.weight", (2 * i, h)),
            (f"{p}.mlp.wo.weight", (h, i)),
            (f"{p}.mlp.wo.bias", (h,)),
            (f"{p}.mlp.layernorm.weight", (h,)),
            (f"{p}.mlp.layernorm.bias", (h,)),
        ]
    return shapes + [("pooler.dense.weight", (h, h)), ("pooler.dense.bias", (h,))]


def draw_weights(c: dict, vocab_size: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in tensor_shapes(c, vocab_size):
        if len(shape) == 1:
            is_norm_weight = "norm" in name.lower() and name.endswith(".weight")
            value = (1.0 if is_norm_weight else 0.0) + 0.1 * rng.standard_normal(shape)
        else:
            value = MATRIX_SIGMA * rng.standard_normal(shape)
        weights[name] = value.astype(np.float32)
    return weights


def write_tokenizer(folder: Path) -> None:
    for name in ("tokenizer.json", "special_tokens_map.json"):
        shutil.copy(BERT_TOKENIZER / name, folder / name)
    config = json.loads((BERT_TOKENIZER / "tokenizer_config.json").read_text())
    config["model_max_length"] = 8192
    write_json(folder / "tokenizer_config.json", config, indent=2)


def write_checkpoint(folder: Path, c: dict, seed: int):
    from safetensors.numpy import save_file
    from transformers import AutoTokenizer

    folder.mkdir(parents=True)
    write_tokenizer(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    weights = draw_weights(c, len(tokenizer), seed)
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = hub_config(c, len(tokenizer))
    write_json(folder / "config.json", config, indent=2)
    return tokenizer, weights, config


# --------------------------------------------------------------------------------------------
# Checks of the reference
# --------------------------------------------------------------------------------------------


def check_slopes() -> None:
    import jina_bert_torch

    def close(got, want):
        return np.allclose(got, want, rtol=1e-12, atol=0)

    twelve = [2.0 ** -e for e in (1, 2, 3, 4, 5, 6, 7, 8, 0.5, 1.5, 2.5, 3.5)]
    assert close(ref.alibi_slopes(12), twelve), ref.alibi_slopes(12)
    assert close(ref.alibi_slopes(6), [2.0 ** -e for e in (2, 4, 6, 8, 1, 3)]), ref.alibi_slopes(6)
    assert close(ref.alibi_slopes(4), [2.0 ** -e for e in (2, 4, 6, 8)]), ref.alibi_slopes(4)
    for n in range(1, 65):
        assert np.allclose(ref.alibi_slopes(n), jina_bert_torch.closed_form_slopes(n).double().numpy(),
                           rtol=1e-6), n
    print("ALiBi slopes: hand-checked for 4, 6, 12 heads; recursion = closed form for 1..64 heads")


def torch_model(config: dict, weights: dict):
    import torch

    import jina_bert_torch

    fields = {k: v for k, v in config.items() if k not in ("auto_map", "architectures", "model_type")}
    model = jina_bert_torch.JinaBertModel(jina_bert_torch.JinaBertConfig(**fields))
    missing = model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys, missing
    return model.eval()


def torch_hidden(model, inputs: dict) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = model(**{k: torch.from_numpy(np.asarray(v)) for k, v in inputs.items()})
    return out.last_hidden_state.numpy()


def candle_slopes(n: int) -> list[float]:
    """The slopes of candle's jina_bert.rs `build_alibi_bias` (the port SOURCES.md names):
    2^(-8/v) for v = 1..next power of two, reordered for other head counts."""
    n2 = 1 << (n - 1).bit_length()
    slopes = [1.0 / 2.0 ** (8.0 / v) for v in range(1, n2 + 1)]
    return slopes if n2 == n else (slopes[1::2] + slopes[0::2])[:n]


def mistakes(config: dict, weights: dict) -> dict:
    """Variants of the model as known-wrong ports compute it: (config, weights, slopes)."""
    out = {}
    by_hidden_act = {"gelu": "geglu", "relu": "reglu"}.get(config["hidden_act"])
    if by_hidden_act and by_hidden_act != config["feed_forward_type"]:
        out["activation from hidden_act"] = (dict(config, feed_forward_type=by_hidden_act), weights, None)
    swapped = dict(weights)
    inter = config["intermediate_size"]
    for k, v in weights.items():
        if k.endswith("mlp.gated_layers.weight"):
            swapped[k] = np.concatenate([v[inter:], v[:inter]])
    out["activation on the second half"] = (config, swapped, None)
    heads = config["num_attention_heads"]
    out["candle's slopes"] = (config, weights, candle_slopes(heads))
    if heads & (heads - 1):
        # 2^(-8(h+1)/n) for every n: the power-of-two formula applied where it does not hold.
        out["the power-of-two slope formula"] = (config, weights, [2.0 ** (-8.0 * (h + 1) / heads)
                                                                   for h in range(heads)])
    out["no ALiBi"] = (config, weights, [0.0] * heads)
    return out


def reference_with_slopes(config, weights, inputs, slopes):
    if slopes is None:
        return ref.forward(weights, config, **inputs)
    original = ref.alibi_slopes
    ref.alibi_slopes = lambda n: list(slopes)
    try:
        return ref.forward(weights, config, **inputs)
    finally:
        ref.alibi_slopes = original


def check_mistakes(name: str, config: dict, weights: dict, cases: list[tuple[dict, np.ndarray]]) -> None:
    for label, (cfg, w, slopes) in mistakes(config, weights).items():
        worst = max(float(np.abs(reference_with_slopes(cfg, w, inputs, slopes) - golden).max())
                    for inputs, golden in cases)
        if worst <= TRAP_MARGIN:
            raise SystemExit(f"{name}: a port with {label} would pass (max diff {worst:.2e})")
        print(f"  {label}: off by {worst:.2f}, caught")


# --------------------------------------------------------------------------------------------
# Encoder folders
# --------------------------------------------------------------------------------------------


def encode(tokenizer, texts) -> dict:
    enc = tokenizer(texts, padding=True, return_tensors="np")
    return {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}


def run_case(tokenizer, config, weights, model, texts):
    inputs = encode(tokenizer, texts)
    hidden = ref.forward(weights, config, **inputs)
    diff = float(np.abs(torch_hidden(model, inputs) - hidden).max())
    if diff > TORCH_TOLERANCE:
        raise SystemExit(f"NumPy reference and torch re-implementation differ by {diff}")
    case = {
        "texts": list(texts),
        "tokens": [tokenizer.convert_ids_to_tokens(row) for row in inputs["input_ids"].tolist()],
        "inputs": {k: tensor_json(v, dtype=int) for k, v in inputs.items()},
        "outputs": {"last_hidden_state": tensor_json(hidden)},
    }
    return case, inputs, hidden, diff


def write_encoder(name: str, seed: int, meta: dict) -> None:
    folder = ENCODERS / name
    if folder.exists():
        shutil.rmtree(folder)
    tokenizer, weights, config = write_checkpoint(folder, CONFIGS[name], seed)
    model = torch_model(config, weights)
    single, single_inputs, single_hidden, d1 = run_case(tokenizer, config, weights, model, [SINGLE])
    batch, batch_inputs, batch_hidden, d2 = run_case(tokenizer, config, weights, model, BATCH)
    print(f"{name}: NumPy vs torch max abs diff {max(d1, d2):.2e}; "
          f"longest {int(batch_inputs['attention_mask'].sum(1).max())} tokens")
    check_mistakes(name, config, weights, [(single_inputs, single_hidden), (batch_inputs, batch_hidden)])
    write_json(folder / "outputs.json", {
        "generator": GENERATOR,
        "versions": meta,
        "model": name,
        "class": "JinaBertModel",
        "seed": seed,
        "cases": {"single": single, "batch": batch},
    })
    print(f"wrote encoders/{name}")


# --------------------------------------------------------------------------------------------
# sentence-transformers layout
# --------------------------------------------------------------------------------------------


def by_hand(tokenizer, config, weights, texts, truncate_dim=None, normalize=False) -> np.ndarray:
    inputs = encode(tokenizer, texts)
    x = ref.mean_pool(ref.forward(weights, config, **inputs), inputs["attention_mask"])
    if truncate_dim is not None:
        x = x[:, :truncate_dim]
    if normalize:
        x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    return x


def st_case(name: str, st_model, hand, **kwargs) -> dict:
    got = st_model.encode(ST_TEXTS, convert_to_numpy=True, **{k: v for k, v in kwargs.items() if v is not None})
    diff = float(np.abs(got - hand).max())
    if diff > 1e-5:
        raise SystemExit(f"{name}: sentence-transformers and the hand computation differ by {diff}")
    print(f"  {name}: sentence-transformers vs by hand (NumPy reference) max abs diff {diff:.2e}")
    return {"name": name, **{k: v for k, v in kwargs.items() if v is not None}, "embeddings": floats(got)}


def write_st_layout(name: str, seed: int, meta: dict) -> None:
    from sentence_transformers import SentenceTransformer

    folder = ST_OUT / name
    if folder.exists():
        shutil.rmtree(folder)
    tokenizer, weights, config = write_checkpoint(folder, ST_CONFIG, seed)
    write_json(folder / "sentence_bert_config.json", {"max_seq_length": 8192, "do_lower_case": False}, indent=2)
    write_json(folder / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ], indent=2)
    write_json(folder / "1_Pooling" / "config.json", {
        "word_embedding_dimension": ST_CONFIG["hidden_size"], "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False,
    }, indent=2)
    # jina-embeddings-v2's file holds only the versions that wrote it: no prompts.
    write_json(folder / "config_sentence_transformers.json", {
        "__version__": {"sentence_transformers": "2.2.2", "transformers": "4.35.2", "pytorch": "2.1.0+cu121"},
    }, indent=2)

    with tempfile.TemporaryDirectory() as tmp:
        # A temporary copy whose auto_map names our torch re-implementation, copied beside it.
        run_dir = Path(tmp) / name
        shutil.copytree(folder, run_dir)
        shutil.copy(SCRIPTS / "jina_bert_torch.py", run_dir / "jina_bert_torch.py")
        local = dict(config, auto_map={"AutoConfig": "jina_bert_torch.JinaBertConfig",
                                       "AutoModel": "jina_bert_torch.JinaBertModel"})
        write_json(run_dir / "config.json", local, indent=2)
        st = SentenceTransformer(str(run_dir), device="cpu", trust_remote_code=True)
        assert type(st[0].auto_model).__name__ == "JinaBertModel", type(st[0].auto_model)
        assert st.max_seq_length == 8192, st.max_seq_length
        st8 = SentenceTransformer(str(run_dir), device="cpu", trust_remote_code=True, truncate_dim=8)
        cases = [
            st_case("default", st, by_hand(tokenizer, config, weights, ST_TEXTS)),
            st_case("truncate_dim", st8, by_hand(tokenizer, config, weights, ST_TEXTS, 8), truncate_dim=8),
            st_case("truncate_dim_normalized", st8, by_hand(tokenizer, config, weights, ST_TEXTS, 8, True),
                    truncate_dim=8, normalize_embeddings=True),
        ]
    write_json(folder / "outputs.json", {
        "generator": GENERATOR, "versions": meta, "layout": name, "seed": seed, "texts": ST_TEXTS,
        "prompts": {}, "default_prompt_name": None, "cases": cases,
    }, indent=1)
    print(f"wrote sentence-transformers/{name}")


def main() -> None:
    with tempfile.TemporaryDirectory() as modules_cache:
        # Dynamic modules of the temporary layout copy go to a throwaway cache, not ~/.cache.
        os.environ["HF_MODULES_CACHE"] = modules_cache
        import torch

        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(1)
        meta = versions()
        check_slopes()
        for offset, name in enumerate(CONFIGS):
            write_encoder(name, SEED + offset, meta)
        write_st_layout("jina-embed", SEED + len(CONFIGS), meta)


if __name__ == "__main__":
    main()
