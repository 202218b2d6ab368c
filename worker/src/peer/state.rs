//! A peer's training state between rounds: the global parameters θ at a model version, the
//! outer optimizer, the inner loop, error feedback and the data source. Pure of networking.

use anyhow::{Context, Result, bail};
use tch::Device;
use tributary_codec::{
    CodecParams, Contribution, DecodeLimits, ErrorFeedback, TensorShape,
    compress_contribution_into, decode_aggregate, encode,
};
use tributary_crds::{DataSource, ModelConfig, ParamSpec, TrainingRunSpec};
use tributary_data::shards::ShardSet;
use tributary_data::synthetic::{Language, LanguageConfig};
use tributary_data::{Batch, StreamId, TokenSource};

use crate::checkpoint::Checkpoint;
use crate::model::{Llama, codec_shapes, fingerprint};
use crate::train::{InnerLoop, OuterStep, lookahead_start, pseudo_gradient};

/// Held-out sequences an evaluating peer scores θ on after each aggregate.
const EVAL_SEQUENCES: usize = 64;

/// The result of one round's local training.
pub struct Trained {
    pub payload: Vec<u8>,
    pub mean_loss: f64,
    pub tokens: u64,
}

pub struct PeerState {
    pub spec: TrainingRunSpec,
    pub model: ModelConfig,
    pub specs: Vec<ParamSpec>,
    pub codec: CodecParams,
    shapes: Vec<TensorShape>,
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
    seq_len: usize,
}

impl PeerState {
    /// Fresh state at version 0: the run's seeded initialization, which every peer shares.
    pub fn new(spec: TrainingRunSpec) -> Result<Self> {
        let model = spec.model_config()?;
        let llama = Llama::new(model, spec.seed, Device::Cpu)?;
        let theta = llama.params().to_vecs()?;
        Self::build(spec, llama, theta, 0, Vec::new())
    }

    /// State from a downloaded checkpoint (its content hash is verified by `from_bytes`).
    pub fn from_checkpoint(spec: TrainingRunSpec, bytes: &[u8]) -> Result<Self> {
        let ckpt = Checkpoint::from_bytes(bytes).context("the run's checkpoint")?;
        let model = spec.model_config()?;
        if ckpt.model != model {
            bail!("the checkpoint's model differs from the run's");
        }
        let llama = Llama::new(model, spec.seed, Device::Cpu)?;
        Self::build(spec, llama, ckpt.params, ckpt.round, ckpt.outer_momentum)
    }

    fn build(
        spec: TrainingRunSpec,
        llama: Llama,
        theta: Vec<Vec<f32>>,
        version: u64,
        momentum: Vec<Vec<f32>>,
    ) -> Result<Self> {
        let model = *llama.config();
        let specs = llama.params().specs().to_vec();
        let shapes = codec_shapes(&specs)?;
        let codec = tributary_proto::convert::codec_params(&spec.compression)?;
        let sizes: Vec<usize> = theta.iter().map(Vec::len).collect();
        let mut outer = OuterStep::new(spec.outer_optimizer.clone(), &sizes);
        if !momentum.is_empty() {
            outer.set_momentum(momentum)?;
        }
        let decay = spec.total_rounds()?.unwrap_or(1) * u64::from(spec.inner_steps());
        let inner = InnerLoop::new(
            llama,
            spec.inner_optimizer.clone(),
            decay,
            spec.participation.max_peers,
        );
        let (source, language): (Box<dyn TokenSource>, Option<Language>) = match &spec.data.source {
            DataSource::Embedded(e) => {
                let mut cfg = LanguageConfig::calibrated(e.seed.unwrap_or(spec.seed), model.vocab);
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
                let set = ShardSet::open(dir, &s.glob)?
                    .with_schedule(spec.participation.admitted_peers(), spec.inner_steps())?;
                (Box::new(set), None)
            }
        };
        if source.vocab() > model.vocab {
            bail!(
                "the data's vocabulary ({}) exceeds the model's ({})",
                source.vocab(),
                model.vocab
            );
        }
        let seq_len = spec.sequence_length()? as usize;
        Ok(Self {
            efs: sizes.iter().map(|n| ErrorFeedback::zeros(*n)).collect(),
            model,
            specs,
            codec,
            shapes,
            theta,
            version,
            outer,
            inner,
            source,
            language,
            sent: Contribution::default(),
            pending: None,
            seq_len,
            spec,
        })
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(&self.specs, &self.theta)
    }

    /// H inner steps from θ on this peer's assignment for `round` (its `slot` among the
    /// round's members), then the compressed pseudo-gradient through error feedback.
    pub fn train(&mut self, round: u64, slot: u32) -> Result<Trained> {
        self.restore_pending();
        // With lookahead the peer trains from where its unsent updates lead (docs/training.md).
        let start = self
            .spec
            .compression
            .error_feedback_lookahead
            .then(|| lookahead_start(&self.theta, &self.efs, self.outer.lr_at(round) as f32));
        let start = start.as_ref().unwrap_or(&self.theta);
        self.inner.model.params_mut().load(start)?;
        let h = self.spec.inner_steps();
        let (sequences, micro) = (
            self.spec.data.batch_size as usize,
            self.spec.data.gradient_accumulation.max(1) as usize,
        );
        let mut loss = 0.0;
        for step in 0..h {
            let id = StreamId {
                seed: self.spec.seed,
                peer: slot,
                round,
                step,
            };
            let batch = self.source.batch(id, sequences, self.seq_len)?;
            loss += self.inner.step(&batch, micro)?;
        }
        let local = self.inner.model.params().to_vecs()?;
        let delta = pseudo_gradient(start, &local);
        let slices: Vec<&[f32]> = delta.iter().map(Vec::as_slice).collect();
        compress_contribution_into(
            &mut self.efs,
            &slices,
            &self.shapes,
            &self.codec,
            &mut self.sent,
        )?;
        let payload = encode(&self.sent)?;
        self.pending = Some(round);
        Ok(Trained {
            payload,
            mean_loss: loss / f64::from(h.max(1)),
            tokens: u64::from(h) * (sequences * self.seq_len) as u64,
        })
    }

    /// Applies the published aggregate of `round` (version + 1). `included`: whether this
    /// peer's update is in it.
    pub fn apply_aggregate(&mut self, round: u64, blob: &[u8], included: bool) -> Result<()> {
        let limits = DecodeLimits {
            max_tensors: self.shapes.len() as u64,
            max_total_elements: self.shapes.iter().map(TensorShape::numel).sum(),
            expected_params: None,
            expected_shapes: Some(self.shapes.clone()),
        };
        let aggregate = decode_aggregate(blob, &limits)
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
    pub fn end_round(&mut self, round: u64) {
        if self.pending.is_some_and(|r| r <= round) {
            self.restore_pending();
        }
    }

    /// Puts an update that was not applied back into error feedback: `e ← e + decoded`, so
    /// its mass is sent later instead of lost.
    fn restore_pending(&mut self) {
        if self.pending.take().is_some() {
            for (ef, t) in self.efs.iter_mut().zip(&self.sent.tensors) {
                // Shapes match by construction; a mismatch would be a bug, not input.
                let _ = t.accumulate_into(ef.as_mut_slice(), 1.0);
            }
        }
    }

    /// Held-out loss of θ and the floor on the same tokens (embedded data only).
    pub fn evaluate(&mut self) -> Result<Option<(f64, f64)>> {
        let Some(lang) = &self.language else {
            return Ok(None);
        };
        let eval: Batch = lang.batch(
            StreamId::held_out(self.spec.seed, 0),
            EVAL_SEQUENCES,
            self.seq_len,
        )?;
        let floor = lang.floor_nats(&eval)?;
        self.inner.model.params_mut().load(&self.theta)?;
        Ok(Some((self.inner.evaluate(&eval)?, floor)))
    }

    /// The shared state as a checkpoint: θ and outer momentum (error feedback is private).
    pub fn checkpoint_bytes(&self) -> Result<Vec<u8>> {
        Checkpoint {
            round: self.version,
            model: self.model,
            specs: self.specs.clone(),
            params: self.theta.clone(),
            outer_momentum: self.outer.momentum().to_vec(),
            error_feedback: Vec::new(),
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
        let start = lookahead_start(&on.theta, &on.efs, on.outer.lr_at(1) as f32);
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
