//! Quantization of the selected values of one tensor (see docs/protocol.md for both modes).

mod balanced;
mod production;

use crate::error::Result;
use crate::params::{CodecParams, QuantMode};

/// Per-tensor quantization parameters as carried on the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum Quant {
    /// Dequantize: `lut[q] + shift`. `scale` is carried for the receivers' range check.
    Production {
        shift: f32,
        scale: f32,
        lut: Vec<f32>,
    },
    /// Dequantize: `±(bf16(chunk_scales[c]) · lut[q & mask])`, sign from the top code bit.
    Balanced {
        lut: Vec<f32>,
        chunk_scales: Vec<u16>,
    },
}

impl Quant {
    /// Dequantized value of `code` in chunk `chunk` (the chunk matters only for `Balanced`).
    #[inline]
    pub fn value(&self, chunk: usize, code: u8, bits: u8) -> f32 {
        match self {
            Self::Production { shift, lut, .. } => {
                lut.get(usize::from(code)).copied().unwrap_or(0.0) + shift
            }
            Self::Balanced { lut, chunk_scales } => {
                let mask = (1u8 << (bits - 1)) - 1;
                let s = bf16_to_f32(chunk_scales.get(chunk).copied().unwrap_or(0));
                let mag = s * lut.get(usize::from(code & mask)).copied().unwrap_or(0.0);
                if code >> (bits - 1) != 0 { -mag } else { mag }
            }
        }
    }
}

/// The tensor's quantization parameters; `codes` (overwritten, any length before) receives
/// one code per value of `values` (chunk-major, `k` per chunk).
pub(crate) fn quantize(
    params: &CodecParams,
    values: &[f32],
    k: usize,
    tensor: usize,
    codes: &mut Vec<u8>,
) -> Result<Quant> {
    match params.mode {
        QuantMode::Production => production::quantize(params.levels(), values, tensor, codes),
        QuantMode::Balanced => balanced::quantize(params.bits, values, k, tensor, codes),
    }
}

/// Round-to-nearest-even conversion to bfloat16 bits (finite inputs).
pub(crate) fn f32_to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    let bias = 0x7fff + ((b >> 16) & 1);
    (b.wrapping_add(bias) >> 16) as u16
}

pub(crate) fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits(u32::from(b) << 16)
}

/// Empirical entropy of a code sequence in bits per code (how much of `bits` is used).
pub fn code_entropy_bits(codes: &[u8]) -> f64 {
    let mut hist = [0u64; 256];
    for &c in codes {
        hist[usize::from(c)] += 1;
    }
    let n = codes.len() as f64;
    hist.iter()
        .filter(|&&h| h > 0)
        .map(|&h| {
            let p = h as f64 / n;
            -p * p.log2()
        })
        .sum()
}
