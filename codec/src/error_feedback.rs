//! Error feedback and compression: e ← β·e + Δ; select and quantize e; e ← e − decoded.

use crate::error::{Error, Result};
use crate::params::CodecParams;
use crate::quant::{Quant, quantize};
use crate::shape::{Chunking, Layout, TensorShape};
use crate::simd::{GroupRows, Prefetch, Span, collect_chunk, ef_group};
use crate::tensor::{CompressedTensor, Contribution, Payload, SparseTensor};
use crate::topk::{ChunkView, Scratch, group_threshold, select, select_candidates};
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
    let mut out = CompressedTensor::empty();
    compress_indexed(ef, delta, shape, params, 0, &mut out)?;
    Ok(out)
}

/// Compresses every tensor of a model into one contribution (tensors in order).
///
/// A fresh [`compress_contribution_into`]; peers that compress every round reuse theirs.
pub fn compress_contribution(
    efs: &mut [ErrorFeedback],
    deltas: &[&[f32]],
    shapes: &[TensorShape],
    params: &CodecParams,
) -> Result<Contribution> {
    let mut out = Contribution::default();
    compress_contribution_into(efs, deltas, shapes, params, &mut out)?;
    Ok(out)
}

/// Compresses every tensor of a model into `out` (tensors in order), reusing its buffers:
/// with the same shapes and parameters as last time, nothing is allocated.
///
/// The result is the same as [`compress_contribution`]'s, whatever `out` held. On error `out`
/// is left empty (no tensors).
pub fn compress_contribution_into(
    efs: &mut [ErrorFeedback],
    deltas: &[&[f32]],
    shapes: &[TensorShape],
    params: &CodecParams,
    out: &mut Contribution,
) -> Result<()> {
    if efs.len() != deltas.len() || deltas.len() != shapes.len() {
        out.tensors.clear();
        return Err(Error::LengthMismatch {
            expected: shapes.len() as u64,
            got: deltas.len() as u64,
        });
    }
    out.params = *params;
    out.tensors.truncate(shapes.len());
    out.tensors
        .resize_with(shapes.len(), CompressedTensor::empty);
    // Tensors are independent: parallel over them as well as inside each one.
    let done = efs
        .par_iter_mut()
        .zip(deltas.par_iter())
        .zip(shapes.par_iter())
        .zip(out.tensors.par_iter_mut())
        .enumerate()
        .try_for_each(|(i, (((ef, d), s), t))| compress_indexed(ef, d, s, params, i, t));
    if done.is_err() {
        out.tensors.clear();
    }
    done
}

/// Compresses one tensor into `out`, reusing its buffers. On error `out` is not a valid
/// tensor of `shape`; the caller discards it.
fn compress_indexed(
    ef: &mut ErrorFeedback,
    delta: &[f32],
    shape: &TensorShape,
    params: &CodecParams,
    tensor: usize,
    out: &mut CompressedTensor,
) -> Result<()> {
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
    if out.shape != *shape {
        out.shape.clone_from(shape);
    }
    let beta = params.beta;
    let buffers = Buffers::take(&mut out.payload);
    out.payload = match Layout::of(shape, params)? {
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
            // Everything is sent, so the residual is exactly zero: e and the (zeroed) payload
            // buffer change places.
            let mut values = buffers.dense;
            values.clear();
            values.resize(delta.len(), 0.0);
            std::mem::swap(e, &mut values);
            Payload::Dense(values)
        }
        Layout::Sparse(ch) => {
            match compress_sparse(&mut ef.buf, delta, &ch, params, tensor, buffers) {
                Ok(s) => Payload::Sparse(s),
                Err(err) => {
                    if err == Error::NonFiniteInput {
                        ef.reset();
                    }
                    return Err(err);
                }
            }
        }
    };
    Ok(())
}

/// The output buffers of a tensor's previous payload, to be overwritten.
#[derive(Default)]
struct Buffers {
    dense: Vec<f32>,
    positions: Vec<u16>,
    codes: Vec<u8>,
}

impl Buffers {
    fn take(payload: &mut Payload) -> Self {
        match std::mem::replace(payload, Payload::Dense(Vec::new())) {
            Payload::Dense(dense) => Self {
                dense,
                ..Self::default()
            },
            Payload::Sparse(s) => Self {
                positions: s.positions,
                codes: s.codes,
                ..Self::default()
            },
        }
    }
}

fn compress_sparse(
    e: &mut [f32],
    delta: &[f32],
    ch: &Chunking,
    params: &CodecParams,
    tensor: usize,
    buffers: Buffers,
) -> Result<SparseTensor> {
    let k = ch.k;
    let stripe = ch.band_len() * STRIPE_BANDS;
    let per_stripe = ch.chunks_per_row() * k * STRIPE_BANDS;
    // Every position is overwritten below: only the length matters.
    let mut positions = buffers.positions;
    positions.resize(ch.kept(), 0);
    // The selected values are only needed until quantization: reuse this thread's buffer.
    let mut values = VALUES.with(|v| v.take());
    values.clear();
    values.resize(ch.kept(), 0.0);
    // Pass 1, parallel over stripes of chunk rows: EF update, exact top-k per chunk.
    e.par_chunks_mut(stripe)
        .zip(delta.par_chunks(stripe))
        .zip(positions.par_chunks_mut(per_stripe))
        .zip(values.par_chunks_mut(per_stripe))
        .try_for_each_init(
            || Scratch::new(ch.chunk_len()),
            |s, (((es, ds), ps), vs)| select_stripe(s, es, ds, ps, vs, ch, params.beta),
        )?;
    let mut codes = buffers.codes;
    let quant = match quantize(params, &values, k, tensor, &mut codes) {
        Ok(q) => q,
        Err(err) => {
            VALUES.with(|v| v.replace(values));
            return Err(err);
        }
    };
    let sparse = SparseTensor {
        chunking: *ch,
        positions,
        codes,
        quant,
        bits: params.bits,
    };
    // Pass 2: subtract what the receivers will reconstruct (a scatter over the kept
    // positions: nothing else of e changes).
    let sp = &sparse;
    let cpr = ch.chunks_per_row();
    let table: Option<Vec<f32>> = match &sp.quant {
        Quant::Production { .. } => {
            Some((0..=255u8).map(|q| sp.quant.value(0, q, sp.bits)).collect())
        }
        Quant::Balanced { .. } => None,
    };
    let table = table.as_deref();
    e.par_chunks_mut(ch.band_len())
        .enumerate()
        .for_each(|(band, eb)| {
            for c in band * cpr..(band + 1) * cpr {
                let start = (c % cpr) * ch.cw;
                let codes = sp.codes.get(c * k..(c + 1) * k).unwrap_or(&[]);
                let vals = values.get(c * k..(c + 1) * k).unwrap_or(&[]);
                for ((&p, &code), &v) in sp.chunk_positions(c).iter().zip(codes).zip(vals) {
                    let (r, col) = split(usize::from(p), ch.cw);
                    let d = match table {
                        Some(t) => t.get(usize::from(code)).copied().unwrap_or(0.0),
                        None => sp.quant.value(c, code, sp.bits),
                    };
                    // e at p still holds the selected value v: a store, no load needed.
                    if let Some(x) = eb.get_mut(r * ch.cols + start + col) {
                        *x = v - d;
                    }
                }
            }
        });
    VALUES.with(|v| v.replace(values));
    Ok(sparse)
}

thread_local! {
    /// Per-thread scratch for the selected values (taken while in use, so re-entry from a
    /// nested rayon job simply allocates).
    static VALUES: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
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

/// Chunks processed together: small enough that a group and the next one, fetched meanwhile,
/// stay in L2 (e and Δ of 64 K elements each: 1 MiB for both groups).
const GROUP_ELEMS: usize = 1 << 16;

/// Bands per parallel work item (the next group is prefetched within a work item).
const STRIPE_BANDS: usize = 8;

/// A stripe of bands, group by group of chunks: e ← β·e + Δ row by row (streaming) while
/// folding each chunk row's magnitudes into 8 lane maxima; then, per chunk, from cache: a
/// threshold that ≥ k of those group maxima reach (so ≥ k values do), a branchless gather of
/// the values above it, and an exact selection among them. The next group is prefetched
/// meanwhile, so memory and compute overlap.
fn select_stripe(
    s: &mut Scratch,
    es: &mut [f32],
    ds: &[f32],
    ps: &mut [u16],
    vs: &mut [f32],
    ch: &Chunking,
    beta: f32,
) -> Result<()> {
    if !ch.cw.is_multiple_of(8) {
        return select_stripe_general(s, es, ds, ps, vs, ch, beta);
    }
    let (cw, cols, k, cpr, rows) = (ch.cw, ch.cols, ch.k, ch.chunks_per_row(), ch.ch);
    let per_group = (GROUP_ELEMS / ch.chunk_len()).clamp(1, cpr);
    let groups_per_band = cpr.div_ceil(per_group);
    let bands = es.len() / ch.band_len().max(1);
    let group = |i: usize| {
        let (b, g) = (i / groups_per_band, i % groups_per_band);
        let first = b * cpr + g * per_group; // chunk index inside the stripe
        let n = per_group.min(cpr - g * per_group);
        (b * rows * cols + g * per_group * cw, first, n)
    };
    let total = bands * groups_per_band;
    let lanes = rows * 8; // group maxima per chunk
    s.gm.resize(per_group * lanes, 0);
    s.bits.resize(ch.chunk_len() + 8, 0);
    s.idx.resize(ch.chunk_len() + 8, 0);
    let mut bad = false;
    for i in 0..total {
        let (base, first, n) = group(i);
        let g = GroupRows {
            base,
            cols,
            cw,
            rows,
            n,
        };
        // The next group is fetched while this one is updated and selected from: a few lines
        // at every chunk row of both passes.
        let mut pf = match (i + 1 < total).then(|| group(i + 1)) {
            Some((nbase, _, nn)) => Prefetch {
                a: Span::of(es),
                b: Span::of(ds),
                start: nbase,
                stride: cols,
                width: nn * cw,
                rows,
                per_tick: (rows * (nn * cw).div_ceil(16)).div_ceil(2 * n * rows),
                pos: 0,
                row: 0,
                line: 0,
            },
            None => Prefetch::none(),
        };
        bad |= ef_group(&g, es, ds, beta, &mut s.gm, &mut pf);
        for j in 0..n {
            let c = first + j;
            let (Some(pc), Some(vc), Some(gm)) = (
                ps.get_mut(c * k..(c + 1) * k),
                vs.get_mut(c * k..(c + 1) * k),
                s.gm.get(j * lanes..(j + 1) * lanes),
            ) else {
                continue;
            };
            let mut t = group_threshold(gm, k, s.last_t);
            s.last_t = t;
            let mut m = collect_chunk(&g, j, es, gm, t, &mut s.bits, &mut s.idx, &mut pf);
            if m < k {
                // Unreachable (≥ k groups reach t, each holding a value ≥ t); be safe anyway.
                t = 0;
                m = collect_chunk(&g, j, es, gm, t, &mut s.bits, &mut s.idx, &mut pf);
            }
            select_candidates(
                t,
                s.bits.get(..m).unwrap_or(&[]),
                s.idx.get(..m).unwrap_or(&[]),
                pc,
                vc,
            );
        }
        pf.finish();
    }
    if bad {
        Err(Error::NonFiniteInput)
    } else {
        Ok(())
    }
}

/// Chunks of any width: the plain error-feedback pass, then each chunk's top-k.
fn select_stripe_general(
    s: &mut Scratch,
    es: &mut [f32],
    ds: &[f32],
    ps: &mut [u16],
    vs: &mut [f32],
    ch: &Chunking,
    beta: f32,
) -> Result<()> {
    let mut finite = true;
    for (x, &d) in es.iter_mut().zip(ds) {
        *x = beta * *x + d;
        finite &= x.is_finite();
    }
    if !finite {
        return Err(Error::NonFiniteInput);
    }
    let (cw, cols, k, cpr) = (ch.cw, ch.cols, ch.k, ch.chunks_per_row());
    for (c, (pc, vc)) in ps.chunks_mut(k).zip(vs.chunks_mut(k)).enumerate() {
        let view = ChunkView {
            data: es,
            start: (c / cpr) * ch.band_len() + (c % cpr) * cw,
            stride: cols,
            rows: ch.ch,
            width: cw,
        };
        select(s, &view, pc, &mut Prefetch::none());
        for (v, &p) in vc.iter_mut().zip(pc.iter()) {
            *v = view.get(usize::from(p));
        }
    }
    Ok(())
}
