#!/usr/bin/env bash
# Configures (when ./build has not been configured yet, or when CMake arguments are given) and builds
# into ./build (Ninja, ccache). Extra arguments go to CMake's configure step.
set -euo pipefail
cd "$(dirname "$0")/.."
export CCACHE_DIR="${CCACHE_DIR:-$PWD/.ccache}"
# The arguments of the last configure: a different set configures again, the same set goes straight
# to the build (Ninja re-runs CMake by itself when a CMakeLists.txt changed).
wanted="$*"
if [[ ! -f build/build.ninja || "$(cat build/.configured-with 2>/dev/null)" != "$wanted" ]]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  printf '%s' "$wanted" > build/.configured-with
fi
cmake --build build -j "${INFERLLAMA_JOBS:-2}"
