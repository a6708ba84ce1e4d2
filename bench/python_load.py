"""Loading from Python: safeformers vs PyTorch and the reference safetensors, in one run.

    bench/python-load.sh                     # builds the release wheel, installs it, runs this
    python bench/python_load.py [ROUNDS]     # in a venv with torch, safetensors and safeformers

Not part of CI. Two comparisons on ~500 MB checkpoints (125 float32 tensors of 1024 x 1024,
written here once into $SAFEFORMERS_BENCH_WORK, default ~/.cache/safeformers/bench):

* `torch-zip`: `torch.load(PATH, weights_only=True)` vs `safeformers.torch.load(PATH)` on the
  zip checkpoint `torch.save` writes;
* `safetensors`: `safetensors.torch.load_file(PATH)` vs `safeformers.safetensors.load_file(PATH)`.

Each is timed twice: the load call alone, and the load followed by reading every byte of every
tensor (`tensor.sum()`), since a loader that maps the file defers the reading to first use.
Every sample is a fresh process (modules imported before the clock starts), the two sides
alternating, after the files were read once so the page cache is warm; figures are medians over
ROUNDS rounds (default 5). The ratio is the reference's time over safeformers': above 1 means
safeformers is faster. The results also check, once, that both sides give the same tensors.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from cpu_name import cpu_name  # bench/cpu_name.py, beside this script

WORK = Path(os.environ.get("SAFEFORMERS_BENCH_WORK", Path.home() / ".cache/safeformers/bench"))
ZIP = WORK / "500mb.pt"
SAFETENSORS = WORK / "500mb-python.safetensors"

LOADERS = {
    ("torch-zip", "reference"): "torch.load(PATH, weights_only=True)",
    ("torch-zip", "safeformers"): "safeformers.torch.load(PATH)",
    ("safetensors", "reference"): "safetensors.torch.load_file(PATH)",
    ("safetensors", "safeformers"): "safeformers.safetensors.load_file(PATH)",
}


def make_files() -> None:
    import torch
    from safetensors.torch import save_file

    WORK.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    tensors = {
        f"model.layers.{i}.weight": torch.randn(1024, 1024, generator=generator)
        for i in range(125)
    }
    if not ZIP.exists():
        torch.save(tensors, ZIP)
    if not SAFETENSORS.exists():
        save_file(tensors, SAFETENSORS, metadata={"format": "pt"})


def loader(workload: str, side: str):
    """The load function of one side, imported (outside the timed region on both sides)."""
    path = ZIP if workload == "torch-zip" else SAFETENSORS
    if (workload, side) == ("torch-zip", "reference"):
        import torch

        return lambda: torch.load(path, weights_only=True)
    if (workload, side) == ("torch-zip", "safeformers"):
        import safeformers.torch

        return lambda: safeformers.torch.load(path)
    if side == "reference":
        from safetensors.torch import load_file

        return lambda: load_file(path)
    import safeformers.safetensors

    return lambda: safeformers.safetensors.load_file(path)


def load(workload: str, side: str):
    return loader(workload, side)()


def child(workload: str, side: str) -> None:
    """One sample, in a fresh process: prints {"load_s", "load_and_read_s"}."""
    import torch

    torch.set_num_threads(1)
    load_now = loader(workload, side)  # modules imported before the clock starts, both sides
    start = time.perf_counter()
    tensors = load_now()
    loaded = time.perf_counter()
    total = 0.0
    for tensor in tensors.values():
        total += float(tensor.sum())
    read = time.perf_counter()
    assert len(tensors) == 125
    print(json.dumps({"load_s": loaded - start, "load_and_read_s": read - start, "sum": total}))


def compare_outputs() -> str:
    import torch

    differences = []
    for workload in ("torch-zip", "safetensors"):
        reference = load(workload, "reference")
        ours = load(workload, "safeformers")
        if sorted(reference) != sorted(ours):
            differences.append(f"{workload}: different names")
            continue
        for name, tensor in reference.items():
            if tensor.dtype != ours[name].dtype or not torch.equal(tensor, ours[name]):
                differences.append(f"{workload}: {name} differs")
    return "equal on both files" if not differences else "DIFFERENT: " + "; ".join(differences)


def machine_line() -> str:
    import numpy
    import safetensors
    import torch

    import safeformers

    cpu = cpu_name()
    load = os.getloadavg()
    return (
        f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}; load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the start; Python "
        f"{platform.python_version()}, torch {torch.__version__}, safetensors "
        f"{safetensors.__version__}, numpy {numpy.__version__}, safeformers "
        f"{safeformers.__version__}"
    )


def main(rounds: int) -> None:
    make_files()
    for path in (ZIP, SAFETENSORS):
        path.read_bytes()  # warm the page cache for both sides
    samples: dict = {key: [] for key in LOADERS}
    for round_index in range(rounds):
        for workload in ("torch-zip", "safetensors"):
            for side in ("reference", "safeformers"):
                completed = subprocess.run(
                    [sys.executable, __file__, "--child", workload, side],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                sample = json.loads(completed.stdout.strip().splitlines()[-1])
                samples[(workload, side)].append(sample)
                print(
                    f"round {round_index + 1} {workload:11} {side:11} load "
                    f"{sample['load_s'] * 1e3:8.1f} ms  load+read "
                    f"{sample['load_and_read_s'] * 1e3:8.1f} ms",
                    file=sys.stderr,
                )
    print(f"Machine: {machine_line()}")
    print(f"Files: {ZIP} ({ZIP.stat().st_size / 1e6:.0f} MB), "
          f"{SAFETENSORS} ({SAFETENSORS.stat().st_size / 1e6:.0f} MB); {rounds} rounds, "
          "fresh process per sample, warm page cache, torch.set_num_threads(1).")
    print(f"Outputs: {compare_outputs()}.")
    print()
    print("| workload | figure | reference | reference (ms) | safeformers | safeformers (ms) "
          "| ratio |")
    print("|---|---|---|---|---|---|---|")
    for workload in ("torch-zip", "safetensors"):
        for figure in ("load_s", "load_and_read_s"):
            reference = statistics.median(s[figure] for s in samples[(workload, "reference")])
            ours = statistics.median(s[figure] for s in samples[(workload, "safeformers")])
            label = "load" if figure == "load_s" else "load + read every tensor"
            print(
                f"| {workload} | {label} | `{LOADERS[(workload, 'reference')]}` | "
                f"{reference * 1e3:.1f} | `{LOADERS[(workload, 'safeformers')]}` | "
                f"{ours * 1e3:.1f} | {reference / ours:.2f}x |"
            )


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
