#!/usr/bin/env bash
# A local training run on this machine, no cluster: installs libtorch (cached), builds the
# release binaries, checks libtorch, then trains the `tiny` model with 4 simulated SparseLoCo
# peers on the embedded language, printing held-out loss against the entropy floor.
# Extra arguments go to `tributary-worker simulate` (e.g. --strategy ddp, --tokens 8388608).
# (The multi-process devnet over gRPC replaces the single-process simulator here next.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup-torch.sh
echo "[run-local] building release binaries (the first build takes several minutes)" >&2
cargo build --release --workspace --bins
WORKER="${CARGO_TARGET_DIR:-target}/release/tributary-worker"
"$WORKER" self-check
mkdir -p reports
echo "[run-local] training: 4 SparseLoCo peers, tiny model, embedded language" >&2
exec "$WORKER" simulate --strategy sparseloco --peers 4 --tokens 4194304 --threads 2 \
    --out reports/run-local.json "$@"
