//! A peer's training state between rounds: the global parameters θ at a model version, the
//! outer optimizer, the inner loop, error feedback and the data source. Pure of networking.

use anyhow::{Context, Result, bail};
use tch::Device;
use tributary_codec::{Contribution, ErrorFeedback, decode_aggregate, encode};
use tributary_crds::{DataSource, RunPlan, TrainingRunSpec};
use tributary_data::shards::ShardSet;
use tributary_data::synthetic::{Language, LanguageConfig};
use tributary_data::{Batch, StreamId, TokenSource};

use crate::checkpoint::Checkpoint;
use crate::model::{self, fingerprint};
use crate::train::{
    InnerLoop, OuterStep, RoundData, RoundScorer, UpdateScore, compress_round, local_round,
    restore_unsent, round_start,
};

/// Held-out sequences an evaluating peer scores θ on after each aggregate.
const EVAL_SEQUENCES: usize = 64;

/// The result of one round's local training.
pub(crate) struct Trained {
    pub payload: Vec<u8>,
    pub mean_loss: f64,
    pub tokens: u64,
}

pub(crate) struct PeerState {
    plan: RunPlan,
    /// Global parameters after `version` aggregates.
    pub theta: Vec<Vec<f32>>,
    pub version: u64,
    outer: OuterStep,
    inner: InnerLoop,
    efs: Vec<ErrorFeedback>,
    source: Box<dyn TokenSource>,
    /// The embedded language (for the held-out floor), when the run uses it.
    language: Option<Language>,
    /// This peer's last update; its buffers are reused by the next round's compression.
    sent: Contribution,
    /// The round of `sent` until that round ends: if the update is not in the aggregate, its
    /// decoded values go back into error feedback (nothing of it was applied).
    pending: Option<u64>,
}

impl PeerState {
    /// Fresh state at version 0: the run's seeded initialization, which every peer shares.
    pub(crate) fn new(spec: TrainingRunSpec) -> Result<Self> {
        let plan = RunPlan::new(spec)?;
        let model = model::build(plan.tensors(), plan.spec().seed, Device::Cpu)?;
        let theta = model.params().to_vecs()?;
        Self::build(plan, model, theta, 0, Vec::new())
    }

    /// State from a downloaded checkpoint (its content hash is verified by `from_bytes`).
    pub(crate) fn from_checkpoint(spec: TrainingRunSpec, bytes: &[u8]) -> Result<Self> {
        let ckpt = Checkpoint::from_bytes(bytes).context("the run's checkpoint")?;
        let plan = RunPlan::new(spec)?;
        if ckpt.model != *plan.tensors().model() {
            bail!("the checkpoint's model differs from the run's");
        }
        let model = model::build(plan.tensors(), plan.spec().seed, Device::Cpu)?;
        Self::build(plan, model, ckpt.params, ckpt.round, ckpt.outer_momentum)
    }

    fn build(
        plan: RunPlan,
        model: Box<dyn model::Model>,
        theta: Vec<Vec<f32>>,
        version: u64,
        momentum: Vec<Vec<f32>>,
    ) -> Result<Self> {
        let spec = plan.spec();
        let sizes: Vec<usize> = theta.iter().map(Vec::len).collect();
        let mut outer = OuterStep::new(spec.outer_optimizer.clone(), &sizes);
        if !momentum.is_empty() {
            outer.set_momentum(momentum)?;
        }
        let inner = InnerLoop::new(
            model,
            spec.inner_optimizer.clone(),
            plan.inner_decay_steps(),
            spec.participation.max_peers,
        );
        let vocab = plan.tensors().model().vocab;
        let (source, language): (Box<dyn TokenSource>, Option<Language>) = match &spec.data.source {
            DataSource::Embedded(e) => {
                let mut cfg = LanguageConfig::calibrated(e.seed.unwrap_or(spec.seed), vocab);
                if let Some(states) = e.states {
                    cfg.states = states;
                }
                if let Some(z) = e.zipf_exponent {
                    cfg.zipf_exponent = z;
                }
                let lang = Language::new(cfg).context("the run's embedded language")?;
                (Box::new(lang.clone()), Some(lang))
            }
            DataSource::Shards(s) => {
                let dir = s
                    .path
                    .as_deref()
                    .context("data.source.shards.path is required on a peer")?;
                let schedule = plan.data();
                let set = ShardSet::open(dir, &s.glob)?
                    .with_schedule(schedule.slots, schedule.inner_steps)?;
                (Box::new(set), None)
            }
        };
        if source.vocab() > vocab {
            bail!(
                "the data's vocabulary ({}) exceeds the model's ({vocab})",
                source.vocab(),
            );
        }
        Ok(Self {
            efs: sizes.iter().map(|n| ErrorFeedback::zeros(*n)).collect(),
            theta,
            version,
            outer,
            inner,
            source,
            language,
            sent: Contribution::default(),
            pending: None,
            plan,
        })
    }

    pub(crate) fn plan(&self) -> &RunPlan {
        &self.plan
    }

    pub(crate) fn spec(&self) -> &TrainingRunSpec {
        self.plan.spec()
    }

    /// This peer's last honest update (empty before its first).
    pub(crate) fn sent(&self) -> &Contribution {
        &self.sent
    }

    pub(crate) fn fingerprint(&self) -> String {
        fingerprint(self.plan.tensors().layout(), &self.theta)
    }

    /// H inner steps from θ on this peer's assignment for `round` (its `slot` among the
    /// round's members), then the compressed pseudo-gradient through error feedback.
    pub(crate) fn train(&mut self, round: u64, slot: u32) -> Result<Trained> {
        self.train_on(round, slot, self.plan.data().seed)
    }

    /// [`PeerState::train`] on the data streams of `data_seed` rather than the run's seed
    /// (a hostile peer's `other-data`).
    pub(crate) fn train_on(&mut self, round: u64, slot: u32, data_seed: u64) -> Result<Trained> {
        self.restore_pending();
        let lookahead = self
            .spec()
            .compression
            .error_feedback_lookahead
            .then(|| self.outer.lr_at(round) as f32);
        let start = round_start(&self.theta, &self.efs, lookahead);
        let data = *self.plan.data();
        let source = &self.source;
        let trained = local_round(
            &mut self.inner,
            &start,
            data.inner_steps,
            data.micro_batches as usize,
            |step| {
                let id = StreamId {
                    seed: data_seed,
                    peer: slot,
                    round,
                    step,
                };
                Ok(source.batch(id, data.sequences as usize, data.seq_len as usize)?)
            },
        )?;
        compress_round(
            &mut self.efs,
            &trained.delta,
            self.plan.tensors(),
            &mut self.sent,
        )?;
        let payload = encode(&self.sent)?;
        self.pending = Some(round);
        Ok(Trained {
            payload,
            mean_loss: trained.loss_sum() / f64::from(data.inner_steps.max(1)),
            tokens: data.tokens_per_round(),
        })
    }

    /// Applies the published aggregate of `round` (version + 1). `included`: whether this
    /// peer's update is in it.
    pub(crate) fn apply_aggregate(
        &mut self,
        round: u64,
        blob: &[u8],
        included: bool,
    ) -> Result<()> {
        let aggregate = decode_aggregate(blob, &self.plan.tensors().aggregate_limits())
            .with_context(|| format!("the aggregate of round {round}"))?;
        let dense: Vec<Vec<f32>> = aggregate.tensors.iter().map(|t| t.to_dense()).collect();
        self.outer.apply(&mut self.theta, &dense, round)?;
        self.version += 1;
        if included {
            self.pending = None;
        }
        self.end_round(round);
        Ok(())
    }

    /// A round ended (published without this peer, or skipped).
    pub(crate) fn end_round(&mut self, round: u64) {
        if self.pending.is_some_and(|r| r <= round) {
            self.restore_pending();
        }
    }

    /// Puts an update that was not applied back into error feedback: `e ← e + decoded`, so
    /// its mass is sent later instead of lost.
    fn restore_pending(&mut self) {
        if self.pending.take().is_some() {
            restore_unsent(&mut self.efs, &self.sent);
        }
    }

    /// Held-out loss of θ and the floor on the same tokens (embedded data only).
    pub(crate) fn evaluate(&mut self) -> Result<Option<(f64, f64)>> {
        let Some(lang) = &self.language else {
            return Ok(None);
        };
        let data = self.plan.data();
        let eval: Batch = lang.batch(
            StreamId::held_out(data.seed, 0),
            EVAL_SEQUENCES,
            data.seq_len as usize,
        )?;
        let floor = lang.floor_nats(&eval)?;
        self.inner.model.params_mut().load(&self.theta)?;
        Ok(Some((self.inner.evaluate(&eval)?, floor)))
    }

    /// A validator's scoring of `round`'s candidates (trained from this state's θ): each
    /// applied alone, clipped to `clip_norm` and at `lr_scale` × the round's outer lr
    /// (train::score).
    pub(crate) fn round_scorer(
        &mut self,
        round: u64,
        lr_scale: f64,
        clip_norm: f64,
    ) -> Result<RoundScorer> {
        let data = self.plan.data();
        let round_data = RoundData {
            seed: data.seed,
            inner_steps: data.inner_steps,
            sequences: data.sequences as usize,
            seq_len: data.seq_len as usize,
        };
        let step = lr_scale * self.outer.lr_at(round);
        RoundScorer::new(
            &mut self.inner,
            &self.theta,
            self.source.as_ref(),
            round_data,
            round,
            step,
            clip_norm,
        )
    }

    /// `scorer`'s measurement of the update of the peer in `slot`.
    pub(crate) fn score_update(
        &mut self,
        scorer: &RoundScorer,
        update: &Contribution,
        slot: u32,
    ) -> Result<UpdateScore> {
        scorer.score(
            &mut self.inner,
            &self.theta,
            self.source.as_ref(),
            update,
            slot,
        )
    }

    /// The shared state as a checkpoint: θ and outer momentum (error feedback is private).
    pub(crate) fn checkpoint_bytes(&self) -> Result<Vec<u8>> {
        let t = self.plan.tensors();
        Checkpoint {
            round: self.version,
            model: *t.model(),
            specs: t.layout().to_vec(),
            params: self.theta.clone(),
            outer_momentum: self.outer.momentum().to_vec(),
        }
        .to_bytes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use tributary_crds::{DataSource, EmbeddedData, ModelPreset, ModelSpec};

    use super::*;

    fn peer(lookahead: bool) -> PeerState {
        let mut spec = TrainingRunSpec::new(ModelSpec::preset(ModelPreset::Tiny));
        spec.data.source = DataSource::Embedded(EmbeddedData::default());
        spec.data.batch_size = 2;
        spec.inner_optimizer.inner_steps = 2;
        spec.compression.error_feedback_lookahead = lookahead;
        spec.stop.total_rounds = Some(10);
        PeerState::new(spec).unwrap()
    }

    #[test]
    fn lookahead_trains_from_where_the_unsent_updates_lead() {
        let (mut on, mut off) = (peer(true), peer(false));
        // Nothing pending yet: both start from θ and send the same update.
        let first = (on.train(0, 0).unwrap(), off.train(0, 0).unwrap());
        assert_eq!(first.0.payload, first.1.payload);
        // The round ends without them: the whole pseudo-gradient is pending in error feedback.
        on.end_round(0);
        off.end_round(0);
        assert!(
            on.efs
                .iter()
                .any(|e| e.as_slice().iter().any(|x| *x != 0.0))
        );
        let start = crate::train::lookahead_start(&on.theta, &on.efs, on.outer.lr_at(1) as f32);
        assert_ne!(start, on.theta);
        let second = (on.train(1, 0).unwrap(), off.train(1, 0).unwrap());
        assert_ne!(
            second.0.payload, second.1.payload,
            "the lookahead peer starts from θ − α·e, not θ"
        );
        // θ itself only moves with aggregates.
        assert_eq!(on.theta, off.theta);
    }
}
