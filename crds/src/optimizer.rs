//! Inner (AdamW, H local steps) and outer (SGD or Nesterov on the aggregate) optimizers.
//!
//! Defaults are those of the Covenant-72B production run (SparseLoCo, arXiv 2508.15706 and
//! arXiv 2603.08163); docs/crds.md lists where each comes from.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// AdamW run for `innerSteps` (H) steps from the global parameters each round.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct InnerOptimizer {
    /// Peak learning rate (production 72B: 1.17e-4; the paper's 512M sweep used 1e-3).
    #[schemars(range(min = 0.0), extend("exclusiveMinimum" = true))]
    pub lr: f64,
    /// AdamW β1 (published: 0.9).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub beta1: f64,
    /// AdamW β2 (published: 0.95).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub beta2: f64,
    /// AdamW ε (published: 1e-8).
    #[schemars(range(min = 0.0), extend("exclusiveMinimum" = true))]
    pub eps: f64,
    /// Decoupled weight decay (published: 0.1).
    #[schemars(range(min = 0.0))]
    pub weight_decay: f64,
    /// Global gradient-norm clip; 0 disables clipping (published: 1.0).
    #[schemars(range(min = 0.0))]
    pub grad_clip: f64,
    /// Linear warm-up length in inner steps (ours: the sources give no number).
    pub warmup_steps: u64,
    /// Cosine decay ends at `minLrRatio` × `lr` (published: 0.1).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_lr_ratio: f64,
    /// Inner steps over which the cosine decays, counting warm-up. Defaults to the run's total
    /// inner steps (`stop.totalRounds` × `innerSteps`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub decay_steps: Option<u64>,
    /// H: local AdamW steps per round (production: 30; paper: 15).
    #[schemars(range(min = 1))]
    pub inner_steps: u32,
    /// Normalise each local step as AdamW over the batches of this many peers together would:
    /// the second moment loses the gradient noise that averaging their pseudo-gradients
    /// removes, measured between the two halves of each local batch (ours, docs/training.md).
    /// 1 is plain AdamW on the local batch (the published inner step). Unset: the round's
    /// aggregated peers (`participation.maxPeers`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub second_moment_peers: Option<u32>,
}

impl Default for InnerOptimizer {
    fn default() -> Self {
        Self {
            lr: 1.17e-4,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            grad_clip: 1.0,
            warmup_steps: 100,
            min_lr_ratio: 0.1,
            decay_steps: None,
            inner_steps: 30,
            second_moment_peers: None,
        }
    }
}

impl InnerOptimizer {
    /// Learning rate at global inner step `step` (0-based): linear warm-up to `lr`, then cosine to
    /// `minLrRatio`·`lr` at `decay_steps` (`self.decay_steps` when set), constant after.
    pub fn lr_at(&self, step: u64, decay_steps: u64) -> f64 {
        let total = self.decay_steps.unwrap_or(decay_steps);
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = total.saturating_sub(self.warmup_steps);
        if span == 0 {
            return self.lr;
        }
        let progress = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
        let floor = self.lr * self.min_lr_ratio;
        floor + (self.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// The outer step θ ← θ − lr·Δ (SGD) or with Nesterov momentum, applied by every peer.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct OuterOptimizer {
    /// sgd (SparseLoCo production: no momentum, no weight decay) or nesterov (DiLoCo baseline).
    pub kind: OuterKind,
    /// Outer learning rate. Defaults by kind: sgd 1.0 (production), nesterov 0.6 (DiLoCo).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0), extend("exclusiveMinimum" = true))]
    pub lr: Option<f64>,
    /// Nesterov momentum. Defaults by kind: sgd 0 (must stay 0), nesterov 0.9 (DiLoCo).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub momentum: Option<f64>,
    /// Stepwise learning rate: from round `fromRound` on, use `lr` (production lowered 1.0 to 0.4
    /// late in the run). Entries in increasing `fromRound` order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lr_schedule: Vec<OuterLrStep>,
}

impl OuterOptimizer {
    /// The base outer learning rate (before `lrSchedule`).
    pub fn base_lr(&self) -> f64 {
        self.lr.unwrap_or(match self.kind {
            OuterKind::Sgd => 1.0,
            OuterKind::Nesterov => 0.6,
        })
    }

    /// The momentum actually used.
    pub fn momentum(&self) -> f64 {
        self.momentum.unwrap_or(match self.kind {
            OuterKind::Sgd => 0.0,
            OuterKind::Nesterov => 0.9,
        })
    }

    /// The outer learning rate in `round`: the last schedule entry with `fromRound ≤ round`,
    /// else the base rate.
    pub fn lr_at(&self, round: u64) -> f64 {
        self.lr_schedule
            .iter()
            .filter(|step| step.from_round <= round)
            .max_by_key(|step| step.from_round)
            .map_or_else(|| self.base_lr(), |step| step.lr)
    }
}

/// Outer optimizer family.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OuterKind {
    /// Plain SGD on the aggregate: SparseLoCo's production choice.
    #[default]
    Sgd,
    /// SGD with Nesterov momentum: the DiLoCo baseline.
    Nesterov,
}

/// One step of the outer learning-rate schedule.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OuterLrStep {
    /// First round (0-based) that uses `lr`.
    pub from_round: u64,
    /// Outer learning rate from that round on.
    #[schemars(range(min = 0.0), extend("exclusiveMinimum" = true))]
    pub lr: f64,
}
