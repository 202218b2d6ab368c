//! The inner loop of aggregation: every aggregated peer's values in one unit (a band of chunks,
//! or a block of a dense tensor) added into cache-resident accumulators. Each element's sums
//! are taken over the peers in order, as [`super::Aggregator::aggregate`] takes them, so the
//! results are its bits whatever the ranges and the threads.

use super::view::{ChunkScratch, TensorData, TensorView};
use crate::error::{Error, Result};
use crate::quant::Quant;
use crate::shape::Chunking;
use std::ops::Range;

/// Buffers reused across the units and ranges one thread aggregates.
#[derive(Debug)]
pub(crate) struct Scratch {
    /// Per element of the unit: [Σ factor·value, Σ weight] over the peers that carry it;
    /// all zero between units.
    acc: Vec<[f32; 2]>,
    chunk: ChunkScratch,
    /// Unit offset of each chunk-local position, relative to the chunk's first column.
    offsets: Box<[u32; 1 << 16]>,
    offsets_for: Option<Chunking>,
    /// Per aggregated peer: its factor times the dequantized value of each code.
    tables: Vec<[f32; 256]>,
}

impl Default for Scratch {
    fn default() -> Self {
        Self {
            acc: Vec::new(),
            chunk: ChunkScratch::default(),
            offsets: Box::new([0; 1 << 16]),
            offsets_for: None,
            tables: Vec::new(),
        }
    }
}

impl Scratch {
    /// Drops partial sums (after an error), so the next unit starts from zero.
    pub fn reset(&mut self) {
        self.acc.clear();
    }
}

/// Adds the aggregated peers' values of the unit `elements` (starting a unit of `unit`
/// elements) into the accumulators, which it returns.
pub(crate) fn accumulate<'s>(
    views: &[&TensorView<'_>],
    factors: &[f32],
    weights: &[f32],
    tensor: usize,
    elements: Range<u64>,
    unit: u64,
    scratch: &'s mut Scratch,
) -> Result<&'s mut [[f32; 2]]> {
    let Scratch {
        acc,
        chunk,
        offsets,
        offsets_for,
        tables,
    } = scratch;
    let n = (elements.end - elements.start) as usize;
    acc.resize(n, [0.0; 2]);
    let acc = acc.get_mut(..n).unwrap_or_default();
    let Some(TensorData::Sparse(first)) = views.first().map(|v| &v.data) else {
        // Dense tensors: every element, every peer.
        for ((view, &f), &w) in views.iter().zip(factors).zip(weights) {
            if let TensorData::Dense(v) = &view.data {
                let mut a = acc.iter_mut();
                v.for_each_in(elements.start as usize..elements.end as usize, |x| {
                    if let Some(a) = a.next() {
                        a[0] += f * x;
                        a[1] += w;
                    }
                });
            }
        }
        return Ok(acc);
    };
    let ch = first.chunking;
    if *offsets_for != Some(ch) {
        for (p, o) in offsets.iter_mut().enumerate().take(ch.chunk_len()) {
            *o = ((p / ch.cw) * ch.cols + p % ch.cw) as u32;
        }
        *offsets_for = Some(ch);
    }
    let levels = 1usize << first.bits;
    // Production values depend on the code only: one table per peer for the whole unit.
    let per_chunk = matches!(first.quant.as_ref(), Quant::Balanced { .. });
    tables.resize(views.len(), [0.0; 256]);
    let band = (elements.start / unit) as usize;
    let cpr = ch.chunks_per_row();
    for bj in 0..cpr {
        let c = band * cpr + bj;
        let acc_c = acc.get_mut(bj * ch.cw..).unwrap_or_default();
        for (((view, &f), &w), table) in views
            .iter()
            .zip(factors)
            .zip(weights)
            .zip(tables.iter_mut())
        {
            let TensorData::Sparse(sv) = &view.data else {
                return Err(Error::IncompatibleContribution { index: 0 });
            };
            if bj == 0 || per_chunk {
                for (q, x) in table.iter_mut().enumerate().take(levels) {
                    *x = f * sv.quant.value(c, q as u8, sv.bits);
                }
            }
            let (ps, qs) = sv.chunk(c, chunk, tensor)?;
            scatter(acc_c, offsets, table, w, ps, qs);
        }
    }
    Ok(acc)
}

/// `acc[offset(p)] += [table[q], w]` for one peer's chunk; `acc` starts at the chunk's first
/// column. Its own function so that the slices stay in registers.
#[inline(never)]
fn scatter(
    acc: &mut [[f32; 2]],
    offsets: &[u32; 1 << 16],
    table: &[f32; 256],
    w: f32,
    positions: &[u16],
    codes: &[u8],
) {
    for (&p, &q) in positions.iter().zip(codes) {
        if let Some(a) = acc.get_mut(offsets[usize::from(p)] as usize) {
            a[0] += table[usize::from(q)];
            a[1] += w;
        }
    }
}
