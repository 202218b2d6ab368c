#!/usr/bin/env bash
# A local run on this machine, no cluster: installs libtorch (cached), builds the release
# binaries and runs the worker's self-check. (The multi-process devnet lands here next.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup-torch.sh
echo "[run-local] building release binaries (the first build takes several minutes)" >&2
cargo build --release --workspace --bins
exec cargo run --quiet --release -p tributary-worker -- self-check "$@"
