"""Errors carry the CLI's one-line message and its classification: PolicyError where the CLI
exits 3, FormatError where it exits 1. A Rust panic arrives as safeformers.Error."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Dict, List

import pytest

import safeformers
from safeformers import _native
from conftest import FIXTURES, allows_pickle, manifest_entries

REFUSED = [entry for entry in manifest_entries() if entry["expect"]["load"] != "ok"]
EXIT_CODE = {safeformers.PolicyError: 3, safeformers.FormatError: 1}


def cli_inspect(cli: Path, path: Path, allow_pickle: bool) -> subprocess.CompletedProcess:
    command: List[str] = [str(cli), "inspect", str(path), "--offline"]
    if allow_pickle:
        command.append("--allow-pickle")
    return subprocess.run(command, capture_output=True, text=True, check=False)


def test_the_hierarchy() -> None:
    assert issubclass(safeformers.PolicyError, safeformers.Error)
    assert issubclass(safeformers.FormatError, safeformers.Error)
    assert issubclass(safeformers.Error, Exception)
    assert not issubclass(safeformers.PolicyError, safeformers.FormatError)
    assert safeformers.Error.__module__ == "safeformers"


@pytest.mark.parametrize("entry", REFUSED, ids=[entry["path"] for entry in REFUSED])
def test_same_message_and_exit_code_as_the_cli(cli: Path, entry: Dict[str, Any]) -> None:
    path = FIXTURES / entry["path"]
    with pytest.raises(safeformers.Error) as raised:
        safeformers.load_checkpoint(path, allow_pickle=allows_pickle(entry))
    completed = cli_inspect(cli, path, allows_pickle(entry))
    # The same message, with the option it suggests spelled for Python.
    cli_message = completed.stderr.replace("--allow-pickle", "allow_pickle=True")
    assert cli_message == f"error: {raised.value}\n"
    assert "--" not in str(raised.value).replace(" -- ", "")
    assert completed.returncode == EXIT_CODE[type(raised.value)]


def test_a_missing_file_is_a_format_error(cli: Path, tmp_path: Path) -> None:
    path = tmp_path / "missing.safetensors"
    with pytest.raises(safeformers.FormatError) as raised:
        safeformers.load_checkpoint(path)
    completed = cli_inspect(cli, path, False)
    assert completed.returncode == 1
    assert completed.stderr == f"error: {raised.value}\n"


def test_a_panic_becomes_safeformers_error() -> None:
    for without_gil in (False, True):
        with pytest.raises(safeformers.Error, match="internal error.*bug.*boom"):
            _native._testing.panic("boom", without_gil=without_gil)
