#!/usr/bin/env bash
# Builds the example tool into tool.wasm (committed). Needs the wasm32-wasip2 target; adds it.
set -euo pipefail
cd "$(dirname "$0")"
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
export CARGO_TARGET_DIR="${TOOLS_TARGET_DIR:-$PWD/target}"
cargo build --release --target wasm32-wasip2
cp "$CARGO_TARGET_DIR/wasm32-wasip2/release/word_count.wasm" tool.wasm
echo "$(wc -c < tool.wasm) bytes  tool.wasm, sha256 $(sha256sum tool.wasm | cut -d' ' -f1)"
