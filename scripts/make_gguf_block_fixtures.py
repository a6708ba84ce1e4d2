#!/usr/bin/env python3
"""Writes the GGUF block-format goldens into `tests/fixtures/gguf-blocks/blocks.json`.

Run by hand, never in CI; the output is committed. From the repository root:

    ~/.cache/safeformers/venv-torch/bin/python scripts/make_gguf_block_fixtures.py

For every block format safeformers reads (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K,
Q6_K), the case holds a few blocks of deterministic pseudo-random bytes (hex) whose f16 scale
fields are overwritten with ordinary values (random bytes would make NaN and infinity), and the
values the PyPI `gguf` package's `gguf.quants.dequantize` gives for them, as f32 bit patterns
(exact comparison). The `gguf` version is written into the JSON.
"""

from __future__ import annotations

import json
import random
import struct
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import quants
from importlib.metadata import version

OUT = Path("tests/fixtures/gguf-blocks/blocks.json")
BLOCKS = 3

# Format: (ggml type, block bytes, byte offsets of its f16 fields).
FORMATS = {
    "Q4_0": (gguf.GGMLQuantizationType.Q4_0, 18, [0]),
    "Q4_1": (gguf.GGMLQuantizationType.Q4_1, 20, [0, 2]),
    "Q5_0": (gguf.GGMLQuantizationType.Q5_0, 22, [0]),
    "Q5_1": (gguf.GGMLQuantizationType.Q5_1, 24, [0, 2]),
    "Q8_0": (gguf.GGMLQuantizationType.Q8_0, 34, [0]),
    "Q2_K": (gguf.GGMLQuantizationType.Q2_K, 84, [80, 82]),
    "Q3_K": (gguf.GGMLQuantizationType.Q3_K, 110, [108]),
    "Q4_K": (gguf.GGMLQuantizationType.Q4_K, 144, [0, 2]),
    "Q5_K": (gguf.GGMLQuantizationType.Q5_K, 176, [0, 2]),
    "Q6_K": (gguf.GGMLQuantizationType.Q6_K, 210, [208]),
}


def main() -> int:
    rng = random.Random(20261207)
    cases = {}
    for name, (qtype, block_bytes, halves) in FORMATS.items():
        assert gguf.GGML_QUANT_SIZES[qtype][1] == block_bytes, name
        raw = bytearray(rng.getrandbits(8) for _ in range(BLOCKS * block_bytes))
        for block in range(BLOCKS):
            for offset in halves:
                value = rng.uniform(-0.05, 0.05) if offset == halves[0] else rng.uniform(0, 0.02)
                at = block * block_bytes + offset
                raw[at:at + 2] = np.float16(value).tobytes()
        values = quants.dequantize(np.frombuffer(bytes(raw), dtype=np.uint8), qtype)
        values = np.asarray(values, dtype=np.float32).reshape(-1)
        cases[name] = {
            "block_values": int(gguf.GGML_QUANT_SIZES[qtype][0]),
            "block_bytes": block_bytes,
            "bytes": bytes(raw).hex(),
            "f32_bits": [int(bits) for bits in values.view(np.uint32)],
        }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    document = {"gguf": version("gguf"), "formats": cases}
    OUT.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {OUT}: {', '.join(cases)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
