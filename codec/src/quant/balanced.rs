//! Balanced quantizer: code = sign bit · (bits−1)-bit magnitude level, where the level is the
//! value's magnitude rank inside its chunk split into M = 2^(bits−1) equal groups, so every
//! code is equally likely (bits of entropy per code by construction). Per chunk a bf16 scale
//! s = mean|v|; per tensor a table lut[m] = Σ s·|v| / Σ s² (least squares over level m).

use super::{Quant, bf16_to_f32, f32_to_bf16};
use crate::error::{Error, Result};
use crate::params::{MAX_ABS_PARAM, MAX_SCALE};
use crate::topk::key;
use rayon::prelude::*;

pub(super) fn quantize(
    bits: u8,
    values: &[f32],
    k: usize,
    tensor: usize,
    codes: &mut Vec<u8>,
) -> Result<Quant> {
    let m = 1usize << (bits - 1);
    let nchunks = values.len() / k.max(1);
    // Every code is overwritten below (each chunk's ranks cover all its values).
    codes.resize(values.len(), 0);
    let mut chunk_scales = vec![0u16; nchunks];
    codes
        .par_chunks_mut(k.max(1))
        .zip(values.par_chunks(k.max(1)))
        .zip(chunk_scales.par_iter_mut())
        .for_each_init(Vec::new, |order: &mut Vec<u64>, ((cs, vs), s)| {
            let mean: f64 = vs.iter().map(|&v| f64::from(v.abs())).sum::<f64>() / k as f64;
            *s = f32_to_bf16(mean as f32);
            order.clear();
            order.extend(
                vs.iter()
                    .enumerate()
                    .map(|(i, &v)| (u64::from(key(v)) << 32) | i as u64),
            );
            order.sort_unstable();
            for (rank, &o) in order.iter().enumerate() {
                let i = (o & 0xffff_ffff) as usize;
                let level = (rank * m / k) as u8;
                if let (Some(c), Some(&v)) = (cs.get_mut(i), vs.get(i)) {
                    *c = (u8::from(v < 0.0) << (bits - 1)) | level;
                }
            }
        });
    if let Some(&s) = chunk_scales.iter().find(|&&s| bf16_to_f32(s) > MAX_SCALE) {
        return Err(Error::ScaleOutOfRange {
            tensor,
            scale: bf16_to_f32(s),
        });
    }
    let mut num = vec![0f64; m];
    let mut den = vec![0f64; m];
    for (c, (cs, vs)) in codes
        .chunks(k.max(1))
        .zip(values.chunks(k.max(1)))
        .enumerate()
    {
        let s = f64::from(bf16_to_f32(chunk_scales[c]));
        for (&q, &v) in cs.iter().zip(vs) {
            let l = usize::from(q) & (m - 1);
            num[l] += s * f64::from(v.abs());
            den[l] += s * s;
        }
    }
    let lut: Vec<f32> = num
        .iter()
        .zip(&den)
        .map(|(&a, &b)| if b > 0.0 { (a / b) as f32 } else { 0.0 })
        .collect();
    if lut
        .iter()
        .any(|l| !l.is_finite() || l.abs() > MAX_ABS_PARAM)
    {
        return Err(Error::BadQuantParam { tensor });
    }
    Ok(Quant::Balanced { lut, chunk_scales })
}
