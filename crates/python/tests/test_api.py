"""The package's surface: what importing it does, `safeformers.safetensors` against the
reference package's signatures, `safeformers.torch` with and without PyTorch."""

from __future__ import annotations

import hashlib
import inspect
import io
import subprocess
import sys
import warnings
from pathlib import Path

from typing import Any

import numpy as np
import pytest

import safeformers
from conftest import FIXTURES, goldens, write_safetensors


def torch_installed() -> bool:
    return subprocess.run([sys.executable, "-c", "import torch"], capture_output=True).returncode == 0


def test_importing_safeformers_imports_no_torch() -> None:
    code = (
        "import sys, safeformers, safeformers.torch, safeformers.safetensors\n"
        "safeformers.load_checkpoint(sys.argv[1])\n"
        "safeformers.scan(sys.argv[1])\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)\n"
    )
    path = FIXTURES / "benign/zip_p2.safetensors"
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)


def test_public_names() -> None:
    for name in safeformers.__all__:
        assert hasattr(safeformers, name), name
    assert safeformers.__version__
    package = Path(safeformers.__file__).parent
    assert (package / "py.typed").is_file() and (package / "_native.pyi").is_file()


@pytest.fixture()
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.safetensors"
    write_safetensors(
        path,
        {
            "b.weight": ("F32", [2, 3], np.arange(6, dtype="<f4").tobytes()),
            "a.bias": ("I32", [3], np.array([7, 8, 9], "<i4").tobytes()),
        },
        metadata={"format": "pt"},
    )
    return path


def test_paths_as_str_bytes_or_path_like(model_file: Path) -> None:
    for path in (str(model_file), bytes(model_file), model_file):
        assert sorted(safeformers.load_checkpoint(path)) == ["a.bias", "b.weight"]
        assert sorted(safeformers.safetensors.load_file(path, framework="np")) == ["a.bias", "b.weight"]
        assert [result.verdict for result in safeformers.scan(path)] == ["safe"]


def test_the_reference_signatures() -> None:
    from safeformers.safetensors import load_file, safe_open

    assert list(inspect.signature(load_file).parameters)[:2] == ["filename", "device"]
    assert list(inspect.signature(safe_open).parameters) == ["filename", "framework", "device"]
    assert inspect.signature(safe_open).parameters["device"].default == "cpu"


def test_safe_open_with_numpy(model_file: Path) -> None:
    with safeformers.safetensors.safe_open(model_file, framework="np") as opened:
        assert opened.keys() == ["a.bias", "b.weight"]
        assert opened.metadata() == {"format": "pt"}
        weight = opened.get_tensor("b.weight")
        assert weight.tolist() == [[0, 1, 2], [3, 4, 5]]
        part = opened.get_slice("b.weight")
        assert part.get_shape() == [2, 3] and part.get_dtype() == "F32"
        column = part[:, 1]
        assert column.tolist() == [1, 4] and column.flags.writeable
        with pytest.raises(KeyError):
            opened.get_tensor("missing")
        with pytest.raises(KeyError):
            opened.get_slice("missing")


def test_metadata_is_none_when_the_header_has_none(tmp_path: Path) -> None:
    path = tmp_path / "plain.safetensors"
    write_safetensors(path, {"x": ("U8", [1], b"\x01")})
    with safeformers.safetensors.safe_open(path, "numpy") as opened:
        assert opened.metadata() is None


def test_load_file_with_numpy(model_file: Path) -> None:
    loaded = safeformers.safetensors.load_file(model_file, framework="np")
    assert sorted(loaded) == ["a.bias", "b.weight"]
    assert loaded["a.bias"].dtype == np.int32


def test_only_safetensors_is_read_whatever_the_name(tmp_path: Path) -> None:
    pickle_file = tmp_path / "model.safetensors"
    pickle_file.write_bytes((FIXTURES / "benign/zip_p2.pt").read_bytes())
    with pytest.raises(safeformers.FormatError, match="invalid safetensors"):
        safeformers.safetensors.load_file(pickle_file, framework="np")


def test_frameworks_and_devices(model_file: Path) -> None:
    with pytest.raises(ValueError, match="framework 'tf'"):
        safeformers.safetensors.load_file(model_file, framework="tf")
    with pytest.raises(ValueError, match="framework 'flax'"):
        safeformers.safetensors.safe_open(model_file, framework="flax")
    with pytest.raises(ValueError, match="host memory"):
        safeformers.safetensors.load_file(model_file, device="cuda", framework="np")


def test_torch_load_refuses_what_it_cannot_do_safely(model_file: Path) -> None:
    with pytest.raises(ValueError, match="weights_only=False"):
        safeformers.torch.load(model_file, weights_only=False)
    with pytest.raises(TypeError, match="path or a binary file object"):
        safeformers.torch.load(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="only a mapping to 'cpu'"):
        safeformers.torch.load(model_file, map_location={"cpu": "cuda:0"})


def test_file_objects_and_bytes_are_read_from_memory(model_file: Path, tmp_path: Path) -> None:
    expected = safeformers.load_checkpoint(model_file, copy=True)
    data = model_file.read_bytes()
    before = sorted(tmp_path.iterdir())
    for source in (io.BytesIO(data), open(model_file, "rb")):
        with source:
            loaded = safeformers.load_checkpoint(source)
        assert loaded.keys() == expected.keys()
        for name, array in loaded.items():
            assert np.array_equal(array, expected[name]) and not array.flags.writeable
    pickled = (FIXTURES / "benign/zip_p2.pt").read_bytes()
    assert sorted(safeformers.load_checkpoint(io.BytesIO(pickled), allow_pickle=True)) == [
        "bias",
        "weight",
    ]
    from_bytes = safeformers.safetensors.load(data, framework="np")
    assert all(np.array_equal(from_bytes[name], expected[name]) for name in expected)
    assert sorted(tmp_path.iterdir()) == before  # nothing was written to disk


def test_in_memory_errors_name_the_source_and_keep_their_class() -> None:
    pickled = (FIXTURES / "benign/zip_p2.pt").read_bytes()
    with pytest.raises(safeformers.PolicyError, match="^<file object>: .*allow_pickle=True"):
        safeformers.load_checkpoint(io.BytesIO(pickled))
    hostile = FIXTURES / "hostile/torch/pytorch_model.bin"
    with open(hostile, "rb") as handle, pytest.raises(safeformers.PolicyError) as raised:
        safeformers.load_checkpoint(handle, allow_pickle=True)
    assert str(raised.value).startswith(str(hostile)) and "/proc/self/fd" not in str(raised.value)
    with pytest.raises(safeformers.FormatError, match="^<bytes>: .*safetensors"):
        safeformers.safetensors.load(pickled, framework="np")


def test_safeformers_torch(model_file: Path) -> None:
    """With PyTorch (run by hand in venv-torch): `safeformers.torch.load` equals the goldens
    bit for bit, without a warning. Without it (CI): the error says how to get it."""
    if torch_installed():
        check_torch_load_against_the_goldens()
        return
    with pytest.raises(ImportError, match="pip install torch"):
        safeformers.torch.load(model_file)
    with pytest.raises(ImportError, match="pip install torch"):
        safeformers.safetensors.load_file(model_file)
    with safeformers.safetensors.safe_open(model_file, framework="pt") as opened:
        with pytest.raises(ImportError, match="pip install torch"):
            opened.get_tensor("a.bias")


def tensor_bytes(tensor: Any) -> bytes:
    """A tensor's values as bytes, in row-major order (any dtype, float8 and float4 too)."""
    import torch

    flat = tensor.contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def check_torch_load_against_the_goldens() -> None:
    import torch

    compared = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch's warning about non-writable arrays
        for relative, golden in goldens().items():
            if not golden["reader"].startswith(("torch.load", "safetensors.torch")):
                continue
            tensors = safeformers.torch.load(FIXTURES / relative)
            if (FIXTURES / relative).is_file():
                with open(FIXTURES / relative, "rb") as handle:
                    from_memory = safeformers.torch.load(handle, map_location=lambda s, _: s)
                assert from_memory.keys() == tensors.keys()
                for name, tensor in tensors.items():
                    assert tensor_bytes(from_memory[name]) == tensor_bytes(tensor), (relative, name)
            if relative.endswith(".safetensors"):
                assert safeformers.safetensors.load_file(FIXTURES / relative).keys() == tensors.keys()
            assert sorted(tensors) == sorted(golden["tensors"]), relative
            for name, tensor in tensors.items():
                expected = golden["tensors"][name]
                data = tensor_bytes(tensor)
                assert str(tensor.dtype) == expected["dtype"], (relative, name)
                assert list(tensor.shape) == expected["shape"], (relative, name)
                assert hashlib.sha256(data).hexdigest() == expected["sha256"], (relative, name)
                compared += 1
    assert compared > 100
