//! AdamW (decoupled weight decay, bias-corrected moments) with global gradient-norm clipping.
//!
//! Ours rather than libtorch's so the update order is fixed and documented: decay, clip,
//! moments, step.

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
}

impl From<&tributary_crds::InnerOptimizer> for AdamWConfig {
    fn from(o: &tributary_crds::InnerOptimizer) -> Self {
        Self {
            beta1: o.beta1,
            beta2: o.beta2,
            eps: o.eps,
            weight_decay: o.weight_decay,
            grad_clip: o.grad_clip,
        }
    }
}

pub struct AdamW {
    config: AdamWConfig,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
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
            decay: params.specs().iter().map(|s| s.shape.len() >= 2).collect(),
            steps: 0,
        }
    }

    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Applies one update from the accumulated gradients; returns the pre-clip gradient norm.
    pub fn step(&mut self, params: &ParamSet, lr: f64) -> Result<f64> {
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
                let denom = (&self.v[i] / bc2).sqrt() + c.eps;
                let _ = p.f_sub_(&(&self.m[i] / denom * (lr / bc1)))?;
            }
            Ok(())
        })?;
        Ok(norm)
    }
}
