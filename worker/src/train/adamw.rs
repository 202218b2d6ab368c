//! AdamW (decoupled weight decay, bias-corrected moments) with global gradient-norm clipping.
//!
//! Ours rather than libtorch's so the update order is fixed and documented: decay, clip,
//! moments, step.
//!
//! With `noise_peers` N > 1 the step is normalised as AdamW on the mean gradient of N peers'
//! batches would be. A local batch's squared gradient estimates μ² + s² (s² its noise
//! variance); the average of N peers' batches has μ² + s²/N. The two halves a, b of the local
//! batch measure s² without bias: wa·wb·(a − b)² (wa, wb the halves' shares), so the second
//! moment used is v − (1 − 1/N)·noise, kept at least v/N (what it can never fall below, since
//! μ² + s²/N ≥ (μ² + s²)/N), which also keeps it positive however noisy the estimate.

use anyhow::Result;
use tch::Tensor;

use crate::model::ParamSet;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Global L2 norm the gradient is clipped to; 0 disables clipping.
    pub grad_clip: f64,
    /// Peers whose averaged batches the second moment stands for (1: plain AdamW).
    pub noise_peers: u32,
}

impl AdamWConfig {
    /// From the run's inner optimizer; `aggregated` peers stand in when it sets none.
    pub fn new(o: &tributary_crds::InnerOptimizer, aggregated: u32) -> Self {
        Self {
            beta1: o.beta1,
            beta2: o.beta2,
            eps: o.eps,
            weight_decay: o.weight_decay,
            grad_clip: o.grad_clip,
            noise_peers: o.second_moment_peers.unwrap_or(aggregated).max(1),
        }
    }
}

/// The gradient of the first half of a batch, as accumulated into `.grad()` (that is, already
/// weighted by `share`, the half's fraction of the batch's sequences).
pub struct HalfGradient {
    pub grads: Vec<Tensor>,
    pub share: f64,
}

pub struct AdamW {
    config: AdamWConfig,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// EMA of the measured noise variance (empty with plain AdamW).
    noise: Vec<Tensor>,
    /// Decay applies to matrices only (embeddings, projections), not to norm gains.
    decay: Vec<bool>,
    steps: u64,
}

impl AdamW {
    pub fn new(config: AdamWConfig, params: &ParamSet) -> Self {
        let zeros = |t: &Tensor| t.zeros_like().set_requires_grad(false);
        Self {
            config,
            m: params.tensors().iter().map(zeros).collect(),
            v: params.tensors().iter().map(zeros).collect(),
            noise: if config.noise_peers > 1 {
                params.tensors().iter().map(zeros).collect()
            } else {
                Vec::new()
            },
            decay: params.specs().iter().map(|s| s.shape.len() >= 2).collect(),
            steps: 0,
        }
    }

    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Whether steps should come with the first half's gradient (`step`'s `half`).
    pub fn wants_halves(&self) -> bool {
        !self.noise.is_empty()
    }

    /// Applies one update from the accumulated gradients; returns the pre-clip gradient norm.
    /// `half` measures the noise when `wants_halves`; without it (a one-sequence batch) the
    /// noise estimate only decays, which errs towards plain AdamW.
    pub fn step(&mut self, params: &ParamSet, lr: f64, half: Option<&HalfGradient>) -> Result<f64> {
        let c = self.config;
        self.steps += 1;
        let bc1 = 1.0 - c.beta1.powi(self.steps.min(i32::MAX as u64) as i32);
        let bc2 = 1.0 - c.beta2.powi(self.steps.min(i32::MAX as u64) as i32);
        let grads: Vec<Option<Tensor>> = params
            .tensors()
            .iter()
            .map(|p| {
                let g = p.grad();
                g.defined().then_some(g)
            })
            .collect();
        let norm = tch::no_grad(|| -> Result<f64> {
            let mut sq = 0.0;
            for g in grads.iter().flatten() {
                sq += g
                    .f_square()?
                    .f_sum(tch::Kind::Double)?
                    .f_double_value(&[])?;
            }
            Ok(sq.sqrt())
        })?;
        let scale = if c.grad_clip > 0.0 && norm > c.grad_clip {
            c.grad_clip / (norm + 1e-6)
        } else {
            1.0
        };
        tch::no_grad(|| -> Result<()> {
            for (i, p) in params.tensors().iter().enumerate() {
                let Some(g) = &grads[i] else { continue };
                let mut p = p.shallow_clone();
                let g = g * scale;
                if self.decay[i] && c.weight_decay > 0.0 {
                    let _ = p.f_mul_scalar_(1.0 - lr * c.weight_decay)?;
                }
                let _ = self.m[i].f_mul_scalar_(c.beta1)?;
                let _ = self.m[i].f_add_(&(&g * (1.0 - c.beta1)))?;
                let _ = self.v[i].f_mul_scalar_(c.beta2)?;
                let _ = self.v[i].f_add_(&(g.square() * (1.0 - c.beta2)))?;
                let second = if self.noise.is_empty() {
                    self.v[i].shallow_clone()
                } else {
                    let _ = self.noise[i].f_mul_scalar_(c.beta2)?;
                    if let Some(h) = half {
                        // a − b from a's weighted gradient and the total, then wa·wb·(a − b)².
                        let (wa, wb) = (h.share, 1.0 - h.share);
                        let a = &h.grads[i] * (scale / wa);
                        let b = (&g - &h.grads[i] * scale) / wb;
                        let spread = (a - b).square() * (wa * wb * (1.0 - c.beta2));
                        let _ = self.noise[i].f_add_(&spread)?;
                    }
                    let n = f64::from(c.noise_peers);
                    let corrected = &self.v[i] - &self.noise[i] * (1.0 - 1.0 / n);
                    corrected.f_maximum(&(&self.v[i] / n))?
                };
                let denom = (second / bc2).sqrt() + c.eps;
                let _ = p.f_sub_(&(&self.m[i] / denom * (lr / bc1)))?;
            }
            Ok(())
        })?;
        Ok(norm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// One step of AdamW (no decay, no clipping) on a 1-D parameter of zeros whose gradient
    /// is `share`·a + (1 − share)·b, with the first half's gradient kept when `halves`.
    fn one_step(a: &[f32], b: &[f32], share: f64, noise_peers: u32, halves: bool) -> Vec<f32> {
        let mut params = ParamSet::new();
        let p = params.push("w".into(), &[a.len()], &vec![0.0; a.len()], Device::Cpu);
        let config = AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-12,
            weight_decay: 0.0,
            grad_clip: 0.0,
            noise_peers,
        };
        let mut opt = AdamW::new(config, &params);
        assert_eq!(opt.wants_halves(), noise_peers > 1);
        ((&p * Tensor::from_slice(a)).sum(tch::Kind::Float) * share).backward();
        let half = halves.then(|| HalfGradient {
            grads: vec![p.grad().copy()],
            share,
        });
        ((&p * Tensor::from_slice(b)).sum(tch::Kind::Float) * (1.0 - share)).backward();
        opt.step(&params, 1.0, half.as_ref()).unwrap();
        Vec::<f32>::try_from(p.detach()).unwrap()
    }

    fn close(got: &[f32], want: &[f64]) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn second_moment_loses_the_noise_that_averaging_removes() {
        // g = [1, 0, 1]; noise = ¼(a − b)² = [0, 1, 4]; second = max(g² − ¾·noise, g²/4).
        let (a, b) = ([1.0, 1.0, 3.0], [1.0, -1.0, -1.0]);
        close(&one_step(&a, &b, 0.5, 4, true), &[-1.0, 0.0, -2.0]);
        // Plain AdamW's first step is the gradient's sign.
        close(&one_step(&a, &b, 0.5, 1, false), &[-1.0, 0.0, -1.0]);
        // Unequal halves: g = 1.05, noise = ¼·¾·0.2².
        let second = 1.05f64.powi(2) - 0.75 * 0.25 * 0.75 * 0.04;
        close(
            &one_step(&[1.2], &[1.0], 0.25, 4, true),
            &[-1.05 / second.sqrt()],
        );
    }

    #[test]
    fn without_the_halves_the_step_is_plain_adamw() {
        let (a, b) = ([0.5, -2.0], [1.5, 1.0]);
        close(&one_step(&a, &b, 0.5, 4, false), &[-1.0, 1.0]);
    }

    #[test]
    fn peers_default_to_the_aggregate_unless_the_run_sets_them() {
        let mut o = tributary_crds::InnerOptimizer::default();
        assert_eq!(AdamWConfig::new(&o, 20).noise_peers, 20);
        o.second_moment_peers = Some(1);
        assert_eq!(AdamWConfig::new(&o, 20).noise_peers, 1);
        o.second_moment_peers = Some(0);
        assert_eq!(AdamWConfig::new(&o, 20).noise_peers, 1);
    }
}
