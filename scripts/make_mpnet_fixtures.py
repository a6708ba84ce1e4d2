#!/usr/bin/env python3
"""Writes the MPNet golden fixtures: tiny random `MPNetModel` checkpoints in
`tests/fixtures/encoders/mpnet*/` and an all-mpnet-base-v2-shaped sentence-transformers layout in
`tests/fixtures/sentence-transformers/mpnet-embed/`.

Run by hand, never in CI; the outputs are committed. From the repository root:

    HF_HUB_OFFLINE=1 ~/.cache/safeformers/venv-torch/bin/python scripts/make_mpnet_fixtures.py

The venv is the one `scripts/make_model_fixtures.py` describes, with sentence-transformers in it
(made with torch 2.15.0, transformers 5.25.0, sentence-transformers 6.3.0, tokenizers 0.23.3,
numpy 2.4.6, CPython 3.11.7; the exact versions are written into every `outputs.json`).

Nothing is fetched from the Hub. What it writes:

* `encoders/mpnet/`, `encoders/mpnet-3heads/`: `config.json` + `model.safetensors`
  (`MPNetModel.save_pretrained`, eager attention, so tensor names are the bare model's:
  `embeddings.*`, `encoder.layer.N.attention.attn.{q,k,v,o}`, `encoder.relative_attention_bias`,
  `pooler.dense`, as all-mpnet-base-v2's checkpoint names them), the tokenizer files and
  `outputs.json` (inputs and `last_hidden_state` for one sequence and a right-padded batch of
  three), in the format of `tests/fixtures/models/bert/outputs.json`.
* `sentence-transformers/mpnet-embed/`: the same kind of model in all-mpnet-base-v2's layout
  (Transformer, mean Pooling, Normalize; no prompts) with the embeddings
  `SentenceTransformer.encode` gives, computed a second time by hand (mean over the attention
  mask, L2 normalization, truncation); the script refuses to write if the two differ by > 1e-5.

The tokenizer is MPNet's: `MPNetTokenizer` (WordPiece, lowercase, `<s> A </s>` /
`<s> A </s></s> B </s>` via `RobertaProcessing`, `<pad>` = 1) over the committed BERT fixture
vocabulary (`tests/fixtures/models/bert/tokenizer.json`, 204 pieces) shifted by the four ids
`<s> <pad> </s> <unk>` in front and with `<mask>` appended, exactly as microsoft/mpnet-base's
vocabulary extends bert-base-uncased's (so `[UNK]` is id 5 and the unknown token, as in MPNet's).

What the goldens pin down: MPNet's relative position bias always uses 32 buckets
(`compute_position_bias` is called with its default `num_buckets=32`, whatever the config
says), 8 exact distances and 8 log-spaced ones per direction up to `max_distance` 128, where
distances ≥ 128 are clamped to the last bucket. The batches hold sequences of 76 (`mpnet`: the
log buckets at distances 16, 32 and 64) and 149 (`mpnet-3heads`) tokens, so the latter uses every
bucket a pair of positions can reach (31 of 32: bucket 16 would be "later, distance 0"),
including the clamp. Position ids start at
`padding_idx + 1` = 2 and padding tokens get position 1 (RoBERTa's scheme, computed from
`input_ids != 1`). The bucket table (`encoder.relative_attention_bias.weight`) is drawn with
σ 1.0, so a wrong bucket moves the output well beyond the tolerance.

The goldens are the outputs of a float64 copy of each model (`model.double()`), written as float32
values: the stored numbers carry no float32 rounding of their own, and the script checks that
the float32 model is within 3e-5 of them (it is within 2e-5).

Random models: every parameter, including biases and LayerNorm weights, is redrawn from a normal
distribution under a fixed seed (matrices σ 0.4, vectors σ 0.1 around 0, or around 1 for
LayerNorm weights), as `make_model_fixtures.py` does.
"""

from __future__ import annotations

import copy
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
ENCODERS = REPO / "tests" / "fixtures" / "encoders"
ST_OUT = REPO / "tests" / "fixtures" / "sentence-transformers"
BERT_TOKENIZER = REPO / "tests" / "fixtures" / "models" / "bert" / "tokenizer.json"
GENERATOR = "scripts/make_mpnet_fixtures.py"
SEED = 20251216
# How far float32 may be from float64 on a golden's inputs: a model worse conditioned than this
# could fail the tests' 1e-4 through float32 rounding alone.
FLOAT32_TOLERANCE = 3e-5

SINGLE = "My name is Sarah and I live in London."
# 76 tokens with <s> and </s>: distances 0..75 reach bucket 14 (the log buckets at 16, 32, 64).
LONG = (
    "Where does Sarah live? She lives in London, near the river. Clara moved from Paris to New York "
    "in 2019. Clara works in Paris as an engineer at a small company. The capital of France is Paris, "
    "and the capital of Germany is Berlin. The weather is nice today, so we walk to the park."
)
# 149 tokens: distances up to 148 reach the last bucket and the clamp at max_distance 128.
LONGER = LONG + (
    " We went to the market and bought apples, bread and cheese. The cat sat on the mat and looked "
    "at the bird. Everyone loves a good story about a brave knight. He reads books about history, "
    "science and art. Safe formats store only tensors, never code. Good morning."
)
BATCHES = {
    "mpnet": ["Hello world!", "The quick brown fox jumps over the lazy dog.", LONG],
    "mpnet-3heads": ["Hello world!", "Rust is a safe and fast programming language.", LONGER],
}
# Tiny configurations: what differs is the head count (4, and 3: not a power of two), the depth,
# the activation, LayerNorm eps and max_position_embeddings. relative_attention_num_buckets stays
# 32: MPNet ignores the value when computing buckets (see the docstring), so it is not a knob.
CONFIGS = {
    "mpnet": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                  hidden_act="gelu", max_position_embeddings=80, layer_norm_eps=1e-5),
    "mpnet-3heads": dict(hidden_size=36, num_hidden_layers=3, num_attention_heads=3, intermediate_size=50,
                         hidden_act="gelu_new", max_position_embeddings=160, layer_norm_eps=1e-12),
}
# The longest sequence must reach the distance 64 (`mpnet`) and the clamp at 128 (`mpnet-3heads`).
MIN_LONGEST = {"mpnet": 65, "mpnet-3heads": 129}

# The sentence-transformers layout: all-mpnet-base-v2's shape at tiny size (max_position_embeddings
# 514, max_seq_length 384, LayerNorm eps 1e-5, architectures MPNetForMaskedLM).
ST_CONFIG = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                 hidden_act="gelu", max_position_embeddings=514, layer_norm_eps=1e-5)
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


def tensor_json(t, dtype=float) -> dict:
    """A tensor as {"shape": [...], "data": nested lists}; floats are float32 values written with
    8 significant digits."""
    arr = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    if dtype is float:
        data = np.vectorize(round_sig, otypes=[float])(arr.astype(np.float32)).tolist()
    else:
        data = arr.astype(np.int64).tolist()
    return {"shape": list(arr.shape), "data": data}


def write_json(path: Path, value, indent=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(value, indent=indent, ensure_ascii=False, separators=None if indent else (",", ":"))
    path.write_text(text + "\n", encoding="utf-8")


def build_tokenizer(model_max_length: int):
    """MPNetTokenizer over the BERT fixture vocabulary, extended as mpnet-base extends BERT's."""
    from transformers import MPNetTokenizer

    bert = json.loads(BERT_TOKENIZER.read_text())["model"]["vocab"]
    pieces = [w for w, _ in sorted(bert.items(), key=lambda kv: kv[1])]
    vocab = ["<s>", "<pad>", "</s>", "<unk>"] + pieces + ["<mask>"]
    return MPNetTokenizer(vocab={w: i for i, w in enumerate(vocab)}, model_max_length=model_max_length)


def save_tokenizer(tokenizer, folder: Path) -> None:
    tokenizer.save_pretrained(folder)
    # Transformers 5 no longer writes special_tokens_map.json; write what Transformers 4 did.
    write_json(folder / "special_tokens_map.json",
               {k: str(v) for k, v in tokenizer.special_tokens_map.items()}, indent=2)


def randomize(model, seed: int) -> None:
    """Redraws every parameter (see the docstring); the bucket table with σ 1.0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("relative_attention_bias.weight"):
                p.copy_(torch.randn(p.shape, generator=g))
            elif p.ndim == 1:
                mean = 1.0 if "norm" in name.lower() and name.endswith("weight") else 0.0
                p.copy_(mean + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.4 * torch.randn(p.shape, generator=g))


def build_model(config_kwargs: dict, vocab_size: int, seed: int):
    from transformers import MPNetConfig, MPNetModel

    torch.manual_seed(seed)
    config = MPNetConfig(vocab_size=vocab_size, relative_attention_num_buckets=32, pad_token_id=1,
                         bos_token_id=0, eos_token_id=2, **config_kwargs)
    model = MPNetModel._from_config(config, attn_implementation="eager")
    randomize(model, seed)
    model.eval()
    return model


def run_case(model, model64, tokenizer, texts) -> dict:
    """Inputs and `last_hidden_state`: the float64 copy's, checked against float32's."""
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    inputs = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
    with torch.no_grad():
        out = model64(**inputs)
        diff = float((model(**inputs).last_hidden_state.double() - out.last_hidden_state).abs().max())
    if diff > FLOAT32_TOLERANCE:
        raise SystemExit(f"float32 is {diff} from float64: too ill-conditioned for the tests' 1e-4")
    print(f"  {len(texts)} text(s): float32 vs float64 max abs diff {diff:.2e}")
    return {
        "texts": list(texts),
        "tokens": [tokenizer.convert_ids_to_tokens(row) for row in enc["input_ids"].tolist()],
        "inputs": {k: tensor_json(v, dtype=int) for k, v in inputs.items()},
        "outputs": {"last_hidden_state": tensor_json(out.last_hidden_state)},
    }


def check_buckets(longest: int) -> None:
    """The buckets the longest sequence uses, both directions: all 32 when it passes 128."""
    from transformers.models.mpnet.modeling_mpnet import MPNetEncoder

    pos = torch.arange(longest)
    used = MPNetEncoder.relative_position_bucket(pos[None, :] - pos[:, None]).unique().tolist()
    print(f"  {longest} tokens use {len(used)} buckets: {used}")


def write_encoder(name: str, seed: int, meta: dict) -> None:
    folder = ENCODERS / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    config = CONFIGS[name]
    tokenizer = build_tokenizer(config["max_position_embeddings"] - 2)
    model = build_model(config, len(tokenizer), seed)
    model.save_pretrained(folder, safe_serialization=True)
    save_tokenizer(tokenizer, folder)
    model64 = copy.deepcopy(model).double()
    batch = run_case(model, model64, tokenizer, BATCHES[name])
    longest = max(sum(row) for row in batch["inputs"]["attention_mask"]["data"])
    if not MIN_LONGEST[name] <= longest <= config["max_position_embeddings"] - 2:
        raise SystemExit(f"{name}: longest sequence is {longest} tokens, outside "
                         f"[{MIN_LONGEST[name]}, {config['max_position_embeddings'] - 2}]")
    check_buckets(longest)
    write_json(folder / "outputs.json", {
        "generator": GENERATOR,
        "versions": meta,
        "model": name,
        "class": type(model).__name__,
        "seed": seed,
        "cases": {"single": run_case(model, model64, tokenizer, [SINGLE]), "batch": batch},
    })
    print(f"wrote encoders/{name}")


# --------------------------------------------------------------------------------------------
# sentence-transformers layout
# --------------------------------------------------------------------------------------------


def by_hand(model, tokenizer, texts, truncate_dim=None, normalize_after=False):
    """Transformers alone: right-padded batch, mean over the attention mask, Normalize,
    truncation, optional normalization."""
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        x = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        x = torch.nn.functional.normalize(x, p=2, dim=-1)
        if truncate_dim is not None:
            x = x[:, :truncate_dim]
        if normalize_after:
            x = torch.nn.functional.normalize(x, p=2, dim=-1)
    return x.numpy()


def st_case(name: str, st_model, hand, **kwargs) -> dict:
    got = st_model.encode(ST_TEXTS, convert_to_numpy=True, **{k: v for k, v in kwargs.items() if v is not None})
    diff = float(np.abs(got - hand).max())
    if diff > 1e-5:
        raise SystemExit(f"{name}: sentence-transformers and the hand computation differ by {diff}")
    print(f"  {name}: sentence-transformers vs by hand max abs diff {diff:.2e}")
    return {"name": name, **{k: v for k, v in kwargs.items() if v is not None},
            "embeddings": np.vectorize(round_sig, otypes=[float])(np.asarray(got, np.float32)).tolist()}


def write_st_layout(name: str, seed: int, meta: dict) -> None:
    from sentence_transformers import SentenceTransformer

    folder = ST_OUT / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    tokenizer = build_tokenizer(512)
    model = build_model(ST_CONFIG, len(tokenizer), seed)
    model.save_pretrained(folder, safe_serialization=True)
    save_tokenizer(tokenizer, folder)
    # all-mpnet-base-v2's config.json names the masked-LM class; its checkpoint is the bare model.
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["MPNetForMaskedLM"]
    write_json(folder / "config.json", config, indent=2)
    write_json(folder / "sentence_bert_config.json", {"max_seq_length": 384, "do_lower_case": False}, indent=2)
    write_json(folder / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ], indent=2)
    # The four keys of all-mpnet-base-v2's pooling config (written by sentence-transformers 2.0).
    write_json(folder / "1_Pooling" / "config.json", {
        "word_embedding_dimension": ST_CONFIG["hidden_size"], "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }, indent=2)
    (folder / "2_Normalize").mkdir()
    # all-mpnet-base-v2's file holds only the versions that wrote it: no prompts.
    write_json(folder / "config_sentence_transformers.json", {
        "__version__": {"sentence_transformers": "2.0.0", "transformers": "4.6.1", "pytorch": "1.8.1"},
    }, indent=2)

    st = SentenceTransformer(str(folder), device="cpu")
    assert st.max_seq_length == 384, st.max_seq_length
    st8 = SentenceTransformer(str(folder), device="cpu", truncate_dim=8)
    cases = [
        st_case("default", st, by_hand(model, tokenizer, ST_TEXTS)),
        st_case("truncate_dim", st8, by_hand(model, tokenizer, ST_TEXTS, 8), truncate_dim=8),
        st_case("truncate_dim_normalized", st8, by_hand(model, tokenizer, ST_TEXTS, 8, True),
                truncate_dim=8, normalize_embeddings=True),
    ]
    write_json(folder / "outputs.json", {
        "generator": GENERATOR, "versions": meta, "layout": name, "seed": seed, "texts": ST_TEXTS,
        "prompts": {}, "default_prompt_name": None, "cases": cases,
    }, indent=1)
    print(f"wrote sentence-transformers/{name}")


def main() -> None:
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    meta = versions()
    write_encoder("mpnet", SEED, meta)
    write_encoder("mpnet-3heads", SEED + 1, meta)
    write_st_layout("mpnet-embed", SEED + 2, meta)


if __name__ == "__main__":
    main()
