//! Checkpoints: parameters and outer-optimizer momentum in one safetensors file, with a content
//! hash over everything that defines the state. (A peer's error feedback is its own and is not
//! part of the run's shared state.)
//!
//! Tensor names: `param.<name>`, `outer_momentum.<name>`. Metadata:
//! `format`, `round`, `model` (JSON), `content_hash` (BLAKE3, hex). Loading recomputes the hash,
//! so a flipped bit anywhere in the state is caught, not trained on.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use tributary_crds::ModelConfig;

use crate::model::ParamSpec;

pub const FORMAT: &str = "tributary-checkpoint/1";
const SECTIONS: [&str; 2] = ["param", "outer_momentum"];

/// A run's state after a round.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Rounds applied to `params`.
    pub round: u64,
    pub model: ModelConfig,
    pub specs: Vec<ParamSpec>,
    pub params: Vec<Vec<f32>>,
    /// Empty when the outer optimizer has no momentum.
    pub outer_momentum: Vec<Vec<f32>>,
}

impl Checkpoint {
    fn sections(&self) -> [(&'static str, &Vec<Vec<f32>>); 2] {
        [
            (SECTIONS[0], &self.params),
            (SECTIONS[1], &self.outer_momentum),
        ]
    }

    fn check_shapes(&self) -> Result<()> {
        for (section, bufs) in self.sections() {
            if section != "param" && bufs.is_empty() {
                continue;
            }
            if bufs.len() != self.specs.len() {
                bail!(
                    "{section}: {} tensors for {} parameters",
                    bufs.len(),
                    self.specs.len()
                );
            }
            for (b, s) in bufs.iter().zip(&self.specs) {
                if b.len() != s.numel() {
                    bail!(
                        "{section}.{}: {} values for shape {:?}",
                        s.name,
                        b.len(),
                        s.shape
                    );
                }
            }
        }
        Ok(())
    }

    /// BLAKE3 over the round, the model, and every tensor's name, shape and bytes, in order.
    pub fn content_hash(&self) -> Result<String> {
        let mut h = blake3::Hasher::new();
        h.update(FORMAT.as_bytes());
        h.update(&self.round.to_le_bytes());
        h.update(&serde_json::to_vec(&self.model)?);
        for (section, bufs) in self.sections() {
            for (b, s) in bufs.iter().zip(&self.specs) {
                h.update(format!("{section}.{}", s.name).as_bytes());
                for d in &s.shape {
                    h.update(&(*d as u64).to_le_bytes());
                }
                h.update(bytemuck::cast_slice(b));
            }
        }
        Ok(h.finalize().to_hex().to_string())
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.check_shapes()?;
        let mut views = Vec::new();
        for (section, bufs) in self.sections() {
            for (b, s) in bufs.iter().zip(&self.specs) {
                let view = TensorView::new(Dtype::F32, s.shape.clone(), bytemuck::cast_slice(b))?;
                views.push((format!("{section}.{}", s.name), view));
            }
        }
        let meta = HashMap::from([
            ("format".to_owned(), FORMAT.to_owned()),
            ("round".to_owned(), self.round.to_string()),
            ("model".to_owned(), serde_json::to_string(&self.model)?),
            ("content_hash".to_owned(), self.content_hash()?),
        ]);
        Ok(safetensors::tensor::serialize(views, Some(meta))?)
    }

    /// Parses and verifies a checkpoint; any corruption is an error naming what is wrong.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let (_, header) = SafeTensors::read_metadata(bytes).context("not a safetensors file")?;
        let meta = header.metadata().clone().unwrap_or_default();
        let field = |k: &str| {
            meta.get(k)
                .cloned()
                .with_context(|| format!("checkpoint metadata lacks `{k}`"))
        };
        let format = field("format")?;
        if format != FORMAT {
            bail!("checkpoint format is {format:?}, this build reads {FORMAT:?}");
        }
        let round: u64 = field("round")?
            .parse()
            .context("checkpoint round is not a number")?;
        let model: ModelConfig =
            serde_json::from_str(&field("model")?).context("checkpoint model is not valid")?;
        let expected = field("content_hash")?;
        let st = SafeTensors::deserialize(bytes).context("checkpoint tensors are corrupt")?;
        let names = st.names();
        if let Some(stray) = names.iter().find(|n| {
            !SECTIONS
                .iter()
                .any(|s| n.strip_prefix(s).is_some_and(|r| r.starts_with('.')))
        }) {
            bail!("checkpoint tensor `{stray}` belongs to no section of {SECTIONS:?}");
        }
        let params = names.iter().filter(|n| n.starts_with("param.")).count();
        model.check().context("checkpoint model")?;
        // Parameter order is the model's, which is not safetensors' (sorted) order.
        let reference = model.param_specs();
        if params != reference.len() {
            bail!(
                "checkpoint has {params} parameters, the model has {}",
                reference.len()
            );
        }
        let read = |section: &str, spec: &ParamSpec| -> Result<Option<Vec<f32>>> {
            let name = format!("{section}.{}", spec.name);
            let Ok(view) = st.tensor(&name) else {
                return Ok(None);
            };
            if view.dtype() != Dtype::F32 || view.shape() != spec.shape.as_slice() {
                bail!(
                    "{name}: {:?} {:?}, expected F32 {:?}",
                    view.dtype(),
                    view.shape(),
                    spec.shape
                );
            }
            let data = view.data();
            Ok(Some(
                data.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ))
        };
        let mut out = Checkpoint {
            round,
            model,
            specs: reference.clone(),
            params: Vec::new(),
            outer_momentum: Vec::new(),
        };
        for (i, section) in SECTIONS.iter().enumerate() {
            let bufs: Vec<Option<Vec<f32>>> = reference
                .iter()
                .map(|s| read(section, s))
                .collect::<Result<_>>()?;
            let present = bufs.iter().filter(|b| b.is_some()).count();
            if present == 0 && i > 0 {
                continue;
            }
            if present != reference.len() {
                bail!(
                    "checkpoint section `{section}` has {present} of {} tensors",
                    reference.len()
                );
            }
            let bufs: Vec<Vec<f32>> = bufs.into_iter().flatten().collect();
            if i == 0 {
                out.params = bufs;
            } else {
                out.outer_momentum = bufs;
            }
        }
        let actual = out.content_hash()?;
        if actual != expected {
            bail!(
                "checkpoint content hash mismatch: recorded {expected}, content hashes to {actual}"
            );
        }
        Ok(out)
    }

    /// Writes atomically (temporary file, then rename) and returns the content hash.
    pub fn save(&self, path: &Path) -> Result<String> {
        let bytes = self.to_bytes()?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
        self.content_hash()
    }

    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_bytes(&bytes).with_context(|| format!("loading checkpoint {}", path.display()))
    }
}
