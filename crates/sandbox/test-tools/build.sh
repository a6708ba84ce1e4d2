#!/usr/bin/env bash
# Builds the sandbox's test tools (WebAssembly components of ../wit/tool.wit) and copies them to
# ../tests/tools/<name>.wasm, where the tests read them. The outputs are committed; run this after
# changing a tool. Needs the wasm32-wasip2 target (rustup target add wasm32-wasip2).
set -euo pipefail
cd "$(dirname "$0")"
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
export CARGO_TARGET_DIR="${TOOLS_TARGET_DIR:-$PWD/target}"
tools=(echo read_file spin sleep memory_bomb big_output stdout_flood connect env http_get)
cargo build --release --target wasm32-wasip2 --locked $(printf -- '-p %s ' "${tools[@]}")
mkdir -p ../tests/tools
for tool in "${tools[@]}"; do
  cp "$CARGO_TARGET_DIR/wasm32-wasip2/release/$tool.wasm" "../tests/tools/$tool.wasm"
  echo "$(wc -c < "../tests/tools/$tool.wasm") bytes  tests/tools/$tool.wasm"
done
