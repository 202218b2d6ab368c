#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs libtorch and helm and starts the local
# Kubernetes control plane (all cached), then runs every test
# of the workspace with nextest. Extra arguments go to `cargo nextest run`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup-torch.sh
bash scripts/setup-helm.sh >/dev/null
# The cluster e2e test runs against a local Kubernetes control plane (built once, ~5 min).
bash scripts/devcluster.sh >/dev/null
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
exec cargo nextest run --workspace --no-fail-fast "$@"
