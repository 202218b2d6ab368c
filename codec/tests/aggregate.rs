//! The published aggregate: equal to the dense aggregate at every position, round trips through
//! its byte format, and a strict decoder.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use proptest::prelude::*;
use std::collections::BTreeSet;
use tributary_codec::*;

fn rule(mean: bool) -> AggregationRule {
    if mean {
        AggregationRule::Mean
    } else {
        AggregationRule::MedianClipMean
    }
}

/// `n` peers; the odd ones share tied values, so positions both overlap and differ.
fn peers(p: &CodecParams, shapes: &[TensorShape], n: usize, seed: u64) -> Vec<Contribution> {
    (0..n)
        .map(|r| {
            let s = seed * 131 + r as u64 * 17;
            if r % 2 == 0 {
                gaussian_contribution(p, shapes, s)
            } else {
                contribution(p, shapes, s)
            }
        })
        .collect()
}

/// (index, value bits) of every carried position.
fn entries(t: &AggregateTensor) -> Vec<(usize, u32)> {
    let mut v = vec![];
    t.for_each(|i, x| v.push((i, x.to_bits())));
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Positions = union over peers of weight > 0; values = the dense aggregate's bits there;
    /// zero elsewhere in the dense aggregate; the bytes round trip exactly.
    #[test]
    fn sparse_equals_dense_and_round_trips(
        p in params_strategy(false),
        dims in shapes_strategy(40, 50),
        n in 1usize..6,
        seed in 0u64..1_000_000,
        zero_mask in 0u32..64,
        mean in any::<bool>(),
    ) {
        let shapes: Vec<TensorShape> = dims.iter().map(|d| shape(d)).collect();
        let cs = peers(&p, &shapes, n, seed);
        let refs: Vec<&Contribution> = cs.iter().collect();
        let weights: Vec<f32> = (0..n)
            .map(|i| if zero_mask >> i & 1 == 1 { 0.0 } else { 0.5 + i as f32 * 0.75 })
            .collect();
        let agg = Aggregator::new(rule(mean));
        let dense = agg.aggregate(&refs, Some(&weights)).unwrap();
        let sparse = agg.aggregate_sparse(&refs, Some(&weights)).unwrap();
        prop_assert_eq!(sparse.tensors.len(), shapes.len());
        for (t, s) in sparse.tensors.iter().enumerate() {
            prop_assert_eq!(s.shape(), &shapes[t]);
            let mut union = BTreeSet::new();
            for (c, w) in cs.iter().zip(&weights) {
                if *w > 0.0 {
                    union.extend(c.tensors[t].global_positions());
                }
            }
            let got = entries(s);
            let positions: Vec<u64> = got.iter().map(|e| e.0 as u64).collect();
            prop_assert_eq!(positions, union.into_iter().collect::<Vec<_>>());
            prop_assert_eq!(s.len(), got.len());
            prop_assert_eq!(s.is_empty(), got.is_empty());
            for &(i, bits) in &got {
                prop_assert_eq!(bits, dense[t][i].to_bits(), "tensor {} index {}", t, i);
            }
            let back: Vec<u32> = s.to_dense().iter().map(|x| x.to_bits()).collect();
            let want: Vec<u32> = dense[t].iter().map(|x| x.to_bits()).collect();
            prop_assert_eq!(back, want);
        }
        let bytes = encode_aggregate(&sparse);
        let limits = DecodeLimits { expected_shapes: Some(shapes.clone()), ..DecodeLimits::default() };
        let decoded = decode_aggregate(&bytes, &limits).unwrap();
        prop_assert_eq!(&decoded, &sparse);
        prop_assert_eq!(encode_aggregate(&decoded), bytes);
    }
}

/// Three peers; the tensors take the three position codes: Elias–Fano ([32, 32]: 2 of 64 per
/// chunk and peer), bitmap ([2, 3]: 2 of 6) and implicit ([5]: dense, every position).
fn sample() -> (Vec<u8>, Vec<TensorShape>) {
    let p = CodecParams {
        chunk_side: 8,
        k_per_chunk: 2,
        ..CodecParams::default()
    };
    let shapes = vec![shape(&[32, 32]), shape(&[2, 3]), shape(&[5])];
    let cs = peers(&p, &shapes, 3, 5);
    let refs: Vec<&Contribution> = cs.iter().collect();
    let a = Aggregator::default().aggregate_sparse(&refs, None).unwrap();
    (encode_aggregate(&a), shapes)
}

fn label(bytes: &[u8]) -> &'static str {
    match decode_aggregate(bytes, &DecodeLimits::default()) {
        Ok(_) => "ok",
        Err(e) => e.label(),
    }
}

fn patch(mut b: Vec<u8>, at: usize, with: &[u8]) -> Vec<u8> {
    b[at..at + with.len()].copy_from_slice(with);
    b
}

/// Header: 16 fixed bytes, shapes (9 + 9 + 5 bytes), then the 3 counts of 8 bytes each.
const COUNTS: usize = 16 + 9 + 9 + 5;

#[test]
fn every_prefix_and_flip_is_handled() {
    let (b, _) = sample();
    assert_eq!(label(&b), "ok");
    for len in 0..b.len() {
        assert_eq!(label(&b[..len]), "truncated", "prefix {len}");
    }
    for i in 0..b.len() {
        for bit in 0..8 {
            let mut x = b.clone();
            x[i] ^= 1 << bit;
            if let Ok(a) = decode_aggregate(&x, &DecodeLimits::default()) {
                assert_eq!(
                    encode_aggregate(&a),
                    x,
                    "flip {i}.{bit} accepted: not canonical"
                );
            }
        }
    }
}

#[test]
fn malformed_inputs_get_their_error() {
    let (b, shapes) = sample();
    let mut long = b.clone();
    long.push(0);
    assert_eq!(label(&long), "trailing_bytes");
    assert_eq!(label(&patch(b.clone(), 0, b"TRBC")), "bad_magic");
    assert_eq!(label(&patch(b.clone(), 4, &[2, 0])), "unsupported_version");
    assert_eq!(label(&patch(b.clone(), 6, &[1, 0])), "reserved_non_zero");
    assert_eq!(
        label(&patch(b.clone(), 8, &u64::MAX.to_le_bytes())),
        "too_many_tensors"
    );
    assert_eq!(
        label(&patch(b.clone(), 8, &1000u64.to_le_bytes())),
        "truncated"
    );
    assert_eq!(label(&patch(b.clone(), 16, &[9])), "invalid_shape");
    assert_eq!(label(&patch(b.clone(), 17, &[0; 4])), "invalid_shape");
    assert_eq!(label(&patch(b.clone(), 17, &[0xff; 8])), "too_large");
    // More positions than elements.
    let n0 = shapes[0].numel();
    assert_eq!(
        label(&patch(b.clone(), COUNTS, &(n0 + 1).to_le_bytes())),
        "wrong_count"
    );
    // Huge declared counts: rejected by the length check before any allocation.
    assert_eq!(
        label(&patch(b.clone(), COUNTS, &n0.to_le_bytes())),
        "truncated"
    );
    let limits = DecodeLimits {
        expected_shapes: Some(vec![shapes[0].clone()]),
        ..DecodeLimits::default()
    };
    assert_eq!(
        decode_aggregate(&b, &limits).unwrap_err().label(),
        "unexpected_shape"
    );
    let limits = DecodeLimits {
        max_total_elements: 32 * 32,
        ..DecodeLimits::default()
    };
    assert_eq!(
        decode_aggregate(&b, &limits).unwrap_err().label(),
        "too_large"
    );
    // A NaN value: the last 4 bytes are the [5] tensor's last value.
    let end = b.len();
    assert_eq!(
        label(&patch(b.clone(), end - 4, &f32::NAN.to_le_bytes())),
        "non_finite_value"
    );
    assert_eq!(
        label(&patch(b.clone(), end - 4, &f32::INFINITY.to_le_bytes())),
        "non_finite_value"
    );
}

/// Elias–Fano and bitmap position errors, on hand-made one-tensor aggregates.
#[test]
fn position_errors() {
    // One [64] tensor with m positions and the given position bytes, values all 1.0.
    let one = |m: u64, pos: &[u8]| {
        let mut b = b"TRBA".to_vec();
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        b.push(1);
        b.extend_from_slice(&64u32.to_le_bytes());
        b.extend_from_slice(&m.to_le_bytes());
        b.extend_from_slice(pos);
        (0..m).for_each(|_| b.extend_from_slice(&1f32.to_le_bytes()));
        b
    };
    // m = 2 of n = 64: l = 5, window (63 >> 5) + 1 + 2 = 4 bits at bits 10..14; 2 bytes.
    // Positions 3 and 40: lows 3, 8 (bits 0..5, 5..10); highs 0, 1 → window bits 0 and 2.
    let good = one(2, &[0b0000_0011, 0b0001_0101]);
    let a = decode_aggregate(&good, &DecodeLimits::default()).unwrap();
    assert_eq!(
        entries(&a.tensors[0]),
        vec![(3, 1f32.to_bits()), (40, 1f32.to_bits())]
    );
    // Equal positions: lows 3, 3, highs 0, 0 → window bits 0, 1.
    assert_eq!(
        label(&one(2, &[0b0110_0011, 0b0000_1100])),
        "duplicate_position"
    );
    // Three set bits in the window.
    assert_eq!(label(&one(2, &[0b0000_0011, 0b0011_0101])), "wrong_count");
    // One set bit.
    assert_eq!(label(&one(2, &[0b0000_0011, 0b0000_0101])), "wrong_count");
    // Padding bits after the window.
    assert_eq!(
        label(&one(2, &[0b0000_0011, 0b0101_0101])),
        "non_zero_padding"
    );
    // Window bits 0 and 3: the second high is 3 − 1 = 2, position 2·32 + 8 = 72 ≥ 64.
    assert_eq!(
        label(&one(2, &[0b0000_0011, 0b0010_0101])),
        "position_out_of_range"
    );
    // Bitmap (m = 40 of 64): 8 bytes, a padding-free bitmap with 39 bits set.
    let mut bits = u64::MAX >> 24;
    assert_eq!(label(&one(40, &bits.to_le_bytes())), "ok");
    bits >>= 1;
    assert_eq!(label(&one(40, &bits.to_le_bytes())), "wrong_count");
}

/// All-zero weights: every tensor is empty, and that encodes too.
#[test]
fn empty_aggregate() {
    let p = CodecParams::default();
    let shapes = vec![shape(&[64, 64]), shape(&[7])];
    let cs = peers(&p, &shapes, 2, 1);
    let a = Aggregator::default()
        .aggregate_sparse(&[&cs[0], &cs[1]], Some(&[0.0, 0.0]))
        .unwrap();
    assert!(a.tensors.iter().all(|t| t.is_empty()));
    assert_eq!(a.tensors.iter().map(AggregateTensor::len).sum::<usize>(), 0);
    let b = encode_aggregate(&a);
    assert_eq!(b.len(), 16 + 9 + 5 + 16);
    assert_eq!(decode_aggregate(&b, &DecodeLimits::default()).unwrap(), a);
}

#[test]
fn sample_uses_every_position_code() {
    let (b, shapes) = sample();
    let a = decode_aggregate(&b, &DecodeLimits::default()).unwrap();
    let m: Vec<usize> = a.tensors.iter().map(|t| t.len()).collect();
    eprintln!("{m:?}, {} bytes", b.len());
    // [32, 32]: sparse union → Elias–Fano; [2, 3]: neither empty nor full → bitmap (1 byte).
    assert!(m[0] > 32 && m[0] < 1024 / 8);
    assert!((2..6).contains(&m[1]));
    assert_eq!(m[2], shapes[2].numel() as usize);
    let ef = |n: usize, m: usize| {
        let l = (n / m).ilog2() as usize;
        (m * (l + 1) + ((n - 1) >> l) + 1).div_ceil(8)
    };
    let want = COUNTS + 24 + ef(1024, m[0]) + 4 * m[0] + 1 + 4 * m[1] + 4 * 5;
    assert_eq!(b.len(), want);
}
