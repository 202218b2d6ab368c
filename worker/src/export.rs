//! Export to the Hugging Face LLaMA layout: `config.json` and `model.safetensors` with
//! transformers' tensor names, loadable by `LlamaForCausalLM.from_pretrained`.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use safetensors::tensor::{Dtype, TensorView};
use tributary_crds::ModelConfig;

use crate::model::ParamSpec;

/// transformers' `LlamaConfig` for `model`.
pub fn hf_config(model: &ModelConfig) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": model.hidden,
        "intermediate_size": model.intermediate,
        "num_hidden_layers": model.layers,
        "num_attention_heads": model.heads,
        "num_key_value_heads": model.kv_heads,
        "head_dim": model.head_dim(),
        "vocab_size": model.vocab,
        "max_position_embeddings": model.context,
        "rms_norm_eps": model.norm_eps,
        "rope_theta": model.rope_theta,
        "tie_word_embeddings": model.tie_embeddings,
        "hidden_act": "silu",
        "attention_bias": false,
        "mlp_bias": false,
        "initializer_range": crate::model::INIT_STD,
        "torch_dtype": "float32",
    })
}

/// Writes `dir/config.json` and `dir/model.safetensors` (f32) from parameters in spec order.
pub fn export_hf(
    dir: &Path,
    model: &ModelConfig,
    specs: &[ParamSpec],
    params: &[Vec<f32>],
) -> Result<()> {
    if specs.len() != params.len() {
        bail!("{} tensors for {} parameters", params.len(), specs.len());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut views = Vec::with_capacity(specs.len());
    for (s, p) in specs.iter().zip(params) {
        if p.len() != s.numel() {
            bail!("{}: {} values for shape {:?}", s.name, p.len(), s.shape);
        }
        views.push((
            s.name.clone(),
            TensorView::new(Dtype::F32, s.shape.clone(), bytemuck::cast_slice(p))?,
        ));
    }
    // transformers refuses safetensors files without format "pt".
    let meta = HashMap::from([("format".to_owned(), "pt".to_owned())]);
    let weights = dir.join("model.safetensors");
    safetensors::tensor::serialize_to_file(views, Some(meta), &weights)
        .with_context(|| format!("writing {}", weights.display()))?;
    let config = dir.join("config.json");
    std::fs::write(&config, serde_json::to_vec_pretty(&hf_config(model))?)
        .with_context(|| format!("writing {}", config.display()))?;
    Ok(())
}
