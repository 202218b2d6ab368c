//! Covenant-72B production quantizer (SPARSELOCO.md), generalised to L = 2^bits levels:
//! shift = mean(v); c = v − shift; σ = ‖c‖/√(n−1); scale = σ·6/L;
//! q = clamp(round_half_even(c/scale + L/2), 0, L−1); lut[b] = mean of c with code b.

use super::Quant;
use crate::error::{Error, Result};
use crate::params::{MAX_ABS_PARAM, MAX_SCALE, MIN_PRODUCTION_SCALE};

/// 2^23: from here to 2^24 the spacing of f32 values is 1.
const ROUND: f32 = 8_388_608.0;

/// `x.round_ties_even().clamp(0.0, top) as u8` for `top` ≤ 255 (checked for every f32),
/// without a libm call or a saturating conversion, so that loops over it vectorize: x is
/// clamped first (NaN to 0), then 2^23 + x rounds half to even and holds x in its low bits.
#[inline(always)]
fn code(x: f32, top: f32) -> u8 {
    (x.max(0.0).min(top) + ROUND).to_bits() as u8
}

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
    // Every code is overwritten below.
    codes.resize(n, 0);
    for (c, &v) in codes.iter_mut().zip(values) {
        *c = code((v - shift) / scale + half, top);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The code of x as the published formula writes it.
    fn reference(x: f32, top: f32) -> u8 {
        x.round_ties_even().clamp(0.0, top) as u8
    }

    /// The vectorizable rounding gives the published codes (exhaustively checked once over
    /// every f32; here: every quarter step around the levels, their neighbours, specials and
    /// a spread of bit patterns).
    #[test]
    fn rounding_matches_round_ties_even() {
        let mut xs: Vec<f32> = vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.0];
        for q in -8..=1100 {
            let x = q as f32 * 0.25;
            xs.extend([x, x.next_down(), x.next_up()]);
        }
        xs.extend((0..1u32 << 20).map(|i| f32::from_bits(i.wrapping_mul(0x9e37_79b9))));
        for levels in [4usize, 16, 256] {
            let top = (levels - 1) as f32;
            for &x in &xs {
                assert_eq!(
                    code(x, top),
                    reference(x, top),
                    "x={x:e} ({:#x}) L={levels}",
                    x.to_bits()
                );
            }
        }
    }
}
