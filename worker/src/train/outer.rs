//! The outer step on flat f32 buffers: θ ← θ − α·Δ (SparseLoCo: plain SGD) or Nesterov momentum
//! (DiLoCo). Bit-for-bit deterministic: element-wise f32 arithmetic in a fixed order, no fused
//! multiply-add, so the result is independent of thread count and of the machine.

use anyhow::{Result, bail};
use rayon::prelude::*;
use tributary_crds::{OuterKind, OuterOptimizer};

/// The pseudo-gradient `Δ = θ_global − θ_local`, per tensor.
pub fn pseudo_gradient(global: &[Vec<f32>], local: &[Vec<f32>]) -> Vec<Vec<f32>> {
    global
        .iter()
        .zip(local)
        .map(|(g, l)| g.iter().zip(l).map(|(g, l)| g - l).collect())
        .collect()
}

/// Outer optimizer state: the momentum buffers (empty for SGD).
pub struct OuterStep {
    spec: OuterOptimizer,
    momentum: Vec<Vec<f32>>,
}

impl OuterStep {
    pub fn new(spec: OuterOptimizer, sizes: &[usize]) -> Self {
        let momentum = match spec.kind {
            OuterKind::Sgd => Vec::new(),
            OuterKind::Nesterov => sizes.iter().map(|n| vec![0.0; *n]).collect(),
        };
        Self { spec, momentum }
    }

    pub fn lr_at(&self, round: u64) -> f64 {
        self.spec.lr_at(round)
    }

    pub fn momentum(&self) -> &[Vec<f32>] {
        &self.momentum
    }

    pub fn set_momentum(&mut self, momentum: Vec<Vec<f32>>) -> Result<()> {
        if momentum.len() != self.momentum.len()
            || momentum
                .iter()
                .zip(&self.momentum)
                .any(|(a, b)| a.len() != b.len())
        {
            bail!("outer momentum does not match the model's parameter shapes");
        }
        self.momentum = momentum;
        Ok(())
    }

    /// Applies the aggregate pseudo-gradient `delta` of `round` to `params`.
    ///
    /// Per element, in this order: SGD `θ = θ − α·Δ`; Nesterov `m = μ·m + Δ`, then
    /// `θ = θ − α·(Δ + μ·m)`. Each product is rounded to f32 before the sum.
    pub fn apply(&mut self, params: &mut [Vec<f32>], delta: &[Vec<f32>], round: u64) -> Result<()> {
        if params.len() != delta.len() || params.iter().zip(delta).any(|(p, d)| p.len() != d.len())
        {
            bail!("aggregate does not match the model's parameter shapes");
        }
        let lr = self.spec.lr_at(round) as f32;
        match self.spec.kind {
            OuterKind::Sgd => params.par_iter_mut().zip(delta).for_each(|(p, d)| {
                for (p, d) in p.iter_mut().zip(d) {
                    let step = lr * *d;
                    *p -= step;
                }
            }),
            OuterKind::Nesterov => {
                let mu = self.spec.momentum() as f32;
                params
                    .par_iter_mut()
                    .zip(delta)
                    .zip(self.momentum.par_iter_mut())
                    .for_each(|((p, d), m)| {
                        for ((p, d), m) in p.iter_mut().zip(d).zip(m.iter_mut()) {
                            let decayed = mu * *m;
                            *m = decayed + *d;
                            let look = mu * *m;
                            let step = lr * (*d + look);
                            *p -= step;
                        }
                    });
            }
        }
        Ok(())
    }
}
