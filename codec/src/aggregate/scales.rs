//! What each aggregated peer's values are multiplied by, per tensor: computed once per round,
//! before any range is aggregated (the clip needs every peer's norm of the whole tensor).

use super::view::{ContributionView, TensorData, TensorView};
use super::{
    AggregationRule, Aggregator, check_compatible, checked_weights, clip_factor, lower_median,
};
use crate::error::{Error, Result};
use crate::params::CodecParams;
use crate::quant::Quant;
use crate::shape::TensorShape;
use rayon::prelude::*;

/// Per aggregated peer (weight > 0) and tensor: `weight · clip` (MedianClipMean) or `weight`
/// (Mean). Identical for any thread count.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerScales {
    pub(crate) rule: AggregationRule,
    /// Number of contributions given, aggregated or not.
    pub(crate) peers: usize,
    /// Indices of the aggregated peers, ascending.
    pub(crate) active: Vec<usize>,
    pub(crate) weights: Vec<f32>,
    /// `factors[a * tensors + t]` for the a-th aggregated peer.
    pub(crate) factors: Vec<f32>,
    pub(crate) tensors: usize,
    /// Σ of the aggregated weights, in peer order (the Mean rule's denominator).
    pub(crate) total: f32,
    /// What the peers agreed on, to refuse other peers later.
    pub(crate) params: CodecParams,
    pub(crate) shapes: Vec<TensorShape>,
}

impl PeerScales {
    pub fn rule(&self) -> AggregationRule {
        self.rule
    }

    /// Indices (into the contributions given) of the peers that are aggregated.
    pub fn aggregated(&self) -> &[usize] {
        &self.active
    }

    /// The factor of contribution `peer` on `tensor`; `None` if that peer is not aggregated.
    pub fn factor(&self, peer: usize, tensor: usize) -> Option<f32> {
        let a = self.active.iter().position(|&p| p == peer)?;
        self.factors.get(a * self.tensors + tensor).copied()
    }
}

impl Aggregator {
    /// Checks that the contributions agree and the weights are valid (as
    /// [`Aggregator::aggregate`] does), then computes every aggregated peer's factor per
    /// tensor; for MedianClipMean from the norms of the peers' values, which need only the
    /// codes and quantization tables, not the positions.
    pub fn peer_scales(
        &self,
        peers: &[ContributionView<'_>],
        weights: Option<&[f32]>,
    ) -> Result<PeerScales> {
        let first = peers.first().ok_or(Error::NoContributions)?;
        check_compatible(
            peers
                .iter()
                .map(|c| (&c.params, c.tensors.iter().map(|t| &t.shape).collect())),
        )?;
        let w = checked_weights(peers.len(), weights)?;
        let active: Vec<usize> = (0..peers.len()).filter(|&i| w[i] > 0.0).collect();
        let weights: Vec<f32> = active.iter().map(|&i| w[i]).collect();
        let tensors = first.tensors.len();
        let factors = match self.rule {
            AggregationRule::Mean => weights
                .iter()
                .flat_map(|&w| std::iter::repeat_n(w, tensors))
                .collect(),
            AggregationRule::MedianClipMean => {
                let norms: Vec<f64> = (0..active.len() * tensors)
                    .into_par_iter()
                    .map(|j| {
                        let view = peers.get(active[j / tensors]);
                        view.and_then(|v| v.tensors.get(j % tensors))
                            .map_or(0.0, norm)
                    })
                    .collect();
                let mut factors = vec![0f32; norms.len()];
                for t in 0..tensors {
                    let col: Vec<f64> = (0..active.len()).map(|a| norms[a * tensors + t]).collect();
                    let median = lower_median(&col);
                    for (a, n) in col.iter().enumerate() {
                        factors[a * tensors + t] = weights[a] * clip_factor(*n, median);
                    }
                }
                factors
            }
        };
        Ok(PeerScales {
            rule: self.rule,
            peers: peers.len(),
            total: weights.iter().copied().sum::<f32>(),
            active,
            weights,
            factors,
            tensors,
            params: first.params,
            shapes: first.tensors.iter().map(|t| t.shape.clone()).collect(),
        })
    }
}

/// L2 norm of the dequantized values, summed in f64 in wire order (as [`crate::tensor_stats`]).
fn norm(t: &TensorView<'_>) -> f64 {
    let mut ss = 0f64;
    match &t.data {
        TensorData::Dense(v) => v.for_each_in(0..v.len(), |x| {
            ss += f64::from(x) * f64::from(x);
        }),
        TensorData::Sparse(s) => {
            // The squares per code, per chunk (Balanced) or once (Production).
            let levels = 1usize << s.bits;
            let per_chunk = matches!(s.quant.as_ref(), Quant::Balanced { .. });
            let mut sq = [0f64; 256];
            s.for_each_chunk_codes(|c, codes| {
                if c == 0 || per_chunk {
                    for (q, x) in sq.iter_mut().enumerate().take(levels) {
                        let v = f64::from(s.quant.value(c, q as u8, s.bits));
                        *x = v * v;
                    }
                }
                for &q in codes {
                    ss += sq[usize::from(q)];
                }
            });
        }
    }
    ss.sqrt()
}
