#!/usr/bin/env bash
# Creates (or reuses) a throwaway venv with Python's `huggingface_hub` and the official `openai`
# client (both from PyPI), used by the interop tests: crates/cli/tests/interop_python.rs checks
# that both tools share one cache, crates/cli/tests/serve_openai.rs drives `safeformers serve`
# with the openai client (scripts/openai_client_check.py).
# Prints the venv's python as the last line of stdout.
#
# Venv: $SAFEFORMERS_VENV_HUB (default ~/.cache/safeformers/venv-hub), reused between runs; a venv
# made before a package was added here gets the missing package installed into it.
set -euo pipefail

venv="${SAFEFORMERS_VENV_HUB:-$HOME/.cache/safeformers/venv-hub}"
python="$venv/bin/python"
packages=(huggingface_hub openai)

if [ ! -x "$python" ] || ! "$python" -c "import sys" >/dev/null 2>&1; then
  echo "creating $venv..." >&2
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
fi

missing=()
for package in "${packages[@]}"; do
  if ! "$python" -c "import $package" >/dev/null 2>&1; then
    missing+=("$package")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]} into $venv from PyPI..." >&2
  "$python" -m pip install --quiet --disable-pip-version-check "${missing[@]}" >&2
fi
"$python" -c "import huggingface_hub, openai" >&2
echo "$python"
