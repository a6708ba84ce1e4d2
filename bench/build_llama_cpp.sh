#!/usr/bin/env bash
# Builds the llama.cpp anchor (llama-bench, llama-simple, llama-server) from the sources vendored in
# the PyPI sdist `llama-cpp-python` (pinned version and sha256), outside the repo, once.
#
#   bench/build_llama_cpp.sh        # prints the directory holding the binaries as its last line
#
# CMake and Ninja come from PyPI into their own venv; the build is Release, native CPU, no curl,
# no network at run time. A cold build takes about 14 minutes on 2 cores. Everything lives under
# $SAFEFORMERS_LLAMA_CPP (default ~/.cache/safeformers/llama.cpp) and is reused when present.
# Not part of CI: bench/run.py calls it for the `llama-*` workloads.
set -euo pipefail

version="0.3.36"
sdist_sha256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
root="${SAFEFORMERS_LLAMA_CPP:-$HOME/.cache/safeformers/llama.cpp}"
sdist="$root/llama_cpp_python-$version.tar.gz"
source_dir="$root/llama_cpp_python-$version/vendor/llama.cpp"
build_dir="$root/build-$version"
bin_dir="$build_dir/bin"
tools_venv="$root/venv-cmake"
targets=(llama-bench llama-simple llama-server)

all_built() {
  for target in "${targets[@]}"; do
    [ -x "$bin_dir/$target" ] || return 1
  done
}

if all_built; then
  echo "$bin_dir"
  exit 0
fi

mkdir -p "$root"
if [ ! -f "$sdist" ]; then
  echo "fetching the llama-cpp-python $version sdist from PyPI (~77 MB)..." >&2
  python3 -m pip download --quiet --no-deps --dest "$root" "llama-cpp-python==$version" >&2
fi
actual="$(sha256sum "$sdist" | cut -d' ' -f1)"
if [ "$actual" != "$sdist_sha256" ]; then
  echo "build_llama_cpp: $sdist has sha256 $actual, expected $sdist_sha256; delete it and run again" >&2
  exit 1
fi
if [ ! -f "$source_dir/CMakeLists.txt" ]; then
  tar -xzf "$sdist" -C "$root" "llama_cpp_python-$version/vendor/llama.cpp"
fi

if [ ! -x "$tools_venv/bin/cmake" ] || [ ! -x "$tools_venv/bin/ninja" ]; then
  echo "installing cmake and ninja from PyPI into $tools_venv..." >&2
  python3 -m venv "$tools_venv"
  "$tools_venv/bin/python" -m pip install --quiet --only-binary :all: cmake ninja >&2
fi
export PATH="$tools_venv/bin:$PATH"

echo "building llama.cpp $version (Release, native CPU) in $build_dir; about 14 minutes cold..." >&2
cmake -S "$source_dir" -B "$build_dir" -G Ninja \
  -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON \
  >&2
cmake --build "$build_dir" --target "${targets[@]}" -j "$(nproc)" >&2
if ! all_built; then
  echo "build_llama_cpp: the build finished without ${targets[*]} in $bin_dir" >&2
  exit 1
fi
echo "$bin_dir"
