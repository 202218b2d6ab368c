#!/usr/bin/env bash
# One command per documented figure: `scripts/reproduce.sh NAME [ARGS...]` re-runs what
# produced the figures of the docs/benchmarks.md section that names NAME; `--list` prints the
# names. worker/tests/docs_checks.rs fails when a section of figures names no command here.
# Timings depend on the machine and its load; the simulator's losses are bit-identical only on
# the kind of CPU a report records (docs/benchmarks.md, "Reproducing the committed figures").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

name="${1:-}"
shift || true
case "$name" in
codec-bench)
    # Codec throughput (256M parameters; TRIBUTARY_BENCH_PARAMS for a smaller run) and the
    # bytes per parameter on the wire.
    exec cargo bench -p tributary-codec --bench codec "$@" ;;
decoder-fuzz)
    # Decoder fuzzing in the test suite, then libFuzzer (nightly, cargo-fuzz).
    cargo nextest run -p tributary-codec --test fuzz
    cd codec/fuzz
    exec cargo +nightly fuzz run decode -- -runs=2000000 -max_len=4096 -seed=1 ;;
aggregate-bench)
    exec cargo bench -p tributary-codec --bench aggregate "$@" ;;
simulate)
    # One simulated run; the tuning table's flags go after the name, e.g.
    #   scripts/reproduce.sh simulate --strategy ddp --lr 4e-3
    exec cargo run --release -p tributary-worker -- simulate --tokens 8388608 "$@" ;;
compare)
    # The strategy comparison (both seeds, ~46 min on 2 cores) into reports/compare; compare it
    # with docs/compare (compare-check checks the committed one against the code).
    exec cargo run --release -p tributary-worker -- compare --out reports/compare "$@" ;;
compare-hostile)
    # The hostile-peer comparison (7 honest + 3 hostile peers, both seeds, three runs each) into
    # reports/compare-hostile; compare-check checks the committed docs/compare-hostile.
    exec cargo run --release -p tributary-worker -- compare --hostile noise,sign-flip,flip-aggregate \
        --peers 7 --out reports/compare-hostile "$@" ;;
validation-bench)
    # What scoring one candidate costs a validator, against a round of H = 30 inner steps.
    exec cargo bench -p tributary-worker --bench validation "$@" ;;
compare-check)
    # What CI checks of the committed comparison and devnet reports, including the re-run of
    # the first evaluations of one committed run per strategy.
    exec cargo nextest run -p tributary-worker --test compare -E 'test(committed)' ;;
inner-step)
    exec cargo bench -p tributary-worker --bench inner_step "$@" ;;
gpu)
    # Build here, run on the device machine: scripts/gpu-bench.sh run.
    exec bash scripts/gpu-bench.sh build ;;
devnet)
    exec bash scripts/run-local.sh "$@" ;;
coordinator-load)
    exec cargo bench -p tributary-operator --bench load "$@" ;;
operator-reconcile)
    export KUBECONFIG="${KUBECONFIG:-$HOME/.cache/k8s-devcluster/kubeconfig}"
    RUST_LOG=warn CARGO_BUILD_JOBS=1 exec nice -n 19 cargo bench -p tributary-operator --bench reconcile "$@" ;;
--list)
    sed -n 's/^\([a-z][a-z-]*\))$/\1/p' "${BASH_SOURCE[0]}" ;;
*)
    echo "usage: scripts/reproduce.sh NAME [ARGS...]   (--list for the names)" >&2
    exit 2 ;;
esac
