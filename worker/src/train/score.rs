//! A validator's measurement of one update, the same for the `validate` role and the simulator:
//! the update applied alone to θ (clipped to the round's median norm, at a fraction of the outer
//! lr), and the relative loss improvement it makes on the peer's assigned batches and on batches
//! of the round's held-out stream, which nobody trains on.

use anyhow::Result;
use tributary_codec::Contribution;
use tributary_data::{Batch, StreamId, TokenSource};

use super::InnerLoop;

/// Inner steps whose batches an update is scored on (the last ones of the round: they moved
/// the peer's parameters most recently).
const SCORED_STEPS: u32 = 8;
/// Held-out batches per assigned batch: the score (the held-out improvement) is what decides,
/// and a one-update improvement is small against batch-to-batch noise.
const HELD_OUT_FACTOR: u32 = 4;

/// What applying one update alone does to the loss, relative to θ's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpdateScore {
    /// On the peer's assigned batches.
    pub own: f64,
    /// On batches nobody trained on: the update's score.
    pub random: f64,
    /// The update's L2 norm before clipping.
    pub norm: f64,
}

/// Where a round's batches come from: the run's data seed and batch shape.
#[derive(Debug, Clone, Copy)]
pub struct RoundData {
    pub seed: u64,
    pub inner_steps: u32,
    pub sequences: usize,
    pub seq_len: usize,
}

/// The scoring of one round's candidates against θ: the held-out batches and θ's loss on them
/// are shared by every candidate of the round, so they are computed once.
pub struct RoundScorer {
    data: RoundData,
    round: u64,
    held_out: Vec<Batch>,
    held_out_before: f64,
    /// `lr_scale` × the round's outer lr.
    step: f64,
    clip_norm: f64,
}

impl RoundScorer {
    /// Prepares `round`'s scoring against `theta`: candidates are applied at `step` (the
    /// fraction of the outer lr) after clipping to `clip_norm` (the round's median norm).
    pub fn new(
        inner: &mut InnerLoop,
        theta: &[Vec<f32>],
        source: &dyn TokenSource,
        data: RoundData,
        round: u64,
        step: f64,
        clip_norm: f64,
    ) -> Result<Self> {
        let held_out = (0..scored_steps(&data) * HELD_OUT_FACTOR)
            .map(|i| {
                let id = StreamId {
                    seed: data.seed,
                    peer: StreamId::HELD_OUT_PEER,
                    round,
                    step: i,
                };
                Ok(source.batch(id, data.sequences, data.seq_len)?)
            })
            .collect::<Result<Vec<Batch>>>()?;
        let held_out_before = mean_loss(inner, theta, &held_out)?;
        Ok(Self {
            data,
            round,
            held_out,
            held_out_before,
            step,
            clip_norm,
        })
    }

    /// Scores `update`, trained by the peer in `slot` from `theta`.
    pub fn score(
        &self,
        inner: &mut InnerLoop,
        theta: &[Vec<f32>],
        source: &dyn TokenSource,
        update: &Contribution,
        slot: u32,
    ) -> Result<UpdateScore> {
        let data = self.data;
        let steps = scored_steps(&data);
        let assigned = (data.inner_steps - steps..data.inner_steps)
            .map(|step| {
                let id = StreamId {
                    seed: data.seed,
                    peer: slot,
                    round: self.round,
                    step,
                };
                Ok(source.batch(id, data.sequences, data.seq_len)?)
            })
            .collect::<Result<Vec<Batch>>>()?;
        let norm = update.norm();
        let clip = if norm > self.clip_norm && norm > 0.0 {
            self.clip_norm / norm
        } else {
            1.0
        };
        let step = (self.step * clip) as f32;
        let moved: Vec<Vec<f32>> = theta
            .iter()
            .zip(&update.tensors)
            .map(|(t, u)| {
                let d = u.to_dense();
                t.iter().zip(&d).map(|(t, d)| t - step * d).collect()
            })
            .collect();
        let own_before = mean_loss(inner, theta, &assigned)?;
        let own_after = mean_loss(inner, &moved, &assigned)?;
        let random_after = mean_loss(inner, &moved, &self.held_out)?;
        Ok(UpdateScore {
            own: relative(own_before, own_after),
            random: relative(self.held_out_before, random_after),
            norm,
        })
    }
}

/// The median of the candidates' norms (the lower one of an even count): what each candidate
/// is clipped to before it is applied alone.
pub fn median_norm<'a>(updates: impl IntoIterator<Item = &'a Contribution>) -> f64 {
    let mut norms: Vec<f64> = updates.into_iter().map(Contribution::norm).collect();
    norms.sort_by(f64::total_cmp);
    norms
        .get(norms.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(0.0)
}

fn scored_steps(data: &RoundData) -> u32 {
    data.inner_steps.min(SCORED_STEPS)
}

fn relative(before: f64, after: f64) -> f64 {
    if before > 0.0 {
        (before - after) / before
    } else {
        0.0
    }
}

fn mean_loss(inner: &mut InnerLoop, params: &[Vec<f32>], batches: &[Batch]) -> Result<f64> {
    inner.model.params_mut().load(params)?;
    let mut sum = 0.0;
    for b in batches {
        sum += inner.evaluate(b)?;
    }
    Ok(sum / batches.len().max(1) as f64)
}
