//! Shared helpers of the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use tributary_codec::*;

/// Small codec settings: any chunk side ≤ 8, k, quantizer and 1-D policy; 2 bits, or any of
/// 2/4/8 with `all_bits`.
pub fn params_strategy(all_bits: bool) -> impl Strategy<Value = CodecParams> {
    let bits = if all_bits { 0usize..3 } else { 0usize..1 };
    (1u16..=8, 1u16..=12, any::<bool>(), any::<bool>(), bits).prop_map(
        |(side, k, balanced, sparse_1d, bits)| CodecParams {
            chunk_side: side,
            k_per_chunk: k.min(side * side),
            bits: [2, 4, 8][bits],
            mode: if balanced {
                QuantMode::Balanced
            } else {
                QuantMode::Production
            },
            one_d: if sparse_1d {
                OneDPolicy::Sparse
            } else {
                OneDPolicy::Dense
            },
            ..CodecParams::default()
        },
    )
}

/// One to three tensors: matrices up to `side`×`side`, vectors up to `len`, and 3-D ones.
pub fn shapes_strategy(side: usize, len: usize) -> impl Strategy<Value = Vec<Vec<usize>>> {
    prop::collection::vec(
        prop_oneof![
            (1usize..=side, 1usize..=side).prop_map(|(r, c)| vec![r, c]),
            (1usize..=len).prop_map(|n| vec![n]),
            (1usize..=4, 1usize..=5, 1usize..=6).prop_map(|(a, b, c)| vec![a, b, c]),
        ],
        1..4,
    )
}

/// Deterministic pseudo-random floats (splitmix64), Gaussian-ish, with occasional ties.
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut v = gaussian(n, seed);
    v.iter_mut().skip(3).step_by(17).for_each(|x| *x = 0.25);
    v
}

/// Deterministic Gaussian-ish floats (sum of four uniforms), scale 0.01.
pub fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let mut z = seed;
    (0..n)
        .map(|_| {
            z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^= x >> 31;
            let u: f32 = (0..4)
                .map(|j| ((x >> (16 * j)) & 0xffff) as f32 / 65536.0)
                .sum::<f32>()
                - 2.0;
            u * 0.01
        })
        .collect()
}

pub fn shape(dims: &[usize]) -> TensorShape {
    TensorShape::new(dims).unwrap()
}

/// Compresses `values(..)` from zero error feedback into one contribution.
pub fn contribution(params: &CodecParams, shapes: &[TensorShape], seed: u64) -> Contribution {
    contribution_of(params, shapes, seed, values)
}

/// Like [`contribution`] from `gaussian(..)`: no ties, so peers select different positions.
pub fn gaussian_contribution(
    params: &CodecParams,
    shapes: &[TensorShape],
    seed: u64,
) -> Contribution {
    contribution_of(params, shapes, seed, gaussian)
}

fn contribution_of(
    params: &CodecParams,
    shapes: &[TensorShape],
    seed: u64,
    make: fn(usize, u64) -> Vec<f32>,
) -> Contribution {
    let deltas: Vec<Vec<f32>> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| make(s.numel() as usize, seed + i as u64))
        .collect();
    let refs: Vec<&[f32]> = deltas.iter().map(|d| d.as_slice()).collect();
    let mut efs: Vec<ErrorFeedback> = shapes
        .iter()
        .map(|s| ErrorFeedback::zeros(s.numel() as usize))
        .collect();
    compress_contribution(&mut efs, &refs, shapes, params).unwrap()
}

/// Largest divisor of n that is ≤ max.
pub fn divisor(n: usize, max: usize) -> usize {
    (1..=max.min(n))
        .rev()
        .find(|d| n.is_multiple_of(*d))
        .unwrap()
}

/// Reference chunked top-k by full sort: per chunk (row-major over the chunk grid) the sorted
/// chunk-local positions of the k largest |x|, ties to the lower index.
pub fn reference_topk(
    x: &[f32],
    rows: usize,
    cols: usize,
    ch: usize,
    cw: usize,
    k: usize,
) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    for bi in 0..rows / ch {
        for bj in 0..cols / cw {
            let vals: Vec<f32> = (0..ch * cw)
                .map(|p| x[(bi * ch + p / cw) * cols + bj * cw + p % cw])
                .collect();
            let mut idx: Vec<usize> = (0..vals.len()).collect();
            idx.sort_by(|&a, &b| {
                let (ka, kb) = (
                    vals[a].to_bits() & 0x7fff_ffff,
                    vals[b].to_bits() & 0x7fff_ffff,
                );
                kb.cmp(&ka).then(a.cmp(&b))
            });
            let mut sel: Vec<usize> = idx[..k.min(vals.len())].to_vec();
            sel.sort_unstable();
            out.push(sel);
        }
    }
    out
}
