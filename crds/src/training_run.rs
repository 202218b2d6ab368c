//! The TrainingRun custom resource: one SparseLoCo run, its full configuration and its progress.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::compression::CompressionSpec;
use crate::data::{DataSource, DataSpec};
use crate::model::{ModelConfig, ModelSpec};
use crate::optimizer::{InnerOptimizer, OuterKind, OuterOptimizer};
use crate::participation::{
    MAX_VALIDATOR_REPLICAS, PUBLIC_KEY_PATTERN, ParticipationMode, ParticipationSpec,
};
use crate::validation::Problems;
use crate::workload::{CheckpointSpec, CoordinatorSpec, TelemetrySpec, WorkerTemplate};
use crate::{Error, Result};

/// A SparseLoCo training run: the model, its data, both optimizers, compression, who may
/// participate, and the pods that serve it. Every default is the published one (docs/crds.md).
// Several printer columns share a type: not a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[kube(
    group = "tributary.dev",
    version = "v1alpha1",
    kind = "TrainingRun",
    doc = "A TrainingRun is one distributed training run with SparseLoCo: the model, its data, \
           the inner and outer optimizers, the compression of pseudo-gradients, who may take \
           part, and how the run stops. The operator starts the run's coordinator; workers \
           (Contributors, or peers outside the cluster) join it, train locally and exchange \
           compressed updates each round. Status: phase, rounds completed, loss, peers, and \
           the conditions Ready, SpecValid, CoordinatorReady, Progressing and Degraded.",
    plural = "trainingruns",
    singular = "trainingrun",
    shortname = "tr",
    category = "tributary",
    namespaced,
    status = "TrainingRunStatus",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Round", type_ = "integer", json_path = ".status.round"),
    printcolumn(name = "Loss", type_ = "number", json_path = ".status.loss"),
    printcolumn(name = "Peers", type_ = "integer", json_path = ".status.activePeers"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct TrainingRunSpec {
    /// Architecture: a preset (tiny, small, 1b, covenant-72b) and/or explicit LLaMA-style fields.
    pub model: ModelSpec,
    /// Token source and batch shape.
    #[serde(default)]
    pub data: DataSpec,
    /// Local AdamW and H, the inner steps per round.
    #[serde(default)]
    pub inner_optimizer: InnerOptimizer,
    /// The step every peer applies with the round's aggregate.
    #[serde(default)]
    pub outer_optimizer: OuterOptimizer,
    /// Chunked top-k, quantization, error feedback, aggregation.
    #[serde(default)]
    pub compression: CompressionSpec,
    /// Admission, round timing, scoring.
    #[serde(default)]
    pub participation: ParticipationSpec,
    /// When the run is done; set at least one of `totalRounds` and `totalTokens`.
    #[serde(default)]
    pub stop: StopCondition,
    /// Seed of initialization, data assignment and the embedded data.
    #[serde(default)]
    #[schemars(range(max = crate::MAX_SEED))]
    pub seed: u64,
    /// How often and where checkpoints are written.
    #[serde(default)]
    pub checkpoints: CheckpointSpec,
    /// The per-run coordinator.
    #[serde(default)]
    pub coordinator: CoordinatorSpec,
    /// Pods of in-cluster workers (Contributors may override parts).
    #[serde(default)]
    pub worker_template: WorkerTemplate,
    /// OpenTelemetry export.
    #[serde(default)]
    pub telemetry: TelemetrySpec,
}

/// When a run is done: whichever limit is reached first.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StopCondition {
    /// Stop after this many rounds (aggregates applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub total_rounds: Option<u64>,
    /// Stop once this many tokens were trained on, summed over peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub total_tokens: Option<u64>,
}

impl TrainingRunSpec {
    /// A spec for `model` with every other section at its published default. Set `stop` before
    /// use: a run needs a limit.
    pub fn new(model: ModelSpec) -> Self {
        Self {
            model,
            data: DataSpec::default(),
            inner_optimizer: InnerOptimizer::default(),
            outer_optimizer: OuterOptimizer::default(),
            compression: CompressionSpec::default(),
            participation: ParticipationSpec::default(),
            stop: StopCondition::default(),
            seed: 0,
            checkpoints: CheckpointSpec::default(),
            coordinator: CoordinatorSpec::default(),
            worker_template: WorkerTemplate::default(),
            telemetry: TelemetrySpec::default(),
        }
    }

    /// The concrete model architecture.
    pub fn model_config(&self) -> Result<ModelConfig> {
        self.model.resolve()
    }

    /// H, the inner AdamW steps per round.
    pub fn inner_steps(&self) -> u32 {
        self.inner_optimizer.inner_steps
    }

    /// Tokens per training sequence (the model's context unless set).
    pub fn sequence_length(&self) -> Result<u32> {
        Ok(self.data.sequence_length_or(self.model_config()?.context))
    }

    /// Tokens one peer trains on in one round: H × batch × sequence length.
    pub fn tokens_per_peer_round(&self) -> Result<u64> {
        let context = self.model_config()?.context;
        Ok(u64::from(self.inner_steps()) * self.data.tokens_per_inner_step(context))
    }

    /// Rounds the run lasts: `totalRounds`, or the rounds `totalTokens` takes with `maxPeers`
    /// peers, whichever is fewer; `None` when neither is set.
    pub fn total_rounds(&self) -> Result<Option<u64>> {
        let from_tokens = match self.stop.total_tokens {
            Some(tokens) => {
                let per_round =
                    self.tokens_per_peer_round()? * u64::from(self.participation.max_peers.max(1));
                Some(tokens.div_ceil(per_round.max(1)))
            }
            None => None,
        };
        Ok(match (self.stop.total_rounds, from_tokens) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Inner learning rate at global inner step `step`; the cosine spans the run's inner steps.
    pub fn inner_lr_at(&self, step: u64) -> Result<f64> {
        let total = self.total_rounds()?.unwrap_or(1) * u64::from(self.inner_steps());
        Ok(self.inner_optimizer.lr_at(step, total))
    }

    /// Seed of the embedded synthetic data: its own when set, else the run's.
    pub fn data_seed(&self) -> u64 {
        match &self.data.source {
            DataSource::Embedded(embedded) => embedded.seed.unwrap_or(self.seed),
            DataSource::Shards(_) => self.seed,
        }
    }

    /// The spec as JSON, as `JoinResponse.run_spec_json` carries it to peers.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        Ok(serde_json::to_vec(self)?)
    }

    /// A spec carried as JSON (a peer reading its `JoinResponse`).
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        Ok(serde_json::from_slice(bytes)?)
    }

    /// `Ok(())` when [`validate`](Self::validate) finds nothing, else [`Error::Invalid`].
    pub fn check(&self) -> Result<()> {
        self.validate().into_result()
    }

    /// Rules across fields that the OpenAPI schema cannot express, each broken one as a readable
    /// problem. The operator reports them as the `SpecValid` condition and does not start the run.
    pub fn validate(&self) -> Problems {
        let mut p = Problems::default();
        let model = match self.model.resolve() {
            Ok(model) => Some(model),
            Err(Error::Model(message)) => {
                p.push("spec.model", message);
                None
            }
            Err(other) => {
                p.push("spec.model", other.to_string());
                None
            }
        };
        self.validate_data(model.as_ref(), &mut p);
        self.validate_optimizers(&mut p);
        self.validate_compression(&mut p);
        self.validate_participation(&mut p);
        p.check(
            self.stop.total_rounds.is_none() && self.stop.total_tokens.is_none(),
            "spec.stop",
            || "set totalRounds or totalTokens (or both): a run needs a limit".into(),
        );
        p
    }

    fn validate_data(&self, model: Option<&ModelConfig>, p: &mut Problems) {
        let data = &self.data;
        if let (Some(model), Some(seq)) = (model, data.sequence_length) {
            p.check(seq > model.context, "spec.data.sequenceLength", || {
                format!("{seq} exceeds the model's context of {}", model.context)
            });
        }
        p.check(
            data.gradient_accumulation > 0
                && !data.batch_size.is_multiple_of(data.gradient_accumulation),
            "spec.data.gradientAccumulation",
            || {
                format!(
                    "batchSize {} is not a multiple of gradientAccumulation {}",
                    data.batch_size, data.gradient_accumulation
                )
            },
        );
        if let DataSource::Shards(shards) = &data.source {
            p.check(
                shards.claim_name.is_none() && shards.path.is_none(),
                "spec.data.source.shards",
                || "set claimName (a PersistentVolumeClaim) or path, or both".into(),
            );
            if let Some(model) = model {
                p.check(
                    u64::from(model.vocab) > shards.dtype.max_vocab(),
                    "spec.data.source.shards.dtype",
                    || format!("u16 token ids cannot index a vocabulary of {}", model.vocab),
                );
            }
        }
    }

    fn validate_optimizers(&self, p: &mut Problems) {
        let inner = &self.inner_optimizer;
        p.check(inner.beta1 >= 1.0, "spec.innerOptimizer.beta1", || {
            format!("{} must be below 1", inner.beta1)
        });
        p.check(inner.beta2 >= 1.0, "spec.innerOptimizer.beta2", || {
            format!("{} must be below 1", inner.beta2)
        });
        if let Some(decay) = inner.decay_steps {
            p.check(
                decay <= inner.warmup_steps,
                "spec.innerOptimizer.decaySteps",
                || format!("{decay} must exceed warmupSteps ({})", inner.warmup_steps),
            );
        }
        let outer = &self.outer_optimizer;
        p.check(
            outer.kind == OuterKind::Sgd && outer.momentum.is_some_and(|m| m != 0.0),
            "spec.outerOptimizer.momentum",
            || "plain sgd has no momentum: set kind nesterov or drop momentum".into(),
        );
        p.check(
            outer.momentum() >= 1.0,
            "spec.outerOptimizer.momentum",
            || format!("{} must be below 1", outer.momentum()),
        );
        let rounds: Vec<u64> = outer.lr_schedule.iter().map(|s| s.from_round).collect();
        p.check(
            rounds.windows(2).any(|w| w[0] >= w[1]),
            "spec.outerOptimizer.lrSchedule",
            || format!("fromRound must strictly increase, got {rounds:?}"),
        );
    }

    fn validate_compression(&self, p: &mut Problems) {
        let c = &self.compression;
        p.check(
            c.top_k.is_some() && c.density.is_some(),
            "spec.compression",
            || "set topK or density, not both".into(),
        );
        if let Some(k) = c.top_k {
            p.check(k > c.chunk_elements(), "spec.compression.topK", || {
                format!(
                    "{k} exceeds the {} elements of a {side}×{side} chunk",
                    c.chunk_elements(),
                    side = c.chunk_side
                )
            });
        }
        if let Some(density) = c.density {
            p.check(
                !(density > 0.0 && density <= 1.0),
                "spec.compression.density",
                || format!("{density} is outside (0, 1]"),
            );
        }
    }

    fn validate_participation(&self, p: &mut Problems) {
        let part = &self.participation;
        p.check(
            part.min_peers > part.max_peers,
            "spec.participation.minPeers",
            || {
                format!(
                    "minPeers {} exceeds maxPeers {}",
                    part.min_peers, part.max_peers
                )
            },
        );
        match part.mode {
            ParticipationMode::Allowlist => p.check(
                part.allowlist.is_empty(),
                "spec.participation.allowlist",
                || "mode allowlist admits nobody: list at least one public key".into(),
            ),
            ParticipationMode::Open => p.check(
                !part.allowlist.is_empty(),
                "spec.participation.allowlist",
                || "has no effect in mode open: set mode allowlist or drop the list".into(),
            ),
        }
        for (i, key) in part.allowlist.iter().enumerate() {
            p.check(
                !is_public_key(key),
                &format!("spec.participation.allowlist[{i}]"),
                || format!("{key:?} is not 64 lowercase hex digits ({PUBLIC_KEY_PATTERN})"),
            );
        }
        let scoring = &part.scoring;
        for (i, key) in scoring.validators.iter().enumerate() {
            p.check(
                !is_public_key(key),
                &format!("spec.participation.scoring.validators[{i}]"),
                || format!("{key:?} is not 64 lowercase hex digits ({PUBLIC_KEY_PATTERN})"),
            );
        }
        p.check(
            scoring.validator_replicas > 0 && !scoring.enabled,
            "spec.participation.scoring.validatorReplicas",
            || "validators only score a run whose scoring is enabled: set enabled or 0".into(),
        );
        p.check(
            scoring.validator_replicas > MAX_VALIDATOR_REPLICAS,
            "spec.participation.scoring.validatorReplicas",
            || {
                format!(
                    "{} exceeds the most the operator runs, {MAX_VALIDATOR_REPLICAS}",
                    scoring.validator_replicas
                )
            },
        );
        p.check(
            scoring.validator_window_seconds == 0,
            "spec.participation.scoring.validatorWindowSeconds",
            || "must be at least 1".into(),
        );
        // An honest peer, better on its own data every round, must clear the moving-average
        // floor by the end of its warm-up: 1 − (1 − α)^warmup ≥ zeroBelow.
        let alpha = scoring.ema_alpha;
        let reached = 1.0 - (1.0 - alpha).powf(f64::from(scoring.warmup_rounds));
        p.check(
            !(alpha > 0.0 && alpha <= 1.0),
            "spec.participation.scoring.emaAlpha",
            || format!("{alpha} is not in (0, 1]"),
        );
        p.check(
            alpha > 0.0 && reached < scoring.zero_below,
            "spec.participation.scoring.warmupRounds",
            || {
                format!(
                    "{} rounds at emaAlpha {alpha} reach a moving average of {reached:.3}, below \
                     zeroBelow {}: even an honest peer would be excluded when its warm-up ends",
                    scoring.warmup_rounds, scoring.zero_below
                )
            },
        );
        p.check(
            !(0.0..=1.0).contains(&scoring.copy_overlap_threshold),
            "spec.participation.scoring.copyOverlapThreshold",
            || "must lie in [0, 1]".into(),
        );
        p.check(
            !(scoring.eval_lr_scale > 0.0 && scoring.eval_lr_scale <= 1.0),
            "spec.participation.scoring.evalLrScale",
            || "must lie in (0, 1]".into(),
        );
    }
}

impl TrainingRunSpec {
    /// What a running run may not change, compared with the spec it runs (`running`): the
    /// fields that decide what is trained and how (model, data, optimizers, compression, seed,
    /// the stop condition that shapes the learning-rate schedule, storage sizes). Participation,
    /// checkpoint cadence, images, exposure, worker template and telemetry may change.
    pub fn frozen_changes(&self, running: &TrainingRunSpec) -> Problems {
        let mut p = Problems::default();
        let frozen =
            "cannot change on a running run: delete and recreate the TrainingRun to change it";
        p.check(self.model != running.model, "spec.model", || frozen.into());
        p.check(self.data != running.data, "spec.data", || frozen.into());
        p.check(
            self.inner_optimizer != running.inner_optimizer,
            "spec.innerOptimizer",
            || frozen.into(),
        );
        p.check(
            self.outer_optimizer != running.outer_optimizer,
            "spec.outerOptimizer",
            || frozen.into(),
        );
        p.check(
            self.compression != running.compression,
            "spec.compression",
            || frozen.into(),
        );
        p.check(self.seed != running.seed, "spec.seed", || frozen.into());
        p.check(self.stop != running.stop, "spec.stop", || frozen.into());
        // With a token budget the run's length follows maxPeers, and the schedule with it.
        let length = |s: &TrainingRunSpec| s.total_rounds().ok().flatten();
        p.check(
            self.stop == running.stop && length(self) != length(running),
            "spec.participation.maxPeers",
            || "cannot change while stop.totalTokens sets the run's length".into(),
        );
        p.check(
            self.coordinator.port != running.coordinator.port
                || self.coordinator.storage != running.coordinator.storage,
            "spec.coordinator",
            || "port and storage cannot change on a running run".into(),
        );
        p
    }
}

/// Whether `key` is an ed25519 public key in hex (64 lowercase hex digits).
pub fn is_public_key(key: &str) -> bool {
    key.len() == 64 && key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Condition types the operator sets on a TrainingRun.
pub mod condition {
    /// The summary that `kubectl wait --for=condition=Ready` and GitOps tools read: the spec is
    /// accepted and the run trains (or has finished). Computed from the others.
    pub const READY: &str = "Ready";
    /// The spec passed [`TrainingRunSpec::validate`](super::TrainingRunSpec::validate).
    pub const SPEC_VALID: &str = "SpecValid";
    /// The coordinator is up and reachable.
    pub const COORDINATOR_READY: &str = "CoordinatorReady";
    /// Rounds are completing.
    pub const PROGRESSING: &str = "Progressing";
    /// Fewer peers than `minPeers`, or rounds are being skipped.
    pub const DEGRADED: &str = "Degraded";
}

/// Progress of a run, written by the operator through the status subresource.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrainingRunStatus {
    /// Pending, Running, Degraded, Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RunPhase>,
    /// Rounds completed (aggregates applied).
    #[serde(default)]
    pub round: u64,
    /// Mean training loss reported for the last completed round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Tokens trained on so far, summed over peers.
    #[serde(default)]
    pub tokens: u64,
    /// Peers whose update was aggregated in the last round.
    #[serde(default)]
    pub active_peers: u32,
    /// Peers rejected or excluded in the last round.
    #[serde(default)]
    pub rejected_peers: u32,
    /// Joined peers that no in-cluster Contributor runs: external machines anywhere.
    #[serde(default)]
    pub external_peers: u32,
    /// Ready validators of those the operator runs for this run
    /// (`participation.scoring.validatorReplicas`).
    #[serde(default)]
    pub ready_validators: u32,
    /// Where peers reach the coordinator (`host:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator_endpoint: Option<String>,
    /// Standard conditions, one per type (see [`condition`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Lifecycle of a run.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunPhase {
    /// Accepted; coordinator or first peers not ready yet.
    Pending,
    /// Rounds are completing.
    Running,
    /// Running with fewer peers than wanted, or skipping rounds.
    Degraded,
    /// Reached its stop condition.
    Succeeded,
    /// Stopped for good (invalid spec, unrecoverable error).
    Failed,
}
