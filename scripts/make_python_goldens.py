#!/usr/bin/env python3
"""Writes `crates/python/tests/goldens/reference_loads.json`: what the reference readers give for
every checkpoint of `tests/fixtures/weights/` that must load, per tensor its torch dtype, shape
and the sha256 of its bytes. The Python package's tests (crates/python/tests/test_goldens.py)
compare safeformers' results with it bit for bit, without PyTorch, which is too heavy for CI.

Run by hand, never in CI; the output is committed. From the repository root:

    python3 -m venv ~/.cache/safeformers/venv-torch
    ~/.cache/safeformers/venv-torch/bin/pip install torch numpy safetensors
    ~/.cache/safeformers/venv-torch/bin/python scripts/make_python_goldens.py

(made with torch 2.15, safetensors 0.8, numpy 2.4, CPython 3.11.)

The reference reader of each file:

* pickle-based files under `benign/`: `torch.load(path, weights_only=True)`. torch's
  weights-only unpickler refuses pickle protocol 4 and 5 (FRAME), which `torch.save` itself
  writes when asked: for those two files (`zip_p4.pt`, `zip_p5.pt`, written by `torch.save` from
  this project's own tensors by scripts/make_weight_fixtures.py) the full `torch.load` is used,
  and the JSON says so.
* safetensors files and shard folders: `safetensors.torch.load_file` (the reference package),
  shard by shard for a folder.
* `benign/exotic_dtypes_raw.safetensors` (F6_E2M3 / F6_E3M2, which neither torch nor the
  reference can read): the byte ranges its header declares, read by this script.

SAFETY RULE (tests/fixtures/weights/README.md): nothing under `hostile/` is ever given to
`torch.load` or `pickle`; only the hostile safetensors samples that must load are read, by the
reference safetensors package (which runs no code).
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from pathlib import Path

import numpy
import safetensors
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "weights"
OUT = REPO / "crates" / "python" / "tests" / "goldens" / "reference_loads.json"

# Files neither torch nor the reference safetensors package reads.
HEADER_ONLY = {"benign/exotic_dtypes_raw.safetensors"}
# Written by torch.save with pickle protocol 4/5, which torch's weights-only loader refuses.
FULL_TORCH_LOAD = {"benign/zip_p4.pt", "benign/zip_p5.pt"}


def tensor_record(tensor: torch.Tensor) -> dict:
    flat = tensor.detach().contiguous().reshape(-1)
    data = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
    return {
        "dtype": str(tensor.dtype),
        "shape": list(tensor.shape),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def flatten(value, prefix: str, out: dict) -> None:
    """Nested dicts, lists and tuples as `.`-joined names; leaves that are not tensors ignored
    (the state-dict rules of crates/weights/src/torch.rs)."""
    if isinstance(value, torch.Tensor):
        out[prefix] = tensor_record(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            flatten(item, f"{prefix}.{index}" if prefix else str(index), out)


def from_header(path: Path) -> dict:
    """Tensors of a safetensors file from its own header, for dtypes no reference reads."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    data = raw[8 + length :]
    tensors = {}
    for name, info in sorted(header.items()):
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        tensors[name] = {
            "dtype": info["dtype"],
            "shape": info["shape"],
            "sha256": hashlib.sha256(data[start:end]).hexdigest(),
        }
    return tensors


def read(relative: str) -> tuple[str, dict]:
    path = FIXTURES / relative
    if relative in HEADER_ONLY:
        return "the header's byte ranges (no reference reader knows F6)", from_header(path)
    if path.is_dir():
        tensors: dict = {}
        for shard in sorted(path.glob("*.safetensors")):
            for name, tensor in load_file(shard).items():
                tensors[name] = tensor_record(tensor)
        return "safetensors.torch.load_file, per shard", tensors
    if path.read_bytes()[:8].startswith(b"PK") or relative.endswith((".pt", ".bin")):
        assert relative.startswith("benign/"), f"{relative}: hostile samples are never unpickled"
        weights_only = relative not in FULL_TORCH_LOAD
        tensors = {}
        flatten(torch.load(path, weights_only=weights_only), "", tensors)
        reader = f"torch.load(weights_only={weights_only})"
        if not weights_only:
            reader += " (torch's weights-only loader refuses protocol 4/5; torch.save wrote it)"
        return reader, tensors
    return "safetensors.torch.load_file", {
        name: tensor_record(tensor) for name, tensor in load_file(path).items()
    }


def main() -> None:
    manifest = json.loads((FIXTURES / "MANIFEST.json").read_text())
    files = {}
    for entry in manifest["entries"]:
        relative = entry["path"]
        if entry["expect"]["load"] != "ok":
            continue
        if relative.startswith("hostile/") and not (
            relative.endswith(".safetensors") or relative.startswith("hostile/shards/")
        ):
            continue  # the safety rule: no hostile pickle or torch file is read here
        reader, tensors = read(relative)
        files[relative] = {"reader": reader, "tensors": dict(sorted(tensors.items()))}
        print(f"{relative}: {len(tensors)} tensors ({reader})", file=sys.stderr)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "about": "Per file, what the reference reader gives: each tensor's torch dtype (or the "
        "safetensors dtype where no reference reads it), shape and sha256 of its contiguous "
        "bytes. See the generator's docstring.",
        "generator": "scripts/make_python_goldens.py",
        "versions": {
            "torch": torch.__version__,
            "safetensors": safetensors.__version__,
            "numpy": numpy.__version__,
            "python": sys.version.split()[0],
        },
        "files": files,
    }
    OUT.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {OUT.relative_to(REPO)}: {len(files)} files", file=sys.stderr)


if __name__ == "__main__":
    main()
