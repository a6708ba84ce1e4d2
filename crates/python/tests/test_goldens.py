"""Every checkpoint that must load gives, bit for bit, what the reference readers give.

The goldens (goldens/reference_loads.json) were made by scripts/make_python_goldens.py with
`torch.load(weights_only=True)` and the reference `safetensors` package, run by hand: PyTorch is
too heavy for CI. Without PyTorch, the tensors `safeformers.torch.load` would hand to
`torch.from_numpy` (`Checkpoint.arrays(memory="copy_on_write", target="torch")`) are compared with them: their dtype as
torch names it, their shape and the sha256 of their bytes. test_torch.py compares
`safeformers.torch.load` itself where PyTorch is installed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Dict, List

import ml_dtypes
import numpy as np
import pytest

import safeformers
from safeformers import _native
from conftest import FIXTURES, goldens, write_safetensors

GOLDENS = goldens()

# The torch dtype `safeformers.torch.load` gives for each safetensors dtype.
TORCH_DTYPE = {
    "BOOL": "torch.bool",
    "U8": "torch.uint8",
    "I8": "torch.int8",
    "I16": "torch.int16",
    "U16": "torch.uint16",
    "F16": "torch.float16",
    "BF16": "torch.bfloat16",
    "I32": "torch.int32",
    "U32": "torch.uint32",
    "F32": "torch.float32",
    "C64": "torch.complex64",
    "F64": "torch.float64",
    "I64": "torch.int64",
    "U64": "torch.uint64",
    "F8_E5M2": "torch.float8_e5m2",
    "F8_E4M3": "torch.float8_e4m3fn",
    "F8_E8M0": "torch.float8_e8m0fnu",
    "F8_E4M3FNUZ": "torch.float8_e4m3fnuz",
    "F8_E5M2FNUZ": "torch.float8_e5m2fnuz",
    "F4": "torch.float4_e2m1fn_x2",
}

# The numpy (or ml_dtypes) dtype `safeformers.load_checkpoint` gives.
NUMPY_DTYPE = {
    "BOOL": np.dtype(bool),
    "U8": np.dtype(np.uint8),
    "I8": np.dtype(np.int8),
    "I16": np.dtype("<i2"),
    "U16": np.dtype("<u2"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I32": np.dtype("<i4"),
    "U32": np.dtype("<u4"),
    "F32": np.dtype("<f4"),
    "C64": np.dtype("<c8"),
    "F64": np.dtype("<f8"),
    "I64": np.dtype("<i8"),
    "U64": np.dtype("<u8"),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E8M0": np.dtype(ml_dtypes.float8_e8m0fnu),
    "F8_E4M3FNUZ": np.dtype(ml_dtypes.float8_e4m3fnuz),
    "F8_E5M2FNUZ": np.dtype(ml_dtypes.float8_e5m2fnuz),
    "F4": np.dtype(ml_dtypes.float4_e2m1fn),
    "F6_E2M3": np.dtype(ml_dtypes.float6_e2m3fn),
    "F6_E3M2": np.dtype(ml_dtypes.float6_e3m2fn),
}


def sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def repack(dtype: str, unpacked: np.ndarray) -> bytes:
    """Sub-byte values, one per byte as load_checkpoint gives them, packed back as the file
    holds them (crates/weights/src/convert.rs: F4 low nibble first; F6 four values in a
    little-endian 24-bit word, least significant bits first)."""
    values = unpacked.reshape(-1).view(np.uint8).astype(np.uint32)
    if dtype == "F4":
        return (values[0::2] | values[1::2] << 4).astype(np.uint8).tobytes()
    words = values[0::4] | values[1::4] << 6 | values[2::4] << 12 | values[3::4] << 18
    return b"".join(int(word).to_bytes(3, "little") for word in words)


def open_checkpoint(relative: str) -> Any:
    return _native.Checkpoint.open(FIXTURES / relative, allow_pickle=True)


def test_goldens_cover_every_checkpoint_that_must_load() -> None:
    assert len(GOLDENS) >= 30
    assert all(GOLDENS[relative]["tensors"] for relative in GOLDENS)


@pytest.mark.parametrize("relative", sorted(GOLDENS))
def test_what_torch_load_would_get(relative: str) -> None:
    expected: Dict[str, Any] = GOLDENS[relative]["tensors"]
    checkpoint = open_checkpoint(relative)
    assert checkpoint.names() == sorted(expected)
    header_only = not next(iter(expected.values()))["dtype"].startswith("torch.")
    for name, golden in expected.items():
        dtype = checkpoint.dtype(name)
        if header_only:
            # No reference reads this file: the golden is its header and byte ranges.
            assert dtype == golden["dtype"], name
            assert list(checkpoint.shape(name)) == golden["shape"], name
            if dtype.startswith("F6"):
                data = repack(dtype, checkpoint.array(name))
                assert hashlib.sha256(data).hexdigest() == golden["sha256"], name
            else:
                assert sha256(checkpoint.array(name, target="torch")) == golden["sha256"], name
            continue
        raw = checkpoint.array(name, memory="copy_on_write", target="torch")
        assert TORCH_DTYPE[dtype] == golden["dtype"], name
        assert list(raw.shape) == golden["shape"], name
        assert sha256(raw) == golden["sha256"], name


@pytest.mark.parametrize("relative", sorted(GOLDENS))
def test_load_checkpoint_gives_the_same_bits_as_numpy(relative: str) -> None:
    expected: Dict[str, Any] = GOLDENS[relative]["tensors"]
    checkpoint = open_checkpoint(relative)
    weights = safeformers.load_checkpoint(FIXTURES / relative, allow_pickle=True)
    assert sorted(weights) == sorted(expected)
    for name, array in weights.items():
        dtype = checkpoint.dtype(name)
        assert array.dtype == NUMPY_DTYPE[dtype], name
        assert array.shape == checkpoint.shape(name), name
        if dtype in ("F4", "F6_E2M3", "F6_E3M2"):
            data = repack(dtype, array)
        else:
            data = array.tobytes()
        assert hashlib.sha256(data).hexdigest() == expected[name]["sha256"], name


@pytest.mark.parametrize(
    "relative", sorted(name for name in GOLDENS if name.endswith(".safetensors"))
)
def test_safetensors_load_file_gives_the_same_arrays(relative: str) -> None:
    path = FIXTURES / relative
    weights = safeformers.load_checkpoint(path)
    loaded = safeformers.safetensors.load_file(path, framework="np")
    assert sorted(loaded) == sorted(weights)
    for name, array in loaded.items():
        assert array.dtype == weights[name].dtype
        assert array.tobytes() == weights[name].tobytes()


def pack6(codes: List[int]) -> bytes:
    word = sum(code << (6 * j) for j, code in enumerate(codes))
    return word.to_bytes(3, "little")


@pytest.mark.parametrize(
    "dtype, data, values",
    [
        # The cases of crates/weights/src/convert.rs's unit tests, from the OCP MX spec.
        ("F4", bytes([0x10, 0x32, 0x54, 0x76, 0x98, 0xBA, 0xDC, 0xFE]),
         [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]),
        ("F6_E2M3", pack6([0b011111, 0b000001, 0b001000, 0b110100]), [7.5, 0.125, 1.0, -3.0]),
        ("F6_E3M2", pack6([0b011111, 0b000001, 0b001100, 0b110010]), [28.0, 0.0625, 1.0, -3.0]),
    ],
)
def test_sub_byte_floats_unpack_to_their_values(
    dtype: str, data: bytes, values: List[float], tmp_path: Path
) -> None:
    path = tmp_path / "packed.safetensors"
    write_safetensors(path, {"t": (dtype, [len(values)], data)})
    array = safeformers.load_checkpoint(path)["t"]
    assert array.dtype == NUMPY_DTYPE[dtype]
    assert array.flags.writeable, "unpacked values are a copy"
    assert array.astype(np.float32).tolist() == values
