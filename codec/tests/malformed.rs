//! Strict decoding: every malformed input gets its typed error (checked by label).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use tributary_codec::*;

fn tiny(
    mode: QuantMode,
    one_d: OneDPolicy,
    last: usize,
) -> (Vec<u8>, CodecParams, Vec<TensorShape>) {
    let p = CodecParams {
        chunk_side: 4,
        k_per_chunk: 2,
        mode,
        one_d,
        ..CodecParams::default()
    };
    let shapes = vec![shape(&[4, 8]), shape(&[last])];
    (encode(&contribution(&p, &shapes, 42)).unwrap(), p, shapes)
}

fn production() -> Vec<u8> {
    let (b, ..) = tiny(QuantMode::Production, OneDPolicy::Dense, 3);
    assert_eq!(b.len(), 78); // layout used below: see docs/protocol.md worked example
    b
}

fn label(bytes: &[u8]) -> &'static str {
    label_with(bytes, &DecodeLimits::default())
}

fn label_with(bytes: &[u8], limits: &DecodeLimits) -> &'static str {
    match decode(bytes, limits) {
        Ok(_) => "ok",
        Err(e) => e.label(),
    }
}

fn patch(mut b: Vec<u8>, at: usize, with: &[u8]) -> Vec<u8> {
    b[at..at + with.len()].copy_from_slice(with);
    b
}

/// Replaces the first Elias–Fano block (n 16, k 2: 3 low bits each, 4-bit high window) at
/// byte 62 of the production vector, keeping the second block.
fn first_block(lows: [u8; 2], window: u8) -> Vec<u8> {
    let mut b = production();
    let old = u32::from_le_bytes([b[62], b[63], b[64], 0]);
    let new =
        (old & !0x3ff) | u32::from(lows[0]) | (u32::from(lows[1]) << 3) | (u32::from(window) << 6);
    b[62..65].copy_from_slice(&new.to_le_bytes()[..3]);
    b
}

#[test]
fn valid_vectors_decode() {
    assert_eq!(label(&production()), "ok");
    assert_eq!(
        label(&tiny(QuantMode::Balanced, OneDPolicy::Sparse, 6).0),
        "ok"
    );
}

#[test]
fn header_errors() {
    let b = production();
    assert_eq!(label(&b[..77]), "truncated");
    assert_eq!(label(&b[..10]), "truncated");
    assert_eq!(label(&[]), "truncated");
    let mut long = b.clone();
    long.push(0);
    assert_eq!(label(&long), "trailing_bytes");
    assert_eq!(label(&patch(b.clone(), 0, b"XRBC")), "bad_magic");
    assert_eq!(
        label(&patch(b.clone(), 4, &2u16.to_le_bytes())),
        "unsupported_version"
    );
    assert_eq!(label(&patch(b.clone(), 13, &[1])), "reserved_non_zero");
    assert_eq!(label(&patch(b.clone(), 10, &[3])), "invalid_params");
    assert_eq!(label(&patch(b.clone(), 11, &[7])), "invalid_params");
    assert_eq!(label(&patch(b.clone(), 12, &[2])), "invalid_params");
    assert_eq!(
        label(&patch(b.clone(), 6, &0u16.to_le_bytes())),
        "invalid_params"
    );
    assert_eq!(
        label(&patch(b.clone(), 8, &17u16.to_le_bytes())),
        "invalid_params"
    );
    assert_eq!(
        label(&patch(b.clone(), 14, &f32::NAN.to_le_bytes())),
        "invalid_params"
    );
    assert_eq!(
        label(&patch(b.clone(), 18, &u32::MAX.to_le_bytes())),
        "too_many_tensors"
    );
    assert_eq!(
        label(&patch(b.clone(), 18, &1000u32.to_le_bytes())),
        "truncated"
    );
    assert_eq!(
        label(&patch(b.clone(), 18, &1u32.to_le_bytes())),
        "trailing_bytes"
    );
    assert_eq!(label(&patch(b.clone(), 22, &[9])), "invalid_shape");
    assert_eq!(
        label(&patch(b.clone(), 23, &0u32.to_le_bytes())),
        "invalid_shape"
    );
    assert_eq!(label(&patch(b.clone(), 23, &[0xff; 8])), "too_large");
    // Within the element limit but far more than the input: rejected before allocating.
    assert_eq!(
        label(&patch(b.clone(), 23, &u32::MAX.to_le_bytes())),
        "truncated"
    );
    // A shape change that keeps the chunking valid but not the length.
    assert_eq!(
        label(&patch(b.clone(), 23, &8u32.to_le_bytes())),
        "truncated"
    );
}

#[test]
fn limits_and_expectations() {
    let (b, p, shapes) = tiny(QuantMode::Production, OneDPolicy::Dense, 3);
    let l = |f: &dyn Fn(&mut DecodeLimits)| {
        let mut limits = DecodeLimits::default();
        f(&mut limits);
        label_with(&b, &limits)
    };
    assert_eq!(l(&|x| x.max_tensors = 1), "too_many_tensors");
    assert_eq!(l(&|x| x.max_total_elements = 34), "too_large");
    assert_eq!(l(&|x| x.max_total_elements = 35), "ok");
    assert_eq!(
        l(&|x| x.expected_params = Some(CodecParams {
            k_per_chunk: 3,
            ..p
        })),
        "unexpected_params"
    );
    assert_eq!(l(&|x| x.expected_params = Some(p)), "ok");
    assert_eq!(
        l(&|x| x.expected_shapes = Some(vec![shape(&[8, 4]), shape(&[3])])),
        "unexpected_shape"
    );
    assert_eq!(
        l(&|x| x.expected_shapes = Some(shapes[..1].to_vec())),
        "unexpected_shape"
    );
    assert_eq!(l(&|x| x.expected_shapes = Some(shapes.clone())), "ok");
}

#[test]
fn section_errors() {
    let b = production();
    assert_eq!(label(&patch(b.clone(), 36, &3u16.to_le_bytes())), "wrong_k");
    assert_eq!(
        label(&patch(b.clone(), 38, &f32::NAN.to_le_bytes())),
        "bad_quant_param"
    );
    assert_eq!(
        label(&patch(b.clone(), 38, &1e7f32.to_le_bytes())),
        "bad_quant_param"
    );
    assert_eq!(
        label(&patch(b.clone(), 42, &f32::INFINITY.to_le_bytes())),
        "scale_out_of_range"
    );
    assert_eq!(
        label(&patch(b.clone(), 42, &1e5f32.to_le_bytes())),
        "scale_out_of_range"
    );
    assert_eq!(
        label(&patch(b.clone(), 42, &1e-13f32.to_le_bytes())),
        "scale_out_of_range"
    );
    assert_eq!(
        label(&patch(b.clone(), 46, &f32::NEG_INFINITY.to_le_bytes())),
        "bad_quant_param"
    );
    assert_eq!(
        label(&patch(b.clone(), 66, &f32::NAN.to_le_bytes())),
        "non_finite_value"
    );
}

#[test]
fn position_errors() {
    assert_eq!(label(&first_block([1, 1], 0b0101)), "ok"); // positions 1 and 9
    assert_eq!(label(&first_block([5, 5], 0b0011)), "duplicate_position");
    assert_eq!(label(&first_block([5, 2], 0b0011)), "duplicate_position"); // 5 then 2: unsorted
    assert_eq!(label(&first_block([1, 7], 0b1001)), "position_out_of_range"); // 23 ≥ 16
    assert_eq!(label(&first_block([1, 2], 0b0111)), "wrong_count");
    assert_eq!(label(&first_block([1, 1], 0b0001)), "wrong_count");
    assert_eq!(label(&first_block([1, 1], 0b0000)), "wrong_count");
    let b = production();
    assert_eq!(
        label(&patch(b.clone(), 64, &[b[64] | 0x80])),
        "non_zero_padding"
    );
}

#[test]
fn balanced_errors() {
    // Layout: header 36 | k 2 | lut 2×f32 | 2 chunk scales | positions 3 B | codes 1 B |
    //         k 2 | lut 8 | 2 chunk scales | positions 1 B | codes 1 B (4 padding bits).
    let (b, ..) = tiny(QuantMode::Balanced, OneDPolicy::Sparse, 6);
    assert_eq!(b.len(), 70);
    assert_eq!(
        label(&patch(b.clone(), 46, &0xffc0u16.to_le_bytes())),
        "scale_out_of_range"
    );
    assert_eq!(
        label(&patch(b.clone(), 46, &0x8000u16.to_le_bytes())),
        "scale_out_of_range"
    );
    assert_eq!(
        label(&patch(b.clone(), 46, &0x7f80u16.to_le_bytes())),
        "scale_out_of_range"
    );
    assert_eq!(
        label(&patch(b.clone(), 46, &0x4f00u16.to_le_bytes())),
        "scale_out_of_range"
    ); // 2^31
    assert_eq!(
        label(&patch(b.clone(), 38, &f32::NAN.to_le_bytes())),
        "bad_quant_param"
    );
    assert_eq!(
        label(&patch(b.clone(), 69, &[b[69] | 0x10])),
        "non_zero_padding"
    );
    assert_eq!(label(&patch(b.clone(), 54, &2u16.to_le_bytes())), "wrong_k");
}
