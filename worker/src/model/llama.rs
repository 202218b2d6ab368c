//! LLaMA-style decoder: token embedding, RMSNorm, rotary attention with grouped-query heads,
//! SwiGLU MLP, tied or untied output head. Parameter names and layouts are transformers'
//! `LlamaForCausalLM`, so export is a rename-free copy.

use anyhow::{Result, bail};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use tch::{Device, Kind, Tensor};
use tributary_crds::ModelConfig;

use super::params::{ParamSet, ParamSpec};
use super::rope::Rope;

/// Standard deviation of the normal initialisation (transformers' `initializer_range`).
pub const INIT_STD: f64 = 0.02;

/// Derived sizes of a [`ModelConfig`].
pub trait ModelConfigExt {
    fn check(&self) -> Result<()>;
}

impl ModelConfigExt for ModelConfig {
    fn check(&self) -> Result<()> {
        if self.heads == 0 || !self.hidden.is_multiple_of(self.heads) {
            bail!(
                "heads ({}) must divide hidden ({})",
                self.heads,
                self.hidden
            );
        }
        if self.kv_heads == 0 || !self.heads.is_multiple_of(self.kv_heads) {
            bail!(
                "kvHeads ({}) must divide heads ({})",
                self.kv_heads,
                self.heads
            );
        }
        if !self.head_dim().is_multiple_of(2) {
            bail!(
                "head dim {} must be even for rotary embeddings",
                self.head_dim()
            );
        }
        Ok(())
    }
}

/// Every parameter of `config`, in definition order (transformers' names and shapes).
pub fn param_specs(config: &ModelConfig) -> Result<Vec<ParamSpec>> {
    config.check()?;
    Ok(config.param_specs())
}

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
        let layout = param_specs(&config)?;
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
        let mut it = handles.into_iter();
        let mut next = || {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("parameter layout is short"))
        };
        let embed = next()?;
        let mut blocks = Vec::new();
        for _ in 0..config.layers {
            blocks.push(Block {
                q: next()?,
                k: next()?,
                v: next()?,
                o: next()?,
                gate: next()?,
                up: next()?,
                down: next()?,
                input_norm: next()?,
                post_norm: next()?,
            });
        }
        let norm = next()?;
        let head = if config.tie_embeddings {
            None
        } else {
            Some(next()?)
        };
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

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn params(&self) -> &ParamSet {
        &self.params
    }

    pub fn params_mut(&mut self) -> &mut ParamSet {
        &mut self.params
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

    /// Mean next-token cross-entropy (nats) of rows of `len + 1` tokens.
    pub fn loss(&self, rows: &Tensor) -> Tensor {
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
