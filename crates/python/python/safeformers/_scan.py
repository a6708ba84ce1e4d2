"""``safeformers.scan``: what each file is, and what loading it would have done."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from . import _native
from ._checkpoint import PathLike, fspath

__all__ = ["Finding", "PythonImport", "ScanResult", "scan"]


@dataclass(frozen=True)
class Finding:
    """One thing the scanner noticed."""

    severity: str
    """``"info"``, ``"suspicious"`` or ``"dangerous"``."""
    kind: str
    """A stable snake_case identifier (``"import"``, ``"call"``, ``"trailing_data"``, ...)."""
    detail: str
    """What exactly, and where (``"posix.system"``, ``"offset 1234: ..."``)."""
    line: Optional[int] = None
    """1-based line in a Python source file, when the finding has one."""
    column: Optional[int] = None
    """1-based column on that line, when known."""

    def to_dict(self) -> Dict[str, Any]:
        """The finding as ``safeformers scan --json`` prints it."""
        return _without_none(
            {
                "severity": self.severity,
                "kind": self.kind,
                "detail": self.detail,
                "line": self.line,
                "column": self.column,
            }
        )


@dataclass(frozen=True)
class PythonImport:
    """A module a reviewed Python file imports."""

    module: str
    """The module as written (``os.path``, ``.configuration_foo``)."""
    line: int
    """1-based line of the import."""
    category: Optional[str] = None
    """What it gives access to, when the review flags it (``"network"``, ...)."""

    def to_dict(self) -> Dict[str, Any]:
        """The import as ``safeformers scan --json`` prints it."""
        return _without_none({"module": self.module, "line": self.line, "category": self.category})


@dataclass(frozen=True)
class ScanResult:
    """The scan of one file: the same fields as one entry of ``safeformers scan --json``."""

    path: str
    """The file, as reached from the paths given."""
    format: str
    """Detected by content: ``"safetensors"``, ``"pytorch-zip"``, ``"pickle"``, ``"zip"``,
    ``"gguf"``, ``"python"`` or ``"unknown"``."""
    verdict: str
    """``"safe"``, ``"unsafe"`` or ``"invalid"``."""
    findings: Tuple[Finding, ...]
    """Everything noticed, most severe first."""
    sha256: Optional[str] = None
    """sha256 of a reviewed Python file."""
    imports: Optional[Tuple[PythonImport, ...]] = None
    """Every module a Python file imports."""
    notice: Optional[str] = None
    """What the verdict on a Python file does not promise."""

    @property
    def safe(self) -> bool:
        """Whether the verdict is ``"safe"``."""
        return self.verdict == "safe"

    def to_dict(self) -> Dict[str, Any]:
        """The entry as ``safeformers scan --json`` prints it."""
        return _without_none(
            {
                "path": self.path,
                "format": self.format,
                "verdict": self.verdict,
                "findings": [finding.to_dict() for finding in self.findings],
                "sha256": self.sha256,
                "imports": None
                if self.imports is None
                else [entry.to_dict() for entry in self.imports],
                "notice": self.notice,
            }
        )

    @classmethod
    def _from_json(cls, entry: Dict[str, Any]) -> "ScanResult":
        imports = entry.get("imports")
        return cls(
            path=entry["path"],
            format=entry["format"],
            verdict=entry["verdict"],
            findings=tuple(Finding(**finding) for finding in entry["findings"]),
            sha256=entry.get("sha256"),
            imports=None if imports is None else tuple(PythonImport(**i) for i in imports),
            notice=entry.get("notice"),
        )


def scan(*paths: PathLike) -> List[ScanResult]:
    """Scans files and folders (recursively) and reports, per file, its format, a verdict and
    the findings, exactly as ``safeformers scan --json PATH...`` does. Nothing is executed or
    imported: pickles are decoded by the same non-executing virtual machine the loader uses,
    Python files are parsed.

    A file that cannot be read is reported with the verdict ``"invalid"``, not raised.

    >>> import safeformers
    >>> [r for r in safeformers.scan("downloads/") if not r.safe]  # doctest: +SKIP
    [ScanResult(path='downloads/model.pt', format='pytorch-zip', verdict='unsafe', ...)]
    """
    if not paths:
        raise TypeError("scan() needs at least one path")
    report = json.loads(_native.scan_json([fspath(path) for path in paths]))
    return [ScanResult._from_json(entry) for entry in report["files"]]


def _without_none(fields: Dict[str, Any]) -> Dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}
