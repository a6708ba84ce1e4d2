#!/usr/bin/env python3
"""Writes the rotary-embedding goldens into `tests/fixtures/rope/rope.json`.

Run by hand, never in CI; the output is committed. From the repository root:

    ~/.cache/safeformers/venv-torch/bin/python scripts/make_rope_fixtures.py

(made with torch 2.15 and transformers 5.23; the exact versions are written into the JSON.)

For every RoPE variant Transformers 5 supports for Llama-family models (default, linear, dynamic
NTK, llama3, yarn with and without truncation / mscale / an explicit attention factor, Phi-3's
longrope with short and long factors, partial rotary), the case holds:

* `config`: the `config.json` fields, written either the Transformers-4 way (`rope_scaling` +
  top-level `rope_theta`) or the 5 way (`rope_parameters`), as a checkpoint would have them;
* `position_ids` `[batch, seq]`, chosen below and above the original context length where the
  variant switches on it;
* `inv_freq` and `attention_scaling` after the forward (dynamic and longrope recompute them from
  `max(position_ids) + 1`), and `cos` / `sin` `[batch, seq, rotary_dim]` exactly as the model's
  own rotary class (`LlamaRotaryEmbedding`, `Phi3RotaryEmbedding`) returns them in float32.

Nothing is random and nothing is fetched; the output is byte-for-byte reproducible.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "rope"
GENERATOR = "scripts/make_rope_fixtures.py"

# A tiny Llama-shaped config: head_dim 16 (8 frequencies), 32 positions unless a case says more.
BASE = {
    "hidden_size": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "vocab_size": 16,
    "max_position_embeddings": 32,
}

SHORT = [[0, 1, 2, 3, 4, 5, 6, 7], [1, 1, 0, 1, 2, 3, 4, 5]]  # second row: left padding
LONG = [[0, 9, 20, 31, 32, 40, 63, 100]]  # crosses 32 and reaches past 64


def cases() -> list[tuple[str, str, dict, list[list[int]]]]:
    """(name, class, config fields, position_ids)."""
    out = [
        ("default", "llama", {"rope_theta": 10000.0}, SHORT),
        ("default_theta_v5", "llama", {"rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}}, LONG),
        ("linear_v4", "llama", {"rope_theta": 10000.0, "rope_scaling": {"type": "linear", "factor": 2.0}}, LONG),
        ("linear_v5", "llama", {"rope_parameters": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1000.0}}, SHORT),
        # Dynamic NTK: unchanged within 32 positions, recomputed from max(position_ids) + 1 beyond.
        ("dynamic_short", "llama", {"rope_theta": 10000.0, "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, SHORT),
        ("dynamic_long", "llama", {"rope_theta": 10000.0, "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, LONG),
        (
            "llama3",
            "llama",
            {
                "max_position_embeddings": 4096,
                "rope_parameters": {
                    "rope_type": "llama3",
                    "rope_theta": 10000.0,
                    "factor": 8.0,
                    "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 1024,
                },
            },
            LONG,
        ),
        (
            "yarn",
            "llama",
            {
                "max_position_embeddings": 128,
                "rope_theta": 10000.0,
                "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32},
            },
            LONG,
        ),
        (
            "yarn_no_truncate_betas",
            "llama",
            {
                "max_position_embeddings": 128,
                "rope_parameters": {
                    "rope_type": "yarn",
                    "rope_theta": 10000.0,
                    "factor": 4.0,
                    "original_max_position_embeddings": 32,
                    "beta_fast": 16.0,
                    "beta_slow": 2.0,
                    "truncate": False,
                },
            },
            LONG,
        ),
        (
            "yarn_mscale",
            "llama",
            {
                "max_position_embeddings": 128,
                "rope_parameters": {
                    "rope_type": "yarn",
                    "rope_theta": 10000.0,
                    "factor": 4.0,
                    "original_max_position_embeddings": 32,
                    "mscale": 0.707,
                    "mscale_all_dim": 1.0,
                },
            },
            SHORT,
        ),
        (
            "yarn_attention_factor",
            "llama",
            {
                "max_position_embeddings": 128,
                "rope_parameters": {
                    "rope_type": "yarn",
                    "rope_theta": 10000.0,
                    "factor": 4.0,
                    "original_max_position_embeddings": 32,
                    "attention_factor": 0.5,
                },
            },
            SHORT,
        ),
        (
            "yarn_no_factor",
            "llama",
            {
                "max_position_embeddings": 96,
                "rope_parameters": {
                    "rope_type": "yarn",
                    "rope_theta": 10000.0,
                    "factor": None,
                    "original_max_position_embeddings": 32,
                },
            },
            SHORT,
        ),
    ]
    short_factor = [1.0, 1.1, 1.3, 1.7, 2.0, 2.5, 3.0, 4.0]
    long_factor = [1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0]
    longrope = {
        "max_position_embeddings": 128,
        "original_max_position_embeddings": 32,
        "rope_theta": 10000.0,
        "rope_scaling": {"type": "longrope", "short_factor": short_factor, "long_factor": long_factor},
    }
    out += [
        ("phi3_default", "phi3", {"rope_theta": 10000.0}, SHORT),
        ("phi3_longrope_short", "phi3", longrope, SHORT),
        ("phi3_longrope_long", "phi3", longrope, LONG),
        (
            "phi3_partial",
            "phi3",
            {
                "rope_theta": 10000.0,
                "partial_rotary_factor": 0.5,
                "max_position_embeddings": 128,
                "original_max_position_embeddings": 32,
                "rope_scaling": {
                    "type": "longrope",
                    "short_factor": short_factor[:4],
                    "long_factor": long_factor[:4],
                },
            },
            LONG,
        ),
    ]
    return out


def round_sig(x: float, digits: int = 8) -> float:
    return float(f"{x:.{digits}g}")


def floats(t: torch.Tensor):
    arr = t.detach().cpu().numpy().astype(np.float32)
    return np.vectorize(round_sig, otypes=[float])(arr).tolist()


def main() -> None:
    import transformers
    from transformers import LlamaConfig, Phi3Config
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
    from transformers.models.phi3.modeling_phi3 import Phi3RotaryEmbedding

    classes = {
        "llama": (LlamaConfig, LlamaRotaryEmbedding, "llama"),
        "phi3": (Phi3Config, Phi3RotaryEmbedding, "phi3"),
    }
    result = []
    for name, kind, fields, positions in cases():
        config_class, rotary_class, model_type = classes[kind]
        config_json = dict(BASE, model_type=model_type, **fields)
        config = config_class.from_dict(json.loads(json.dumps(config_json)))
        rotary = rotary_class(config)
        position_ids = torch.tensor(positions, dtype=torch.int64)
        x = torch.zeros(1, dtype=torch.float32)
        with torch.no_grad():
            cos, sin = rotary(x, position_ids)
        result.append(
            {
                "name": name,
                "config": config_json,
                "position_ids": positions,
                "inv_freq": floats(rotary.inv_freq),
                "attention_scaling": float(rotary.attention_scaling),
                "cos": floats(cos),
                "sin": floats(sin),
            }
        )
    OUT.mkdir(parents=True, exist_ok=True)
    document = {
        "generator": GENERATOR,
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "numpy": np.__version__,
        },
        "cases": result,
    }
    (OUT / "rope.json").write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(result)} cases to {OUT / 'rope.json'}")


if __name__ == "__main__":
    main()
