//! H inner steps: AdamW on a warm-up + cosine schedule, gradient clipping, and gradient
//! accumulation over micro-batches.

use anyhow::{Result, bail};
use tch::{Device, Kind, Tensor};
use tributary_crds::InnerOptimizer;
use tributary_data::Batch;

use super::adamw::{AdamW, AdamWConfig, HalfGradient};
use crate::model::Model;

/// Token rows `[sequences, len + 1]` as an i64 tensor on `device`; rejects ids ≥ `vocab`.
pub fn batch_tensor(batch: &Batch, vocab: u32, device: Device) -> Result<Tensor> {
    if let Some(bad) = batch.tokens.iter().find(|t| **t >= vocab) {
        bail!("token id {bad} is outside the model's vocabulary of {vocab}");
    }
    let ids: Vec<i64> = batch.tokens.iter().map(|t| i64::from(*t)).collect();
    Ok(Tensor::from_slice(&ids)
        .view([batch.sequences as i64, batch.len as i64 + 1])
        .to_device(device))
}

/// One peer's model and inner optimizer.
pub struct InnerLoop {
    pub model: Box<dyn Model>,
    opt: AdamW,
    schedule: InnerOptimizer,
    /// Steps over which the cosine decays (the run's total inner steps when not set).
    decay_steps: u64,
}

impl InnerLoop {
    /// `aggregated`: the peers whose pseudo-gradients a round averages (1 for data-parallel
    /// training), the second moment's default `secondMomentPeers`.
    pub fn new(
        model: Box<dyn Model>,
        schedule: InnerOptimizer,
        decay_steps: u64,
        aggregated: u32,
    ) -> Self {
        let opt = AdamW::new(AdamWConfig::new(&schedule, aggregated), model.params());
        Self {
            model,
            opt,
            schedule,
            decay_steps,
        }
    }

    /// Inner steps taken so far (drives the learning-rate schedule).
    pub fn steps(&self) -> u64 {
        self.opt.steps()
    }

    pub fn lr(&self) -> f64 {
        self.schedule.lr_at(self.opt.steps(), self.decay_steps)
    }

    /// One optimiser step on `batch`, split into `micro` micro-batches whose gradients add up
    /// to the full batch's mean gradient. Returns the batch's mean loss. When the optimizer
    /// measures gradient noise, the micro-batches are an even number (at least two) so that the
    /// first half's gradient can be kept.
    pub fn step(&mut self, batch: &Batch, micro: usize) -> Result<f64> {
        let halves = self.opt.wants_halves() && batch.sequences >= 2;
        let micro = if halves {
            micro.max(2).next_multiple_of(2).min(batch.sequences & !1)
        } else {
            micro.clamp(1, batch.sequences.max(1))
        };
        let mut half = None;
        let rows = batch_tensor(batch, self.model.vocab(), self.model.device())?;
        self.model.params_mut().zero_grad();
        let mut total = 0.0;
        let n = batch.sequences as i64;
        let mut start = 0;
        for m in 0..micro as i64 {
            let end = n * (m + 1) / micro as i64;
            let part = rows.narrow(0, start, end - start);
            let loss = self.model.loss(&part);
            let weight = (end - start) as f64 / n as f64;
            (&loss * weight).f_backward()?;
            total += loss.f_double_value(&[])? * weight;
            start = end;
            if halves && m + 1 == micro as i64 / 2 {
                half = Some(HalfGradient {
                    grads: tch::no_grad(|| {
                        self.model
                            .params()
                            .tensors()
                            .iter()
                            .map(|p| {
                                let g = p.grad();
                                if g.defined() { g.copy() } else { g }
                            })
                            .collect()
                    }),
                    share: end as f64 / n as f64,
                });
            }
        }
        let lr = self.lr();
        self.opt.step(self.model.params(), lr, half.as_ref())?;
        Ok(total)
    }

    /// Mean loss on `batch` without gradients.
    pub fn evaluate(&self, batch: &Batch) -> Result<f64> {
        let rows = batch_tensor(batch, self.model.vocab(), self.model.device())?;
        Ok(tch::no_grad(|| self.model.loss(&rows))
            .to_kind(Kind::Double)
            .f_double_value(&[])?)
    }
}
