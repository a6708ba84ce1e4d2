"""``safeformers.torch.load``: a drop-in for ``torch.load(path, weights_only=True)`` on state
dicts, read by safeformers' own readers instead of an unpickler.

PyTorch is imported when :func:`load` is called, never by ``import safeformers``; it is not a
dependency of the package. ``model.load_state_dict(safeformers.torch.load(path))`` works on the
checkpoints ``torch.save(model.state_dict(), path)`` writes (zip or legacy format), on sharded
folders, and on safetensors files.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, BinaryIO, Dict, Union

from . import _native
from ._checkpoint import PathLike, open_checkpoint

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
    f: Union[PathLike, BinaryIO],
    map_location: Any = None,
    *,
    allow_pickle: bool = True,
    weights_only: bool = True,
) -> Dict[str, "torch.Tensor"]:
    """Reads a checkpoint into ``{tensor name: torch.Tensor}``, as
    ``torch.load(f, weights_only=True)`` gives it for a state dict.

    ``f`` is a path (a PyTorch checkpoint, zip or legacy; a safetensors file; a model folder or
    a shard index) or a binary file object such as ``io.BytesIO`` (read whole, then served
    from an anonymous in-memory file). Pickle-based
    files are read by safeformers' restricted unpickler, which never imports or calls anything;
    a global outside its allowlist raises :class:`safeformers.PolicyError`, a malformed file
    :class:`safeformers.FormatError`. ``allow_pickle=False`` refuses pickle-based files
    altogether (safetensors only).

    Tensors are writable and, where the file's layout allows, copy-on-write views of a private
    map of the file, as ``torch.load(path, mmap=True)`` gives them: the file is read as the
    tensors are used, a write copies the page it touches into memory, and the file itself never
    changes. Tensors the reader had to assemble (strided or big-endian storages) are copies.
    They are then moved to ``map_location`` when that names a device (``"cuda:0"``,
    ``torch.device(...)``); a dict mapping saved locations to ``"cpu"`` and a callable
    (``lambda storage, location: storage``, called with location ``"cpu"``) are honoured.
    Differences from ``torch.load``: nested dicts come back flattened with ``.``-joined names
    (as ``state_dict()`` names them); non-tensor values (an epoch number, ``_metadata``) are
    left out; ``nn.Parameter`` values come back as plain tensors.

    >>> import safeformers.torch
    >>> model.load_state_dict(safeformers.torch.load("pytorch_model.bin"))  # doctest: +SKIP
    """
    if not weights_only:
        raise ValueError(
            "safeformers.torch.load reads tensors only and never unpickles arbitrary objects: "
            "weights_only=False is not supported"
        )
    if not isinstance(f, (str, bytes, os.PathLike)) and not hasattr(f, "read"):
        raise TypeError(
            f"safeformers.torch.load takes a path or a binary file object, not {type(f).__name__}"
        )
    device = _device(map_location)
    torch = _import_torch()
    checkpoint = open_checkpoint(f, allow_pickle=allow_pickle)
    arrays = checkpoint.arrays(memory="copy_on_write", target="torch")
    tensors = {name: _tensor(torch, checkpoint, name, array) for name, array in arrays.items()}
    return {name: _placed(tensor, device) for name, tensor in tensors.items()}


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
    """The device every tensor moves to, None to leave them in host memory, or the callable.

    safeformers reads every storage into host memory whatever device it was saved from, so a
    dict is honoured when it maps every location to the CPU (``{"cuda:0": "cpu"}``); any other
    target is ambiguous (it would move tensors saved on the CPU too) and is refused. A callable
    is called as ``torch.load`` calls it, ``map_location(storage, "cpu")``, per tensor."""
    if map_location is None:
        return None
    if callable(map_location):
        return map_location
    if isinstance(map_location, dict):
        targets = {str(target) for target in map_location.values()}
        if targets <= {"cpu"}:
            return None
        raise ValueError(
            f"map_location={map_location!r}: safeformers reads every tensor into host memory, "
            "whatever device it was saved from, so only a mapping to 'cpu' applies; pass a "
            "device (map_location='cuda:0') to move every tensor there"
        )
    if str(map_location) == "cpu":
        return None
    return map_location


def _placed(tensor: "torch.Tensor", device: Any) -> "torch.Tensor":
    """``tensor`` on ``device`` (see :func:`_device`)."""
    if device is None:
        return tensor
    if callable(device):
        result = device(tensor.untyped_storage(), "cpu")
        target = getattr(result, "device", None)
        return tensor if target is None or str(target) == "cpu" else tensor.to(target)
    return tensor.to(device)


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
