#!/usr/bin/env python3
"""Writes the logits-processor goldens into `tests/fixtures/generation/`.

Run by hand, never in CI; the output is committed. From the repository root:

    ~/.cache/safeformers/venv-torch/bin/python scripts/make_generation_fixtures.py

(made with torch 2.15 and transformers 5.23; the exact versions are written into the JSON file.)

Transformers' own processor classes (`transformers.generation.logits_process`) are applied to
fixed random float32 scores and fixed token ids, alone and chained in the order
`GenerationMixin._get_logits_processor` builds them (repetition penalty, EOS suppression for a
minimum number of new tokens, then temperature, top-k, top-p, min-p). Nothing is fetched and no
model is involved; the output is byte-for-byte reproducible.

`processors.json`: `{"versions", "generator", "input_ids": [[..]] (batch x seq),
"scores": [[..]] (batch x vocab), "cases": [{"name", "processors": [{"kind", "value"}, ..],
"prompt_length", "eos_token_id": [..], "output": [[..]]}]}`. Removed scores (`-inf`) are written
as `null`, which JSON has no float for.
"""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinNewTokensLengthLogitsProcessor,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "generation"
GENERATOR = "scripts/make_generation_fixtures.py"

BATCH = 3
VOCAB = 32
SEQ = 8
EOS = [3, 17]


def build(kind: str, value, prompt_length: int):
    if kind == "repetition_penalty":
        return RepetitionPenaltyLogitsProcessor(penalty=value)
    if kind == "min_new_tokens":
        return MinNewTokensLengthLogitsProcessor(
            prompt_length_to_skip=prompt_length, min_new_tokens=value, eos_token_id=EOS
        )
    if kind == "temperature":
        return TemperatureLogitsWarper(temperature=value)
    if kind == "top_k":
        return TopKLogitsWarper(top_k=value)
    if kind == "top_p":
        return TopPLogitsWarper(top_p=value)
    if kind == "min_p":
        return MinPLogitsWarper(min_p=value)
    raise ValueError(kind)


# (name, [(kind, value)], prompt_length): prompt_length decides whether min_new_tokens is still
# suppressing EOS (the input ids are SEQ long: SEQ - prompt_length tokens are "new").
CASES = [
    ("repetition_penalty_1.3", [("repetition_penalty", 1.3)], SEQ),
    ("repetition_penalty_0.7", [("repetition_penalty", 0.7)], SEQ),
    ("temperature_0.7", [("temperature", 0.7)], SEQ),
    ("temperature_1.9", [("temperature", 1.9)], SEQ),
    ("top_k_1", [("top_k", 1)], SEQ),
    ("top_k_5", [("top_k", 5)], SEQ),
    ("top_k_50", [("top_k", 50)], SEQ),
    ("top_p_0.5", [("top_p", 0.5)], SEQ),
    ("top_p_0.9", [("top_p", 0.9)], SEQ),
    ("top_p_0.0", [("top_p", 0.0)], SEQ),
    ("min_p_0.1", [("min_p", 0.1)], SEQ),
    ("min_p_0.5", [("min_p", 0.5)], SEQ),
    ("min_new_tokens_active", [("min_new_tokens", 4)], SEQ - 2),
    ("min_new_tokens_done", [("min_new_tokens", 2)], SEQ - 2),
    (
        "chain_penalty_temperature_top_k_top_p",
        [("repetition_penalty", 1.2), ("temperature", 0.8), ("top_k", 10), ("top_p", 0.8)],
        SEQ,
    ),
    (
        "chain_all",
        [
            ("repetition_penalty", 1.5),
            ("min_new_tokens", 5),
            ("temperature", 0.6),
            ("top_k", 20),
            ("top_p", 0.95),
            ("min_p", 0.05),
        ],
        SEQ - 1,
    ),
    ("chain_temperature_min_p", [("temperature", 1.3), ("min_p", 0.2)], SEQ),
]


def to_json_row(row: np.ndarray) -> list:
    return [None if math.isinf(v) and v < 0 else float(v) for v in row.tolist()]


def main() -> None:
    rng = np.random.default_rng(20261124)
    scores = (rng.standard_normal((BATCH, VOCAB)) * 3.0).astype(np.float32)
    # Repeated ids, an EOS id in the prompt of one row, and a pad-like 0 run, as in a batch.
    input_ids = rng.integers(0, VOCAB, size=(BATCH, SEQ)).astype(np.int64)
    input_ids[0, :3] = 0
    input_ids[1, 5] = EOS[0]
    input_ids[2, 4:] = input_ids[2, 0]

    cases = []
    for name, processors, prompt_length in CASES:
        chain = LogitsProcessorList(build(kind, value, prompt_length) for kind, value in processors)
        out = chain(torch.from_numpy(input_ids), torch.from_numpy(scores.copy()))
        cases.append(
            {
                "name": name,
                "processors": [{"kind": kind, "value": value} for kind, value in processors],
                "prompt_length": prompt_length,
                "eos_token_id": EOS,
                "output": [to_json_row(row) for row in out.numpy().astype(np.float32)],
            }
        )

    document = {
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "generator": GENERATOR,
        "input_ids": input_ids.tolist(),
        "scores": [to_json_row(row) for row in scores],
        "cases": cases,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "processors.json").write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {OUT / 'processors.json'} ({len(cases)} cases)")


if __name__ == "__main__":
    main()
