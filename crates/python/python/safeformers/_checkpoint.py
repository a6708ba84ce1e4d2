"""``safeformers.load_checkpoint``: weights as numpy arrays, read by safeformers' own readers."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Dict, Optional, Union

from . import _native

if TYPE_CHECKING:
    import numpy

__all__ = ["load_checkpoint"]

PathLike = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]


def fspath(path: PathLike) -> str:
    """`path` as the native module takes it: a str (bytes decoded as the OS encodes names)."""
    path = os.fspath(path)
    return os.fsdecode(path) if isinstance(path, bytes) else path


def load_checkpoint(
    path: PathLike,
    *,
    allow_pickle: bool = False,
    device: Optional[str] = None,
    copy: bool = False,
) -> Dict[str, "numpy.ndarray"]:
    """Reads a checkpoint into ``{tensor name: numpy array}``, sorted by name.

    ``path`` is a weights file (its format decided by content, never by name: safetensors,
    PyTorch zip, legacy PyTorch), a model folder (weights chosen as Transformers does,
    safetensors first) or a shard index (``*.safetensors.index.json``,
    ``pytorch_model.bin.index.json``; every shard must stay inside the folder).

    Pickle-based checkpoints raise :class:`safeformers.PolicyError` unless ``allow_pickle``;
    they are then read by safeformers' restricted unpickler, which never imports or calls
    anything: a global outside its allowlist is a ``PolicyError`` too. Nested state dicts are
    flattened with ``.``-joined names (``{"model": {"w": t}}`` gives ``model.w``).

    Arrays are read-only views of the memory-mapped file (the file is read as they are used);
    each keeps the mapping alive for as long as it is referenced. A tensor whose bytes are not
    aligned for its dtype, an empty one, and float4/float6 values (unpacked to one value per
    byte) are copies. With ``copy=True`` every array is a writable copy, read now with the GIL
    released.

    bfloat16 and the float8/float4/float6 types are ``ml_dtypes`` dtypes (``pip install
    ml_dtypes``); without it such a tensor raises :class:`safeformers.Error` naming it.

    ``device`` is accepted for symmetry with the rest of the API: numpy arrays live in host
    memory, so only ``None`` and ``"cpu"`` are valid (use :func:`safeformers.torch.load` with
    ``map_location`` for a GPU).

    >>> import safeformers
    >>> weights = safeformers.load_checkpoint("model.safetensors")  # doctest: +SKIP
    >>> weights["bert.embeddings.word_embeddings.weight"].shape  # doctest: +SKIP
    (30522, 384)
    """
    if device not in (None, "cpu"):
        raise ValueError(
            f"device={device!r}: numpy arrays live in host memory; pass None or 'cpu', or use "
            "safeformers.torch.load(path, map_location=...) for tensors on a device"
        )
    checkpoint = _native.Checkpoint.open(fspath(path), allow_pickle=allow_pickle)
    return checkpoint.arrays(memory="copy" if copy else "view")
