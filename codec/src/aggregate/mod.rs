//! Aggregation of many peers' contributions into dense buffers, and per-contribution statistics.

mod kernel;
mod plan;
mod range;
mod scales;
mod sparse;
mod view;

pub use plan::{AggregateRange, AggregationPlan};
pub use scales::PeerScales;
pub use sparse::{AggregateSegment, AggregateTensor, SparseAggregate};
pub use view::ContributionView;

pub(crate) use sparse::Carried;

use crate::error::{Error, Result};
use crate::params::CodecParams;
use crate::shape::TensorShape;
use crate::tensor::{CompressedTensor, Contribution, Payload};
use rayon::prelude::*;

/// How peers' values are combined per coordinate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AggregationRule {
    /// Production: clip each peer's tensor to the median norm, then average each coordinate
    /// over the peers that selected it: Σ w·c·v / Σ w over those peers.
    #[default]
    MedianClipMean,
    /// Paper: Σ w·v / Σ w over all peers ((1/R)·Σ with unit weights).
    Mean,
}

/// Combines contributions of one round; output is identical for any thread count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Aggregator {
    pub rule: AggregationRule,
}

impl Aggregator {
    pub fn new(rule: AggregationRule) -> Self {
        Self { rule }
    }

    /// One dense f32 buffer per tensor. `weights` (score weights, ≥ 0, finite) default to 1;
    /// peers of weight 0 are left out. Non-finite results become 0.
    pub fn aggregate(
        &self,
        contributions: &[&Contribution],
        weights: Option<&[f32]>,
    ) -> Result<Vec<Vec<f32>>> {
        let (first, active) = active_peers(contributions, weights)?;
        Ok((0..first.tensors.len())
            .into_par_iter()
            .map(|t| {
                let peers: Vec<(&CompressedTensor, f32)> = active
                    .iter()
                    .filter_map(|(c, w)| c.tensors.get(t).map(|x| (x, *w)))
                    .collect();
                self.tensor(&peers, first.tensors.get(t).map_or(0, |x| x.numel()))
            })
            .collect())
    }

    pub(crate) fn tensor(&self, peers: &[(&CompressedTensor, f32)], numel: usize) -> Vec<f32> {
        let mut out = vec![0f32; numel];
        match self.rule {
            AggregationRule::Mean => {
                let total: f32 = peers.iter().map(|p| p.1).sum();
                for (t, w) in peers {
                    t.for_each(|i, v| add(&mut out, i, *w * v));
                }
                out.iter_mut().for_each(|x| *x = finite_or_zero(*x / total));
            }
            AggregationRule::MedianClipMean => {
                let norms: Vec<f64> = peers.iter().map(|(t, _)| tensor_stats(t).norm).collect();
                let median = lower_median(&norms);
                let mut wsum = vec![0f32; numel];
                for ((t, w), n) in peers.iter().zip(&norms) {
                    let clip = clip_factor(*n, median);
                    t.for_each(|i, v| {
                        add(&mut out, i, *w * clip * v);
                        add(&mut wsum, i, *w);
                    });
                }
                for (x, s) in out.iter_mut().zip(&wsum) {
                    *x = if *s > 0.0 {
                        finite_or_zero(*x / s)
                    } else {
                        0.0
                    };
                }
            }
        }
        out
    }
}

/// Checks that the contributions agree (params, shapes) and the weights are valid; returns the
/// first contribution and the peers of weight > 0 with their weights, in input order.
fn active_peers<'c>(
    contributions: &[&'c Contribution],
    weights: Option<&[f32]>,
) -> Result<(&'c Contribution, Vec<(&'c Contribution, f32)>)> {
    let first = *contributions.first().ok_or(Error::NoContributions)?;
    check_compatible(
        contributions
            .iter()
            .map(|c| (&c.params, c.tensors.iter().map(|t| &t.shape).collect())),
    )?;
    let w = checked_weights(contributions.len(), weights)?;
    let active = contributions
        .iter()
        .zip(&w)
        .filter(|(_, w)| **w > 0.0)
        .map(|(c, w)| (*c, *w))
        .collect();
    Ok((first, active))
}

/// Every peer has the first one's codec parameters and tensor shapes; else the index of the
/// first that differs.
fn check_compatible<'c>(
    peers: impl Iterator<Item = (&'c CodecParams, Vec<&'c TensorShape>)>,
) -> Result<()> {
    let mut first = None;
    for (index, peer) in peers.enumerate() {
        match &first {
            None => first = Some(peer),
            Some(f) if *f != peer => return Err(Error::IncompatibleContribution { index }),
            Some(_) => {}
        }
    }
    Ok(())
}

/// The weights of `n` contributions (default 1), each finite and ≥ 0.
fn checked_weights(n: usize, weights: Option<&[f32]>) -> Result<Vec<f32>> {
    let w: Vec<f32> = match weights {
        Some(w) if w.len() != n => {
            return Err(Error::InvalidWeight {
                index: w.len().min(n),
            });
        }
        Some(w) => w.to_vec(),
        None => vec![1.0; n],
    };
    if let Some(index) = w.iter().position(|x| !x.is_finite() || *x < 0.0) {
        return Err(Error::InvalidWeight { index });
    }
    Ok(w)
}

/// The production clip: scale a peer down to the median norm, never up.
fn clip_factor(norm: f64, median: f64) -> f32 {
    if norm > median && norm > 0.0 {
        (median / norm) as f32
    } else {
        1.0
    }
}

#[inline]
fn add(buf: &mut [f32], i: usize, v: f32) {
    if let Some(x) = buf.get_mut(i) {
        *x += v;
    }
}

fn finite_or_zero(x: f32) -> f32 {
    if x.is_finite() { x } else { 0.0 }
}

/// Lower median (torch.median convention); 0 for no values.
fn lower_median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v.get((v.len().max(1) - 1) / 2).copied().unwrap_or(0.0)
}

/// Statistics of one decoded tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TensorStats {
    pub numel: u64,
    /// Values carried.
    pub count: u64,
    /// L2 norm of the dequantized values.
    pub norm: f64,
    pub max_abs: f32,
    pub finite: bool,
}

/// Statistics of a contribution, as validation needs them.
#[derive(Debug, Clone, PartialEq)]
pub struct ContributionStats {
    pub tensors: Vec<TensorStats>,
    /// L2 norm over all tensors.
    pub norm: f64,
    pub count: u64,
    pub finite: bool,
}

pub fn tensor_stats(t: &CompressedTensor) -> TensorStats {
    let (mut ss, mut max_abs, mut finite) = (0f64, 0f32, true);
    t.for_each(|_, v| {
        ss += f64::from(v) * f64::from(v);
        max_abs = max_abs.max(v.abs());
        finite &= v.is_finite();
    });
    TensorStats {
        numel: t.shape.numel(),
        count: t.count() as u64,
        norm: ss.sqrt(),
        max_abs,
        finite,
    }
}

impl Contribution {
    pub fn stats(&self) -> ContributionStats {
        let tensors: Vec<TensorStats> = self.tensors.iter().map(tensor_stats).collect();
        ContributionStats {
            norm: tensors.iter().map(|s| s.norm * s.norm).sum::<f64>().sqrt(),
            count: tensors.iter().map(|s| s.count).sum(),
            finite: tensors.iter().all(|s| s.finite),
            tensors,
        }
    }
}

/// Overlap of two peers' chosen positions: Σ_t numel_t·|A_t ∩ B_t|/|A_t| / Σ_t numel_t over the
/// sparse tensors (dense tensors carry every position and say nothing about copying).
pub fn position_overlap(a: &Contribution, b: &Contribution) -> Result<f64> {
    if a.params != b.params || a.tensors.len() != b.tensors.len() {
        return Err(Error::IncompatibleContribution { index: 1 });
    }
    let (mut num, mut den) = (0f64, 0f64);
    for (ta, tb) in a.tensors.iter().zip(&b.tensors) {
        let (Payload::Sparse(sa), Payload::Sparse(sb)) = (&ta.payload, &tb.payload) else {
            continue;
        };
        if ta.shape != tb.shape {
            return Err(Error::IncompatibleContribution { index: 1 });
        }
        let mut common = 0usize;
        for c in 0..sa.num_chunks() {
            common += intersect_sorted(sa.chunk_positions(c), sb.chunk_positions(c));
        }
        let w = ta.shape.numel() as f64;
        num += w * common as f64 / sa.positions.len().max(1) as f64;
        den += w;
    }
    Ok(if den > 0.0 { num / den } else { 0.0 })
}

fn intersect_sorted(a: &[u16], b: &[u16]) -> usize {
    let (mut i, mut j, mut n) = (0, 0, 0);
    while let (Some(x), Some(y)) = (a.get(i), b.get(j)) {
        match x.cmp(y) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                n += 1;
                i += 1;
                j += 1;
            }
        }
    }
    n
}
