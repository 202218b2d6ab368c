//! The model: a named preset or an explicit LLaMA-style configuration, and its parameter count.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Name and shape of one parameter tensor (names follow transformers' LLaMA layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
}

impl ParamSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A named LLaMA-style architecture.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelPreset {
    /// About 181k parameters: tests, the devnet and the strategy comparison on a CPU.
    #[serde(rename = "tiny")]
    Tiny,
    /// About 32M parameters: CPU-trainable, for benchmarks and local runs.
    #[serde(rename = "small")]
    Small,
    /// About 1.1B parameters, the TinyLlama-1.1B architecture.
    #[serde(rename = "1b")]
    OneB,
    /// About 72.7B parameters, the Covenant-72B architecture (arXiv 2603.08163).
    #[serde(rename = "covenant-72b")]
    Covenant72b,
}

impl ModelPreset {
    /// Every preset, smallest first.
    pub const ALL: [ModelPreset; 4] = [Self::Tiny, Self::Small, Self::OneB, Self::Covenant72b];

    /// The name used in the custom resource.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tiny => "tiny",
            Self::Small => "small",
            Self::OneB => "1b",
            Self::Covenant72b => "covenant-72b",
        }
    }

    /// The preset's concrete architecture.
    pub fn config(self) -> ModelConfig {
        match self {
            // Ours: ~30k tokens/s on one CPU core, so the strategy comparison (8M tokens per strategy,
            // two seeds) fits in an hour on two cores; large enough to approach the embedded
            // language's floor (docs/benchmarks.md).
            Self::Tiny => ModelConfig {
                layers: 3,
                hidden: 64,
                heads: 4,
                kv_heads: 2,
                intermediate: 192,
                vocab: 256,
                context: 64,
                rope_theta: 10_000.0,
                norm_eps: 1e-5,
                tie_embeddings: false,
            },
            // Ours: a LLaMA shape (head dim 64, GQA 2:1, FFN ≈ 2.75×) that a CPU trains for benchmarks.
            Self::Small => ModelConfig {
                layers: 8,
                hidden: 512,
                heads: 8,
                kv_heads: 4,
                intermediate: 1408,
                vocab: 8192,
                context: 512,
                rope_theta: 10_000.0,
                norm_eps: 1e-5,
                tie_embeddings: false,
            },
            // TinyLlama-1.1B (config.json of TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T).
            Self::OneB => ModelConfig {
                layers: 22,
                hidden: 2048,
                heads: 32,
                kv_heads: 4,
                intermediate: 5632,
                vocab: 32_000,
                context: 2048,
                rope_theta: 10_000.0,
                norm_eps: 1e-5,
                tie_embeddings: false,
            },
            // Covenant-72B, arXiv 2603.08163 and its exported config (SPARSELOCO.md, "Covenant-72B
            // model"): head dim 128, Gemma 3 tokenizer, untied output head.
            Self::Covenant72b => ModelConfig {
                layers: 80,
                hidden: 8192,
                heads: 64,
                kv_heads: 8,
                intermediate: 28_672,
                vocab: 262_144,
                context: 2048,
                rope_theta: 500_000.0,
                norm_eps: 1e-5,
                tie_embeddings: false,
            },
        }
    }
}

/// The model section of a TrainingRun: a preset, explicit fields, or a preset with overrides.
///
/// Explicit fields override the preset. Without a preset, `layers`, `hidden`, `heads`,
/// `intermediate`, `vocab` and `context` are required; the rest default as in LLaMA
/// (`kvHeads` = `heads`, `ropeTheta` 10000, `normEps` 1e-5, untied embeddings).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    /// Named architecture: tiny (~181k), small (~32M), 1b (TinyLlama-1.1B), covenant-72b.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<ModelPreset>,
    /// Transformer blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub layers: Option<u32>,
    /// Model (residual stream) width.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub hidden: Option<u32>,
    /// Attention (query) heads; must divide `hidden`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub heads: Option<u32>,
    /// Key/value heads (grouped-query attention); must divide `heads`. Defaults to `heads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub kv_heads: Option<u32>,
    /// SwiGLU feed-forward width (the FFN "intermediate size").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub intermediate: Option<u32>,
    /// Vocabulary size (embedding rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub vocab: Option<u32>,
    /// Context length in tokens (RoPE positions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub context: Option<u32>,
    /// RoPE base θ (LLaMA 10000; Covenant-72B 500000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0), extend("exclusiveMinimum" = true))]
    pub rope_theta: Option<f64>,
    /// RMSNorm ε (1e-5 in LLaMA and Covenant-72B).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0), extend("exclusiveMinimum" = true))]
    pub norm_eps: Option<f64>,
    /// Share the input embedding with the output head (Covenant-72B: untied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tie_embeddings: Option<bool>,
}

impl ModelSpec {
    /// A spec that is exactly `preset`.
    pub fn preset(preset: ModelPreset) -> Self {
        Self {
            preset: Some(preset),
            ..Self::default()
        }
    }

    /// The concrete architecture: the preset (if any) with every explicit field laid over it.
    pub fn resolve(&self) -> Result<ModelConfig> {
        let base = self.preset.map(ModelPreset::config);
        let mut missing = Vec::new();
        let mut pick = |name: &'static str, explicit: Option<u32>, preset: Option<u32>| {
            let value = explicit.or(preset);
            if value.is_none() {
                missing.push(name);
            }
            value.unwrap_or(0)
        };
        let layers = pick("layers", self.layers, base.map(|c| c.layers));
        let hidden = pick("hidden", self.hidden, base.map(|c| c.hidden));
        let heads = pick("heads", self.heads, base.map(|c| c.heads));
        let intermediate = pick(
            "intermediate",
            self.intermediate,
            base.map(|c| c.intermediate),
        );
        let vocab = pick("vocab", self.vocab, base.map(|c| c.vocab));
        let context = pick("context", self.context, base.map(|c| c.context));
        if !missing.is_empty() {
            return Err(Error::Model(format!(
                "no preset, so these fields are required: {}",
                missing.join(", ")
            )));
        }
        let config = ModelConfig {
            layers,
            hidden,
            heads,
            kv_heads: self.kv_heads.or(base.map(|c| c.kv_heads)).unwrap_or(heads),
            intermediate,
            vocab,
            context,
            rope_theta: self
                .rope_theta
                .or(base.map(|c| c.rope_theta))
                .unwrap_or(10_000.0),
            norm_eps: self.norm_eps.or(base.map(|c| c.norm_eps)).unwrap_or(1e-5),
            tie_embeddings: self
                .tie_embeddings
                .or(base.map(|c| c.tie_embeddings))
                .unwrap_or(false),
        };
        config.check()?;
        Ok(config)
    }
}

/// A concrete LLaMA-style decoder: RMSNorm, RoPE, grouped-query attention, SwiGLU MLP.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelConfig {
    /// Transformer blocks.
    pub layers: u32,
    /// Model width.
    pub hidden: u32,
    /// Query heads.
    pub heads: u32,
    /// Key/value heads.
    pub kv_heads: u32,
    /// SwiGLU feed-forward width.
    pub intermediate: u32,
    /// Vocabulary size.
    pub vocab: u32,
    /// Context length in tokens.
    pub context: u32,
    /// RoPE base θ.
    pub rope_theta: f64,
    /// RMSNorm ε.
    pub norm_eps: f64,
    /// Output head shares the embedding matrix.
    pub tie_embeddings: bool,
}

impl ModelConfig {
    /// Width of one attention head.
    pub fn head_dim(&self) -> u32 {
        self.hidden / self.heads.max(1)
    }

    /// Width of the key (and of the value) projection: `kvHeads · headDim`.
    pub fn kv_dim(&self) -> u32 {
        self.kv_heads * self.head_dim()
    }

    /// Parameters of one transformer block: q/k/v/o projections (no biases), SwiGLU gate/up/down,
    /// and the two RMSNorm weight vectors.
    pub fn parameters_per_layer(&self) -> u64 {
        let h = u64::from(self.hidden);
        let kv = u64::from(self.kv_dim());
        let attention = 2 * h * h + 2 * h * kv;
        let mlp = 3 * h * u64::from(self.intermediate);
        attention + mlp + 2 * h
    }

    /// Every parameter, in definition order, with transformers' LLaMA names and shapes. This
    /// order is the order of every flat buffer, contribution, aggregate and checkpoint.
    pub fn param_specs(&self) -> Vec<ParamSpec> {
        let (d, hd) = (self.hidden as usize, self.head_dim() as usize);
        let (v, f) = (self.vocab as usize, self.intermediate as usize);
        let (q_out, kv_out) = (self.heads as usize * hd, self.kv_heads as usize * hd);
        let mut specs = Vec::new();
        let mut add = |name: String, shape: &[usize]| {
            specs.push(ParamSpec {
                name,
                shape: shape.to_vec(),
            })
        };
        add("model.embed_tokens.weight".into(), &[v, d]);
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            add(format!("{p}.self_attn.q_proj.weight"), &[q_out, d]);
            add(format!("{p}.self_attn.k_proj.weight"), &[kv_out, d]);
            add(format!("{p}.self_attn.v_proj.weight"), &[kv_out, d]);
            add(format!("{p}.self_attn.o_proj.weight"), &[d, q_out]);
            add(format!("{p}.mlp.gate_proj.weight"), &[f, d]);
            add(format!("{p}.mlp.up_proj.weight"), &[f, d]);
            add(format!("{p}.mlp.down_proj.weight"), &[d, f]);
            add(format!("{p}.input_layernorm.weight"), &[d]);
            add(format!("{p}.post_attention_layernorm.weight"), &[d]);
        }
        add("model.norm.weight".into(), &[d]);
        if !self.tie_embeddings {
            add("lm_head.weight".into(), &[v, d]);
        }
        specs
    }

    /// All parameters: embedding, blocks, final RMSNorm, and the output head unless tied.
    pub fn parameter_count(&self) -> u64 {
        let embedding = u64::from(self.vocab) * u64::from(self.hidden);
        let head = if self.tie_embeddings { 0 } else { embedding };
        embedding
            + u64::from(self.layers) * self.parameters_per_layer()
            + u64::from(self.hidden)
            + head
    }

    /// Every rule an architecture must meet, each broken one named.
    pub fn check(&self) -> Result<()> {
        let mut broken = Vec::new();
        for (name, value) in [
            ("layers", self.layers),
            ("hidden", self.hidden),
            ("heads", self.heads),
            ("kvHeads", self.kv_heads),
            ("intermediate", self.intermediate),
            ("vocab", self.vocab),
            ("context", self.context),
        ] {
            if value == 0 {
                broken.push(format!("{name} must be at least 1"));
            }
        }
        if self.heads > 0 && !self.hidden.is_multiple_of(self.heads) {
            broken.push(format!(
                "heads ({}) must divide hidden ({})",
                self.heads, self.hidden
            ));
        }
        if self.kv_heads > 0 && !self.heads.is_multiple_of(self.kv_heads) {
            broken.push(format!(
                "kvHeads ({}) must divide heads ({})",
                self.kv_heads, self.heads
            ));
        }
        if self.heads > 0
            && self.hidden.is_multiple_of(self.heads)
            && !self.head_dim().is_multiple_of(2)
        {
            broken.push(format!(
                "head dim {} (hidden / heads) must be even for rotary embeddings",
                self.head_dim()
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            broken.push(format!("ropeTheta ({}) must be positive", self.rope_theta));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            broken.push(format!("normEps ({}) must be positive", self.norm_eps));
        }
        if broken.is_empty() {
            Ok(())
        } else {
            Err(Error::Model(broken.join("; ")))
        }
    }
}
