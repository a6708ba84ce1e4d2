#!/usr/bin/env bash
# Creates (or reuses) a throwaway venv with Python's pure-Python `huggingface_hub`, used by the
# interop tests (crates/cli/tests/interop_python.rs) to check that both tools share one cache.
# Prints the venv's python as the last line of stdout.
#
# Venv: $SAFEFORMERS_VENV_HUB (default ~/.cache/safeformers/venv-hub), reused between runs.
set -euo pipefail

venv="${SAFEFORMERS_VENV_HUB:-$HOME/.cache/safeformers/venv-hub}"
python="$venv/bin/python"

if ! "$python" -c "import huggingface_hub" >/dev/null 2>&1; then
  echo "creating $venv with huggingface_hub from PyPI (small, pure Python)..." >&2
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$python" -m pip install --quiet --disable-pip-version-check huggingface_hub >&2
fi
echo "$python"
