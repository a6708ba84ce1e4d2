"""Reads release the GIL: another Python thread runs while a read is in progress.

No timing is involved. The native module's test hook holds every GIL-released section at its
start until released; the test starts a read in a thread, waits (from the main thread, running
Python) until the read is inside its released section, does Python work there, then lets it
go. Were the GIL held during the read, the main thread could not run until the reader finished
(after the hook's 60 s limit) and the test would fail, not hang.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict

import numpy as np
import pytest

import safeformers
from safeformers import _native
from conftest import write_safetensors

testing = _native._testing

ROWS = 16 * 1024  # 16384 x 1024 float32: 64 MiB


@pytest.fixture(scope="module")
def large_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("large") / "large.safetensors"
    block = np.arange(1024 * 1024, dtype="<f4").tobytes()
    data = block * (ROWS // 1024)
    write_safetensors(path, {"big": ("F32", [ROWS, 1024], data)})
    return path


def run_while_held(operation: Callable[[], Any]) -> Dict[str, Any]:
    """Runs `operation` in a thread with released sections held; returns what happened."""
    outcome: Dict[str, Any] = {}

    def reader() -> None:
        try:
            outcome["result"] = operation()
        except BaseException as error:  # reported by the main thread
            outcome["error"] = error

    assert testing.released_sections_in_flight() == 0
    testing.hold_released_sections()
    try:
        thread = threading.Thread(target=reader)
        thread.start()
        while testing.released_sections_in_flight() == 0:
            assert thread.is_alive(), "the read ended without releasing the GIL"
            time.sleep(0.001)
        # This thread now runs Python while the reader is inside its read, GIL released.
        progress = [index * index for index in range(100_000)]
        outcome["progress"] = len(progress)
        outcome["in_flight_after_progress"] = testing.released_sections_in_flight()
    finally:
        testing.release_held_sections()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome


def test_load_checkpoint_releases_the_gil_while_it_opens_the_file(large_file: Path) -> None:
    outcome = run_while_held(lambda: safeformers.load_checkpoint(large_file))
    assert outcome["progress"] == 100_000
    assert outcome["in_flight_after_progress"] == 1
    assert outcome["result"]["big"].shape == (ROWS, 1024)


def test_copying_a_large_tensor_releases_the_gil(large_file: Path) -> None:
    checkpoint = _native.Checkpoint.open(large_file, allow_pickle=False)
    outcome = run_while_held(lambda: checkpoint.arrays(memory="copy"))
    assert outcome["in_flight_after_progress"] == 1
    big = outcome["result"]["big"]
    assert big.flags.writeable
    assert big[ROWS - 1, 1023] == np.float32(1024 * 1024 - 1)


def test_scan_releases_the_gil(large_file: Path) -> None:
    outcome = run_while_held(lambda: safeformers.scan(large_file))
    assert outcome["in_flight_after_progress"] == 1
    assert [result.verdict for result in outcome["result"]] == ["safe"]


def test_concurrent_reads_give_the_same_arrays(large_file: Path) -> None:
    results = []

    def read() -> None:
        results.append(safeformers.load_checkpoint(large_file, copy=True)["big"])

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4
    for result in results[1:]:
        assert np.array_equal(result, results[0])
