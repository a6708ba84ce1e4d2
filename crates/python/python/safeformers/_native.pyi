"""Type stubs of the native module (crates/python/src). Use the ``safeformers`` package."""

import os
import pathlib
import types
from typing import Callable, Dict, List, Literal, Tuple, Union

import numpy

__version__: str

_Path = Union[str, os.PathLike[str]]

class Error(Exception):
    """Base class of every error safeformers raises."""

class PolicyError(Error):
    """Refused by security policy (what the safeformers CLI exits 3 for)."""

class FormatError(Error):
    """Input that could not be read (what the safeformers CLI exits 1 for)."""

class Checkpoint:
    """Named tensors read by safeformers' own readers; arrays viewing it keep it alive."""

    @staticmethod
    def open(path: _Path, *, allow_pickle: bool) -> "Checkpoint": ...
    @staticmethod
    def open_safetensors(path: _Path) -> "Checkpoint": ...
    @property
    def format(self) -> str: ...
    @property
    def files(self) -> List[pathlib.Path]: ...
    @property
    def metadata(self) -> Dict[str, str]: ...
    def names(self) -> List[str]: ...
    def __len__(self) -> int: ...
    def __contains__(self, name: str) -> bool: ...
    def dtype(self, name: str) -> str: ...
    def shape(self, name: str) -> Tuple[int, ...]: ...
    def array(
        self,
        name: str,
        *,
        memory: Literal["view", "copy", "copy_on_write"] = "view",
        target: Literal["numpy", "torch"] = "numpy",
    ) -> numpy.ndarray: ...
    def arrays(
        self,
        *,
        memory: Literal["view", "copy", "copy_on_write"] = "view",
        target: Literal["numpy", "torch"] = "numpy",
    ) -> Dict[str, numpy.ndarray]: ...

def scan_json(paths: List[_Path]) -> str: ...

class NativePipeline:
    """A loaded task pipeline; ``safeformers.Pipeline`` wraps it."""

    @property
    def task(self) -> str: ...
    @property
    def call_defaults_json(self) -> str: ...
    def run(
        self, inputs_json: str, keywords_json: str
    ) -> Union[str, numpy.ndarray, List[numpy.ndarray]]: ...
    def run_streaming(
        self, inputs_json: str, keywords_json: str, on_text: Callable[[str], None]
    ) -> str: ...

def load_pipeline(task: str, model: _Path, keywords_json: str) -> NativePipeline: ...
def _serve_chat_template_renderer() -> None: ...

_testing: types.ModuleType
