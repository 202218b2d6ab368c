//! Covenant-72B production quantizer (SPARSELOCO.md), generalised to L = 2^bits levels:
//! shift = mean(v); c = v − shift; σ = ‖c‖/√(n−1); scale = σ·6/L;
//! q = clamp(round_half_even(c/scale + L/2), 0, L−1); lut[b] = mean of c with code b.

use super::Quant;
use crate::error::{Error, Result};
use crate::params::{MAX_ABS_PARAM, MAX_SCALE, MIN_PRODUCTION_SCALE};

pub(super) fn quantize(
    levels: usize,
    values: &[f32],
    tensor: usize,
    codes: &mut Vec<u8>,
) -> Result<Quant> {
    let n = values.len();
    // Sums in f64, in chunk order: identical on every machine and thread count.
    let sum: f64 = values.iter().map(|&v| f64::from(v)).sum();
    let shift = (sum / n.max(1) as f64) as f32;
    let ss: f64 = values.iter().map(|&v| f64::from(v - shift).powi(2)).sum();
    let sigma = (ss / n.saturating_sub(1).max(1) as f64).sqrt() as f32;
    // 6/L is exact in binary for L = 4, 16, 256.
    let mut scale = sigma * (6.0 / levels as f32);
    if !scale.is_finite() || scale > MAX_SCALE {
        return Err(Error::ScaleOutOfRange { tensor, scale });
    }
    // All-equal selections give σ = 0; the lookup table still reconstructs them exactly.
    scale = scale.max(MIN_PRODUCTION_SCALE);
    let half = (levels / 2) as f32;
    let top = (levels - 1) as f32;
    codes.clear();
    codes.extend(values.iter().map(|&v| {
        ((v - shift) / scale + half)
            .round_ties_even()
            .clamp(0.0, top) as u8
    }));
    let mut bin_sum = vec![0f64; levels];
    let mut bin_n = vec![0u64; levels];
    for (&v, &q) in values.iter().zip(codes.iter()) {
        bin_sum[usize::from(q)] += f64::from(v - shift);
        bin_n[usize::from(q)] += 1;
    }
    let lut: Vec<f32> = bin_sum
        .iter()
        .zip(&bin_n)
        .map(|(&s, &c)| if c == 0 { 0.0 } else { (s / c as f64) as f32 })
        .collect();
    if shift.abs() > MAX_ABS_PARAM || lut.iter().any(|l| l.abs() > MAX_ABS_PARAM) {
        return Err(Error::BadQuantParam { tensor });
    }
    Ok(Quant::Production { shift, scale, lut })
}
