#!/usr/bin/env bash
# Build a folder once per machine for given inputs: scripts/build-cache.sh OUTPUT INPUT... -- COMMAND...
#
# The key is the sha256 of every INPUT file's content (their names and order included). A folder
# built for that key is kept in $APRENDIZ_BUILD_CACHE (default ~/.cache/aprendiz/builds); with one
# there, OUTPUT becomes a copy of it and COMMAND does not run. Otherwise COMMAND builds OUTPUT,
# which is then kept under the key. Every clone and CI run on one machine shares the cache, as
# they share the image-training environment; a new machine, or a changed input, builds again.
# APRENDIZ_BUILD_CACHE=off always runs COMMAND. A lock keeps two clones from building one key at once.
set -euo pipefail

output=$1
shift
inputs=()
while [[ $# -gt 0 && $1 != "--" ]]; do inputs+=("$1"); shift; done
[[ $# -gt 1 ]] || { echo "usage: $0 OUTPUT INPUT... -- COMMAND..." >&2; exit 2; }
shift

cache=${APRENDIZ_BUILD_CACHE:-$HOME/.cache/aprendiz/builds}
if [[ $cache == off ]]; then exec "$@"; fi
key=$(for f in "${inputs[@]}"; do printf '%s\n' "$f"; sha256sum < "$f"; done | sha256sum | cut -c1-16)
kept="$cache/$(basename "$output")-$key"

mkdir -p "$cache"
exec 9>"$kept.lock"
flock 9
if [[ -d $kept ]]; then
  rm -rf "$output"
  mkdir -p "$(dirname "$output")"
  cp -a "$kept" "$output"
  echo "aprendiz: $output from the build cache ($kept); APRENDIZ_BUILD_CACHE=off builds it again"
  exit 0
fi
"$@"
rm -rf "$kept.tmp"
cp -a "$output" "$kept.tmp"
mv "$kept.tmp" "$kept"
