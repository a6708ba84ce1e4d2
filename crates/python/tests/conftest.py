"""Shared fixtures of the safeformers Python package's tests.

Run by scripts/test-python.sh (part of scripts/test.sh): it builds the wheel with maturin,
installs it with numpy, ml_dtypes and pytest into a throwaway venv, and runs pytest here with
SAFEFORMERS_CLI pointing at the `safeformers` binary `cargo test` built, for the parity tests.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import struct
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytest

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "tests" / "fixtures" / "weights"
GOLDENS = Path(__file__).resolve().parent / "goldens" / "reference_loads.json"


def manifest_entries() -> List[Dict[str, Any]]:
    """Every entry of tests/fixtures/weights/MANIFEST.json (its README has the schema)."""
    return json.loads((FIXTURES / "MANIFEST.json").read_text())["entries"]


def allows_pickle(entry: Dict[str, Any]) -> bool:
    """Whether the entry's expectation is under `--allow-pickle` (else the default policy)."""
    return entry.get("policy", "default") == "allow_pickle"


def goldens() -> Dict[str, Any]:
    """crates/python/tests/goldens/reference_loads.json (scripts/make_python_goldens.py)."""
    return json.loads(GOLDENS.read_text())["files"]


def write_safetensors(
    path: Path,
    tensors: Dict[str, Tuple[str, Sequence[int], bytes]],
    metadata: Optional[Dict[str, str]] = None,
    header_padding: int = 0,
) -> None:
    """A safetensors file of `{name: (dtype, shape, bytes)}`, the tensors in that order.
    `header_padding` spaces pad the JSON header (an odd count misaligns every tensor)."""
    header: Dict[str, Any] = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [offset, offset + len(data)],
        }
        offset += len(data)
    text = json.dumps(header).encode()
    pad = (-len(text)) % 8 + header_padding
    text += b" " * pad
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(text)))
        out.write(text)
        for _, _, data in tensors.values():
            out.write(data)


@pytest.fixture(scope="session")
def cli() -> Path:
    """The `safeformers` CLI binary, for the tests that compare with it."""
    value = os.environ.get("SAFEFORMERS_CLI")
    if not value or not Path(value).is_file():
        pytest.fail(
            "SAFEFORMERS_CLI must name the safeformers binary (scripts/test-python.sh sets it "
            "after `cargo build -p safeformers-cli`); got " + repr(value)
        )
    return Path(value)


@pytest.fixture()
def empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty working directory: where a payload that ran would leave its traces."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    return workdir
