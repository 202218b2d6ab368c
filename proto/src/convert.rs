//! Conversions between wire messages and domain types, in one place.

//!
//! The protocol depends on the codec for one reason: an update header names the codec settings
//! and format version its payload was made with.

use tributary_codec::{CodecParams as Codec, FORMAT_VERSION, QuantMode};

use crate::v1alpha1::{CodecParams, Quantizer};

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

/// How an update header names its codec settings.
impl From<&Codec> for CodecParams {
    fn from(c: &Codec) -> Self {
        Self {
            chunk_side: u32::from(c.chunk_side),
            top_k: u32::from(c.k_per_chunk),
            bits: u32::from(c.bits),
            quantizer: Quantizer::from(c.mode).into(),
            codec_format_version: u32::from(FORMAT_VERSION),
        }
    }
}

impl From<QuantMode> for Quantizer {
    fn from(mode: QuantMode) -> Self {
        match mode {
            QuantMode::Production => Self::Production,
            QuantMode::Balanced => Self::Balanced,
        }
    }
}

impl TryFrom<Quantizer> for QuantMode {
    type Error = ConvertError;
    fn try_from(q: Quantizer) -> Result<Self, ConvertError> {
        match q {
            Quantizer::Production => Ok(Self::Production),
            Quantizer::Balanced => Ok(Self::Balanced),
            Quantizer::Unspecified => Err(invalid("codec.quantizer", "unspecified")),
        }
    }
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
    fn the_default_codec_on_the_wire() {
        let wire = CodecParams::from(&Codec::default());
        assert_eq!((wire.chunk_side, wire.top_k, wire.bits), (64, 64, 2));
        assert_eq!(wire.quantizer(), Quantizer::Production);
        assert_eq!(wire.codec_format_version, u32::from(FORMAT_VERSION));
    }

    #[test]
    fn quantizers_map_both_ways() {
        for mode in [QuantMode::Production, QuantMode::Balanced] {
            assert_eq!(QuantMode::try_from(Quantizer::from(mode)).unwrap(), mode);
        }
        assert!(QuantMode::try_from(Quantizer::Unspecified).is_err());
    }

    #[test]
    fn digests_must_be_32_bytes() {
        assert!(digest("sha", &[0; 31]).is_err());
        assert_eq!(digest("sha", &[7; 32]).unwrap(), [7; 32]);
    }
}
