//! Aggregation of one range of one tensor, unit by unit (a band of chunks): the kernel adds
//! every peer into the unit's accumulators, then a sink writes the unit out — as a sparse
//! segment or into a dense slice.

use super::kernel::{Scratch, accumulate};
use super::plan::{AggregateRange, check_range, unit_len};
use super::scales::PeerScales;
use super::sparse::AggregateSegment;
use super::view::{ContributionView, TensorData, TensorView};
use super::{AggregationRule, Aggregator, Carried, finite_or_zero};
use crate::error::{Error, Result};

/// Where a finished unit goes. It reads the unit's accumulators and resets them to zero (so
/// they stay zeroed between units without a separate pass).
trait Sink {
    /// `first`: the unit's offset in the range; `fin(sum, wsum)`: a carried element's value.
    fn unit(&mut self, first: usize, acc: &mut [[f32; 2]], fin: impl Fn(f32, f32) -> f32);
}

struct SparseSink<'a> {
    bits: &'a mut [u64],
    values: &'a mut Vec<f32>,
}

impl Sink for SparseSink<'_> {
    #[inline]
    fn unit(&mut self, first: usize, acc: &mut [[f32; 2]], fin: impl Fn(f32, f32) -> f32) {
        for (b, block) in acc.chunks_mut(64).enumerate() {
            // The carried elements as a mask first: no branch per element.
            let mut mask = 0u64;
            for (j, a) in block.iter().enumerate() {
                mask |= u64::from(a[1] > 0.0) << j;
            }
            set_bits(self.bits, (first + b * 64) as u64, mask);
            let mut m = mask;
            while m != 0 {
                let j = m.trailing_zeros() as usize;
                m &= m - 1;
                if let Some(a) = block.get(j) {
                    self.values.push(fin(a[0], a[1]));
                }
            }
            block.fill([0.0; 2]);
        }
    }
}

/// ORs the 64 bits of `mask` into `bits` from bit `at`.
#[inline]
fn set_bits(bits: &mut [u64], at: u64, mask: u64) {
    let (word, shift) = ((at / 64) as usize, (at % 64) as u32);
    if let Some(w) = bits.get_mut(word) {
        *w |= mask << shift;
    }
    if shift > 0
        && let Some(w) = bits.get_mut(word + 1)
    {
        *w |= mask >> (64 - shift);
    }
}

struct DenseSink<'a>(&'a mut [f32]);

impl Sink for DenseSink<'_> {
    fn unit(&mut self, first: usize, acc: &mut [[f32; 2]], fin: impl Fn(f32, f32) -> f32) {
        let out = self.0.get_mut(first..).unwrap_or_default();
        for (o, a) in out.iter_mut().zip(acc.iter_mut()) {
            *o = if a[1] > 0.0 { fin(a[0], a[1]) } else { 0.0 };
            *a = [0.0; 2];
        }
    }
}

impl Aggregator {
    /// Aggregates `range` of the contributions `peers` (the same, in the same order, as given to
    /// [`Aggregator::peer_scales`] for `scales`: their count, parameters and shapes are checked,
    /// their identity is the caller's part) into `out`, replacing its content. The
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
        // At most every element, or every kept value of every peer: no regrowth while
        // pushing; the slack is given back below.
        values.reserve_exact(carried_bound(peers, scales, range).min(len) as usize);
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
        sink: &mut impl Sink,
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
        let shape = scales.shapes.get(t).ok_or(Error::InvalidRange)?;
        let params = &scales.params;
        // Cheap guard against peers other than the scales' (peer_scales checked those).
        if let Some(index) = peers.iter().position(|c| {
            c.params != *params
                || c.tensors.len() != scales.shapes.len()
                || c.tensors.get(t).map(|x| &x.shape) != Some(shape)
        }) {
            return Err(Error::IncompatibleContribution { index });
        }
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
        let mut start = range.elements.start;
        while start < range.elements.end {
            let end = (start + unit).min(range.elements.end);
            let first = (start - range.elements.start) as usize;
            let acc = match accumulate(
                &views,
                &factors,
                &scales.weights,
                t,
                start..end,
                unit,
                scratch,
            ) {
                Ok(acc) => acc,
                Err(e) => {
                    scratch.reset();
                    return Err(e);
                }
            };
            match self.rule {
                AggregationRule::Mean => sink.unit(first, acc, |s, _| finite_or_zero(s / total)),
                AggregationRule::MedianClipMean => {
                    sink.unit(first, acc, |s, w| finite_or_zero(s / w))
                }
            }
            start = end;
        }
        Ok(())
    }
}

/// An upper bound on the elements of `range` any aggregated peer carries.
fn carried_bound(
    peers: &[ContributionView<'_>],
    scales: &PeerScales,
    range: &AggregateRange,
) -> u64 {
    let len = range.elements.end.saturating_sub(range.elements.start);
    let per_peer = match peers
        .first()
        .and_then(|c| c.tensors.get(range.tensor))
        .map(|t| &t.data)
    {
        Some(TensorData::Sparse(s)) => {
            let ch = &s.chunking;
            len / (ch.chunk_len() as u64).max(1) * ch.k as u64 + ch.k as u64
        }
        _ => len,
    };
    per_peer.saturating_mul(scales.active.len() as u64)
}
