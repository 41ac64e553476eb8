#!/usr/bin/env bash
# Quick start: install, build, and run the node on its embedded defaults
# (listen 0.0.0.0:8080, data in ./data, upstream https://huggingface.co). Arguments go to `serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh -DINFERLLAMA_TESTS=OFF
exec build/inferllama serve "$@"
