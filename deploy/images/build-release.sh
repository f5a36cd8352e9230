#!/usr/bin/env bash
# Builds the three service binaries of an earlier commit (the previous release) for the
# rolling-upgrade test (tests/e2e/upgrade.rs), OUTSIDE the clone and once per commit:
#   ${PORTICO_CACHE_DIR:-~/.cache/portico}/releases/<commit>/bin/portico-*
# The source comes from `git archive` (no worktree is registered in the clone), the
# target directory sits next to it, so a later run finds the binaries and returns at
# once. Prints the bin directory on stdout.
#
#   deploy/images/build-release.sh 0c6b075
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
rev="${1:?usage: build-release.sh <commit>}"
commit="$(git -C "$ROOT" rev-parse --verify "$rev^{commit}")"
cache="${PORTICO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/portico}/releases/$commit"
bins=(portico-gateway portico-batch-processor portico-webhook-dispatcher)
done_marker="$cache/bin/.complete"
if [ -f "$done_marker" ]; then
  echo "$cache/bin"
  exit 0
fi
mkdir -p "$cache"
rm -rf "$cache/src"
mkdir -p "$cache/src"
git -C "$ROOT" archive "$commit" | tar -x -C "$cache/src"
echo "build-release.sh: building ${bins[*]} of $commit in $cache" >&2
(
  cd "$cache/src"
  # The previous release's own query cache: no database needed.
  env -u SQLX_OFFLINE_DIR -u DATABASE_URL SQLX_OFFLINE=true CARGO_TARGET_DIR="$cache/target" \
    cargo build --locked -p portico-gateway -p portico-batch-processor -p portico-webhook-dispatcher >&2
)
mkdir -p "$cache/bin"
for b in "${bins[@]}"; do cp "$cache/target/debug/$b" "$cache/bin/$b"; done
# The sources and intermediate objects are not needed once the binaries exist.
rm -rf "$cache/src" "$cache/target"
touch "$done_marker"
echo "$cache/bin"
