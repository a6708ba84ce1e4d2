"""``safeformers.torch.load``: a drop-in for ``torch.load(path, weights_only=True)`` on state
dicts, read by safeformers' own readers instead of an unpickler.

PyTorch is imported when :func:`load` is called, never by ``import safeformers``; it is not a
dependency of the package. ``model.load_state_dict(safeformers.torch.load(path))`` works on the
checkpoints ``torch.save(model.state_dict(), path)`` writes (zip or legacy format), on sharded
folders, and on safetensors files.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Dict

from . import _native
from ._checkpoint import PathLike, fspath

if TYPE_CHECKING:
    import torch

__all__ = ["load"]

# Dtypes numpy has no type for: the native module hands them over as same-width unsigned
# integers (float4 as byte pairs), viewed here as the torch dtype (safetensors name -> torch).
_VIEWED_AS = {
    "BF16": "bfloat16",
    "F8_E5M2": "float8_e5m2",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E8M0": "float8_e8m0fnu",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "F4": "float4_e2m1fn_x2",
}


def load(
    f: PathLike,
    map_location: Any = None,
    *,
    allow_pickle: bool = True,
    weights_only: bool = True,
) -> Dict[str, "torch.Tensor"]:
    """Reads a checkpoint into ``{tensor name: torch.Tensor}``, as
    ``torch.load(f, weights_only=True)`` gives it for a state dict.

    ``f`` is a path: a PyTorch checkpoint (zip or legacy), a safetensors file, a model folder or
    a shard index (file objects are not supported: the file is memory-mapped). Pickle-based
    files are read by safeformers' restricted unpickler, which never imports or calls anything;
    a global outside its allowlist raises :class:`safeformers.PolicyError`, a malformed file
    :class:`safeformers.FormatError`. ``allow_pickle=False`` refuses pickle-based files
    altogether (safetensors only).

    Tensors are writable and, where the file's layout allows, copy-on-write views of a private
    map of the file, as ``torch.load(path, mmap=True)`` gives them: the file is read as the
    tensors are used, a write copies the page it touches into memory, and the file itself never
    changes. Tensors the reader had to assemble (strided or big-endian storages) are copies.
    They are then moved to ``map_location`` when that names a device (``"cuda:0"``,
    ``torch.device(...)``). Differences from ``torch.load``: nested dicts come back flattened
    with ``.``-joined names (as ``state_dict()`` names them); non-tensor values (an epoch
    number, ``_metadata``) are left out; ``nn.Parameter`` values come back as plain tensors.

    >>> import safeformers.torch
    >>> model.load_state_dict(safeformers.torch.load("pytorch_model.bin"))  # doctest: +SKIP
    """
    if not weights_only:
        raise ValueError(
            "safeformers.torch.load reads tensors only and never unpickles arbitrary objects: "
            "weights_only=False is not supported"
        )
    if not isinstance(f, (str, bytes, os.PathLike)):
        raise TypeError(
            f"safeformers.torch.load takes a path, not {type(f).__name__}: the file is "
            "memory-mapped and read by safeformers' own readers"
        )
    device = _device(map_location)
    torch = _import_torch()
    checkpoint = _native.Checkpoint.open(fspath(f), allow_pickle=allow_pickle)
    arrays = checkpoint.arrays(memory="copy_on_write", target="torch")
    tensors = {name: _tensor(torch, checkpoint, name, array) for name, array in arrays.items()}
    if device is not None:
        tensors = {name: tensor.to(device) for name, tensor in tensors.items()}
    return tensors


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            "safeformers.torch needs PyTorch (pip install torch); "
            "safeformers.load_checkpoint reads the same files into numpy arrays without it"
        ) from error
    return torch


def _device(map_location: Any) -> Any:
    """The device to move tensors to, or None to leave them in host memory."""
    if map_location is None:
        return None
    if isinstance(map_location, (dict,)) or callable(map_location):
        raise TypeError(
            "map_location as a dict or a function is not supported by safeformers.torch.load; "
            "pass a device such as 'cpu' or 'cuda:0'"
        )
    if str(map_location) == "cpu":
        return None
    return map_location


def _tensor(torch: Any, checkpoint: Any, name: str, array: Any) -> "torch.Tensor":
    """``array`` (from ``Checkpoint.arrays(target="torch")``) as a tensor of its torch dtype."""
    tensor = torch.from_numpy(array)
    viewed_as = _VIEWED_AS.get(checkpoint.dtype(name))
    if viewed_as is not None:
        dtype = getattr(torch, viewed_as, None)
        if dtype is None:
            raise _native.Error(
                f"tensor `{name}` has dtype {checkpoint.dtype(name)}, which this PyTorch "
                f"({torch.__version__}) has no torch.{viewed_as} for: upgrade torch"
            )
        tensor = tensor.view(dtype)
    return tensor
