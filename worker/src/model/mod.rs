//! The model behind a run: a [`Model`] trait (what training, evaluation and the outer step need)
//! with one architecture, the LLaMA-style decoder. A second architecture is a new file that
//! implements [`Model`] plus an arm in [`build`] and a preset in the CRD crate.

mod llama;
mod params;
mod rope;

use anyhow::Result;
use tch::{Device, Tensor};
use tributary_crds::TensorPlan;

pub use llama::{INIT_STD, Llama};
pub use params::{ParamSet, ParamSpec, fingerprint};

/// A trainable language model with its parameters in the run's layout.
pub trait Model: Send {
    /// Where its tensors live.
    fn device(&self) -> Device;
    /// Token ids it accepts are below this.
    fn vocab(&self) -> u32;
    /// Its parameters in the layout of the run's [`TensorPlan`] (the order of every flat buffer).
    fn params(&self) -> &ParamSet;
    fn params_mut(&mut self) -> &mut ParamSet;
    /// Mean next-token cross-entropy (nats) of token rows `[batch, len + 1]` (i64, on
    /// [`device`](Self::device)).
    fn loss(&self, rows: &Tensor) -> Tensor;
}

/// The model a plan describes, seeded so that every peer builds the same θ₀.
pub fn build(plan: &TensorPlan, seed: u64, device: Device) -> Result<Box<dyn Model>> {
    let model = Llama::new(*plan.model(), seed, device)?;
    if model.params().specs() != plan.layout() {
        anyhow::bail!("the model's parameters differ from the plan's layout");
    }
    Ok(Box::new(model))
}
