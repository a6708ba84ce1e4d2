#!/usr/bin/env bash
# The Python package's tests (crates/python, `pip install safeformers`): builds the wheel with
# maturin, installs it into a throwaway venv with numpy, ml_dtypes and pytest (all from PyPI),
# and runs pytest on crates/python/tests. PyTorch is not installed: the benign checkpoints are
# compared with committed goldens of torch.load (scripts/make_python_goldens.py).
#
# maturin lives in a venv of its own, reused between runs ($SAFEFORMERS_VENV_MATURIN, default
# ~/.cache/safeformers/venv-maturin). The wheel and the test venv go under the cargo target
# directory. The parity tests run the `safeformers` CLI: $SAFEFORMERS_CLI, else the debug binary,
# built here (a no-op after `cargo test --workspace`). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

target=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')

maturin_venv="${SAFEFORMERS_VENV_MATURIN:-$HOME/.cache/safeformers/venv-maturin}"
maturin="$maturin_venv/bin/maturin"
if [ ! -x "$maturin" ] || ! "$maturin" --version >/dev/null 2>&1; then
  echo "creating $maturin_venv with maturin from PyPI..." >&2
  rm -rf "$maturin_venv"
  python3 -m venv "$maturin_venv" >&2
  "$maturin_venv/bin/python" -m pip install --quiet --disable-pip-version-check "maturin>=1.9,<2" >&2
fi

wheels="$target/python-wheels"
rm -rf "$wheels"
# A debug build (maturin's default): the tests need no speed, and it shares the dependencies
# `cargo test` built.
"$maturin" build --quiet -m crates/python/Cargo.toml --out "$wheels" >&2
wheel=$(ls "$wheels"/safeformers-*.whl)

venv="$target/python-test-venv"
rm -rf "$venv"
python3 -m venv "$venv" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  numpy ml_dtypes pytest "$wheel" >&2

# `pip install` of the wheel in a fresh venv with only numpy: it embeds two sentences with MiniLM,
# imports, reads, scans, and says what to install for bfloat16.
bare="$target/python-numpy-only-venv"
rm -rf "$bare"
python3 -m venv "$bare" >&2
"$bare/bin/python" -m pip install --quiet --disable-pip-version-check numpy "$wheel" >&2
if [ -z "${SAFEFORMERS_MINILM_DIR:-}" ]; then
  SAFEFORMERS_MINILM_DIR=$(scripts/fetch-minilm.sh | tail -n 1)
  export SAFEFORMERS_MINILM_DIR
fi
"$bare/bin/python" - tests/fixtures/weights "$SAFEFORMERS_MINILM_DIR" <<'PY'
import sys

import safeformers

fixtures, minilm = sys.argv[1], sys.argv[2]
embeddings = safeformers.pipeline("feature-extraction", minilm)(["A man is eating food.", "A man is riding a horse."])
assert embeddings.shape == (2, 384) and str(embeddings.dtype) == "float32", embeddings
weights = safeformers.load_checkpoint(f"{fixtures}/benign/zip_p2.pt", allow_pickle=True)
assert sorted(weights) == ["bias", "weight"], weights
assert [r.verdict for r in safeformers.scan(f"{fixtures}/hostile/pickle/os_system_p2.pkl")] == ["unsafe"]
try:
    safeformers.load_checkpoint(f"{fixtures}/benign/dtypes.safetensors")
    raise AssertionError("bfloat16 without ml_dtypes")
except safeformers.Error as error:
    assert "ml_dtypes" in str(error), error
assert "torch" not in sys.modules and "ml_dtypes" not in sys.modules
print("the wheel works in a venv with only numpy", file=sys.stderr)
PY

if [ -z "${SAFEFORMERS_CLI:-}" ]; then
  cargo build --quiet -p safeformers-cli --bin safeformers >&2
  SAFEFORMERS_CLI="$target/debug/safeformers"
fi
SAFEFORMERS_CLI=$(realpath "$SAFEFORMERS_CLI")
export SAFEFORMERS_CLI

cd crates/python/tests
"$venv/bin/python" -m pytest \
  -p no:cacheprovider -q "$@"
