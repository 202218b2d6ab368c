//! Conversions between wire messages and domain types, in one place.

use tributary_codec::{CodecParams as Codec, FORMAT_VERSION, OneDPolicy, QuantMode, TensorShape};
use tributary_crds::{CompressionSpec, OneDimensional, ParamSpec, Quantizer, TrainingRunSpec};

use crate::v1alpha1::CodecParams;

/// Why a wire value does not convert.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{field}: {why}")]
    Invalid { field: &'static str, why: String },
}

fn invalid(field: &'static str, why: impl Into<String>) -> ConvertError {
    ConvertError::Invalid {
        field,
        why: why.into(),
    }
}

/// The codec settings a run's compression spec asks for.
pub fn codec_params(spec: &CompressionSpec) -> Result<Codec, ConvertError> {
    let narrow = |field: &'static str, v: u32| {
        u16::try_from(v).map_err(|_| invalid(field, format!("{v} does not fit the codec")))
    };
    let params = Codec {
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
        .map_err(|e| invalid("compression", e.to_string()))?;
    Ok(params)
}

/// The codec's shape of every parameter, in order.
pub fn codec_shapes(specs: &[ParamSpec]) -> Result<Vec<TensorShape>, ConvertError> {
    specs
        .iter()
        .map(|s| {
            TensorShape::new(&s.shape).map_err(|e| invalid("model", format!("{}: {e}", s.name)))
        })
        .collect()
}

/// How an update header names its codec settings.
impl From<&Codec> for CodecParams {
    fn from(c: &Codec) -> Self {
        Self {
            chunk_side: u32::from(c.chunk_side),
            top_k: u32::from(c.k_per_chunk),
            bits: u32::from(c.bits),
            quantizer: match c.mode {
                QuantMode::Production => "production".into(),
                QuantMode::Balanced => "balanced".into(),
            },
            codec_format_version: u32::from(FORMAT_VERSION),
        }
    }
}

/// A run's spec as carried in `JoinResponse.run_spec_json`.
pub fn run_spec_from_json(bytes: &[u8]) -> Result<TrainingRunSpec, ConvertError> {
    serde_json::from_slice(bytes).map_err(|e| invalid("run_spec_json", e.to_string()))
}

pub fn run_spec_to_json(spec: &TrainingRunSpec) -> Result<Vec<u8>, ConvertError> {
    serde_json::to_vec(spec).map_err(|e| invalid("run_spec_json", e.to_string()))
}

/// A 32-byte digest field.
pub fn digest(field: &'static str, bytes: &[u8]) -> Result<[u8; 32], ConvertError> {
    bytes
        .try_into()
        .map_err(|_| invalid(field, format!("expected 32 bytes, got {}", bytes.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_spec_gives_the_default_codec() {
        let c = codec_params(&CompressionSpec::default()).unwrap();
        assert_eq!(c, Codec::default());
        let wire = CodecParams::from(&c);
        assert_eq!((wire.chunk_side, wire.top_k, wire.bits), (64, 64, 2));
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
    fn digests_must_be_32_bytes() {
        assert!(digest("sha", &[0; 31]).is_err());
        assert_eq!(digest("sha", &[7; 32]).unwrap(), [7; 32]);
    }
}
