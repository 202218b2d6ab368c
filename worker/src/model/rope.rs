//! Rotary position embeddings in the Hugging Face LLaMA convention (rotate-half, not
//! interleaved), so exported weights produce the same logits in transformers.

use tch::{Device, Kind, Tensor};

/// cos and sin tables of shape `[context, head_dim]`.
pub(super) struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    pub(super) fn new(context: i64, head_dim: i64, theta: f64, device: Device) -> Self {
        let half = head_dim / 2;
        // inv_freq[i] = θ^(−2i/d), computed in f64 then rounded once, as transformers does in f32.
        let inv: Vec<f32> = (0..half)
            .map(|i| (1.0 / theta.powf((2 * i) as f64 / head_dim as f64)) as f32)
            .collect();
        let inv = Tensor::from_slice(&inv);
        let pos = Tensor::arange(context, (Kind::Float, Device::Cpu));
        let freqs = pos.unsqueeze(1) * inv.unsqueeze(0);
        let emb = Tensor::cat(&[&freqs, &freqs], 1);
        Self {
            cos: emb.cos().to_device(device),
            sin: emb.sin().to_device(device),
        }
    }

    /// Rotates `x` of shape `[batch, heads, seq, head_dim]`.
    pub(super) fn apply(&self, x: &Tensor) -> Tensor {
        let t = x.size()[2];
        let cos = self.cos.narrow(0, 0, t).to_kind(x.kind());
        let sin = self.sin.narrow(0, 0, t).to_kind(x.kind());
        let half = x.size()[3] / 2;
        let x1 = x.narrow(3, 0, half);
        let x2 = x.narrow(3, half, half);
        let rotated = Tensor::cat(&[&(-x2), &x1], 3);
        x * cos + rotated * sin
    }
}
