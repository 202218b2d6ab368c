//! Golden byte vectors: encode must reproduce them exactly and decode must read them back.
//! Regenerate (only on a deliberate format change) with TRIBUTARY_BLESS=1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::path::PathBuf;
use tributary_codec::*;

fn cases() -> Vec<(&'static str, CodecParams, Vec<TensorShape>)> {
    let tiny = CodecParams {
        chunk_side: 4,
        k_per_chunk: 2,
        ..CodecParams::default()
    };
    vec![
        ("tiny_production", tiny, vec![shape(&[4, 8]), shape(&[3])]),
        (
            "tiny_balanced",
            CodecParams {
                mode: QuantMode::Balanced,
                one_d: OneDPolicy::Sparse,
                ..tiny
            },
            vec![shape(&[4, 8]), shape(&[6])],
        ),
        (
            "default_production",
            CodecParams::default(),
            vec![shape(&[128, 192]), shape(&[64])],
        ),
        (
            "default_balanced_4bit",
            CodecParams {
                mode: QuantMode::Balanced,
                bits: 4,
                ..CodecParams::default()
            },
            vec![shape(&[64, 100]), shape(&[10])],
        ),
    ]
}

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.hex"))
}

fn to_hex(b: &[u8]) -> String {
    let mut s = String::new();
    for line in b.chunks(32) {
        s.extend(line.iter().map(|x| format!("{x:02x}")));
        s.push('\n');
    }
    s
}

fn from_hex(s: &str) -> Vec<u8> {
    let h: Vec<u8> = s.bytes().filter(|c| c.is_ascii_hexdigit()).collect();
    h.chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

#[test]
fn golden_vectors() {
    let bless = std::env::var("TRIBUTARY_BLESS").is_ok();
    for (name, params, shapes) in cases() {
        let c = contribution(&params, &shapes, 42);
        let bytes = encode(&c).unwrap();
        if bless {
            std::fs::write(path(name), to_hex(&bytes)).unwrap();
        }
        let golden = from_hex(&std::fs::read_to_string(path(name)).unwrap());
        assert_eq!(
            bytes, golden,
            "{name}: encoding differs from the golden vector"
        );
        let limits = DecodeLimits {
            expected_params: Some(params),
            expected_shapes: Some(shapes.clone()),
            ..DecodeLimits::default()
        };
        let back = decode(&golden, &limits).unwrap();
        assert_eq!(back, c, "{name}");
        let info = inspect(&golden, &limits).unwrap();
        assert_eq!(info.encoded_len, golden.len() as u64);
    }
}

/// The worked example of docs/protocol.md: what tiny_production decodes to.
#[test]
fn worked_example_values() {
    let golden = from_hex(&std::fs::read_to_string(path("tiny_production")).unwrap());
    let c = decode(&golden, &DecodeLimits::default()).unwrap();
    let Payload::Sparse(s) = c.tensors[0].payload() else {
        panic!("sparse expected")
    };
    assert_eq!((s.num_chunks(), s.k()), (2, 2));
    assert_eq!(s.chunk_positions(0), &[3, 12]);
    assert_eq!(s.chunk_positions(1), &[0, 8]);
    assert_eq!(s.codes(), &[3, 1, 1, 3]);
    let Quant::Production { shift, scale, lut } = s.quant() else {
        panic!("production expected")
    };
    assert_eq!(
        (*shift, *scale),
        (f32::from_bits(0x3df4_e2a9), f32::from_bits(0x3e67_5964))
    );
    assert_eq!(lut[3], -lut[1]);
    assert_eq!(c.tensors[0].global_positions(), vec![3, 4, 20, 24]);
    let dense = c.tensors[0].to_dense();
    assert_eq!(dense[3], lut[3] + shift);
    assert_eq!(dense[24], lut[1] + shift);
    assert!(matches!(c.tensors[1].payload(), Payload::Dense(v) if *v == values(3, 43)));
}

/// The aggregate of the worked example's peer (seed 42) and a second peer, MedianClipMean;
/// `[4, 8]` takes Elias–Fano positions, `[2, 3]` a bitmap, `[3]` (dense) none.
fn aggregate_case() -> (SparseAggregate, Vec<TensorShape>) {
    let p = CodecParams {
        chunk_side: 4,
        k_per_chunk: 2,
        ..CodecParams::default()
    };
    let shapes = vec![shape(&[4, 8]), shape(&[2, 3]), shape(&[3])];
    let a = contribution(&p, &shapes, 42);
    let b = gaussian_contribution(&p, &shapes, 7);
    let agg = Aggregator::default()
        .aggregate_sparse(&[&a, &b], None)
        .unwrap();
    (agg, shapes)
}

#[test]
fn golden_aggregate() {
    let (agg, shapes) = aggregate_case();
    let bytes = encode_aggregate(&agg);
    if std::env::var("TRIBUTARY_BLESS").is_ok() {
        std::fs::write(path("aggregate_tiny"), to_hex(&bytes)).unwrap();
    }
    let golden = from_hex(&std::fs::read_to_string(path("aggregate_tiny")).unwrap());
    assert_eq!(bytes, golden, "encoding differs from the golden aggregate");
    let limits = DecodeLimits {
        expected_shapes: Some(shapes),
        ..DecodeLimits::default()
    };
    assert_eq!(decode_aggregate(&golden, &limits).unwrap(), agg);
}

/// The aggregate worked example of docs/protocol.md.
#[test]
fn aggregate_worked_example() {
    let (agg, _) = aggregate_case();
    let golden = from_hex(&std::fs::read_to_string(path("aggregate_tiny")).unwrap());
    assert_eq!(golden.len(), 120);
    let entries = |t: &AggregateTensor| {
        let mut v = vec![];
        t.for_each(|i, x| v.push((i, x)));
        v
    };
    let t0 = entries(&agg.tensors[0]);
    let pos: Vec<usize> = t0.iter().map(|e| e.0).collect();
    assert_eq!(pos, vec![3, 4, 20, 21, 24, 26]);
    // Peer 0 (norm 0.354) is clipped to the lower median, peer 1's norm (0.0185).
    let (a, b) = (
        contribution(
            &CodecParams {
                chunk_side: 4,
                k_per_chunk: 2,
                ..CodecParams::default()
            },
            &[shape(&[4, 8])],
            42,
        ),
        gaussian_contribution(
            &CodecParams {
                chunk_side: 4,
                k_per_chunk: 2,
                ..CodecParams::default()
            },
            &[shape(&[4, 8])],
            7,
        ),
    );
    let (na, nb) = (
        tensor_stats(&a.tensors[0]).norm,
        tensor_stats(&b.tensors[0]).norm,
    );
    let c = (nb / na) as f32;
    let (da, db) = (a.tensors[0].to_dense(), b.tensors[0].to_dense());
    assert_eq!(t0[0].1, c * 0.25);
    assert_eq!(t0[1].1, (c * da[4] + db[4]) / 2.0);
    assert_eq!(t0[3].1, db[21]);
    let pos1: Vec<usize> = entries(&agg.tensors[1]).iter().map(|e| e.0).collect();
    assert_eq!(pos1, vec![0, 2, 3, 4]);
    assert_eq!(agg.tensors[2].len(), 3);
}
