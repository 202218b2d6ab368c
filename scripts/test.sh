#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs libtorch (cached), then runs every test
# of the workspace with nextest. Extra arguments go to `cargo nextest run`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup-torch.sh
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
exec cargo nextest run --workspace --no-fail-fast "$@"
