#!/usr/bin/env bash
# Rebuilds every committed WebAssembly tool from its source beside it (the sandbox's test tools
# and the example tool of the README) for wasm32-wasip2, and fails if any differs from the
# committed .wasm: the binaries the tests and the demo run are the ones the sources make.
# Adds the wasm32-wasip2 target when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
target="${CARGO_TARGET_DIR:-$PWD/target}/wasm-tools"
TOOLS_TARGET_DIR="$target" crates/sandbox/test-tools/build.sh
TOOLS_TARGET_DIR="$target" examples/tools/word_count/build.sh
if ! git diff --quiet -- crates/sandbox/tests/tools examples/tools; then
  echo "check-wasm-tools: a rebuilt tool differs from the committed one:" >&2
  git diff --stat -- crates/sandbox/tests/tools examples/tools >&2
  exit 1
fi
echo "check-wasm-tools: every committed tool.wasm is what its source builds"
