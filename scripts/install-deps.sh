#!/usr/bin/env bash
# Installs what the node needs to build and run (Debian 12). With --test, also what the tests and
# benchmarks drive: real clients (curl, aria2, libtorrent's Python bindings, qBittorrent, Transmission, the
# @huggingface/hub npm client), iproute2 for the tests' network namespaces, the anchors (nginx, opentracker),
# and git, against which the hosted repos' object ids are checked.
set -euo pipefail
cd "$(dirname "$0")/.."

# binutils: scripts/runtime-packages.sh reads the binary's libraries with readelf.
build_packages=(build-essential binutils cmake ninja-build ccache pkg-config
  libboost-dev libcurl4-openssl-dev librocksdb-dev libssl-dev libspdlog-dev libfmt-dev
  libtomlplusplus-dev libcli11-dev nlohmann-json3-dev libtorrent-rasterbar-dev libhiredis-dev libsodium-dev)
test_packages=(libgtest-dev libgmock-dev python3 curl nodejs npm nginx-light aria2 wrk openssl procps
  python3-libtorrent opentracker redis-server rocksdb-tools iproute2 qbittorrent-nox transmission-daemon
  transmission-cli git python3-aiosmtpd chromium fonts-dejavu-core)

wanted=("${build_packages[@]}")
if [[ "${1:-}" == "--test" ]]; then wanted+=("${test_packages[@]}"); fi

missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# npm ships with NodeSource's nodejs; don't ask apt for a second one when node is already present.
if command -v npm >/dev/null; then
  filtered=(); for p in "${missing[@]}"; do [[ "$p" == npm || "$p" == nodejs ]] || filtered+=("$p"); done
  missing=("${filtered[@]}")
fi
if ((${#missing[@]})); then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The Python Hub clients, each in a virtual environment of its own under .venv/, installed from the pinned
# files in tests/python/ (again only when such a file changed).
if [[ "${1:-}" == "--test" ]]; then
  for requirements in tests/python/requirements-*.txt; do
    venv=".venv/$(basename "$requirements" .txt | sed 's/^requirements-//')"
    if ! cmp -s "$requirements" "$venv/installed.txt"; then
      rm -rf "$venv"
      python3 -m venv "$venv"
      "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements"
      cp "$requirements" "$venv/installed.txt"
    fi
  done
fi

if [[ "${1:-}" == "--test" && -f tests/js/package.json ]]; then
  (cd tests/js && { [[ -d node_modules/@huggingface/hub && -d node_modules/playwright-core ]] || npm ci --no-audit --no-fund --loglevel=error; })
fi
