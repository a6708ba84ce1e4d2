#!/usr/bin/env bash
# Benchmark: greedy decoding speed of a randomly initialised GPT-2 small (124M, GPT2Config()),
# 32-token prompt, 128 new tokens, KV cache, CPU, 1 and 2 threads: safeformers
# (crates/models/examples/greedy_speed.rs, release build) vs PyTorch `model.generate(...,
# do_sample=False)` (bench/greedy_generate.py) on the same model folder. Not part of CI.
#
# The model folder is written once by scripts/make_decoder_fixtures.py --gpt2-124m (never
# committed). Python side: the venv of scripts/make_model_fixtures.py.
#
# safeformers runs once per weight storage in WEIGHTS (default: "f32 f16 bf16 q8"; q8 is
# `--quantize q8`, the others `--dtype`), PyTorch (f32) before each of them, so the two sides
# alternate. THREADS (default "1 2") lists the thread counts.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${SAFEFORMERS_BENCH_VENV:-$HOME/.cache/safeformers/venv-torch}"
model="${GPT2_124M_DIR:-$HOME/.cache/safeformers/gpt2-124m-random}"
runs="${RUNS:-3}"

if [ ! -f "$model/model.safetensors" ]; then
  "$venv/bin/python" scripts/make_decoder_fixtures.py --gpt2-124m "$model"
fi
cargo build --quiet --release -p safeformers-models --example greedy_speed
bin="${CARGO_TARGET_DIR:-target}/release/examples/greedy_speed"

for threads in ${THREADS:-1 2}; do
  for weights in ${WEIGHTS:-f32 f16 bf16 q8}; do
    case "$weights" in
      q8) storage=(--quantize q8) ;;
      *) storage=(--dtype "$weights") ;;
    esac
    "$venv/bin/python" bench/greedy_generate.py "$model" --threads "$threads" \
      --prompt-tokens 32 --new-tokens 128 --runs "$runs" 2>/dev/null
    RAYON_NUM_THREADS=$threads "$bin" "$model" --prompt-tokens 32 --new-tokens 128 \
      --runs "$runs" "${storage[@]}"
  done
done
