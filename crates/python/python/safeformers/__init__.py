"""Load PyTorch checkpoints and safetensors files from strangers without running their code.

safeformers reads weights with its own Rust readers: a strict safetensors parser, and a pickle
virtual machine that never imports or calls anything (globals resolve against an exact
allowlist). Python's ``pickle`` is never used, and neither PyTorch nor transformers is needed.

- :func:`load_checkpoint`: a weights file, model folder or shard index as ``{name: numpy array}``
  (read-only views of the memory-mapped file where the layout allows).
- :mod:`safeformers.torch`: ``safeformers.torch.load(path)``, a drop-in for
  ``torch.load(path, weights_only=True)`` on state dicts (needs PyTorch, imported only then).
- :mod:`safeformers.safetensors`: ``load_file`` and ``safe_open`` with the signatures of the
  ``safetensors`` package, and stricter checks.
- :func:`scan`: what ``safeformers scan --json`` reports, as Python objects.
- :func:`pipeline`: safeformers' Rust task pipelines (embeddings as numpy arrays, the other
  tasks' outputs as Transformers gives them), from a model folder or a Hub repo id resolved
  through the shared Hugging Face cache, every file verified. No PyTorch.

Errors: :class:`Error`, and its subclasses :class:`PolicyError` (refused by security policy; the
CLI exits 3) and :class:`FormatError` (missing, unreadable or malformed input; the CLI exits 1),
with the CLI's one-line message naming the file, the tensor and the cause.
"""

from . import safetensors, torch  # neither imports PyTorch
from ._checkpoint import load_checkpoint
from ._native import Error, FormatError, PolicyError, __version__
from ._pipeline import Pipeline, pipeline
from ._scan import Finding, PythonImport, ScanResult, scan

__all__ = [
    "Error",
    "FormatError",
    "Finding",
    "Pipeline",
    "PolicyError",
    "PythonImport",
    "ScanResult",
    "__version__",
    "load_checkpoint",
    "pipeline",
    "safetensors",
    "scan",
    "torch",
]
