"""The Python examples of README.md ("The same from Python") run as they are written.

Each ```python block of that section runs, in order, in a folder holding the files the examples
name (MiniLM's model.safetensors, a benign pytorch_model.bin, a hostile evil.pt, a downloads/
folder), with MiniLM in a temporary Hugging Face cache as sentence-transformers/all-MiniLM-L6-v2
and HF_HUB_OFFLINE=1. A block after `<!-- needs PyTorch -->` runs only where torch is installed.
"""

from __future__ import annotations

import os
from pathlib import Path
import re
import shutil
import subprocess
import sys
from typing import List, Tuple

import pytest

from conftest import FIXTURES, REPO

SECTION = "## The same from Python"
NEEDS_TORCH = "<!-- needs PyTorch -->"


def python_blocks() -> List[Tuple[str, bool]]:
    """The section's ```python blocks, each with whether it needs PyTorch."""
    text = (REPO / "README.md").read_text()
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    blocks = []
    for match in re.finditer(r"(<!-- [^>]* -->\n)?```python\n(.*?)```", text[start:end], re.S):
        blocks.append((match.group(2), (match.group(1) or "").strip() == NEEDS_TORCH))
    return blocks


def test_the_section_has_its_examples() -> None:
    blocks = python_blocks()
    assert len(blocks) == 3, blocks
    assert [needs_torch for _, needs_torch in blocks] == [False, False, True]


def torch_installed() -> bool:
    probe = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True)
    return probe.returncode == 0


@pytest.fixture()
def example_folder(tmp_path: Path) -> Path:
    minilm = os.environ.get("SAFEFORMERS_MINILM_DIR")
    if not minilm:
        pytest.fail("SAFEFORMERS_MINILM_DIR is not set (scripts/test.sh sets it)")
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "model.safetensors").symlink_to(Path(minilm) / "model.safetensors")
    shutil.copy(FIXTURES / "benign" / "pytorch_model.bin", folder / "pytorch_model.bin")
    shutil.copy(FIXTURES / "hostile" / "torch" / "pytorch_model.bin", folder / "evil.pt")
    downloads = folder / "downloads"
    downloads.mkdir()
    shutil.copy(FIXTURES / "benign" / "zip_p2.pt", downloads / "fine.pt")
    shutil.copy(FIXTURES / "hostile" / "pickle" / "os_system_p2.pkl", downloads / "bad.pkl")
    environment = {
        **os.environ,
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "HF_HOME": str(tmp_path / "home"),
        "HF_HUB_OFFLINE": "1",
    }
    imported = subprocess.run(
        [os.environ["SAFEFORMERS_CLI"], "cache", "import", minilm, "--repo",
         "sentence-transformers/all-MiniLM-L6-v2"],
        capture_output=True, text=True, env=environment,
    )
    assert imported.returncode == 0, imported.stderr
    return folder


def run_block(folder: Path, code: str) -> str:
    environment = {
        **os.environ,
        "HF_HUB_CACHE": str(folder.parent / "hub"),
        "HF_HOME": str(folder.parent / "home"),
        "HF_HUB_OFFLINE": "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=folder, capture_output=True, text=True,
        env=environment, timeout=600,
    )
    assert done.returncode == 0, f"{code}\n--- stderr:\n{done.stderr}"
    return done.stdout


def test_the_examples_run(example_folder: Path) -> None:
    (pipelines, _), (checkpoints, _), (with_torch, _) = python_blocks()
    printed = run_block(example_folder, pipelines)
    assert re.search(r"^\(2, 384\) 0\.7553", printed, re.M), printed
    assert re.search(r"^\[0\.9127\d*\]$", printed, re.M), printed
    printed = run_block(example_folder, checkpoints)
    assert "allow_pickle=True" in printed and "posix.system" in printed, printed
    assert "unsafe" in printed and "bad.pkl" in printed and "fine.pt" not in printed, printed
    if torch_installed():
        run_block(example_folder, with_torch)
