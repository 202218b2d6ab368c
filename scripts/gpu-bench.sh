#!/usr/bin/env bash
# GPU checks for the device tool (one call): libtorch sees the GPU, then the `1b` preset's
# bf16 inner steps (tokens/s, model-FLOPs utilisation) and the share of a round spent
# compressing its full pseudo-gradient. Binaries are built here (no Rust on the device) and
# carried in .device/; the device's own torch/lib is put on LD_LIBRARY_PATH.
#
#   here:   scripts/gpu-bench.sh build
#   device: bash scripts/gpu-bench.sh run
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
case "${1:-}" in
build)
    cd "$REPO"
    cargo build --release -p tributary-worker --bin tributary-worker
    cargo bench -p tributary-worker --bench inner_step --no-run 2>&1 | tail -1
    mkdir -p .device
    cp "${CARGO_TARGET_DIR:-target}/release/tributary-worker" .device/
    cp "$(ls -t "${CARGO_TARGET_DIR:-target}"/release/deps/inner_step-* | grep -v '\.d$' | head -1)" .device/inner_step
    strip .device/tributary-worker .device/inner_step
    ls -la .device
    ;;
run)
    TORCH_LIB="$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null \
        || ls -d /opt/torch/.venv/lib/python3*/site-packages/torch/lib | head -1)"
    export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
    "$REPO/.device/tributary-worker" self-check
    TRIBUTARY_BENCH_PRESETS=1b TRIBUTARY_BENCH_DEVICE=cuda TRIBUTARY_BENCH_BATCH="${BATCH:-4}" \
        TRIBUTARY_BENCH_SEQ=2048 TRIBUTARY_BENCH_STEPS="${STEPS:-10}" "$REPO/.device/inner_step"
    ;;
*)
    echo "usage: $0 build|run" >&2
    exit 2
    ;;
esac
