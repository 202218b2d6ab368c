//! Property tests of compression, the wire format and aggregation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use proptest::prelude::*;
use tributary_codec::*;

fn params_strategy() -> impl Strategy<Value = CodecParams> {
    (
        1u16..=8,
        1u16..=12,
        prop_oneof![Just(2u8), Just(4), Just(8)],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(side, k, bits, balanced, sparse_1d)| CodecParams {
            chunk_side: side,
            k_per_chunk: k.min(side * side),
            bits,
            mode: if balanced {
                QuantMode::Balanced
            } else {
                QuantMode::Production
            },
            beta: 0.9,
            one_d: if sparse_1d {
                OneDPolicy::Sparse
            } else {
                OneDPolicy::Dense
            },
        })
}

fn tensor_strategy() -> impl Strategy<Value = (Vec<usize>, Vec<f32>)> {
    prop_oneof![
        (1usize..=24, 1usize..=24).prop_map(|(r, c)| vec![r, c]),
        (1usize..=40).prop_map(|n| vec![n]),
        (1usize..=4, 1usize..=5, 1usize..=6).prop_map(|(a, b, c)| vec![a, b, c]),
    ]
    .prop_flat_map(|dims| {
        let n: usize = dims.iter().product();
        (Just(dims), prop::collection::vec(-1.0f32..1.0, n))
    })
}

/// Production dequantization computed from the published formulas, independently.
fn reference_production(values: &[f32], levels: usize) -> Vec<f32> {
    let n = values.len();
    let shift = (values.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64) as f32;
    let ss: f64 = values.iter().map(|&v| f64::from(v - shift).powi(2)).sum();
    let sigma = (ss / (n.max(2) - 1) as f64).sqrt() as f32;
    let scale = (sigma * (6.0 / levels as f32)).max(1e-12);
    let codes: Vec<usize> = values
        .iter()
        .map(|&v| {
            ((v - shift) / scale + (levels / 2) as f32)
                .round_ties_even()
                .clamp(0.0, (levels - 1) as f32) as usize
        })
        .collect();
    let mut sum = vec![0f64; levels];
    let mut cnt = vec![0u64; levels];
    for (&v, &q) in values.iter().zip(&codes) {
        sum[q] += f64::from(v - shift);
        cnt[q] += 1;
    }
    codes
        .iter()
        .map(|&q| (sum[q] / cnt[q] as f64) as f32 + shift)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// decode(encode(compress(x))) is the quantized top-k of x: same positions as a reference
    /// sort-based top-k, exactly k per chunk, and (production mode) the values of an
    /// independent implementation of the published quantizer.
    #[test]
    fn round_trip_is_quantized_topk(p in params_strategy(), (dims, x) in tensor_strategy()) {
        let s = shape(&dims);
        let mut ef = ErrorFeedback::zeros(x.len());
        let t = compress(&mut ef, &x, &s, &p).unwrap();
        let c = Contribution { params: p, tensors: vec![t.clone()] };
        let bytes = encode(&c).unwrap();
        let back = decode(&bytes, &DecodeLimits::default()).unwrap();
        prop_assert_eq!(&back, &c);
        prop_assert_eq!(encode(&back).unwrap(), bytes);
        let dense = back.tensors[0].to_dense();
        match back.tensors[0].payload() {
            Payload::Dense(v) => {
                prop_assert!(dims.len() <= 1 && p.one_d == OneDPolicy::Dense);
                prop_assert_eq!(v, &x.iter().map(|&d| 0.0 * p.beta + d).collect::<Vec<_>>());
            }
            Payload::Sparse(sp) => {
                let cols = *dims.last().unwrap();
                let rows = x.len() / cols;
                let side = p.chunk_side as usize;
                let (ch, cw) = (divisor(rows, side), divisor(cols, side));
                let k = if dims.len() <= 1 {
                    ((p.k_per_chunk as usize * ch * cw).div_ceil(side * side)).clamp(1, ch * cw)
                } else {
                    (p.k_per_chunk as usize).min(ch * cw)
                };
                prop_assert_eq!(sp.k(), k);
                let reference = reference_topk(&x, rows, cols, ch, cw, k);
                prop_assert_eq!(sp.num_chunks(), reference.len());
                let mut selected = vec![];
                for (c, want) in reference.iter().enumerate() {
                    let got: Vec<usize> = sp.chunk_positions(c).iter().map(|&q| q as usize).collect();
                    prop_assert_eq!(got.len(), k);
                    prop_assert!(got.windows(2).all(|w| w[0] < w[1]));
                    prop_assert_eq!(&got, want);
                    let (bi, bj) = (c / (cols / cw), c % (cols / cw));
                    selected.extend(got.iter().map(|&q| (bi * ch + q / cw) * cols + bj * cw + q % cw));
                }
                let kept: Vec<f32> = selected.iter().map(|&i| x[i]).collect();
                if p.mode == QuantMode::Production {
                    let want = reference_production(&kept, 1 << p.bits);
                    let got: Vec<f32> = selected.iter().map(|&i| dense[i]).collect();
                    prop_assert_eq!(got, want);
                } else {
                    // Balanced: signs survive, magnitudes within the chunk's range.
                    for &i in &selected {
                        prop_assert!(dense[i] == 0.0 || (dense[i] > 0.0) == (x[i] > 0.0));
                    }
                }
                let mut is_sel = vec![false; x.len()];
                selected.iter().for_each(|&i| is_sel[i] = true);
                prop_assert!(dense.iter().zip(&is_sel).all(|(v, s)| *s || *v == 0.0));
            }
        }
    }

    /// e_new + decoded == β·e_old + Δ, element-wise to float rounding.
    #[test]
    fn error_feedback_identity(p in params_strategy(), (dims, x) in tensor_strategy(), seed in 0u64..1000) {
        let s = shape(&dims);
        let e_old: Vec<f32> = values(x.len(), seed).iter().map(|v| v * 10.0).collect();
        let mut ef = ErrorFeedback::from_vec(e_old.clone());
        let t = compress(&mut ef, &x, &s, &p).unwrap();
        let dense = t.to_dense();
        for i in 0..x.len() {
            let want = p.beta * e_old[i] + x[i];
            let got = ef.as_slice()[i] + dense[i];
            prop_assert!((got - want).abs() <= 1e-6 * (1.0 + want.abs()), "i={} got={} want={}", i, got, want);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Compressing into a reused contribution (whatever it held: other shapes, other
    /// parameters, dense or sparse tensors) gives what a fresh compression gives, round after
    /// round, error feedback included; a failed call leaves it empty.
    #[test]
    fn compress_into_reused_matches_fresh(
        rounds in prop::collection::vec((params_strategy(), tensor_strategy(), tensor_strategy()), 1..5),
        seed in 0u64..1000,
    ) {
        let mut out = Contribution::default();
        for (r, (p, (d0, x0), (d1, x1))) in rounds.into_iter().enumerate() {
            let shapes = [shape(&d0), shape(&d1)];
            let refs = [x0.as_slice(), x1.as_slice()];
            let efs0: Vec<ErrorFeedback> = [&x0, &x1]
                .iter()
                .enumerate()
                .map(|(i, x)| ErrorFeedback::from_vec(values(x.len(), seed + (r * 2 + i) as u64)))
                .collect();
            let (mut fresh_efs, mut reused_efs) = (efs0.clone(), efs0);
            let fresh = compress_contribution(&mut fresh_efs, &refs, &shapes, &p).unwrap();
            compress_contribution_into(&mut reused_efs, &refs, &shapes, &p, &mut out).unwrap();
            prop_assert_eq!(&out, &fresh);
            prop_assert_eq!(encode(&out).unwrap(), encode(&fresh).unwrap());
            prop_assert_eq!(&reused_efs, &fresh_efs);
        }
        let mut bad = vec![1.0f32; 16];
        bad[3] = f32::NAN;
        let mut efs = vec![ErrorFeedback::zeros(16)];
        let err = compress_contribution_into(&mut efs, &[&bad], &[shape(&[4, 4])], &CodecParams::default(), &mut out);
        prop_assert_eq!(err, Err(Error::NonFiniteInput));
        prop_assert!(out.tensors.is_empty());
    }
}

/// Bytes and residuals are identical for 1, 2 and 3 worker threads.
#[test]
fn thread_count_independent() {
    let shapes = [
        shape(&[256, 192]),
        shape(&[128, 320]),
        shape(&[96]),
        shape(&[64, 64, 3]),
    ];
    for mode in [QuantMode::Production, QuantMode::Balanced] {
        let p = CodecParams {
            mode,
            k_per_chunk: 32,
            ..CodecParams::default()
        };
        let mut outs = vec![];
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            outs.push(pool.install(|| {
                let deltas: Vec<Vec<f32>> = shapes
                    .iter()
                    .enumerate()
                    .map(|(i, s)| values(s.numel() as usize, 7 + i as u64))
                    .collect();
                let refs: Vec<&[f32]> = deltas.iter().map(|d| d.as_slice()).collect();
                let mut efs: Vec<ErrorFeedback> = shapes
                    .iter()
                    .map(|s| ErrorFeedback::from_vec(values(s.numel() as usize, 99)))
                    .collect();
                let c = compress_contribution(&mut efs, &refs, &shapes, &p).unwrap();
                let agg = Aggregator::new(AggregationRule::MedianClipMean)
                    .aggregate(&[&c, &c], None)
                    .unwrap();
                (encode(&c).unwrap(), efs, agg)
            }));
        }
        assert!(outs.windows(2).all(|w| w[0] == w[1]), "{mode:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Mean rule, unit weights: aggregate[i] == (Σ_r decode_r[i]) / R, bit for bit, with the
    /// sum taken in peer order in f32; MedianClipMean matches a direct implementation.
    #[test]
    fn aggregate_matches_individual_decodes(peers in 1usize..6, seed in 0u64..10_000, balanced in any::<bool>()) {
        let p = CodecParams {
            chunk_side: 8, k_per_chunk: 5,
            mode: if balanced { QuantMode::Balanced } else { QuantMode::Production },
            ..CodecParams::default()
        };
        let shapes = [shape(&[16, 24]), shape(&[7])];
        let contribs: Vec<Contribution> = (0..peers)
            .map(|r| decode(&encode(&contribution(&p, &shapes, seed * 31 + r as u64)).unwrap(), &DecodeLimits::default()).unwrap())
            .collect();
        let refs: Vec<&Contribution> = contribs.iter().collect();
        let mean = Aggregator::new(AggregationRule::Mean).aggregate(&refs, None).unwrap();
        let clip = Aggregator::new(AggregationRule::MedianClipMean).aggregate(&refs, None).unwrap();
        for (t, s) in shapes.iter().enumerate() {
            let n = s.numel() as usize;
            let mut sum = vec![0f32; n];
            let mut norms = vec![];
            for c in &contribs {
                let d = c.tensors[t].to_dense();
                sum.iter_mut().zip(&d).for_each(|(a, b)| *a += *b);
                norms.push(d.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt());
            }
            let want: Vec<f32> = sum.iter().map(|v| v / peers as f32).collect();
            prop_assert_eq!(&mean[t], &want);
            // Production rule, written out directly.
            let mut sorted = norms.clone();
            sorted.sort_by(f64::total_cmp);
            let median = sorted[(peers - 1) / 2];
            let mut acc = vec![0f32; n];
            let mut cnt = vec![0f32; n];
            for (c, nm) in contribs.iter().zip(&norms) {
                let f = if *nm > median { (median / nm) as f32 } else { 1.0 };
                c.tensors[t].for_each(|i, v| { acc[i] += f * v; cnt[i] += 1.0; });
            }
            let want: Vec<f32> = acc.iter().zip(&cnt).map(|(a, c)| if *c > 0.0 { a / c } else { 0.0 }).collect();
            prop_assert_eq!(&clip[t], &want);
        }
    }
}

#[test]
fn weights_and_overlap() {
    let p = CodecParams {
        chunk_side: 8,
        k_per_chunk: 6,
        ..CodecParams::default()
    };
    let shapes = [shape(&[16, 16])];
    let a = contribution(&p, &shapes, 1);
    let b = contribution(&p, &shapes, 2);
    assert_eq!(position_overlap(&a, &a).unwrap(), 1.0);
    let o = position_overlap(&a, &b).unwrap();
    assert!((0.0..1.0).contains(&o));
    // Zero weight removes a peer entirely.
    let agg = Aggregator::new(AggregationRule::Mean);
    assert_eq!(
        agg.aggregate(&[&a, &b], Some(&[1.0, 0.0])).unwrap(),
        agg.aggregate(&[&a], None).unwrap()
    );
    assert_eq!(
        agg.aggregate(&[&a], Some(&[-1.0])).unwrap_err().label(),
        "invalid_weight"
    );
    assert_eq!(
        agg.aggregate(&[], None).unwrap_err().label(),
        "no_contributions"
    );
    let stats = a.stats();
    assert!(stats.finite && stats.count == 4 * 6 && stats.norm > 0.0);
}

/// The production code uses ~1 bit of its 2 on Gaussian-like chunks; the balanced code all 2,
/// and reconstructs with lower error.
#[test]
fn balanced_uses_its_bits() {
    let s = shape(&[256, 256]);
    let x = gaussian(256 * 256, 5);
    let mut res = vec![];
    for mode in [QuantMode::Production, QuantMode::Balanced] {
        let p = CodecParams {
            mode,
            ..CodecParams::default()
        };
        let mut ef = ErrorFeedback::zeros(x.len());
        let t = compress(&mut ef, &x, &s, &p).unwrap();
        let Payload::Sparse(sp) = t.payload() else {
            panic!()
        };
        let entropy = code_entropy_bits(sp.codes());
        let (mut err, mut tot) = (0f64, 0f64);
        t.for_each(|i, v| {
            err += f64::from(v - x[i]).powi(2);
            tot += f64::from(x[i]).powi(2);
        });
        res.push((entropy, err / tot));
    }
    let (prod, bal) = (res[0], res[1]);
    assert!(prod.0 < 1.3, "production entropy {}", prod.0);
    assert!(bal.0 > 1.99, "balanced entropy {}", bal.0);
    assert!(
        bal.1 < prod.1,
        "relative error balanced {} vs production {}",
        bal.1,
        prod.1
    );
}

/// Chunks wider than 64 (no fused hit masks) and non-power-of-two widths select exactly too.
#[test]
fn wide_and_odd_chunks_exact() {
    for (side, k, dims) in [
        (128u16, 100u16, [256usize, 384]),
        (64, 64, [96, 200]),
        (200, 7, [50, 600]),
    ] {
        let p = CodecParams {
            chunk_side: side,
            k_per_chunk: k,
            ..CodecParams::default()
        };
        let x = values(dims[0] * dims[1], u64::from(side));
        let mut ef = ErrorFeedback::zeros(x.len());
        let t = compress(&mut ef, &x, &shape(&dims), &p).unwrap();
        let Payload::Sparse(sp) = t.payload() else {
            panic!()
        };
        let (ch, cw) = (
            divisor(dims[0], side as usize),
            divisor(dims[1], side as usize),
        );
        let want = reference_topk(&x, dims[0], dims[1], ch, cw, sp.k());
        for (c, w) in want.iter().enumerate() {
            let got: Vec<usize> = sp.chunk_positions(c).iter().map(|&q| q as usize).collect();
            assert_eq!(&got, w, "side {side} chunk {c}");
        }
    }
}
