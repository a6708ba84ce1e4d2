#!/usr/bin/env bash
# Benchmark: open time of a 500 MB safetensors file, safeformers vs Python's
# safetensors.torch.load_file, alternating A B A B in fresh processes, warm page cache.
# Writes bench/results/<date>-safetensors-open.md. Not part of CI.
#
# Python side: a venv with torch, numpy and safetensors from PyPI, created once outside the repo
# ($SAFEFORMERS_BENCH_VENV, default ~/.cache/safeformers/venv-torch).
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${SAFEFORMERS_BENCH_VENV:-$HOME/.cache/safeformers/venv-torch}"
work="${SAFEFORMERS_BENCH_WORK:-$HOME/.cache/safeformers/bench}"
rounds="${ROUNDS:-5}"
runs_per_process="${RUNS:-20}"
mkdir -p "$work"

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet torch numpy safetensors
fi
file="$work/500mb.safetensors"
if [ ! -f "$file" ]; then
  "$venv/bin/python" bench/safetensors_open.py make "$file"
fi

cargo bench --quiet -p safeformers-weights --bench open_safetensors --no-run
bench_bin=$(ls -t target/release/deps/open_safetensors-* | grep -v '\.d$' | head -n 1)

cat "$file" > /dev/null # warm the page cache for both sides
results=()
for round in $(seq 1 "$rounds"); do
  python_line=$("$venv/bin/python" bench/safetensors_open.py time "$file" "$runs_per_process")
  rust_line=$("$bench_bin" "$file" "$runs_per_process")
  results+=("$round|$python_line|$rust_line")
  echo "round $round: python $python_line" >&2
  echo "round $round: rust   $rust_line" >&2
done

date_tag=$(date +%Y-%m-%d)
out="bench/results/$date_tag-safetensors-open.md"
python3 - "$out" "$file" "${results[@]}" <<'PY'
import json, os, platform, statistics, subprocess, sys
out, path, rows = sys.argv[1], sys.argv[2], sys.argv[3:]
cpu = "unknown"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip(); break
except OSError:
    pass
lines = [
    "# safetensors open time: safeformers vs Python",
    "",
    f"Machine: {cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}.",
    f"File: {os.path.getsize(path) / 1e6:.0f} MB, 125 F32 tensors. Warm page cache. Each round runs each side in a fresh process, alternating Python then Rust; each process times 20 opens and reports the median.",
    "",
    "Python: `safetensors.torch.load_file(path)` (maps the file, returns tensors). safeformers: `open_checkpoint(path)` (maps the file, validates the whole header, indexes every tensor zero-copy).",
    "",
    "| round | Python median (ms) | safeformers median (ms) | ratio (Python / safeformers) |",
    "|---|---|---|---|",
]
py_all, rs_all = [], []
for row in rows:
    round_, py, rs = row.split("|")
    py, rs = json.loads(py), json.loads(rs)
    py_all.append(py["median_ms"]); rs_all.append(rs["median_ms"])
    lines.append(f"| {round_} | {py['median_ms']:.3f} | {rs['median_ms']:.3f} | {py['median_ms'] / rs['median_ms']:.1f}x |")
py_m, rs_m = statistics.median(py_all), statistics.median(rs_all)
lines += ["", f"**Median of rounds: Python {py_m:.3f} ms, safeformers {rs_m:.3f} ms: safeformers is {py_m / rs_m:.1f}x faster.**", ""]
open(out, "w").write("\n".join(lines))
print("\n".join(lines))
PY
