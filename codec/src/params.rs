//! Codec parameters: everything here is written into the wire header.

use crate::error::{Error, Result};

/// Largest chunk side; keeps chunk-local positions within `u16`.
pub const MAX_CHUNK_SIDE: u16 = 256;
/// Receivers reject scales above this (SPARSELOCO.md) and values whose magnitude exceeds
/// [`MAX_ABS_PARAM`] so that every dequantized value stays finite.
pub const MAX_SCALE: f32 = 1e4;
/// Smallest production scale accepted by receivers (SPARSELOCO.md).
pub const MIN_PRODUCTION_SCALE: f32 = 1e-12;
/// Bound on |shift| and |lookup entry|: far beyond any pseudo-gradient, far below overflow.
pub const MAX_ABS_PARAM: f32 = 1e6;

/// How the selected values are quantized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum QuantMode {
    /// Covenant-72B production scheme: per-tensor mean shift, 6σ range, bin-mean lookup table.
    #[default]
    Production,
    /// Sign + rank-equiprobable magnitude levels, per-chunk bf16 scale, least-squares table.
    Balanced,
}

/// How 1-D tensors (norm weights, biases) are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OneDPolicy {
    /// Production: every value as f32.
    #[default]
    Dense,
    /// Paper code: chunked top-k with k scaled by chunk / chunk_side².
    Sparse,
}

/// Compression parameters of a run (SPARSELOCO.md defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CodecParams {
    /// Target chunk side: each side of a 2-D tensor is cut by its largest divisor ≤ this.
    pub chunk_side: u16,
    /// Values kept per full chunk (`chunk_side²` elements).
    pub k_per_chunk: u16,
    /// Bits per value code: 2, 4 or 8.
    pub bits: u8,
    pub mode: QuantMode,
    /// Error-feedback decay β.
    pub beta: f32,
    pub one_d: OneDPolicy,
}

impl Default for CodecParams {
    fn default() -> Self {
        Self {
            chunk_side: 64,
            k_per_chunk: 64,
            bits: 2,
            mode: QuantMode::Production,
            beta: 0.95,
            one_d: OneDPolicy::Dense,
        }
    }
}

impl CodecParams {
    /// Checks every field; called by compress, encode and decode.
    pub fn validate(&self) -> Result<()> {
        if self.chunk_side == 0 || self.chunk_side > MAX_CHUNK_SIDE {
            return Err(Error::InvalidParams("chunk_side must be in 1..=256"));
        }
        let full = u32::from(self.chunk_side) * u32::from(self.chunk_side);
        if self.k_per_chunk == 0 || u32::from(self.k_per_chunk) > full {
            return Err(Error::InvalidParams(
                "k_per_chunk must be in 1..=chunk_side²",
            ));
        }
        if !matches!(self.bits, 2 | 4 | 8) {
            return Err(Error::InvalidParams("bits must be 2, 4 or 8"));
        }
        if !(self.beta.is_finite() && (0.0..=1.0).contains(&self.beta)) {
            return Err(Error::InvalidParams("beta must be in [0, 1]"));
        }
        Ok(())
    }

    /// Number of code levels, 2^bits.
    pub fn levels(&self) -> usize {
        1usize << self.bits
    }

    pub(crate) fn mode_byte(&self) -> u8 {
        match self.mode {
            QuantMode::Production => 0,
            QuantMode::Balanced => 1,
        }
    }

    pub(crate) fn one_d_byte(&self) -> u8 {
        match self.one_d {
            OneDPolicy::Dense => 0,
            OneDPolicy::Sparse => 1,
        }
    }
}
