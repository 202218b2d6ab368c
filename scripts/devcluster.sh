#!/usr/bin/env bash
# Starts the local Kubernetes 1.20 control plane the cluster e2e test runs against (built from
# source and cached in ~/.cache/k8s-devcluster the first time, ~5 min; then ~5 s), and prints
# its KUBECONFIG. Idempotent: a running cluster is left as it is. The scripts live outside this
# repository (../shared/k8s-devcluster); TRIBUTARY_DEVCLUSTER_DIR points elsewhere.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
for dir in "${TRIBUTARY_DEVCLUSTER_DIR:-}" "$root/../shared/k8s-devcluster" /work/shared/k8s-devcluster; do
    if [[ -n "$dir" && -f "$dir/up.sh" ]]; then
        # A stale pid file from a killed cluster makes up.sh give up: clear it, then start.
        if ! bash "$dir/up.sh" >&2; then
            echo "devcluster: up.sh failed; restarting the cluster once" >&2
            bash "$dir/down.sh" >&2 || true
            bash "$dir/up.sh" >&2
        fi
        echo "${K8S_DEVCLUSTER_HOME:-$HOME/.cache/k8s-devcluster}/kubeconfig"
        exit 0
    fi
done
echo "devcluster: k8s-devcluster scripts not found; set TRIBUTARY_DEVCLUSTER_DIR" >&2
exit 1
