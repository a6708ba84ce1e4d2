#!/usr/bin/env bash
# A short run of every cargo-fuzz target (fuzz/fuzz_targets), as part of the test suite: each is
# built with libFuzzer's coverage instrumentation on the stable toolchain (no sanitizer: that
# needs nightly; long runs use `cargo +nightly fuzz run TARGET`, see README.md) and run for
# FUZZ_SECONDS (default 20), starting from the committed test fixtures of its format where there
# are some. A crash, a timeout or an out-of-memory input fails the suite; libFuzzer leaves the
# input in the target dir's fuzz-smoke/artifacts/ folder.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-20}"
# Seed inputs per target: fixtures the tests already use.
declare -A seed_dirs=(
  [gguf_reader]=tests/fixtures/gguf-tokenizer
  [safetensors_header]=tests/fixtures/weights/benign
  [zip_reader]=tests/fixtures/weights/benign
  [pickle_vm]=tests/fixtures/weights/hostile/pickle
  [python_review]=tests/fixtures/python-review
)
target_dir="${CARGO_TARGET_DIR:-target}/fuzz-smoke"
flags=(
  --cfg fuzzing
  -Cpasses=sancov-module
  -Cllvm-args=-sanitizer-coverage-level=4
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
  -Cllvm-args=-sanitizer-coverage-pc-table
  -Cllvm-args=-sanitizer-coverage-trace-compares
  -Cdebug-assertions
  -Coverflow-checks
)
# An explicit --target keeps RUSTFLAGS off build scripts and proc macros (as cargo-fuzz does).
host="$(rustc -vV | sed -n 's/^host: //p')"
RUSTFLAGS="${flags[*]}" cargo build --release --manifest-path fuzz/Cargo.toml \
  --target-dir "$target_dir" --target "$host" --bins

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$target_dir/artifacts"
for source in fuzz/fuzz_targets/*.rs; do
  target="$(basename "$source" .rs)"
  corpus="$work/$target"
  mkdir -p "$corpus"
  seeds=()
  if [ -n "${seed_dirs[$target]:-}" ]; then
    seeds=("${seed_dirs[$target]}")
  fi
  echo "fuzz-smoke: $target for ${seconds}s"
  "$target_dir/$host/release/$target" "$corpus" "${seeds[@]}" \
    -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
    -artifact_prefix="$target_dir/artifacts/$target-" -print_final_stats=1 2>&1 |
    grep -E "^(stat::number_of_executed_units|==[0-9]+==|SUMMARY|Done)" || true
  # grep drops libFuzzer's progress lines; the pipe's status is the fuzzer's.
  status=${PIPESTATUS[0]}
  if [ "$status" -ne 0 ]; then
    echo "fuzz-smoke: $target failed (exit $status); inputs in $target_dir/artifacts/" >&2
    exit 1
  fi
done
