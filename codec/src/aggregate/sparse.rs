//! The published aggregate of a round: per tensor, the positions any accepted peer carried and
//! the aggregated value there (everything else is zero).

use super::Aggregator;
use super::kernel::Scratch;
use super::plan::AggregationPlan;
use super::view::ContributionView;
use crate::error::{Error, Result};
use crate::shape::TensorShape;
use crate::tensor::Contribution;
use rayon::prelude::*;

thread_local! {
    /// One set of accumulators per thread, kept across ranges and rounds (a megabyte or two).
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// The aggregate of one round: per tensor, the positions any accepted peer carried (sorted,
/// global indices) and the aggregated f32 value there.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SparseAggregate {
    pub tensors: Vec<AggregateTensor>,
}

/// One tensor of a [`SparseAggregate`]; built by aggregation or by decoding only.
#[derive(Debug, Clone)]
pub struct AggregateTensor {
    pub(crate) shape: TensorShape,
    /// Consecutive, covering `0..numel` in order.
    pub(crate) segments: Vec<AggregateSegment>,
}

/// The aggregate over a run of consecutive elements `start..end` of one tensor: which of them
/// are carried and their values. Filled by [`Aggregator::aggregate_range`]; a
/// [`SparseAggregate`] is made of them ([`SparseAggregate::from_segments`]).
#[derive(Debug, Clone, Default)]
pub struct AggregateSegment {
    pub(crate) tensor: usize,
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) carried: Carried,
    /// One value per carried position, in position order.
    pub(crate) values: Vec<f32>,
}

/// Which elements of a segment are carried: a bitmap or a sorted list, whichever is smaller.
#[derive(Debug, Clone)]
pub(crate) enum Carried {
    /// Bit j (bit j mod 64 of word j / 64) ↔ element `start + j`.
    Bitmap(Vec<u64>),
    /// Global element indices, strictly increasing.
    List(Vec<u64>),
}

impl Default for Carried {
    fn default() -> Self {
        Self::List(Vec::new())
    }
}

impl Carried {
    /// The smaller form for `m` carried elements of a segment of `len` elements.
    pub fn prefers_bitmap(len: u64, m: u64) -> bool {
        len.div_ceil(64) <= m
    }
}

impl AggregateSegment {
    /// From a bitmap over `start..end`; converted to a list when that is smaller.
    pub(crate) fn from_bitmap(
        tensor: usize,
        start: u64,
        end: u64,
        bits: Vec<u64>,
        values: Vec<f32>,
    ) -> Self {
        let carried = if Carried::prefers_bitmap(end - start, values.len() as u64) {
            Carried::Bitmap(bits)
        } else {
            let mut list = Vec::with_capacity(values.len());
            for_each_bit(&bits, |j| list.push(start + j));
            Carried::List(list)
        };
        Self {
            tensor,
            start,
            end,
            carried,
            values,
        }
    }

    pub fn tensor(&self) -> usize {
        self.tensor
    }

    /// The elements it covers.
    pub fn elements(&self) -> std::ops::Range<u64> {
        self.start..self.end
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Number of carried positions.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Calls `f(global_index, value)` in position order.
    #[inline]
    pub(crate) fn for_each(&self, mut f: impl FnMut(u64, f32)) {
        let mut values = self.values.iter();
        match &self.carried {
            Carried::Bitmap(bits) => for_each_bit(bits, |j| {
                if let Some(&v) = values.next() {
                    f(self.start + j, v);
                }
            }),
            Carried::List(list) => list.iter().zip(values).for_each(|(&i, &v)| f(i, v)),
        }
    }
}

/// Calls `f(j)` for every set bit j, ascending.
#[inline]
pub(crate) fn for_each_bit(bits: &[u64], mut f: impl FnMut(u64)) {
    for (wi, &w) in bits.iter().enumerate() {
        let mut w = w;
        while w != 0 {
            f(wi as u64 * 64 + u64::from(w.trailing_zeros()));
            w &= w - 1;
        }
    }
}

impl AggregateTensor {
    pub fn shape(&self) -> &TensorShape {
        &self.shape
    }

    /// Number of carried positions.
    pub fn len(&self) -> usize {
        self.segments.iter().map(AggregateSegment::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.segments.iter().all(|s| s.values.is_empty())
    }

    /// Calls `f(global_index, value)` for every carried position, ascending.
    pub fn for_each(&self, mut f: impl FnMut(usize, f32)) {
        for s in &self.segments {
            s.for_each(|i, v| f(i as usize, v));
        }
    }

    /// The dense tensor: the carried values, zero elsewhere.
    pub fn to_dense(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.shape.numel() as usize];
        self.for_each(|i, v| {
            if let Some(o) = out.get_mut(i) {
                *o = v;
            }
        });
        out
    }
}

/// Equal shapes, positions and value bits, however the tensors are segmented.
impl PartialEq for AggregateTensor {
    fn eq(&self, other: &Self) -> bool {
        if self.shape != other.shape || self.len() != other.len() {
            return false;
        }
        let mut a = Vec::with_capacity(self.len());
        self.for_each(|i, v| a.push((i, v.to_bits())));
        let mut same = true;
        let mut it = a.into_iter();
        other.for_each(|i, v| same &= it.next() == Some((i, v.to_bits())));
        same
    }
}

impl SparseAggregate {
    /// Assembles the segments of every range of a plan (in any order) for tensors of `shapes`;
    /// they must cover each tensor exactly, without overlap.
    pub fn from_segments(
        shapes: &[TensorShape],
        mut segments: Vec<AggregateSegment>,
    ) -> Result<Self> {
        segments.sort_by_key(|s| (s.tensor, s.start));
        let mut tensors: Vec<AggregateTensor> = shapes
            .iter()
            .map(|s| AggregateTensor {
                shape: s.clone(),
                segments: Vec::new(),
            })
            .collect();
        for seg in segments {
            let t = tensors.get_mut(seg.tensor).ok_or(Error::InvalidRange)?;
            let covered = t.segments.last().map_or(0, |s| s.end);
            if seg.start != covered || seg.end <= seg.start || seg.end > t.shape.numel() {
                return Err(Error::InvalidRange);
            }
            t.segments.push(seg);
        }
        if tensors
            .iter()
            .any(|t| t.segments.last().map_or(0, |s| s.end) != t.shape.numel())
        {
            return Err(Error::InvalidRange);
        }
        Ok(Self { tensors })
    }
}

impl Aggregator {
    /// The aggregate as it is published: per tensor the union of the positions the peers of
    /// weight > 0 carried (every position of a dense tensor), with values bit-identical to
    /// [`Aggregator::aggregate`] there; `aggregate` is zero everywhere else.
    pub fn aggregate_sparse(
        &self,
        contributions: &[&Contribution],
        weights: Option<&[f32]>,
    ) -> Result<SparseAggregate> {
        let views: Vec<ContributionView<'_>> = contributions
            .iter()
            .map(|c| ContributionView::from(*c))
            .collect();
        self.aggregate_views(&views, weights)
    }

    /// [`Aggregator::aggregate_sparse`] of views, e.g. straight from the encoded bytes
    /// ([`ContributionView::from_bytes`]): the peer scales once, then the ranges of the default
    /// plan in parallel.
    pub fn aggregate_views(
        &self,
        peers: &[ContributionView<'_>],
        weights: Option<&[f32]>,
    ) -> Result<SparseAggregate> {
        let scales = self.peer_scales(peers, weights)?;
        let first = peers.first().ok_or(Error::NoContributions)?;
        let shapes: Vec<TensorShape> = first.tensors.iter().map(|t| t.shape.clone()).collect();
        let plan = AggregationPlan::new(
            &shapes,
            &first.params,
            AggregationPlan::DEFAULT_TARGET_ELEMENTS,
        )?;
        let segments = plan
            .ranges()
            .par_iter()
            .map(|r| {
                let mut seg = AggregateSegment::default();
                SCRATCH.with(|cell| match cell.try_borrow_mut() {
                    Ok(mut scratch) => self.range_into(peers, &scales, r, &mut seg, &mut scratch),
                    // Only if a caller nests aggregations on one thread.
                    Err(_) => self.range_into(peers, &scales, r, &mut seg, &mut Scratch::default()),
                })?;
                Ok(seg)
            })
            .collect::<Result<Vec<_>>>()?;
        SparseAggregate::from_segments(&shapes, segments)
    }
}
