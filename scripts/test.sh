#!/usr/bin/env bash
# Installs what the tests need, builds everything, and runs the unit and integration tests with CTest.
# With --long, also a long kill -9 crash loop and a short libFuzzer run of every fuzz target (clang).
set -euo pipefail
cd "$(dirname "$0")/.."
long=0
if [[ "${1:-}" == "--long" ]]; then long=1; shift; fi
scripts/install-deps.sh --test
scripts/build.sh -DINFERLLAMA_TESTS=ON
(cd build && ctest --output-on-failure -j "${INFERLLAMA_TEST_JOBS:-2}" --timeout 600 "$@")
if ((long)); then
  TEST_INFERLLAMA_BINARY="$PWD/build/inferllama" python3 tests/integration/crash_loop.py \
    --iterations "${INFERLLAMA_CRASH_ITERATIONS:-100}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends clang libclang-rt-14-dev >/dev/null
  scripts/fuzz.sh "${INFERLLAMA_FUZZ_SECONDS:-60}"
fi
