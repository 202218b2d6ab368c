//! SparseLoCo compression of the pseudo-gradient: chunked top-k, quantization, error feedback,
//! and how the coordinator aggregates what peers send.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Published k per 64×64 chunk (density 1/64 = 1.5625%).
pub const DEFAULT_TOP_K: u32 = 64;

/// How each peer compresses its error-feedback buffer and how the coordinator combines them.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct CompressionSpec {
    /// Values kept per chunk (production: 64 of 4096; paper sweep: 128). Defaults to 64 when
    /// `density` is unset; set at most one of `topK` and `density`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub top_k: Option<u32>,
    /// Fraction of each chunk kept, in (0, 1]; k = ceil(density · chunkSide²).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0), extend("exclusiveMinimum" = true))]
    pub density: Option<f64>,
    /// Side of the square chunks of each 2-D weight (published: 64, i.e. 64×64 = 4096 elements;
    /// each side shrinks to the largest divisor of the dimension that is ≤ chunkSide).
    #[schemars(range(min = 1, max = 4096))]
    pub chunk_side: u32,
    /// Bits per quantized value (published: 2, i.e. 4 bins).
    pub bits: QuantBits,
    /// Quantizer: production (per-tensor 6σ range, 4-entry lookup of bin means) or balanced.
    pub quantizer: Quantizer,
    /// Error-feedback decay β in e ← β·e + Δ (published: 0.95).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub error_feedback_decay: f64,
    /// Peers start their inner steps from θ − α·e, where their own unsent updates lead, instead
    /// of from θ (ours: docs/training.md, "Error-feedback lookahead"; the paper and production
    /// start from θ: false).
    pub error_feedback_lookahead: bool,
    /// 1-D tensors (norm weights): dense (production) or sparse (paper code: k scaled by 64/4096).
    pub one_dimensional: OneDimensional,
    /// Aggregation of the peers' updates (production: median-clip-mean).
    pub aggregation: Aggregation,
}

impl Default for CompressionSpec {
    fn default() -> Self {
        Self {
            top_k: None,
            density: None,
            chunk_side: 64,
            bits: QuantBits::Two,
            quantizer: Quantizer::Production,
            error_feedback_decay: 0.95,
            error_feedback_lookahead: true,
            one_dimensional: OneDimensional::Dense,
            aggregation: Aggregation::MedianClipMean,
        }
    }
}

impl CompressionSpec {
    /// Elements in one full chunk (`chunkSide²`).
    pub fn chunk_elements(&self) -> u32 {
        self.chunk_side.saturating_mul(self.chunk_side)
    }

    /// Values kept per full chunk: `topK`, else from `density`, else the published 64;
    /// never more than the chunk holds, never fewer than 1.
    pub fn k_per_chunk(&self) -> u32 {
        let chunk = self.chunk_elements().max(1);
        let k = match (self.top_k, self.density) {
            (Some(k), _) => k,
            (None, Some(density)) => (density * f64::from(chunk)).ceil() as u32,
            (None, None) => DEFAULT_TOP_K,
        };
        k.clamp(1, chunk)
    }

    /// Fraction of each full chunk that is kept.
    pub fn effective_density(&self) -> f64 {
        f64::from(self.k_per_chunk()) / f64::from(self.chunk_elements().max(1))
    }
}

/// Bits per quantized value; the schema encodes it as an integer enum {2, 4, 8}.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[serde(try_from = "u8", into = "u8")]
pub enum QuantBits {
    /// 4 bins (production).
    #[default]
    Two,
    /// 16 bins.
    Four,
    /// 256 bins.
    Eight,
}

impl QuantBits {
    /// The number of bits.
    pub fn bits(self) -> u8 {
        match self {
            QuantBits::Two => 2,
            QuantBits::Four => 4,
            QuantBits::Eight => 8,
        }
    }

    /// The number of quantization bins (2^bits).
    pub fn bins(self) -> u16 {
        1 << self.bits()
    }
}

impl From<QuantBits> for u8 {
    fn from(bits: QuantBits) -> u8 {
        bits.bits()
    }
}

impl TryFrom<u8> for QuantBits {
    type Error = String;
    fn try_from(bits: u8) -> Result<Self, String> {
        match bits {
            2 => Ok(QuantBits::Two),
            4 => Ok(QuantBits::Four),
            8 => Ok(QuantBits::Eight),
            other => Err(format!("bits must be 2, 4 or 8, not {other}")),
        }
    }
}

impl JsonSchema for QuantBits {
    fn schema_name() -> Cow<'static, str> {
        "QuantBits".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "integer", "enum": [2, 4, 8] })
    }
}

/// Quantizer of the kept values.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Quantizer {
    /// Per-tensor shift and 6σ range, lookup table of bin means (the production run).
    #[default]
    Production,
    /// Bins chosen so each holds about the same number of values.
    Balanced,
}

/// Treatment of 1-D tensors (RMSNorm weights).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OneDimensional {
    /// Sent densely, unquantized (production).
    #[default]
    Dense,
    /// Top-k with k scaled by k/4096 (the paper's code).
    Sparse,
}

/// How the coordinator combines the admitted peers' updates.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Aggregation {
    /// Clip each peer to the median norm, then average each coordinate over the peers that
    /// selected it (production).
    #[default]
    MedianClipMean,
    /// (1/R)·Σ over all R peers (the paper's formula).
    Mean,
}
