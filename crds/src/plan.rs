//! A run's plan: everything a run needs that follows from its [`TrainingRunSpec`], derived once.
//!
//! The coordinator, the peer, the simulator and (next) the validators take their codec
//! parameters, tensor shapes, decode limits, update size, parameter layout and data schedule
//! from here, so a spec field means the same thing on every side of the wire.

use tributary_codec::{
    AggregationRule, CodecParams, DecodeLimits, OneDPolicy, QuantMode, TensorShape, encoded_len,
};

use crate::{
    Aggregation, CompressionSpec, Error, ModelConfig, OneDimensional, ParamSpec, Quantizer, Result,
    TrainingRunSpec,
};

/// The model's parameter layout and the codec that compresses it: what every flat buffer,
/// contribution, aggregate and checkpoint of a run is shaped by.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorPlan {
    model: ModelConfig,
    layout: Vec<ParamSpec>,
    shapes: Vec<TensorShape>,
    codec: CodecParams,
    numel: u64,
    update_bytes: u64,
}

impl TensorPlan {
    /// The layout of `model` compressed with `codec`.
    pub fn new(model: ModelConfig, codec: CodecParams) -> Result<Self> {
        model.check()?;
        codec.validate().map_err(|e| plan_error("compression", e))?;
        let layout = model.param_specs();
        let shapes = layout
            .iter()
            .map(|s| TensorShape::new(&s.shape).map_err(|e| plan_error(&s.name, e)))
            .collect::<Result<Vec<_>>>()?;
        let update_bytes = encoded_len(&codec, &shapes).map_err(|e| plan_error("codec", e))?;
        Ok(Self {
            numel: shapes.iter().map(TensorShape::numel).sum(),
            model,
            layout,
            shapes,
            codec,
            update_bytes,
        })
    }

    pub fn model(&self) -> &ModelConfig {
        &self.model
    }

    /// Every parameter, in the order of every flat buffer (transformers' LLaMA names).
    pub fn layout(&self) -> &[ParamSpec] {
        &self.layout
    }

    /// The codec's shape of every parameter, in layout order.
    pub fn shapes(&self) -> &[TensorShape] {
        &self.shapes
    }

    pub fn codec(&self) -> &CodecParams {
        &self.codec
    }

    /// Parameters in all.
    pub fn numel(&self) -> u64 {
        self.numel
    }

    /// Exact size of every valid encoded update.
    pub fn update_bytes(&self) -> u64 {
        self.update_bytes
    }

    /// What a receiver of a peer's update must see: this run's codec and shapes exactly.
    pub fn update_limits(&self) -> DecodeLimits {
        DecodeLimits {
            expected_params: Some(self.codec),
            ..self.aggregate_limits()
        }
    }

    /// What a peer must see in a published aggregate: this run's shapes (aggregates carry no
    /// codec parameters).
    pub fn aggregate_limits(&self) -> DecodeLimits {
        DecodeLimits {
            max_tensors: self.shapes.len() as u64,
            max_total_elements: self.numel,
            expected_params: None,
            expected_shapes: Some(self.shapes.clone()),
        }
    }

    /// Largest checkpoint a run accepts: parameters, outer momentum and error feedback in f32,
    /// plus room for names and metadata.
    pub fn max_checkpoint_bytes(&self) -> u64 {
        12 * self.numel + (self.layout.len() as u64 + 16) * 4096
    }
}

/// One peer's inner-loop data: what a round's batches look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataSchedule {
    /// The run's seed (data streams derive from it, the peer's slot, the round and the step).
    pub seed: u64,
    /// H, inner steps per round.
    pub inner_steps: u32,
    /// Sequences per inner step.
    pub sequences: u32,
    /// Micro-batches each inner step's gradient is accumulated over.
    pub micro_batches: u32,
    /// Tokens per sequence.
    pub seq_len: u32,
    /// Data slots of a round (`maxPeers + reservePeers`): shard sets split their windows over them.
    pub slots: u32,
}

impl DataSchedule {
    /// Tokens one peer trains on in one round.
    pub fn tokens_per_round(&self) -> u64 {
        u64::from(self.inner_steps) * u64::from(self.sequences) * u64::from(self.seq_len)
    }
}

/// A checked [`TrainingRunSpec`] with everything derived from it.
#[derive(Debug, Clone)]
pub struct RunPlan {
    spec: TrainingRunSpec,
    tensors: TensorPlan,
    data: DataSchedule,
    rule: AggregationRule,
    total_rounds: Option<u64>,
}

impl RunPlan {
    /// Checks `spec` and derives its plan; every problem is reported by field.
    pub fn new(spec: TrainingRunSpec) -> Result<Self> {
        spec.check()?;
        let tensors = TensorPlan::new(spec.model_config()?, codec_params(&spec.compression)?)?;
        let data = DataSchedule {
            seed: spec.seed,
            inner_steps: spec.inner_steps(),
            sequences: spec.data.batch_size,
            micro_batches: spec.data.gradient_accumulation.max(1),
            seq_len: spec.sequence_length()?,
            slots: spec.participation.admitted_peers(),
        };
        Ok(Self {
            rule: match spec.compression.aggregation {
                Aggregation::MedianClipMean => AggregationRule::MedianClipMean,
                Aggregation::Mean => AggregationRule::Mean,
            },
            total_rounds: spec.total_rounds()?,
            tensors,
            data,
            spec,
        })
    }

    pub fn spec(&self) -> &TrainingRunSpec {
        &self.spec
    }

    pub fn tensors(&self) -> &TensorPlan {
        &self.tensors
    }

    pub fn data(&self) -> &DataSchedule {
        &self.data
    }

    /// How the coordinator combines the round's updates.
    pub fn rule(&self) -> AggregationRule {
        self.rule
    }

    /// Rounds the run lasts (`None`: until stopped).
    pub fn total_rounds(&self) -> Option<u64> {
        self.total_rounds
    }

    /// Inner steps over which the inner learning rate's cosine decays: the run's, or one
    /// round's worth per round when the run is open-ended.
    pub fn inner_decay_steps(&self) -> u64 {
        self.total_rounds.unwrap_or(1) * u64::from(self.data.inner_steps)
    }
}

/// The codec settings a compression spec asks for.
pub fn codec_params(spec: &CompressionSpec) -> Result<CodecParams> {
    let narrow = |field: &str, v: u32| {
        u16::try_from(v).map_err(|_| plan_error(field, format!("{v} does not fit the codec")))
    };
    let params = CodecParams {
        chunk_side: narrow("compression.chunkSide", spec.chunk_side)?,
        k_per_chunk: narrow("compression.topK", spec.k_per_chunk())?,
        bits: spec.bits.bits(),
        mode: match spec.quantizer {
            Quantizer::Production => QuantMode::Production,
            Quantizer::Balanced => QuantMode::Balanced,
        },
        beta: spec.error_feedback_decay as f32,
        one_d: match spec.one_dimensional {
            OneDimensional::Dense => OneDPolicy::Dense,
            OneDimensional::Sparse => OneDPolicy::Sparse,
        },
    };
    params
        .validate()
        .map_err(|e| plan_error("compression", e))?;
    Ok(params)
}

fn plan_error(field: &str, why: impl std::fmt::Display) -> Error {
    Error::Plan(format!("{field}: {why}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{ModelPreset, ModelSpec};

    fn tiny() -> TrainingRunSpec {
        let mut spec = TrainingRunSpec::new(ModelSpec::preset(ModelPreset::Tiny));
        spec.stop.total_rounds = Some(10);
        spec
    }

    #[test]
    fn the_default_spec_gives_the_default_codec() {
        assert_eq!(
            codec_params(&CompressionSpec::default()).unwrap(),
            CodecParams::default()
        );
    }

    #[test]
    fn a_chunk_side_the_codec_cannot_take_is_refused() {
        let spec = CompressionSpec {
            chunk_side: 4096,
            ..Default::default()
        };
        let err = codec_params(&spec).unwrap_err().to_string();
        assert!(err.contains("compression"), "{err}");
    }

    #[test]
    fn the_plan_derives_layout_shapes_and_sizes_from_the_spec() {
        let plan = RunPlan::new(tiny()).unwrap();
        let t = plan.tensors();
        assert_eq!(t.layout(), ModelPreset::Tiny.config().param_specs());
        assert_eq!(t.shapes().len(), t.layout().len());
        assert_eq!(t.numel(), ModelPreset::Tiny.config().parameter_count());
        assert_eq!(
            t.update_bytes(),
            encoded_len(t.codec(), t.shapes()).unwrap()
        );
        assert_eq!(
            t.update_limits().expected_params,
            Some(CodecParams::default())
        );
        assert_eq!(t.aggregate_limits().expected_params, None);
        assert_eq!(plan.total_rounds(), Some(10));
        assert_eq!(plan.inner_decay_steps(), 10 * 30);
        assert_eq!(plan.data().seq_len, 64);
        assert_eq!(plan.data().slots, 30);
    }

    #[test]
    fn a_density_changes_k_everywhere_it_is_used() {
        let mut spec = tiny();
        spec.compression.density = Some(1.0 / 32.0);
        let plan = RunPlan::new(spec).unwrap();
        assert_eq!(plan.tensors().codec().k_per_chunk, 128);
        let default = RunPlan::new(tiny()).unwrap();
        assert!(plan.tensors().update_bytes() > default.tensors().update_bytes());
    }

    #[test]
    fn an_invalid_spec_has_no_plan() {
        let mut spec = tiny();
        spec.model.heads = Some(5);
        assert!(RunPlan::new(spec).is_err());
        // Head dim 64 / 64 = 1: rotary embeddings rotate pairs.
        let mut odd = tiny();
        odd.model.heads = Some(64);
        odd.model.kv_heads = Some(64);
        let err = RunPlan::new(odd).unwrap_err().to_string();
        assert!(err.contains("must be even"), "{err}");
    }
}
