//! Error feedback and compression: e ← β·e + Δ; select and quantize e; e ← e − decoded.

use crate::error::{Error, Result};
use crate::params::CodecParams;
use crate::quant::quantize;
use crate::shape::{Chunking, Layout, TensorShape};
use crate::simd::{Prefetch, hit_mask};
use crate::tensor::{CompressedTensor, Contribution, Payload, SparseTensor};
use crate::topk::{ChunkView, Scratch, select};
use rayon::prelude::*;

/// The error-feedback buffer of one tensor (starts at zero).
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorFeedback {
    buf: Vec<f32>,
}

impl ErrorFeedback {
    pub fn zeros(numel: usize) -> Self {
        Self {
            buf: vec![0.0; numel],
        }
    }
    pub fn from_vec(buf: Vec<f32>) -> Self {
        Self { buf }
    }
    pub fn as_slice(&self) -> &[f32] {
        &self.buf
    }
    /// Mutable access, e.g. to restore the buffer from a checkpoint.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.buf
    }
    pub fn into_vec(self) -> Vec<f32> {
        self.buf
    }
    /// Zeroes the buffer (production does this on rounds where no aggregate was applied).
    pub fn reset(&mut self) {
        self.buf.fill(0.0);
    }
}

/// Compresses one tensor's pseudo-gradient `delta` through its error-feedback buffer.
///
/// On [`Error::NonFiniteInput`] the buffer is reset to zero (its content would be garbage).
pub fn compress(
    ef: &mut ErrorFeedback,
    delta: &[f32],
    shape: &TensorShape,
    params: &CodecParams,
) -> Result<CompressedTensor> {
    compress_indexed(ef, delta, shape, params, 0)
}

/// Compresses every tensor of a model into one contribution (tensors in order).
pub fn compress_contribution(
    efs: &mut [ErrorFeedback],
    deltas: &[&[f32]],
    shapes: &[TensorShape],
    params: &CodecParams,
) -> Result<Contribution> {
    if efs.len() != deltas.len() || deltas.len() != shapes.len() {
        return Err(Error::LengthMismatch {
            expected: shapes.len() as u64,
            got: deltas.len() as u64,
        });
    }
    // Tensors are independent: parallel over them as well as inside each one.
    let tensors = efs
        .par_iter_mut()
        .zip(deltas.par_iter())
        .zip(shapes.par_iter())
        .enumerate()
        .map(|(i, ((ef, d), s))| compress_indexed(ef, d, s, params, i))
        .collect::<Result<Vec<_>>>()?;
    Ok(Contribution {
        params: *params,
        tensors,
    })
}

fn compress_indexed(
    ef: &mut ErrorFeedback,
    delta: &[f32],
    shape: &TensorShape,
    params: &CodecParams,
    tensor: usize,
) -> Result<CompressedTensor> {
    params.validate()?;
    let numel = shape.numel();
    for got in [delta.len(), ef.buf.len()] {
        if got as u64 != numel {
            return Err(Error::LengthMismatch {
                expected: numel,
                got: got as u64,
            });
        }
    }
    let beta = params.beta;
    let payload = match Layout::of(shape, params)? {
        Layout::Dense { .. } => {
            let e = &mut ef.buf;
            let mut finite = true;
            for (x, &d) in e.iter_mut().zip(delta) {
                *x = beta * *x + d;
                finite &= x.is_finite();
            }
            if !finite {
                ef.reset();
                return Err(Error::NonFiniteInput);
            }
            // Everything is sent, so the residual is exactly zero.
            let values = std::mem::replace(e, vec![0.0; delta.len()]);
            Payload::Dense(values)
        }
        Layout::Sparse(ch) => match compress_sparse(&mut ef.buf, delta, &ch, params, tensor) {
            Ok(s) => Payload::Sparse(s),
            Err(err) => {
                if err == Error::NonFiniteInput {
                    ef.reset();
                }
                return Err(err);
            }
        },
    };
    Ok(CompressedTensor {
        shape: shape.clone(),
        payload,
    })
}

fn compress_sparse(
    e: &mut [f32],
    delta: &[f32],
    ch: &Chunking,
    params: &CodecParams,
    tensor: usize,
) -> Result<SparseTensor> {
    let k = ch.k;
    let stripe = ch.band_len() * STRIPE_BANDS;
    let per_stripe = ch.chunks_per_row() * k * STRIPE_BANDS;
    let mut positions = vec![0u16; ch.kept()];
    let mut values = vec![0f32; ch.kept()];
    // Pass 1, parallel over stripes of chunk rows: EF update, exact top-k per chunk.
    e.par_chunks_mut(stripe)
        .zip(delta.par_chunks(stripe))
        .zip(positions.par_chunks_mut(per_stripe))
        .zip(values.par_chunks_mut(per_stripe))
        .try_for_each_init(
            || Scratch::new(ch.chunk_len()),
            |s, (((es, ds), ps), vs)| select_stripe(s, es, ds, ps, vs, ch, params.beta),
        )?;
    let (quant, codes) = quantize(params, &values, k, tensor)?;
    let sparse = SparseTensor {
        chunking: *ch,
        positions,
        codes,
        quant,
        bits: params.bits,
    };
    // Pass 2: subtract what the receivers will reconstruct.
    let sp = &sparse;
    let cpr = ch.chunks_per_row();
    e.par_chunks_mut(ch.band_len())
        .enumerate()
        .for_each(|(band, eb)| {
            for c in band * cpr..(band + 1) * cpr {
                let start = (c % cpr) * ch.cw;
                let codes = sp.codes.get(c * k..(c + 1) * k).unwrap_or(&[]);
                for (&p, &code) in sp.chunk_positions(c).iter().zip(codes) {
                    let (r, col) = split(usize::from(p), ch.cw);
                    if let Some(x) = eb.get_mut(r * ch.cols + start + col) {
                        *x -= sp.quant.value(c, code, sp.bits);
                    }
                }
            }
        });
    Ok(sparse)
}

/// (row, column) of a chunk-local index; chunk widths are usually powers of two.
#[inline(always)]
pub(crate) fn split(p: usize, width: usize) -> (usize, usize) {
    if width.is_power_of_two() {
        (p >> width.trailing_zeros(), p & (width - 1))
    } else {
        (p / width, p % width)
    }
}

/// Chunks processed together: small enough to stay in L2 while selecting.
const GROUP_ELEMS: usize = 1 << 16;
/// Bands per parallel work item (the next group is prefetched within a work item).
const STRIPE_BANDS: usize = 8;

/// A stripe of bands, group by group: e ← β·e + Δ row by row (streaming), then each chunk's
/// top-k from cache while the next group is prefetched, so memory and compute overlap.
fn select_stripe(
    s: &mut Scratch,
    es: &mut [f32],
    ds: &[f32],
    ps: &mut [u16],
    vs: &mut [f32],
    ch: &Chunking,
    beta: f32,
) -> Result<()> {
    let (cw, cols, k, cpr) = (ch.cw, ch.cols, ch.k, ch.chunks_per_row());
    let per_group = (GROUP_ELEMS / ch.chunk_len()).clamp(1, cpr);
    let groups_per_band = cpr.div_ceil(per_group);
    let bands = es.len() / ch.band_len().max(1);
    let group = |i: usize| {
        let (b, g) = (i / groups_per_band, i % groups_per_band);
        let first = b * cpr + g * per_group; // chunk index inside the stripe
        let n = per_group.min(cpr - g * per_group);
        (b * ch.ch * cols + g * per_group * cw, first, n)
    };
    let mut bad = 0u32;
    let total = bands * groups_per_band;
    // Hit masks need one u64 per chunk row.
    let fused = cw <= 64;
    s.col_kth.resize(cpr, 0.0);
    s.masks.resize(per_group * ch.ch, 0);
    for i in 0..total {
        let (base, first, n) = group(i);
        let col_chunk0 = first % cpr;
        let g = GroupView {
            base,
            cols,
            cw,
            n,
            rows: ch.ch,
            beta,
            fused,
        };
        let kth = s.col_kth.get(col_chunk0..col_chunk0 + n).unwrap_or(&[]);
        bad |= ef_group(&g, es, ds, kth, &mut s.masks);
        let next = (i + 1 < total).then(|| group(i + 1));
        for j in 0..n {
            // Spread the next group's lines over this group's chunks, a few per scanned row.
            let mut pf = match next {
                Some((nbase, _, nn)) => {
                    let rows = ch.ch.div_ceil(n);
                    let r0 = (j * rows).min(ch.ch);
                    let rows = rows.min(ch.ch - r0);
                    let lines = rows * (nn * cw).div_ceil(16);
                    Prefetch {
                        a: es,
                        b: ds,
                        start: nbase + r0 * cols,
                        stride: cols,
                        width: nn * cw,
                        rows,
                        per_tick: lines.div_ceil(ch.ch),
                        pos: 0,
                        row: 0,
                        line: 0,
                    }
                }
                _ => Prefetch::none(),
            };
            let c = first + j;
            let (Some(pc), Some(vc)) = (
                ps.get_mut(c * k..(c + 1) * k),
                vs.get_mut(c * k..(c + 1) * k),
            ) else {
                continue;
            };
            let view = ChunkView {
                data: es,
                start: base + j * cw,
                stride: cols,
                rows: ch.ch,
                width: cw,
            };
            let t = s.col_kth.get(col_chunk0 + j).copied().unwrap_or(0.0);
            let masks = (fused && t > 0.0).then_some((j * ch.ch, t));
            select(s, &view, pc, &mut pf, masks);
            if let Some(kth) = s.col_kth.get_mut(col_chunk0 + j) {
                *kth = pc
                    .iter()
                    .map(|&p| view.get(usize::from(p)).abs())
                    .fold(f32::MAX, f32::min);
            }
            pf.finish();
            for (v, &p) in vc.iter_mut().zip(pc.iter()) {
                *v = view.get(usize::from(p));
            }
        }
    }
    if bad != 0 {
        Err(Error::NonFiniteInput)
    } else {
        Ok(())
    }
}

/// One group of chunks inside a stripe, for the error-feedback pass.
struct GroupView {
    base: usize,
    cols: usize,
    cw: usize,
    n: usize,
    rows: usize,
    beta: f32,
    fused: bool,
}

/// e ← β·e + Δ over a group, row by row, with hit masks against each chunk column's predicted
/// threshold; returns non-zero if any value is not finite. Uses AVX2 where the CPU has it
/// (same f32 mul-then-add, so identical results).
fn ef_group(g: &GroupView, es: &mut [f32], ds: &[f32], kth: &[f32], masks: &mut [u64]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was detected on this CPU just above.
        return unsafe { ef_group_avx2(g, es, ds, kth, masks) };
    }
    ef_group_body(g, es, ds, kth, masks)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn ef_group_avx2(g: &GroupView, es: &mut [f32], ds: &[f32], kth: &[f32], masks: &mut [u64]) -> u32 {
    ef_group_body(g, es, ds, kth, masks)
}

#[inline(always)]
fn ef_group_body(g: &GroupView, es: &mut [f32], ds: &[f32], kth: &[f32], masks: &mut [u64]) -> u32 {
    let mut bad = 0u32;
    for r in 0..g.rows {
        let off = g.base + r * g.cols;
        for j in 0..g.n {
            let o = off + j * g.cw;
            let (Some(er), Some(dr)) = (es.get_mut(o..o + g.cw), ds.get(o..o + g.cw)) else {
                continue;
            };
            for (x, &d) in er.iter_mut().zip(dr) {
                *x = g.beta * *x + d;
                // Exponent all ones: infinity or NaN.
                bad |= u32::from(x.to_bits() & 0x7f80_0000 == 0x7f80_0000);
            }
            let t = kth.get(j).copied().unwrap_or(0.0);
            if g.fused
                && t > 0.0
                && let Some(mk) = masks.get_mut(j * g.rows + r)
            {
                *mk = hit_mask(er, t * 0.95);
            }
        }
    }
    bad
}
