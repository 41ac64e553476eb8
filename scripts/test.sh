#!/usr/bin/env bash
# Installs what the tests need, builds everything, and runs the unit and integration tests with CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --test
scripts/build.sh -DINFERLLAMA_TESTS=ON
cd build
ctest --output-on-failure -j "${INFERLLAMA_TEST_JOBS:-2}" --timeout 600 "$@"
