//! The Hugging Face export, checked by its real consumer: transformers loads the exported
//! model and its logits match ours (f32, CPU).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use tch::{Device, Kind, Tensor};
use tributary_crds::{ModelConfig, ModelPreset};
use tributary_worker::export::export_hf;
use tributary_worker::model::{Llama, Model};

const SCRIPT: &str = r#"
import json, struct, sys, warnings
warnings.filterwarnings("ignore")
import torch
from transformers import LlamaForCausalLM
model = LlamaForCausalLM.from_pretrained(sys.argv[1], torch_dtype=torch.float32, attn_implementation="eager")
model.eval()
tokens = torch.tensor(json.load(open(sys.argv[2])), dtype=torch.long)
with torch.no_grad():
    logits = model(tokens).logits.float().contiguous().view(-1).tolist()
open(sys.argv[3], "wb").write(struct.pack("<%df" % len(logits), *logits))
"#;

fn python() -> std::path::PathBuf {
    // scripts/setup-torch.sh links .libtorch to the venv's torch package and installs
    // transformers into the same venv.
    let torch = std::fs::canonicalize(concat!(env!("CARGO_MANIFEST_DIR"), "/../.libtorch"))
        .expect("run scripts/setup-torch.sh first (.libtorch missing)");
    let venv = torch
        .ancestors()
        .nth(4)
        .expect("venv root above site-packages/torch");
    venv.join("bin/python")
}

fn check(cfg: ModelConfig) {
    let mut model = Llama::new(cfg, 21, Device::Cpu).unwrap();
    // Larger, non-trivial weights (and norm gains ≠ 1) so every term shows in the logits.
    tch::manual_seed(3);
    let specs = model.params().specs().to_vec();
    let values: Vec<Vec<f32>> = specs
        .iter()
        .map(|s| {
            let dims: Vec<i64> = s.shape.iter().map(|d| *d as i64).collect();
            let t = if s.shape.len() == 1 {
                Tensor::rand(dims.as_slice(), (Kind::Float, Device::Cpu)) + 0.5
            } else {
                Tensor::randn(dims.as_slice(), (Kind::Float, Device::Cpu)) * 0.15
            };
            Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
        })
        .collect();
    model.params_mut().load(&values).unwrap();

    let dir = tempfile::tempdir().unwrap();
    export_hf(&dir.path().join("model"), &cfg, &specs, &values).unwrap();
    let tokens = Tensor::randint(i64::from(cfg.vocab), [2, 24], (Kind::Int64, Device::Cpu));
    let rows: Vec<Vec<i64>> = (0..2)
        .map(|i| Vec::<i64>::try_from(tokens.get(i)).unwrap())
        .collect();
    std::fs::write(
        dir.path().join("tokens.json"),
        serde_json::to_vec(&rows).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.path().join("check.py"), SCRIPT).unwrap();
    let out = Command::new(python())
        .arg(dir.path().join("check.py"))
        .arg(dir.path().join("model"))
        .arg(dir.path().join("tokens.json"))
        .arg(dir.path().join("logits.bin"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "transformers failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<f32> = std::fs::read(dir.path().join("logits.bin"))
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let ours = Vec::<f32>::try_from(model.forward(&tokens).flatten(0, -1)).unwrap();
    assert_eq!(ours.len(), theirs.len());
    let spread = ours.iter().map(|x| x.abs()).fold(0f32, f32::max);
    let diff = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        spread > 1.0,
        "logits too small to be a meaningful check: {spread}"
    );
    assert!(
        diff <= 1e-4,
        "logits differ by {diff} (largest |logit| {spread})"
    );
}

#[test]
fn transformers_reproduces_our_logits_untied() {
    check(ModelPreset::Tiny.config());
}

#[test]
fn transformers_reproduces_our_logits_tied() {
    check(ModelConfig {
        tie_embeddings: true,
        ..ModelPreset::Tiny.config()
    });
}
