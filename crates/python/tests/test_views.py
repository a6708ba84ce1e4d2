"""Arrays are zero-copy views of the memory-mapped file where the layout allows: read-only,
valid for as long as they are referenced (the view keeps the mapping alive, and only the view),
and copies where the layout does not allow a view or a copy was asked for.

Where an array's memory lies is read from /proc/self/maps: a view points into the file's
mapping, a copy does not.
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest

import safeformers
from safeformers import _native
from conftest import FIXTURES, write_safetensors

VALUES = np.arange(4096, dtype="<f4").reshape(64, 64)


def mappings_of(path: Path) -> List[Tuple[int, int]]:
    """Address ranges at which this process maps `path`."""
    ranges = []
    target = os.path.realpath(path)
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and fields[5] == target:
                start, end = (int(value, 16) for value in fields[0].split("-"))
                ranges.append((start, end))
    return ranges


def address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def inside(array: np.ndarray, ranges: List[Tuple[int, int]]) -> bool:
    return any(start <= address(array) < end for start, end in ranges)


@pytest.fixture()
def weights_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.safetensors"
    write_safetensors(
        path,
        {
            "w": ("F32", VALUES.shape, VALUES.tobytes()),
            "b": ("I64", [3], np.array([1, 2, 3], "<i8").tobytes()),
        },
    )
    return path


def test_arrays_are_views_of_the_mapped_file(weights_file: Path) -> None:
    weights = safeformers.load_checkpoint(weights_file)
    ranges = mappings_of(weights_file)
    assert ranges, "the file is memory-mapped"
    for name, array in weights.items():
        assert inside(array, ranges), f"{name} is not a view of the file"
        assert type(array.base).__name__ == "Checkpoint"
    assert np.array_equal(weights["w"], VALUES)


def test_views_cannot_be_written(weights_file: Path) -> None:
    array = safeformers.load_checkpoint(weights_file)["w"]
    assert not array.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        array[0, 0] = 1.0
    with pytest.raises(ValueError):
        array.flags.writeable = True
    with pytest.raises(ValueError):
        np.add(array, 1, out=array)
    assert np.array_equal(array, VALUES)


def test_views_outlive_the_loader_and_keep_only_the_mapping_alive(weights_file: Path) -> None:
    checkpoint = _native.Checkpoint.open(weights_file, allow_pickle=False)
    array = checkpoint.array("w")
    del checkpoint
    gc.collect()
    # The file is gone from the folder too: the mapping is what the view reads.
    os.unlink(weights_file)
    gc.collect()
    assert np.array_equal(array, VALUES)
    assert mappings_of(weights_file), "the view keeps the file mapped"
    del array
    gc.collect()
    assert not mappings_of(weights_file), "the mapping is released with the last view"


def test_safe_open_views_stay_valid_after_the_file_is_closed(weights_file: Path) -> None:
    with safeformers.safetensors.safe_open(weights_file, framework="np") as opened:
        array = opened.get_tensor("w")
    with pytest.raises(ValueError, match="closed"):
        opened.get_tensor("w")
    del opened
    gc.collect()
    assert np.array_equal(array, VALUES)
    assert not array.flags.writeable


def test_copy_gives_writable_arrays_that_own_their_memory(weights_file: Path) -> None:
    weights = safeformers.load_checkpoint(weights_file, copy=True)
    ranges = mappings_of(weights_file)
    for array in weights.values():
        assert array.flags.writeable
        assert array.flags.c_contiguous and array.flags.aligned
        assert not inside(array, ranges)
    weights["w"][0, 0] = -1.0
    assert safeformers.load_checkpoint(weights_file)["w"][0, 0] == 0.0


def test_misaligned_tensors_are_aligned_copies(tmp_path: Path) -> None:
    path = tmp_path / "misaligned.safetensors"
    # One byte of tensor `pad` first puts every later byte at an odd offset.
    write_safetensors(
        path,
        {"pad": ("U8", [1], b"\x07"), "w": ("F32", VALUES.shape, VALUES.tobytes())},
    )
    weights = safeformers.load_checkpoint(path)
    array = weights["w"]
    assert array.flags.aligned and address(array) % 4 == 0
    assert np.array_equal(array, VALUES)
    assert inside(weights["pad"], mappings_of(path)), "a U8 tensor is aligned anywhere"


def test_the_fixture_with_a_misaligned_tensor_loads_aligned() -> None:
    path = FIXTURES / "hostile/safetensors/misaligned_f32.safetensors"
    for array in safeformers.load_checkpoint(path).values():
        assert array.flags.aligned and address(array) % array.dtype.alignment == 0


def test_tensors_the_torch_reader_assembled_are_views_of_the_checkpoint() -> None:
    """Strided views in a PyTorch checkpoint are made contiguous once, when it is opened; the
    arrays view those bytes, held by the checkpoint, read-only like the rest."""
    weights = safeformers.load_checkpoint(FIXTURES / "benign/noncontiguous.pt", allow_pickle=True)
    twin = safeformers.load_checkpoint(FIXTURES / "benign/noncontiguous.safetensors")
    for name, array in weights.items():
        assert type(array.base).__name__ == "Checkpoint"
        assert not array.flags.writeable
        assert array.flags.c_contiguous
        assert np.array_equal(array, twin[name])


def test_empty_tensors_and_scalars() -> None:
    weights = safeformers.load_checkpoint(FIXTURES / "benign/empty.pt", allow_pickle=True)
    assert weights["empty"].shape == (0, 3)
    assert weights["empty_i64"].shape == (2, 0) and weights["empty_i64"].dtype == np.int64
    assert weights["scalar"].shape == () and float(weights["scalar"]) == 1.5


def test_bfloat16_without_ml_dtypes_names_the_tensor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bf16.safetensors"
    write_safetensors(
        path, {"ok": ("F32", [1], b"\0\0\x80\x3f"), "lm_head.weight": ("BF16", [2], b"\0" * 4)}
    )
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)  # `import ml_dtypes` now fails
    with pytest.raises(safeformers.Error, match=r"tensor `lm_head.weight` has dtype BF16.*ml_dtypes"):
        safeformers.load_checkpoint(path)
    # The reader itself does not need it: the raw bits are there for torch.
    raw = _native.Checkpoint.open(path, allow_pickle=False).array("lm_head.weight", target="torch")
    assert raw.dtype == np.uint16


def test_float6_has_no_torch_dtype() -> None:
    checkpoint = _native.Checkpoint.open(
        FIXTURES / "benign/exotic_dtypes_raw.safetensors", allow_pickle=False
    )
    name = next(name for name in checkpoint.names() if checkpoint.dtype(name) == "F6_E2M3")
    with pytest.raises(safeformers.Error, match=f"tensor `{name}` has dtype F6_E2M3"):
        checkpoint.array(name, target="torch")


def test_unknown_tensor_is_a_key_error(weights_file: Path) -> None:
    checkpoint = _native.Checkpoint.open(weights_file, allow_pickle=False)
    with pytest.raises(KeyError):
        checkpoint.array("nope")
    assert "w" in checkpoint and "nope" not in checkpoint and len(checkpoint) == 2


def test_device_other_than_the_host_is_refused(weights_file: Path) -> None:
    with pytest.raises(ValueError, match="host memory"):
        safeformers.load_checkpoint(weights_file, device="cuda:0")
    assert safeformers.load_checkpoint(weights_file, device="cpu")


def test_copy_on_write_views_are_writable_and_never_change_the_file(weights_file: Path) -> None:
    """What safeformers.torch hands to torch.from_numpy: writable views of a private map."""
    before = weights_file.read_bytes()
    checkpoint = _native.Checkpoint.open(weights_file, allow_pickle=False)
    first = checkpoint.arrays(memory="copy_on_write")
    second = checkpoint.arrays(memory="copy_on_write")
    ranges = mappings_of(weights_file)
    for name, array in first.items():
        assert array.flags.writeable and array.flags.aligned, name
        assert inside(array, ranges), f"{name} is not a view of a map of the file"
        assert type(array.base).__name__ == "PrivateMap"
    first["w"][:] = -1.0
    assert (first["w"] == -1.0).all()
    assert np.array_equal(second["w"], VALUES), "each call maps the file privately"
    assert np.array_equal(checkpoint.array("w"), VALUES), "the read-only map is untouched"
    del checkpoint
    gc.collect()
    assert weights_file.read_bytes() == before, "the file never changes"
    os.unlink(weights_file)
    assert (first["w"] == -1.0).all() and np.array_equal(second["w"], VALUES)


def test_copy_on_write_copies_what_the_reader_assembled() -> None:
    checkpoint = _native.Checkpoint.open(FIXTURES / "benign/noncontiguous.pt", allow_pickle=True)
    for name, array in checkpoint.arrays(memory="copy_on_write").items():
        assert array.flags.writeable, name
        assert np.array_equal(array, checkpoint.array(name)), name


def test_a_copy_on_write_tensor_maps_only_its_own_pages(tmp_path: Path) -> None:
    path = tmp_path / "large.safetensors"
    big = bytes(16 << 20)
    write_safetensors(path, {"big": ("U8", [len(big)], big), "small": ("F32", [4], bytes(16))})
    checkpoint = _native.Checkpoint.open(path, allow_pickle=False)
    small = checkpoint.array("small", memory="copy_on_write")
    [private] = [
        (start, end) for start, end in mappings_of(path) if start <= address(small) < end
    ]
    assert private[1] - private[0] <= 2 * 4096, "only the pages holding the tensor"
