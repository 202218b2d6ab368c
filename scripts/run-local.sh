#!/usr/bin/env bash
# A real training run on this machine, no cluster: installs libtorch (cached), builds the
# binaries, checks libtorch, then runs a devnet — the coordinator and 4 peer processes
# training the `tiny` model together over gRPC on 127.0.0.1 on the embedded language — with
# live progress and a report (loss vs the entropy floor, bytes per peer) in reports/devnet/.
# Extra arguments go to `tributary-worker devnet` (e.g. --peers 3 --rounds 80 --density 0.03).
# Ctrl-C stops it; the same command resumes from reports/devnet/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup-torch.sh
echo "[run-local] building (the first build takes several minutes; tests reuse it)" >&2
cargo build -p tributary-worker -p tributary-operator --bins
BIN="${CARGO_TARGET_DIR:-target}/debug"
"$BIN/tributary-worker" self-check
echo "[run-local] devnet: coordinator + 4 peers, tiny model, embedded language" >&2
exec "$BIN/tributary-worker" devnet --out reports/devnet "$@"
