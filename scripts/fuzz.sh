#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) with clang into ./build-fuzz and runs each for SECONDS
# (default 60) on a working copy of its seed corpus, so tests/fuzz/corpus stays small.
# Exit status: non-zero if the build fails or any target crashes (reproducers land in
# build-fuzz/fuzz-artifacts/<target>/). Environment: INFERLLAMA_JOBS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]]; then
  echo "usage: $0 [SECONDS]" >&2
  exit 2
fi
# Every target in tests/fuzz (one fuzz_NAME.cpp each), so a new one cannot be left out.
mapfile -t targets < <(cd tests/fuzz && ls fuzz_*.cpp | sed 's/\.cpp$//')
build=build-fuzz
jobs="${INFERLLAMA_JOBS:-2}"
export CCACHE_DIR="${CCACHE_DIR:-$PWD/.ccache}"

CC=clang CXX=clang++ nice cmake -S . -B "$build" -G Ninja -DINFERLLAMA_FUZZ=ON -DINFERLLAMA_TESTS=OFF >/dev/null
nice cmake --build "$build" -j "$jobs" --target "${targets[@]}"

tmp="$PWD/$build/fuzz-tmp"
mkdir -p "$tmp"
failed=()
for t in "${targets[@]}"; do
  corpus="$build/fuzz-corpus/$t"
  artifacts="$build/fuzz-artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  cp -n tests/fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null || true
  args=(-max_total_time="$seconds" -print_final_stats=1 -timeout=10 -artifact_prefix="$artifacts/")
  [[ -f tests/fuzz/$t.dict ]] && args+=(-dict="tests/fuzz/$t.dict")
  exe="$build/tests/fuzz/$t"
  [[ -x "$exe" ]] || { echo "missing $exe" >&2; exit 1; }
  log="$build/fuzz-$t.log"
  echo "== $t: ${seconds}s, corpus $corpus, log $log"
  if FUZZ_TMPDIR="$tmp" nice "$exe" "${args[@]}" "$corpus" >"$log" 2>&1; then
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec)' "$log" | sed 's/^/   /' || true
  else
    echo "!! $t failed (log: $log)"
    grep -E 'ERROR: |SUMMARY: |invariant failed|Test unit written to' "$log" | sed 's/^/   /' || tail -n 20 "$log"
    grep -E '^#[0-9]+' "$log" | tail -n 1 | sed 's/^/   last status: /' || true
    failed+=("$t")
  fi
done
rm -rf "$tmp"

if ((${#failed[@]})); then
  echo "crashes in: ${failed[*]}"
  exit 1
fi
echo "no crashes"
