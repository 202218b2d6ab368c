//! What one simulated run does.

use serde::{Deserialize, Serialize};
use tributary_codec::{CodecParams, QuantMode};
use tributary_crds::{InnerOptimizer, ModelConfig, OuterOptimizer};
use tributary_data::synthetic::LanguageConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Gradients averaged every step (one model, the peers' batches together).
    Ddp,
    /// Dense pseudo-gradients averaged every H steps, Nesterov outer step.
    Diloco,
    /// Compressed pseudo-gradients with error feedback every H steps, SGD outer step.
    Sparseloco,
}

/// How a sparse contribution's bytes are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum WireFormat {
    /// Ours: Elias–Fano positions, packed codes (the encoded length).
    Tributary,
    /// The production run's: 12-bit positions, one byte per code.
    Production,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimConfig {
    /// Label of the run in reports.
    pub name: String,
    pub strategy: Strategy,
    pub peers: u32,
    /// Tokens processed by all peers together.
    pub tokens: u64,
    /// Sequences per peer per inner step.
    pub batch: u32,
    pub seq_len: u32,
    /// Inner steps per round (diloco, sparseloco).
    pub inner_steps: u32,
    pub seed: u64,
    pub model: ModelConfig,
    pub language: LanguageConfig,
    pub inner: InnerOptimizer,
    pub outer: OuterOptimizer,
    #[serde(with = "codec_params_serde")]
    pub codec: CodecParams,
    pub wire: WireFormat,
    /// Per-coordinate mean over all peers ((1/R)·Σ, the paper) instead of over the peers that
    /// selected it after median-norm clipping (production).
    #[serde(default)]
    pub paper_mean: bool,
    /// Held-out sequences for evaluation.
    pub eval_sequences: u32,
    /// Evaluations over the run (evenly spaced in tokens).
    pub evals: u32,
    /// libtorch intra-op threads.
    pub threads: u32,
}

impl SimConfig {
    /// Inner steps each peer takes (every strategy takes the same number at equal tokens).
    pub fn steps(&self) -> u64 {
        let per_step = u64::from(self.peers) * u64::from(self.batch) * u64::from(self.seq_len);
        self.tokens.div_ceil(per_step.max(1))
    }

    pub fn tokens_per_step(&self) -> u64 {
        u64::from(self.peers) * u64::from(self.batch) * u64::from(self.seq_len)
    }
}

/// The codec parameters as plain fields (CodecParams itself is not serde).
mod codec_params_serde {
    use super::*;
    use serde::{Deserializer, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Plain {
        chunk_side: u16,
        k_per_chunk: u16,
        bits: u8,
        balanced: bool,
        beta: f32,
        sparse_one_d: bool,
    }

    pub fn serialize<S: Serializer>(p: &CodecParams, s: S) -> Result<S::Ok, S::Error> {
        Plain {
            chunk_side: p.chunk_side,
            k_per_chunk: p.k_per_chunk,
            bits: p.bits,
            balanced: p.mode == QuantMode::Balanced,
            beta: p.beta,
            sparse_one_d: p.one_d == tributary_codec::OneDPolicy::Sparse,
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<CodecParams, D::Error> {
        let p = Plain::deserialize(d)?;
        Ok(CodecParams {
            chunk_side: p.chunk_side,
            k_per_chunk: p.k_per_chunk,
            bits: p.bits,
            mode: if p.balanced {
                QuantMode::Balanced
            } else {
                QuantMode::Production
            },
            beta: p.beta,
            one_d: if p.sparse_one_d {
                tributary_codec::OneDPolicy::Sparse
            } else {
                tributary_codec::OneDPolicy::Dense
            },
        })
    }
}
