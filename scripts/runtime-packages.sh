#!/usr/bin/env bash
# Prints the Debian packages the node's binary needs at run time, sorted, one per line: the package that
# ships each shared library the binary links (its DT_NEEDED entries, as the loader resolves them here) and
# the package of its ELF interpreter. The list is complete (the C library and the loader included); apt
# adds each package's own dependencies when it installs them. Run it where the binary was built, on a
# Debian system whose libraries came from packages (the Dockerfile's build stage does).
#   scripts/runtime-packages.sh [BINARY]      (default: build/inferllama)
# Needs readelf (binutils), ldd (libc-bin) and dpkg. Fails, naming the library, when a linked library
# cannot be found or belongs to no package.
set -euo pipefail
binary="${1:-$(dirname "$0")/../build/inferllama}"

die() { echo "runtime-packages.sh: $*" >&2; exit 1; }
[[ -f "$binary" ]] || die "no binary at $binary (build it first: scripts/build.sh)"
command -v readelf >/dev/null || die "readelf not found (install binutils)"
command -v dpkg >/dev/null || die "dpkg not found: this derives Debian packages and runs on Debian"

# The libraries the binary itself names; what they link in turn comes with their packages' dependencies.
mapfile -t needed < <(readelf -d "$binary" | sed -n 's/.*(NEEDED).*Shared library: \[\(.*\)\]$/\1/p')
interpreter=$(readelf -l "$binary" | sed -n 's/.*\[Requesting program interpreter: \(.*\)\]$/\1/p')
((${#needed[@]})) || [[ -n "$interpreter" ]] || die "$binary links no shared library (static?)"

# soname -> path as the loader resolves it here (ldd also lists what the libraries pull in).
declare -A resolved=()
while read -r soname arrow path _; do
  [[ "$arrow" == "=>" ]] || continue
  resolved["$soname"]="$path"
done < <(ldd "$binary")

# The files to look up: each library as the loader found it, in every spelling dpkg may know it by: its
# package ships the /lib or the /usr/lib path of it (merged /usr), and the symlink (the soname) or its target.
spellings() {
  local file="$1" candidate
  local -a candidates=("$file")
  [[ -e "$file" ]] && candidates+=("$(dirname "$(readlink -f "$file")")/$(basename "$file")" "$(readlink -f "$file")")
  for candidate in "${candidates[@]}"; do printf '%s\n%s\n%s\n' "$candidate" "${candidate#/usr}" "/usr$candidate"; done
}
declare -A wanted=()   # library -> its spellings, one per line
for soname in "${needed[@]}"; do
  path="${resolved[$soname]:-}"
  [[ -n "$path" && "$path" != "not" ]] || die "$soname, which $binary links, is not found by the loader"
  wanted["$soname"]=$(spellings "$path")
done
[[ -z "$interpreter" ]] || wanted["$interpreter"]=$(spellings "$interpreter")

# One dpkg query for every spelling: "pkg:arch[, pkg2:arch]: /path" lines; only exact paths count.
declare -A owner=()
while IFS=$'\t' read -r path pkgs; do owner["$path"]="$pkgs"; done < <(
  printf '%s\n' "${wanted[@]}" | sort -u | xargs dpkg -S 2>/dev/null |
    awk '/^diversion /{ next }
         { i = index($0, ": "); pkgs = substr($0, 1, i - 1); gsub(/:[^,]*/, "", pkgs); gsub(/, */, " ", pkgs)
           print substr($0, i + 2) "\t" pkgs }' || true)

packages=()
for library in "${!wanted[@]}"; do
  found=""
  while read -r spelling; do
    if [[ -n "${owner[$spelling]:-}" ]]; then found="${owner[$spelling]}"; break; fi
  done <<<"${wanted[$library]}"
  [[ -n "$found" ]] || die "$library (${resolved[$library]:-$library}) belongs to no installed package"
  read -ra owners <<<"$found"
  packages+=("${owners[@]}")
done
printf '%s\n' "${packages[@]}" | sort -u
