#!/usr/bin/env bash
# Runs every benchmark in turn and collects the RATIO lines at the end.
#   bench/run_all.sh [--size 1GiB] [--memory-size 256MiB (memory.py, idle_load.py)]
# INFERLLAMA_BINARY selects the node binary (default: build/inferllama). Use a private copy if the
# build directory may be rebuilt during the run.
set -euo pipefail
size=1GiB
memory_size=256MiB
while [[ $# -gt 0 ]]; do
  case "$1" in
    --size) size="$2"; shift 2 ;;
    --size=*) size="${1#*=}"; shift ;;
    --memory-size) memory_size="$2"; shift 2 ;;
    --memory-size=*) memory_size="${1#*=}"; shift ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
here="$(cd "$(dirname "$0")" && pwd)"
log="$(mktemp -t inferllama-bench-XXXXXX.log)"
status=0
for b in hits cold_miss ingest scan_ingest single_flight memory idle_load tracker swarm limits upload console_auth cluster; do
  args=(--size "$size")
  [[ $b == memory || $b == idle_load ]] && args=(--size "$memory_size")
  [[ $b == limits ]] && args=(--redis)
  [[ $b == console_auth ]] && args=()
  [[ $b == cluster && $EUID -ne 0 ]] && { echo "=== cluster skipped (network namespaces need root)" | tee -a "$log"; continue; }
  echo "=== $b ${args[*]}" | tee -a "$log"
  # Each script bounds its own run time; `timeout` is the backstop.
  if ! timeout 1800 python3 "$here/$b.py" "${args[@]}" 2>&1 | tee -a "$log"; then
    echo "=== $b FAILED" | tee -a "$log"
    status=1
  fi
done
echo
echo "=== summary (full output in $log)"
grep -E '^(RATIO|TTFB_DIFF_MS|RSS_MIB|TIME_S|FAILED)' "$log" || true
exit $status
