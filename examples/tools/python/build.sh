#!/usr/bin/env bash
# Builds a smolagents-style Python tool (a folder holding tool.py, with a `Tool` subclass and its
# `forward`, and tool.json) into a tool package: OUT/tool.json and OUT/tool.wasm, a WebAssembly
# component of the world safeformers:tool/tool (crates/sandbox/wit/tool.wit) holding CPython, made
# by componentize-py. The tool then runs under exactly the sandbox and grants of any other tool:
# Python from the Hub without Python on the host.
#
#   examples/tools/python/build.sh TOOL_DIR OUT_DIR     # prints OUT_DIR last
#
# componentize-py comes from PyPI into a venv of its own: $SAFEFORMERS_VENV_COMPONENTIZE (default
# ~/.cache/safeformers/venv-componentize). The component is about 18 MB: it is built, not committed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
tool_dir="$(cd "$1" && pwd)"
out_dir="$2"
version=0.25.1

venv="${SAFEFORMERS_VENV_COMPONENTIZE:-$HOME/.cache/safeformers/venv-componentize}"
if [ ! -x "$venv/bin/componentize-py" ] || [ "$("$venv/bin/componentize-py" --version)" != "componentize-py $version" ]; then
  echo "installing componentize-py $version into $venv from PyPI..." >&2
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "componentize-py==$version" >&2
fi

mkdir -p "$out_dir"
"$venv/bin/componentize-py" --quiet -d "$root/crates/sandbox/wit" -w tool \
  componentize -p "$tool_dir" -p "$here" app -o "$out_dir/tool.wasm" >&2
cp "$tool_dir/tool.json" "$out_dir/tool.json"
echo "$(wc -c < "$out_dir/tool.wasm") bytes  $out_dir/tool.wasm" >&2
cd "$out_dir" && pwd
