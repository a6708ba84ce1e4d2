"""Hostile checkpoints are refused through the Python API just as through the CLI, and nothing
they carry ever runs.

Each sample of tests/fixtures/weights/hostile/ is loaded as its MANIFEST entry says (under
`--allow-pickle` where the entry's policy is `allow_pickle`): a sample expected `refused` raises
PolicyError, one expected `invalid` raises FormatError (either, where the manifest's
`strict_kind` is false), and the few valid edge cases load. Every load runs in an empty working
directory that must stay empty, with its output captured to show no payload printed anything.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest

import safeformers
from conftest import FIXTURES, allows_pickle, manifest_entries

HOSTILE = [entry for entry in manifest_entries() if entry["path"].startswith("hostile/")]
PICKLE_BASED = [entry for entry in HOSTILE if allows_pickle(entry)]
SAFETENSORS_FILES = [
    entry
    for entry in HOSTILE
    if entry["path"].startswith("hostile/safetensors/") and not allows_pickle(entry)
]

EXPECTED_ERROR = {"refused": safeformers.PolicyError, "invalid": safeformers.FormatError}


def expected_error(entry: Dict[str, Any]) -> type:
    if entry.get("strict_kind", False):
        return EXPECTED_ERROR[entry["expect"]["load"]]
    return safeformers.Error


def assert_nothing_ran(workdir: Path, captured: Any) -> None:
    assert list(workdir.iterdir()) == [], "a payload left files behind"
    output = captured.out + captured.err
    for trace in ("pwned", "uid="):
        assert trace not in output, f"a payload printed {trace!r}"


def test_the_corpus_is_all_there() -> None:
    assert len(HOSTILE) > 250
    for entry in HOSTILE:
        assert (FIXTURES / entry["path"]).exists(), entry["path"]


@pytest.mark.parametrize("entry", HOSTILE, ids=[entry["path"] for entry in HOSTILE])
def test_hostile_sample_is_refused_as_the_manifest_says(
    entry: Dict[str, Any], empty_cwd: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = FIXTURES / entry["path"]
    if entry["expect"]["load"] == "ok":
        weights = safeformers.load_checkpoint(path, allow_pickle=allows_pickle(entry))
        assert weights, f"{entry['path']} is a valid edge case and must load"
    else:
        with pytest.raises(safeformers.Error) as raised:
            safeformers.load_checkpoint(path, allow_pickle=allows_pickle(entry))
        assert isinstance(raised.value, (safeformers.PolicyError, safeformers.FormatError))
        assert isinstance(raised.value, expected_error(entry)), (
            f"{entry['path']}: expected {entry['expect']['load']}, got "
            f"{type(raised.value).__name__}: {raised.value}"
        )
        assert "\n" not in str(raised.value)
    assert_nothing_ran(empty_cwd, capfd.readouterr())


PICKLE_NAMES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib")


@pytest.mark.parametrize("entry", PICKLE_BASED, ids=[entry["path"] for entry in PICKLE_BASED])
def test_nothing_pickle_based_loads_by_default(
    entry: Dict[str, Any], empty_cwd: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Under the default policy a file whose content is pickle-based, or whose name says it is
    a pickle checkpoint, is refused by policy before any parser reads it; the rest of these
    samples (a gzip, a tar, a folder) are not weights at all."""
    path = FIXTURES / entry["path"]
    [scanned] = safeformers.scan(path) if path.is_file() else [None]
    pickle_based = scanned is not None and scanned.format in ("pickle", "pytorch-zip")
    expected = (
        safeformers.PolicyError
        if pickle_based or path.name.lower().endswith(PICKLE_NAMES)
        else safeformers.Error
    )
    with pytest.raises(expected):
        safeformers.load_checkpoint(path)
    assert_nothing_ran(empty_cwd, capfd.readouterr())


@pytest.mark.parametrize(
    "entry", SAFETENSORS_FILES, ids=[entry["path"] for entry in SAFETENSORS_FILES]
)
def test_hostile_safetensors_through_the_safetensors_api(entry: Dict[str, Any]) -> None:
    path = FIXTURES / entry["path"]
    if entry["expect"]["load"] == "ok":
        with safeformers.safetensors.safe_open(path, framework="np") as opened:
            for name in opened.keys():
                opened.get_tensor(name)
        assert safeformers.safetensors.load_file(path, framework="np")
        return
    with pytest.raises(expected_error(entry)):
        safeformers.safetensors.load_file(path, framework="np")
    with pytest.raises(expected_error(entry)):
        safeformers.safetensors.safe_open(path, framework="np")


@pytest.mark.parametrize("entry", PICKLE_BASED, ids=[entry["path"] for entry in PICKLE_BASED])
def test_safetensors_api_never_reads_pickle(entry: Dict[str, Any]) -> None:
    with pytest.raises(safeformers.FormatError):
        safeformers.safetensors.load_file(FIXTURES / entry["path"], framework="np")


# Payloads of our own that would leave a file named CANARY in the working directory: proof that
# no code ran is then that the file is absent. The control test runs one with Python's pickle
# in a child process, to show the payloads are live.
class _System:
    def __reduce__(self) -> Any:
        return (os.system, ("touch CANARY",))


class _Exec:
    def __reduce__(self) -> Any:
        return (exec, ("open('CANARY', 'w').write('ran')",))


class _Subprocess:
    def __reduce__(self) -> Any:
        return (subprocess.call, (["touch", "CANARY"],))


class _NestedInStateDict:
    def __reduce__(self) -> Any:
        return (dict, ([("weight", _System())],))


CANARY_PAYLOADS = {
    "os.system": _System(),
    "builtins.exec": _Exec(),
    "subprocess.call": _Subprocess(),
    "inside a state dict": _NestedInStateDict(),
}


def canary_pickle(payload: Any, protocol: int) -> bytes:
    # pickle.dumps only records the callable and its arguments: nothing is called here.
    return pickle.dumps(payload, protocol=protocol)


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("name", sorted(CANARY_PAYLOADS))
@pytest.mark.parametrize("file_name", ["pytorch_model.bin", "model.pt", "weights.pkl"])
def test_canary_payloads_never_run(
    name: str, protocol: int, file_name: str, tmp_path: Path, empty_cwd: Path
) -> None:
    path = tmp_path / file_name
    path.write_bytes(canary_pickle(CANARY_PAYLOADS[name], protocol))
    with pytest.raises(safeformers.PolicyError):
        safeformers.load_checkpoint(path)
    with pytest.raises(safeformers.PolicyError):
        safeformers.load_checkpoint(path, allow_pickle=True)
    results = safeformers.scan(path)
    assert [result.verdict for result in results] == ["unsafe"]
    assert not (empty_cwd / "CANARY").exists()
    assert list(empty_cwd.iterdir()) == []


def test_canary_payloads_are_live(tmp_path: Path) -> None:
    """The control: Python's own unpickler runs the payloads, leaving CANARY behind."""
    for name, payload in sorted(CANARY_PAYLOADS.items()):
        workdir = tmp_path / name.replace(" ", "_")
        workdir.mkdir()
        (workdir / "payload.pkl").write_bytes(canary_pickle(payload, 2))
        subprocess.run(
            [sys.executable, "-c", "import pickle; pickle.load(open('payload.pkl', 'rb'))"],
            cwd=workdir,
            check=False,
            capture_output=True,
        )
        assert (workdir / "CANARY").exists(), f"{name}: the control payload did not run"
