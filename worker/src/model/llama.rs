//! LLaMA-style decoder: token embedding, RMSNorm, rotary attention with grouped-query heads,
//! SwiGLU MLP, tied or untied output head. Parameter names and layouts are transformers'
//! `LlamaForCausalLM`, so export is a rename-free copy.

use anyhow::{Result, bail};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use tch::{Device, Kind, Tensor};
use tributary_crds::ModelConfig;

use super::Model;
use super::params::ParamSet;
use super::rope::Rope;

/// Standard deviation of the normal initialisation (transformers' `initializer_range`).
pub const INIT_STD: f64 = 0.02;

struct Block {
    input_norm: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    post_norm: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
}

pub struct Llama {
    config: ModelConfig,
    device: Device,
    params: ParamSet,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: Tensor,
    /// `None` when tied to the embedding.
    head: Option<Tensor>,
    rope: Rope,
}

impl Llama {
    /// A freshly initialised model: N(0, 0.02) weights from a ChaCha stream of `seed` (so every
    /// peer and platform builds the same θ₀), norms at one.
    pub fn new(config: ModelConfig, seed: u64, device: Device) -> Result<Self> {
        config.check()?;
        let layout = config.param_specs();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let normal = Normal::new(0.0f32, INIT_STD as f32)?;
        let mut params = ParamSet::new();
        let mut handles = Vec::with_capacity(layout.len());
        for spec in layout {
            let n = spec.numel();
            // Norm gains (1-D) start at one, matrices at N(0, 0.02).
            let values: Vec<f32> = if spec.shape.len() == 1 {
                vec![1.0; n]
            } else {
                (0..n).map(|_| normal.sample(&mut rng)).collect()
            };
            handles.push(params.push(spec.name, &spec.shape, &values, device));
        }
        // The layout (crds' `ModelConfig::param_specs`) is read by name, not by position.
        let mut by_name: std::collections::HashMap<String, Tensor> = params
            .specs()
            .iter()
            .map(|s| s.name.clone())
            .zip(handles)
            .collect();
        let mut take = |name: &str| {
            by_name
                .remove(name)
                .ok_or_else(|| anyhow::anyhow!("the parameter layout has no {name}"))
        };
        let embed = take("model.embed_tokens.weight")?;
        let mut blocks = Vec::new();
        for l in 0..config.layers {
            let p = format!("model.layers.{l}");
            blocks.push(Block {
                q: take(&format!("{p}.self_attn.q_proj.weight"))?,
                k: take(&format!("{p}.self_attn.k_proj.weight"))?,
                v: take(&format!("{p}.self_attn.v_proj.weight"))?,
                o: take(&format!("{p}.self_attn.o_proj.weight"))?,
                gate: take(&format!("{p}.mlp.gate_proj.weight"))?,
                up: take(&format!("{p}.mlp.up_proj.weight"))?,
                down: take(&format!("{p}.mlp.down_proj.weight"))?,
                input_norm: take(&format!("{p}.input_layernorm.weight"))?,
                post_norm: take(&format!("{p}.post_attention_layernorm.weight"))?,
            });
        }
        let norm = take("model.norm.weight")?;
        let head = if config.tie_embeddings {
            None
        } else {
            Some(take("lm_head.weight")?)
        };
        if let Some(extra) = by_name.keys().next() {
            bail!("the parameter layout has {extra}, which this model does not use");
        }
        let rope = Rope::new(
            i64::from(config.context),
            i64::from(config.head_dim()),
            config.rope_theta,
            device,
        );
        Ok(Self {
            config,
            device,
            params,
            embed,
            blocks,
            norm,
            head,
            rope,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Logits `[batch, seq, vocab]` (f32) for token ids `[batch, seq]` (i64, on this device).
    /// On CUDA the matmuls run under bf16 autocast.
    pub fn forward(&self, tokens: &Tensor) -> Tensor {
        let autocast = self.device.is_cuda();
        tch::autocast(autocast, || self.forward_inner(tokens)).to_kind(Kind::Float)
    }

    // `x += …` would add in place into a tensor autograd saved for the backward pass.
    #[allow(clippy::assign_op_pattern)]
    fn forward_inner(&self, tokens: &Tensor) -> Tensor {
        let eps = self.config.norm_eps;
        let mut x = Tensor::embedding(&self.embed, tokens, -1, false, false);
        for b in &self.blocks {
            let h = rms_norm(&x, &b.input_norm, eps);
            x = x + self.attention(&h, b);
            let h = rms_norm(&x, &b.post_norm, eps);
            let mlp = (h.linear(&b.gate, None::<Tensor>).silu() * h.linear(&b.up, None::<Tensor>))
                .linear(&b.down, None::<Tensor>);
            x = x + mlp;
        }
        let x = rms_norm(&x, &self.norm, eps);
        x.linear(self.head.as_ref().unwrap_or(&self.embed), None::<Tensor>)
    }

    fn attention(&self, x: &Tensor, b: &Block) -> Tensor {
        let (bsz, t) = (x.size()[0], x.size()[1]);
        let hd = i64::from(self.config.head_dim());
        let (h, kv) = (
            i64::from(self.config.heads),
            i64::from(self.config.kv_heads),
        );
        let split = |w: &Tensor, heads: i64| {
            x.linear(w, None::<Tensor>)
                .view([bsz, t, heads, hd])
                .transpose(1, 2)
        };
        let q = self.rope.apply(&split(&b.q, h));
        let mut k = self.rope.apply(&split(&b.k, kv));
        let mut v = split(&b.v, kv);
        if kv != h {
            // Each key/value head serves `h / kv` consecutive query heads (transformers' repeat_kv).
            k = k.repeat_interleave_self_int(h / kv, 1, None);
            v = v.repeat_interleave_self_int(h / kv, 1, None);
        }
        let attn = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<Tensor>,
            0.0,
            true,
            None,
            false,
        );
        attn.transpose(1, 2)
            .reshape([bsz, t, h * hd])
            .linear(&b.o, None::<Tensor>)
    }
}

impl Model for Llama {
    fn device(&self) -> Device {
        self.device
    }

    fn vocab(&self) -> u32 {
        self.config.vocab
    }

    fn params(&self) -> &ParamSet {
        &self.params
    }

    fn params_mut(&mut self) -> &mut ParamSet {
        &mut self.params
    }

    fn loss(&self, rows: &Tensor) -> Tensor {
        let t = rows.size()[1] - 1;
        let inputs = rows.narrow(1, 0, t);
        let targets = rows.narrow(1, 1, t);
        let logits = self.forward(&inputs);
        logits
            .view([-1, i64::from(self.config.vocab)])
            .cross_entropy_for_logits(&targets.reshape([-1]))
    }
}

/// RMSNorm in f32 (as transformers does), cast back to the input's kind.
fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Tensor {
    let kind = x.kind();
    let xf = x.to_kind(Kind::Float);
    let norm = (xf.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float) + eps).rsqrt();
    (xf * norm).to_kind(kind) * weight
}
