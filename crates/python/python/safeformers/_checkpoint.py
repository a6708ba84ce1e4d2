"""``safeformers.load_checkpoint``: weights as numpy arrays, read by safeformers' own readers."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, BinaryIO, Dict, Optional, Union

from . import _native

if TYPE_CHECKING:
    import numpy

__all__ = ["load_checkpoint"]

PathLike = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]


def fspath(path: PathLike) -> str:
    """`path` as the native module takes it: a str (bytes decoded as the OS encodes names)."""
    path = os.fspath(path)
    return os.fsdecode(path) if isinstance(path, bytes) else path


def open_checkpoint(source: Any, *, allow_pickle: bool, safetensors_only: bool = False) -> Any:
    """The native ``Checkpoint`` of ``source``: a path (str, bytes or path-like), or a binary
    file object (anything with ``read``), whose contents are read and served from memory."""
    if hasattr(source, "read"):
        name = str(getattr(source, "name", "<file object>"))
        return open_bytes(
            source.read(), name, allow_pickle=allow_pickle, safetensors_only=safetensors_only
        )
    if safetensors_only:
        return _native.Checkpoint.open_safetensors(fspath(source))
    return _native.Checkpoint.open(fspath(source), allow_pickle=allow_pickle)


def open_bytes(data: Any, name: str, *, allow_pickle: bool, safetensors_only: bool = False) -> Any:
    """The native ``Checkpoint`` of the bytes ``data`` (anything the buffer protocol gives).

    The bytes go into an anonymous in-memory file (``memfd_create``: nothing is written to any
    filesystem), which the native readers map as they map a file; errors name ``name``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"{name}: expected bytes from the file object, got {type(data).__name__}")
    create = getattr(os, "memfd_create", None)
    if create is None:
        raise TypeError(
            f"{name}: reading from memory needs os.memfd_create (Linux); pass a path instead"
        )
    descriptor = create("safeformers-checkpoint", getattr(os, "MFD_CLOEXEC", 0))
    try:
        view = memoryview(data).cast("B")
        while view:
            view = view[os.write(descriptor, view):]
        path = f"/proc/self/fd/{descriptor}"
        try:
            if safetensors_only:
                return _native.Checkpoint.open_safetensors(path)
            return _native.Checkpoint.open(path, allow_pickle=allow_pickle)
        except _native.Error as error:
            raise type(error)(str(error).replace(path, name)) from None
    finally:
        os.close(descriptor)  # the map, if any, keeps the memory


def load_checkpoint(
    path: Union[PathLike, BinaryIO],
    *,
    allow_pickle: bool = False,
    device: Optional[str] = None,
    copy: bool = False,
) -> Dict[str, "numpy.ndarray"]:
    """Reads a checkpoint into ``{tensor name: numpy array}``, sorted by name.

    ``path`` is a weights file (its format decided by content, never by name: safetensors,
    PyTorch zip, legacy PyTorch), a model folder (weights chosen as Transformers does,
    safetensors first) or a shard index (``*.safetensors.index.json``,
    ``pytorch_model.bin.index.json``; every shard must stay inside the folder). A binary file
    object (``open(p, "rb")``, ``io.BytesIO``) is read whole and served from memory.

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
    checkpoint = open_checkpoint(path, allow_pickle=allow_pickle)
    return checkpoint.arrays(memory="copy" if copy else "view")
