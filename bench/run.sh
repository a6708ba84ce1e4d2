#!/usr/bin/env bash
# Side-by-side benchmark: safeformers vs PyTorch / sentence-transformers on this machine.
#
#   bench/run.sh                       # every workload
#   bench/run.sh minilm-b32 gpt2-f32   # some of them
#   ROUNDS=5 bench/run.sh tokenizer
#
# Builds what it needs in release (reusing $CARGO_TARGET_DIR or target/), creates once, outside
# the repo, the Python venv ($SAFEFORMERS_BENCH_VENV, default ~/.cache/safeformers/venv-torch),
# fetches MiniLM and writes the GPT-2 124M random folder and the 500 MB file when missing, then
# runs each workload Python / safeformers alternately in fresh processes and writes
# bench/results/<date>.md. The orchestration is bench/run.py (standard library only). Workloads
# and figures are described in bench/README.md. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in python3 cargo git; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "bench: error: $tool is not on PATH" >&2
    exit 2
  fi
done
if ! python3 -c 'import venv' >/dev/null 2>&1; then
  echo "bench: error: python3 has no venv module (Debian: apt-get install python3-venv)" >&2
  exit 2
fi
exec python3 bench/run.py "$@"
