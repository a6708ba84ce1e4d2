#!/usr/bin/env bash
# Benchmark: loading from Python, safeformers vs torch.load(weights_only=True) and the reference
# safetensors (bench/python_load.py says what is timed). Not part of CI.
#
# Builds the release wheel of crates/python with maturin (scripts/test-python.sh's venv), installs
# it into the benchmark venv ($SAFEFORMERS_BENCH_VENV, default ~/.cache/safeformers/venv-torch,
# made with torch, numpy and safetensors from PyPI if missing) and runs the benchmark; the
# results go to stdout (markdown) and bench/results/<date>-python-load.md.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${SAFEFORMERS_BENCH_VENV:-$HOME/.cache/safeformers/venv-torch}"
maturin_venv="${SAFEFORMERS_VENV_MATURIN:-$HOME/.cache/safeformers/venv-maturin}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet torch numpy safetensors
fi
if [ ! -x "$maturin_venv/bin/maturin" ]; then
  python3 -m venv "$maturin_venv"
  "$maturin_venv/bin/pip" install --quiet "maturin>=1.9,<2"
fi
target=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
wheels="$target/python-wheels-release"
rm -rf "$wheels"
"$maturin_venv/bin/maturin" build --quiet --release -m crates/python/Cargo.toml --out "$wheels" >&2
"$venv/bin/pip" install --quiet --force-reinstall --no-deps "$wheels"/safeformers-*.whl

out="bench/results/$(date +%Y-%m-%d)-python-load.md"
{
  echo "# Loading from Python: safeformers vs torch.load and safetensors"
  echo
  "$venv/bin/python" bench/python_load.py "${ROUNDS:-5}"
} | tee "$out"
