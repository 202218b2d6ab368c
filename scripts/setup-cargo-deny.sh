#!/usr/bin/env bash
# Installs cargo-deny (pinned) into a cache and prints its path. Built from crates.io with
# `cargo install --locked` once (a few minutes); a second run only checks.
#
#   TRIBUTARY_CACHE   cache root (default: ~/.cache/tributary); the binary lands in
#                     $TRIBUTARY_CACHE/cargo-deny-$VERSION/bin/cargo-deny
set -euo pipefail

VERSION="0.20.2"
CACHE="${TRIBUTARY_CACHE:-$HOME/.cache/tributary}"
ROOT="$CACHE/cargo-deny-$VERSION"
BIN="$ROOT/bin/cargo-deny"

say() { printf '[setup-cargo-deny] %s\n' "$*" >&2; }

installed() {
    [[ -x "$BIN" ]] && [[ "$("$BIN" --version 2>/dev/null || true)" == "cargo-deny $VERSION" ]]
}

if installed; then
    echo "$BIN"
    exit 0
fi
mkdir -p "$ROOT"
# Parallel callers may all find it missing: one builds, the others wait.
exec 9>"$ROOT/.lock"
command -v flock >/dev/null && flock 9
if installed; then
    echo "$BIN"
    exit 0
fi
say "building cargo-deny $VERSION from crates.io (once; cached in $ROOT)"
# Its own target dir: the workspace's build cache stays untouched.
CARGO_TARGET_DIR="$ROOT/target" cargo install --locked --quiet cargo-deny \
    --version "$VERSION" --root "$ROOT" >&2
rm -rf "$ROOT/target"
installed || { say "error: $BIN does not report version $VERSION"; exit 1; }
echo "$BIN"
