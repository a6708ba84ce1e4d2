"""``load_file`` and ``safe_open`` with the signatures of the ``safetensors`` package, read by
safeformers' stricter reader.

Every rule of the format is checked before a tensor is handed out, and more than the reference
checks: duplicate names (even byte-identical), unknown fields, overlapping or uncovered byte
ranges, absurd ranks and empty or NUL-holding names are :class:`safeformers.FormatError`. Only
safetensors is read here, whatever the file's name; pickle-based checkpoints go through
:func:`safeformers.torch.load` or :func:`safeformers.load_checkpoint`.

``framework="pt"`` gives writable ``torch.Tensor``s, copy-on-write views of a private map of
the file as the reference gives them (PyTorch imported only then);
``framework="np"`` gives numpy arrays that are read-only views of the memory-mapped file (see
:func:`safeformers.load_checkpoint`). Other frameworks of the reference are not supported.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple, Union

from . import _native
from ._checkpoint import PathLike, fspath, open_bytes
from .torch import _import_torch, _tensor

__all__ = ["load", "load_file", "safe_open"]

_FRAMEWORKS = {"pt": "pt", "torch": "pt", "pytorch": "pt", "np": "np", "numpy": "np"}


def load_file(
    filename: PathLike,
    device: Any = "cpu",
    *,
    framework: str = "pt",
) -> Dict[str, Any]:
    """Reads a safetensors file into ``{name: tensor}``: ``safetensors.torch.load_file``'s
    signature, and with ``framework="np"`` what ``safetensors.numpy.load_file`` gives.

    >>> from safeformers.safetensors import load_file
    >>> state_dict = load_file("model.safetensors")  # doctest: +SKIP
    """
    framework = _framework(framework)
    _check_device(framework, device)
    checkpoint = _native.Checkpoint.open_safetensors(fspath(filename))
    if framework == "np":
        return checkpoint.arrays()
    torch = _import_torch()
    arrays = checkpoint.arrays(memory="copy_on_write", target="torch")
    tensors = {name: _tensor(torch, checkpoint, name, array) for name, array in arrays.items()}
    return _to_device(tensors, device)


def load(data: bytes, *, framework: str = "pt") -> Dict[str, Any]:
    """Reads safetensors bytes into ``{name: tensor}``: ``safetensors.torch.load(data)``, and
    with ``framework="np"`` ``safetensors.numpy.load(data)``. The bytes are served from an
    anonymous in-memory file (nothing is written to disk); errors name ``<bytes>``.

    >>> from safeformers.safetensors import load
    >>> state_dict = load(open("model.safetensors", "rb").read())  # doctest: +SKIP
    """
    framework = _framework(framework)
    checkpoint = open_bytes(data, "<bytes>", allow_pickle=False, safetensors_only=True)
    if framework == "np":
        return checkpoint.arrays()
    torch = _import_torch()
    arrays = checkpoint.arrays(memory="copy_on_write", target="torch")
    return {name: _tensor(torch, checkpoint, name, array) for name, array in arrays.items()}


class safe_open:  # noqa: N801 - the reference's name
    """A safetensors file opened for reading tensors one at a time:
    ``safetensors.safe_open(filename, framework, device="cpu")``.

    >>> from safeformers.safetensors import safe_open
    >>> with safe_open("model.safetensors", framework="pt") as f:  # doctest: +SKIP
    ...     embeddings = f.get_tensor("embeddings.word_embeddings.weight")
    ...     first_rows = f.get_slice("lm_head.weight")[:16]

    Only the header is read when the file is opened; each tensor's bytes are read when asked
    for. Arrays already handed out stay valid after the file is closed.
    """

    def __init__(
        self,
        filename: PathLike,
        framework: str,
        device: Any = "cpu",
    ) -> None:
        self._framework = _framework(framework)
        _check_device(self._framework, device)
        self._device = device
        self._checkpoint: Optional[Any] = _native.Checkpoint.open_safetensors(fspath(filename))

    def __enter__(self) -> "safe_open":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._checkpoint = None

    def _open(self) -> Any:
        if self._checkpoint is None:
            raise ValueError("this safe_open file is closed")
        return self._checkpoint

    def keys(self) -> List[str]:
        """The tensor names, sorted."""
        return self._open().names()

    def metadata(self) -> Optional[Dict[str, str]]:
        """The header's ``__metadata__``, or None when it has none (or an empty one)."""
        return self._open().metadata or None

    def get_tensor(self, name: str) -> Any:
        """The tensor called ``name`` (``KeyError`` when there is none)."""
        checkpoint = self._open()
        if self._framework == "np":
            return checkpoint.array(name)
        torch = _import_torch()
        raw = checkpoint.array(name, memory="copy_on_write", target="torch")
        tensor = _tensor(torch, checkpoint, name, raw)
        return _to_device({name: tensor}, self._device)[name]

    def get_slice(self, name: str) -> "_TensorSlice":
        """A handle on ``name`` that reads only what is indexed: ``f.get_slice(name)[:, :8]``."""
        checkpoint = self._open()
        if name not in checkpoint:
            raise KeyError(name)
        return _TensorSlice(checkpoint, name, self._framework, self._device)


class _TensorSlice:
    """What ``safe_open.get_slice`` returns: shape and dtype, and indexing that copies only the
    selected part."""

    def __init__(self, checkpoint: Any, name: str, framework: str, device: Any) -> None:
        self._checkpoint = checkpoint
        self._name = name
        self._framework = framework
        self._device = device

    def get_shape(self) -> List[int]:
        """The tensor's shape, as its header has it."""
        return list(self._checkpoint.shape(self._name))

    def get_dtype(self) -> str:
        """The tensor's dtype as safetensors names it (``"F32"``, ``"BF16"``, ...)."""
        return self._checkpoint.dtype(self._name)

    def __getitem__(self, index: Union[int, slice, Tuple[Any, ...]]) -> Any:
        if self._framework == "np":
            return self._checkpoint.array(self._name)[index].copy()
        torch = _import_torch()
        raw = self._checkpoint.array(self._name, target="torch")[index].copy()
        tensor = _tensor(torch, self._checkpoint, self._name, raw)
        return _to_device({self._name: tensor}, self._device)[self._name]


def _framework(framework: str) -> str:
    try:
        return _FRAMEWORKS[framework]
    except KeyError:
        raise ValueError(
            f"framework {framework!r} is not supported: use 'pt' (PyTorch) or 'np' (numpy)"
        ) from None


def _check_device(framework: str, device: Any) -> None:
    if framework == "np" and str(device) != "cpu":
        raise ValueError(f"device={device!r}: numpy arrays live in host memory; use 'cpu'")


def _to_device(tensors: Dict[str, Any], device: Any) -> Dict[str, Any]:
    if str(device) == "cpu":
        return tensors
    return {name: tensor.to(device) for name, tensor in tensors.items()}
