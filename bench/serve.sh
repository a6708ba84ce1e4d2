#!/usr/bin/env bash
# Serving benchmark: `safeformers serve` over HTTP against llama.cpp's llama-server (chat) and
# sentence-transformers in-process (embeddings), on this machine.
#
#   bench/serve.sh                        # serve-chat and serve-embeddings
#   bench/serve.sh serve-chat             # one of them
#   ROUNDS=1 CONCURRENCY=1,4 MAX_TOKENS=32 bench/serve.sh serve-chat
#
# Builds nothing with cargo: the safeformers binary is $SAFEFORMERS_BIN, else
# $CARGO_TARGET_DIR/release/safeformers, else target/release/safeformers; when it is missing or
# `serve` does not start, that side is "not available" and the run goes on. llama-server comes
# from bench/build_llama_cpp.sh (built once, outside the repo), the GGUF file from
# scripts/fetch-smollm2.sh, MiniLM from scripts/fetch-minilm.sh, the Python venv as for
# bench/run.sh. The orchestration is bench/serve.py and the load generator
# bench/serve_client.py (standard library only). Writes bench/results/<date>-serve.md.
# Workloads and figures are described in bench/README.md. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v python3 >/dev/null 2>&1; then
  echo "bench: error: python3 is not on PATH" >&2
  exit 2
fi
if ! python3 -c 'import venv' >/dev/null 2>&1; then
  echo "bench: error: python3 has no venv module (Debian: apt-get install python3-venv)" >&2
  exit 2
fi
exec python3 bench/serve.py "$@"
