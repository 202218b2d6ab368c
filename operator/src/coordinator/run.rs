//! A run's settings as the coordinator applies them, derived once from its TrainingRunSpec.

use tributary_codec::{AggregationRule, CodecParams, DecodeLimits, TensorShape, encoded_len};
use tributary_crds::{Aggregation, TrainingRunSpec};
use tributary_proto::{CHUNK_BYTES, convert, v1alpha1};

use super::RoundPolicy;

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub run_id: String,
    pub spec: TrainingRunSpec,
    pub spec_json: Vec<u8>,
    pub policy: RoundPolicy,
    pub codec: CodecParams,
    pub wire_codec: v1alpha1::CodecParams,
    pub shapes: Vec<TensorShape>,
    pub rule: AggregationRule,
    /// Exact size of every valid update of this run.
    pub update_bytes: u64,
    /// Largest checkpoint accepted: parameters, outer momentum and error feedback in f32,
    /// plus room for names and metadata.
    pub max_checkpoint_bytes: u64,
    pub max_chunk_bytes: u32,
    pub total_rounds: Option<u64>,
}

impl RunConfig {
    pub fn new(run_id: &str, spec: TrainingRunSpec) -> anyhow::Result<Self> {
        if run_id.is_empty() || run_id.len() > 253 {
            anyhow::bail!("run id must be 1 to 253 characters");
        }
        spec.check()?;
        let model = spec.model_config()?;
        let codec = convert::codec_params(&spec.compression)?;
        let specs = model.param_specs();
        let shapes = convert::codec_shapes(&specs)?;
        let update_bytes = encoded_len(&codec, &shapes)?;
        let numel: u64 = shapes.iter().map(TensorShape::numel).sum();
        Ok(Self {
            run_id: run_id.to_owned(),
            spec_json: convert::run_spec_to_json(&spec)?,
            policy: RoundPolicy::try_from(&spec.participation)?,
            wire_codec: v1alpha1::CodecParams::from(&codec),
            rule: match spec.compression.aggregation {
                Aggregation::MedianClipMean => AggregationRule::MedianClipMean,
                Aggregation::Mean => AggregationRule::Mean,
            },
            total_rounds: spec.total_rounds()?,
            max_checkpoint_bytes: 12 * numel + (specs.len() as u64 + 16) * 4096,
            max_chunk_bytes: CHUNK_BYTES as u32,
            codec,
            shapes,
            update_bytes,
            spec,
        })
    }

    /// What the decoder must see in a valid update.
    pub fn decode_limits(&self) -> DecodeLimits {
        DecodeLimits {
            max_tensors: self.shapes.len() as u64,
            max_total_elements: self.shapes.iter().map(TensorShape::numel).sum(),
            expected_params: Some(self.codec),
            expected_shapes: Some(self.shapes.clone()),
        }
    }

    /// Whether a peer with this public key may join (allowlist mode names keys in hex).
    pub fn admits(&self, public_key: &[u8]) -> bool {
        self.spec.participation.admits(&hex::encode(public_key))
    }
}
