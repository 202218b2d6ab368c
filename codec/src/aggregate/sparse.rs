//! The published aggregate of a round: per tensor, the positions any accepted peer carried and
//! the aggregated value there (everything else is zero).

use super::{Aggregator, active_peers};
use crate::error::Result;
use crate::shape::TensorShape;
use crate::tensor::CompressedTensor;
use rayon::prelude::*;

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
    pub(crate) segments: Vec<Segment>,
}

/// A run of consecutive elements of one tensor, from `start`, and the values carried there.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    pub start: u64,
    pub carried: Carried,
    /// One value per carried position, in position order.
    pub values: Vec<f32>,
}

/// Which elements of a segment are carried: a bitmap or a sorted list, whichever is smaller.
#[derive(Debug, Clone)]
pub(crate) enum Carried {
    /// Bit j (bit j mod 64 of word j / 64) ↔ element `start + j`.
    Bitmap(Vec<u64>),
    /// Global element indices, strictly increasing.
    List(Vec<u64>),
}

impl Carried {
    /// The smaller form for `m` carried elements of a segment of `len` elements.
    pub fn prefers_bitmap(len: u64, m: u64) -> bool {
        len.div_ceil(64) <= m
    }
}

impl Segment {
    /// From a bitmap over `start..end`; converted to a list when that is smaller.
    pub fn from_bitmap(start: u64, end: u64, bits: Vec<u64>, values: Vec<f32>) -> Self {
        let carried = if Carried::prefers_bitmap(end - start, values.len() as u64) {
            Carried::Bitmap(bits)
        } else {
            let mut list = Vec::with_capacity(values.len());
            for_each_bit(&bits, |j| list.push(start + j));
            Carried::List(list)
        };
        Self {
            start,
            carried,
            values,
        }
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Calls `f(global_index, value)` in position order.
    #[inline]
    pub fn for_each(&self, mut f: impl FnMut(u64, f32)) {
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
        self.segments.iter().map(Segment::len).sum()
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

impl Aggregator {
    /// The aggregate as it is published: per tensor the union of the positions the peers of
    /// weight > 0 carried (every position of a dense tensor), with values bit-identical to
    /// [`Aggregator::aggregate`] there; `aggregate` is zero everywhere else.
    pub fn aggregate_sparse(
        &self,
        contributions: &[&crate::Contribution],
        weights: Option<&[f32]>,
    ) -> Result<SparseAggregate> {
        let (first, active) = active_peers(contributions, weights)?;
        let tensors = first
            .tensors
            .par_iter()
            .enumerate()
            .map(|(t, ft)| {
                let peers: Vec<(&CompressedTensor, f32)> = active
                    .iter()
                    .filter_map(|(c, w)| c.tensors.get(t).map(|x| (x, *w)))
                    .collect();
                let numel = ft.numel();
                let dense = self.tensor(&peers, numel);
                let mut bits = vec![0u64; numel.div_ceil(64)];
                for (p, _) in &peers {
                    p.for_each(|i, _| {
                        if let Some(w) = bits.get_mut(i / 64) {
                            *w |= 1 << (i % 64);
                        }
                    });
                }
                let mut values = Vec::new();
                for_each_bit(&bits, |j| {
                    values.push(dense.get(j as usize).copied().unwrap_or(0.0))
                });
                AggregateTensor {
                    shape: ft.shape.clone(),
                    segments: vec![Segment::from_bitmap(0, numel as u64, bits, values)],
                }
            })
            .collect();
        Ok(SparseAggregate { tensors })
    }
}
