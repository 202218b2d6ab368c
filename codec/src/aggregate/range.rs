//! Aggregation of one range of one tensor, band by band: every peer's chunk is added into
//! band-sized accumulators (cache-resident), then the band is written out. Each element's sum
//! is taken over the peers in order, as [`Aggregator::aggregate`] does, so the results are its
//! bits whatever the ranges and the threads.

use super::plan::{AggregateRange, check_range, unit_len};
use super::scales::PeerScales;
use super::sparse::AggregateSegment;
use super::view::{ChunkScratch, ContributionView, TensorData, TensorView};
use super::{AggregationRule, Aggregator, Carried, finite_or_zero};
use crate::error::{Error, Result};
use crate::quant::Quant;
use crate::shape::Chunking;

/// Buffers reused across the bands and ranges one thread aggregates.
#[derive(Debug)]
pub(crate) struct Scratch {
    sum: Vec<f32>,
    wsum: Vec<f32>,
    chunk: ChunkScratch,
    /// Band offset of each chunk-local position, relative to the chunk's first column.
    offsets: Box<[u32; 1 << 16]>,
    offsets_for: Option<Chunking>,
    /// Per aggregated peer: its factor times the dequantized value of each code.
    tables: Vec<[f32; 256]>,
}

impl Default for Scratch {
    fn default() -> Self {
        Self {
            sum: Vec::new(),
            wsum: Vec::new(),
            chunk: ChunkScratch::default(),
            offsets: Box::new([0; 1 << 16]),
            offsets_for: None,
            tables: Vec::new(),
        }
    }
}

/// Where a finished unit goes.
trait Sink {
    /// `carried(i)` and `value(i)` for the unit's elements, `first` its offset in the range.
    fn unit(&mut self, first: usize, sum: &[f32], wsum: &[f32], fin: &dyn Fn(f32, f32) -> f32);
}

struct SparseSink<'a> {
    bits: &'a mut [u64],
    values: &'a mut Vec<f32>,
}

impl Sink for SparseSink<'_> {
    fn unit(&mut self, first: usize, sum: &[f32], wsum: &[f32], fin: &dyn Fn(f32, f32) -> f32) {
        for (i, (&s, &w)) in sum.iter().zip(wsum).enumerate() {
            if w > 0.0 {
                let j = first + i;
                if let Some(b) = self.bits.get_mut(j / 64) {
                    *b |= 1 << (j % 64);
                }
                self.values.push(fin(s, w));
            }
        }
    }
}

struct DenseSink<'a>(&'a mut [f32]);

impl Sink for DenseSink<'_> {
    fn unit(&mut self, first: usize, sum: &[f32], wsum: &[f32], fin: &dyn Fn(f32, f32) -> f32) {
        let out = self.0.get_mut(first..).unwrap_or_default();
        for (o, (&s, &w)) in out.iter_mut().zip(sum.iter().zip(wsum)) {
            *o = if w > 0.0 { fin(s, w) } else { 0.0 };
        }
    }
}

impl Aggregator {
    /// Aggregates `range` of the contributions `peers` (the same, in the same order, as given to
    /// [`Aggregator::peer_scales`] for `scales`) into `out`, replacing its content. The
    /// segments of a plan's ranges make the round's [`crate::SparseAggregate`]
    /// ([`crate::SparseAggregate::from_segments`]), bit-identical to
    /// [`Aggregator::aggregate_sparse`] for any plan and thread count.
    pub fn aggregate_range(
        &self,
        peers: &[ContributionView<'_>],
        scales: &PeerScales,
        range: &AggregateRange,
        out: &mut AggregateSegment,
    ) -> Result<()> {
        self.range_into(peers, scales, range, out, &mut Scratch::default())
    }

    /// Like [`Aggregator::aggregate_range`], into a dense slice of the range's length (zero
    /// where nothing is carried): the range of [`Aggregator::aggregate`]'s output.
    pub fn aggregate_range_dense(
        &self,
        peers: &[ContributionView<'_>],
        scales: &PeerScales,
        range: &AggregateRange,
        out: &mut [f32],
    ) -> Result<()> {
        let len = range.elements.end.saturating_sub(range.elements.start);
        if out.len() as u64 != len {
            return Err(Error::LengthMismatch {
                expected: len,
                got: out.len() as u64,
            });
        }
        self.run(
            peers,
            scales,
            range,
            &mut DenseSink(out),
            &mut Scratch::default(),
        )
    }

    pub(crate) fn range_into(
        &self,
        peers: &[ContributionView<'_>],
        scales: &PeerScales,
        range: &AggregateRange,
        out: &mut AggregateSegment,
        scratch: &mut Scratch,
    ) -> Result<()> {
        let len = range.elements.end.saturating_sub(range.elements.start);
        let mut bits = vec![0u64; len.div_ceil(64) as usize];
        let mut values = std::mem::take(&mut out.values);
        values.clear();
        let mut sink = SparseSink {
            bits: &mut bits,
            values: &mut values,
        };
        self.run(peers, scales, range, &mut sink, scratch)?;
        values.shrink_to_fit();
        *out = AggregateSegment::from_bitmap(
            range.tensor,
            range.elements.start,
            range.elements.end,
            bits,
            values,
        );
        if let Carried::List(list) = &mut out.carried {
            list.shrink_to_fit();
        }
        Ok(())
    }

    fn run(
        &self,
        peers: &[ContributionView<'_>],
        scales: &PeerScales,
        range: &AggregateRange,
        sink: &mut dyn Sink,
        scratch: &mut Scratch,
    ) -> Result<()> {
        if scales.rule != self.rule || scales.peers != peers.len() {
            return Err(Error::IncompatibleContribution { index: 0 });
        }
        let t = range.tensor;
        let views: Vec<&TensorView<'_>> = scales
            .active
            .iter()
            .map(|&p| peers.get(p).and_then(|c| c.tensors.get(t)))
            .collect::<Option<_>>()
            .ok_or(Error::InvalidRange)?;
        let shape = &peers
            .first()
            .ok_or(Error::NoContributions)?
            .tensors
            .get(t)
            .ok_or(Error::InvalidRange)?
            .shape;
        let params = &peers.first().ok_or(Error::NoContributions)?.params;
        let unit = unit_len(shape, params)?;
        check_range(range, shape.numel(), unit)?;
        let factors: Vec<f32> = (0..views.len())
            .map(|a| {
                scales
                    .factors
                    .get(a * scales.tensors + t)
                    .copied()
                    .unwrap_or(0.0)
            })
            .collect();
        let total = scales.total;
        let fin: &dyn Fn(f32, f32) -> f32 = match self.rule {
            AggregationRule::Mean => &move |s, _| finite_or_zero(s / total),
            AggregationRule::MedianClipMean => &|s, w| finite_or_zero(s / w),
        };
        let mut start = range.elements.start;
        while start < range.elements.end {
            let end = (start + unit).min(range.elements.end);
            let n = (end - start) as usize;
            scratch.sum.clear();
            scratch.sum.resize(n, 0.0);
            scratch.wsum.clear();
            scratch.wsum.resize(n, 0.0);
            accumulate(&views, &factors, &scales.weights, t, start, unit, scratch)?;
            let first = (start - range.elements.start) as usize;
            sink.unit(first, &scratch.sum, &scratch.wsum, fin);
            start = end;
        }
        Ok(())
    }
}

/// Adds every aggregated peer's values in the unit starting at element `start` into
/// `scratch.sum` (factor · value) and `scratch.wsum` (weight), peer by peer.
fn accumulate(
    views: &[&TensorView<'_>],
    factors: &[f32],
    weights: &[f32],
    tensor: usize,
    start: u64,
    unit: u64,
    scratch: &mut Scratch,
) -> Result<()> {
    let Scratch {
        sum,
        wsum,
        chunk,
        offsets,
        offsets_for,
        tables,
    } = scratch;
    let n = sum.len();
    for ((view, &f), &w) in views.iter().zip(factors).zip(weights) {
        if let TensorData::Dense(v) = &view.data {
            let mut i = 0;
            v.for_each_in(start as usize..start as usize + n, |x| {
                if let (Some(s), Some(ws)) = (sum.get_mut(i), wsum.get_mut(i)) {
                    *s += f * x;
                    *ws += w;
                }
                i += 1;
            });
        }
    }
    let Some(TensorData::Sparse(first)) = views.first().map(|v| &v.data) else {
        return Ok(());
    };
    let ch = first.chunking;
    if *offsets_for != Some(ch) {
        for (p, o) in offsets.iter_mut().enumerate().take(ch.chunk_len()) {
            *o = ((p / ch.cw) * ch.cols + p % ch.cw) as u32;
        }
        *offsets_for = Some(ch);
    }
    let levels = 1usize << first.bits;
    let band = (start / unit) as usize;
    let cpr = ch.chunks_per_row();
    // Production values depend on the code only: one table per peer for the whole unit.
    let per_chunk = matches!(first.quant.as_ref(), Quant::Balanced { .. });
    tables.resize(views.len(), [0.0; 256]);
    for bj in 0..cpr {
        let c = band * cpr + bj;
        let base = bj * ch.cw;
        let sum_c = sum.get_mut(base..).unwrap_or_default();
        let wsum_c = wsum.get_mut(base..).unwrap_or_default();
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
            for (&p, &q) in ps.iter().zip(qs) {
                let o = offsets[usize::from(p)] as usize;
                if let (Some(s), Some(ws)) = (sum_c.get_mut(o), wsum_c.get_mut(o)) {
                    *s += table[usize::from(q)];
                    *ws += w;
                }
            }
        }
    }
    Ok(())
}
