#!/usr/bin/env bash
# Configures and builds into ./build (Ninja, ccache). Extra arguments go to CMake's configure step.
set -euo pipefail
cd "$(dirname "$0")/.."
export CCACHE_DIR="${CCACHE_DIR:-$PWD/.ccache}"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
cmake --build build -j "${INFERLLAMA_JOBS:-2}"
