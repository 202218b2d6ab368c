//! One peer's round, the same for a networked peer, the simulator and a validator: start from θ
//! (or from θ − α·e with the lookahead), take H inner steps on the peer's batches, measure the
//! pseudo-gradient from the start, and compress it through error feedback. Callers differ only
//! in where batches come from and where the compressed update goes.

use std::borrow::Cow;

use anyhow::Result;
use tributary_codec::{Contribution, ErrorFeedback, compress_contribution_into};
use tributary_crds::TensorPlan;
use tributary_data::Batch;

use super::{InnerLoop, lookahead_start, pseudo_gradient};

/// The outcome of a round's inner steps.
pub struct LocalRound {
    /// Start − local parameters, per tensor.
    pub delta: Vec<Vec<f32>>,
    /// The loss of every inner step, in order.
    pub losses: Vec<f64>,
}

impl LocalRound {
    /// The losses summed in step order.
    pub fn loss_sum(&self) -> f64 {
        self.losses.iter().fold(0.0, |sum, l| sum + l)
    }
}

/// Where a peer's inner steps start: θ, or with `lookahead = Some(α)` the point `θ − α·e` its
/// unsent updates lead to (docs/training.md, "Error-feedback lookahead").
pub fn round_start<'a>(
    theta: &'a [Vec<f32>],
    pending: &[ErrorFeedback],
    lookahead: Option<f32>,
) -> Cow<'a, [Vec<f32>]> {
    match lookahead {
        Some(alpha) => Cow::Owned(lookahead_start(theta, pending, alpha)),
        None => Cow::Borrowed(theta),
    }
}

/// H inner steps from `start`: batch `step` comes from `batch(step)`, split into `micro`
/// micro-batches.
pub fn local_round(
    inner: &mut InnerLoop,
    start: &[Vec<f32>],
    steps: u32,
    micro: usize,
    mut batch: impl FnMut(u32) -> Result<Batch>,
) -> Result<LocalRound> {
    inner.model.params_mut().load(start)?;
    let mut losses = Vec::with_capacity(steps as usize);
    for step in 0..steps {
        let b = batch(step)?;
        losses.push(inner.step(&b, micro)?);
    }
    let local = inner.model.params().to_vecs()?;
    Ok(LocalRound {
        delta: pseudo_gradient(start, &local),
        losses,
    })
}

/// Adds `delta` to the error feedback, selects and quantizes what is sent into `sent`, and
/// leaves the remainder in the error feedback.
pub fn compress_round(
    pending: &mut [ErrorFeedback],
    delta: &[Vec<f32>],
    plan: &TensorPlan,
    sent: &mut Contribution,
) -> Result<()> {
    let slices: Vec<&[f32]> = delta.iter().map(Vec::as_slice).collect();
    compress_contribution_into(pending, &slices, plan.shapes(), plan.codec(), sent)?;
    Ok(())
}

/// Returns an update that was not applied (left out of the aggregate) to the error feedback it
/// was taken from: nothing of it reached θ, so the peer still owes all of it.
pub fn restore_unsent(pending: &mut [ErrorFeedback], sent: &Contribution) {
    for (ef, t) in pending.iter_mut().zip(&sent.tensors) {
        // Shapes match by construction; a mismatch would be a bug, not input.
        let _ = t.accumulate_into(ef.as_mut_slice(), 1.0);
    }
}
