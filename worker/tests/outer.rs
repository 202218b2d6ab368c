//! The outer step is bit-for-bit deterministic, whatever the thread count.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tributary_crds::{OuterKind, OuterOptimizer};
use tributary_worker::model::{ParamSpec, fingerprint};
use tributary_worker::train::OuterStep;

fn buffers(seed: u64, sizes: &[usize]) -> Vec<Vec<f32>> {
    let mut x = seed;
    sizes
        .iter()
        .map(|n| {
            (0..*n)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((x >> 40) as f32 / (1u64 << 24) as f32) - 0.5
                })
                .collect()
        })
        .collect()
}

fn run(kind: OuterKind, threads: usize) -> String {
    let sizes = [1000, 70_000, 3, 4096];
    let specs: Vec<ParamSpec> = sizes
        .iter()
        .enumerate()
        .map(|(i, n)| ParamSpec {
            name: format!("t{i}"),
            shape: vec![*n],
        })
        .collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let spec = OuterOptimizer {
            kind,
            lr: Some(0.7),
            momentum: None,
            lr_schedule: vec![],
        };
        let mut outer = OuterStep::new(spec, &sizes);
        let mut theta = buffers(1, &sizes);
        for r in 0..5 {
            outer
                .apply(&mut theta, &buffers(100 + r, &sizes), r)
                .unwrap();
        }
        fingerprint(&specs, &theta)
    })
}

#[test]
fn same_inputs_give_the_same_fingerprint_across_thread_counts() {
    for kind in [OuterKind::Sgd, OuterKind::Nesterov] {
        let one = run(kind, 1);
        assert_eq!(one, run(kind, 2));
        assert_eq!(one, run(kind, 7));
    }
    assert_ne!(run(OuterKind::Sgd, 1), run(OuterKind::Nesterov, 1));
}

#[test]
fn sgd_is_theta_minus_lr_delta() {
    let spec = OuterOptimizer {
        kind: OuterKind::Sgd,
        lr: Some(0.5),
        momentum: None,
        lr_schedule: vec![],
    };
    let mut outer = OuterStep::new(spec, &[3]);
    let mut theta = vec![vec![1.0f32, 2.0, -3.0]];
    outer
        .apply(&mut theta, &[vec![2.0, -2.0, 0.25]], 0)
        .unwrap();
    assert_eq!(theta, vec![vec![0.0, 3.0, -3.125]]);
    assert!(outer.apply(&mut theta, &[vec![1.0]], 1).is_err());
}
