//! Properties of the copy/replay similarity measure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use proptest::prelude::*;
use std::collections::BTreeMap;
use tributary_codec::*;

/// The definition of [`Similarity`], written out over the public API (global indices and
/// dequantized values), independently of the chunk-wise merge.
fn reference(a: &Contribution, b: &Contribution) -> (f64, f64, f64) {
    let (mut shared, mut agree, mut oppose, mut total) = (0f64, 0f64, 0f64, 0f64);
    for (ta, tb) in a.tensors.iter().zip(&b.tensors) {
        if !matches!(ta.payload(), Payload::Sparse(_)) {
            continue;
        }
        let values = |t: &CompressedTensor| {
            let mut m = BTreeMap::new();
            t.for_each(|i, v| {
                m.insert(i, v);
            });
            m
        };
        let (va, vb) = (values(ta), values(tb));
        let n = va.len().max(vb.len()) as f64;
        let w = ta.numel() as f64;
        for (i, x) in &va {
            if let Some(y) = vb.get(i) {
                shared += w / n;
                let (sx, sy) = (x.partial_cmp(&0.0), y.partial_cmp(&0.0));
                if sx == sy {
                    agree += w / n;
                } else if x * y < 0.0 {
                    oppose += w / n;
                }
            }
        }
        total += w;
    }
    if total == 0.0 {
        return (0.0, 0.0, 0.0);
    }
    (shared / total, agree / total, oppose / total)
}

fn shapes_of(dims: &[Vec<usize>]) -> Vec<TensorShape> {
    dims.iter().map(|d| shape(d)).collect()
}

fn has_sparse(c: &Contribution) -> bool {
    c.tensors
        .iter()
        .any(|t| matches!(t.payload(), Payload::Sparse(_)))
}

fn close(x: f64, y: f64) -> bool {
    (x - y).abs() <= 1e-9
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Matches its definition; bounded, symmetric; identical contributions give 1.
    #[test]
    fn similarity_is_its_definition(
        params in params_strategy(true),
        dims in shapes_strategy(20, 40),
        seeds in (0u64..1000, 0u64..1000),
        gaussian_values in any::<bool>(),
    ) {
        let shapes = shapes_of(&dims);
        let make = if gaussian_values { gaussian_contribution } else { contribution };
        let a = make(&params, &shapes, seeds.0);
        let b = make(&params, &shapes, seeds.1);
        let s = similarity(&a, &b).unwrap();
        let (overlap, agreeing, opposing) = reference(&a, &b);
        prop_assert!(close(s.overlap, overlap), "{s:?} vs {overlap}");
        prop_assert!(close(s.agreeing, agreeing), "{s:?} vs {agreeing}");
        prop_assert!(close(s.opposing, opposing), "{s:?} vs {opposing}");
        for x in [s.overlap, s.agreeing, s.opposing, s.sign_agreement()] {
            prop_assert!((0.0..=1.0).contains(&x));
        }
        prop_assert!(s.agreeing + s.opposing <= s.overlap + 1e-12);
        prop_assert_eq!(similarity(&b, &a).unwrap(), s);
        // The published copy measure is the overlap.
        prop_assert!(close(position_overlap(&a, &b).unwrap(), s.overlap));

        let same = similarity(&a, &a).unwrap();
        let want = if has_sparse(&a) { 1.0 } else { 0.0 };
        prop_assert_eq!(same, Similarity { overlap: want, agreeing: want, opposing: 0.0 });
    }

    /// Contributions that differ in parameters, tensor count or shapes are an error, never a
    /// panic.
    #[test]
    fn mismatched_contributions_are_an_error(
        pa in params_strategy(false),
        pb in params_strategy(false),
        da in shapes_strategy(12, 20),
        db in shapes_strategy(12, 20),
    ) {
        let a = contribution(&pa, &shapes_of(&da), 1);
        let b = contribution(&pb, &shapes_of(&db), 2);
        let result = similarity(&a, &b);
        if pa == pb && da == db {
            prop_assert!(result.is_ok());
        } else {
            prop_assert_eq!(result.unwrap_err().label(), "incompatible_contribution");
        }
    }
}

const SIDE: usize = 16;

fn params() -> CodecParams {
    CodecParams {
        chunk_side: 8,
        k_per_chunk: 6,
        ..CodecParams::default()
    }
}

fn compress_one(x: &[f32]) -> Contribution {
    let shapes = [shape(&[SIDE, SIDE])];
    let mut ef = [ErrorFeedback::zeros(x.len())];
    compress_contribution(&mut ef, &[x], &shapes, &params()).unwrap()
}

/// An update that avoids every position of another one (6 of 64 per chunk are free to avoid)
/// has overlap 0.
#[test]
fn disjoint_positions_give_zero() {
    let x = gaussian(SIDE * SIDE, 7);
    let a = compress_one(&x);
    let taken = a.tensors[0].global_positions();
    let mut y = gaussian(SIDE * SIDE, 8);
    y.iter_mut().for_each(|v| *v = v.abs() + 1.0);
    for i in taken {
        y[i as usize] = 0.0;
    }
    let b = compress_one(&y);
    assert_eq!(similarity(&a, &b).unwrap(), Similarity::default());
}

/// A negated update keeps the positions and flips (nearly) every sign: the measure tells it
/// from a replay.
#[test]
fn negation_is_opposing() {
    let x = gaussian(SIDE * SIDE, 3);
    let neg: Vec<f32> = x.iter().map(|v| -v).collect();
    let (a, b) = (compress_one(&x), compress_one(&neg));
    let s = similarity(&a, &b).unwrap();
    assert_eq!(s.overlap, 1.0);
    assert!(s.opposing > 0.9, "{s:?}");
    assert!(s.agreeing < 0.1, "{s:?}");
    // A scaled replay agrees everywhere.
    let scaled: Vec<f32> = x.iter().map(|v| 3.0 * v).collect();
    let s = similarity(&a, &compress_one(&scaled)).unwrap();
    assert_eq!((s.overlap, s.sign_agreement()), (1.0, 1.0));
}
