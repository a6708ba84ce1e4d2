"""`safeformers.scan` reports what `safeformers scan --json` reports, as Python objects."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Dict

import pytest

import safeformers
from conftest import FIXTURES, manifest_entries

FILE_ENTRIES = [entry for entry in manifest_entries() if (FIXTURES / entry["path"]).is_file()]


def test_scan_equals_the_cli_json_on_the_whole_corpus(cli: Path) -> None:
    completed = subprocess.run(
        [str(cli), "scan", "--json", str(FIXTURES)], capture_output=True, check=False
    )
    assert completed.returncode == 1, "the corpus holds unsafe files: the CLI exits 1"
    expected = json.loads(completed.stdout)["files"]
    results = safeformers.scan(FIXTURES)
    assert len(results) == len(expected) > 300
    assert [result.to_dict() for result in results] == expected


def test_scan_equals_the_cli_json_on_python_source(cli: Path, tmp_path: Path) -> None:
    source = tmp_path / "modeling_evil.py"
    source.write_text("import os\nimport requests\n\nos.system('id')\n")
    completed = subprocess.run(
        [str(cli), "scan", "--json", str(source)], capture_output=True, check=False
    )
    expected = json.loads(completed.stdout)["files"]
    [result] = safeformers.scan(source)
    assert [result.to_dict()] == expected
    assert result.format == "python" and result.sha256 and result.notice
    assert result.imports and result.imports[0].module == "os"
    assert any(finding.line for finding in result.findings)


@pytest.mark.parametrize("entry", FILE_ENTRIES, ids=[entry["path"] for entry in FILE_ENTRIES])
def test_verdicts_and_findings_are_those_the_manifest_expects(entry: Dict[str, Any]) -> None:
    [result] = safeformers.scan(FIXTURES / entry["path"])
    verdicts = entry["expect"]["scan"]
    acceptable = set(verdicts if isinstance(verdicts, list) else [verdicts])
    if "invalid" in acceptable:
        # As crates/weights/tests/fixture_corpus.rs reads the manifest: "invalid" is met by
        # "unsafe" too (a malformed file in which something dangerous was also seen).
        acceptable.add("unsafe")
    assert result.verdict in acceptable
    assert result.safe == (result.verdict == "safe")
    for name in entry["expect"]["scan_must_name"]:
        assert any(name in finding.detail for finding in result.findings), name


def test_results_are_plain_immutable_objects() -> None:
    [result] = safeformers.scan(FIXTURES / "hostile/pickle/os_system_p2.pkl")
    assert isinstance(result, safeformers.ScanResult)
    assert result.verdict == "unsafe" and result.format == "pickle"
    assert all(isinstance(finding, safeformers.Finding) for finding in result.findings)
    assert result.findings[0].severity == "dangerous"
    with pytest.raises(AttributeError):
        result.verdict = "safe"  # type: ignore[misc]


def test_unreadable_paths_are_reported_not_raised(tmp_path: Path) -> None:
    [result] = safeformers.scan(tmp_path / "missing.bin")
    assert result.verdict == "invalid"


def test_scan_needs_a_path() -> None:
    with pytest.raises(TypeError):
        safeformers.scan()
