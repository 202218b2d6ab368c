//! The model's parameters as an ordered list of named tensors, with copies to and from flat f32
//! buffers (what the codec, the outer optimizer and checkpoints work on).

use anyhow::{Result, bail};
use tch::{Device, Kind, Tensor};

pub use tributary_crds::ParamSpec;

/// Ordered, named leaf tensors that require gradients. The order is the model's definition
/// order and is the order of every flat buffer, contribution and checkpoint.
pub struct ParamSet {
    specs: Vec<ParamSpec>,
    tensors: Vec<Tensor>,
}

impl ParamSet {
    pub(crate) fn new() -> Self {
        Self {
            specs: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// Adds a parameter initialised from `values` (row-major) and returns a handle sharing its
    /// storage.
    pub(crate) fn push(
        &mut self,
        name: String,
        shape: &[usize],
        values: &[f32],
        device: Device,
    ) -> Tensor {
        let dims: Vec<i64> = shape.iter().map(|d| *d as i64).collect();
        let t = Tensor::from_slice(values)
            .view(dims.as_slice())
            .to_device(device)
            .set_requires_grad(true);
        let handle = t.shallow_clone();
        self.specs.push(ParamSpec {
            name,
            shape: shape.to_vec(),
        });
        self.tensors.push(t);
        handle
    }

    pub fn specs(&self) -> &[ParamSpec] {
        &self.specs
    }

    pub fn tensors(&self) -> &[Tensor] {
        &self.tensors
    }

    pub fn numel(&self) -> usize {
        self.specs.iter().map(ParamSpec::numel).sum()
    }

    /// Copies every parameter out as f32 (device → host when needed).
    pub fn to_vecs(&self) -> Result<Vec<Vec<f32>>> {
        self.tensors.iter().map(tensor_to_vec).collect()
    }

    /// Overwrites every parameter from flat f32 buffers (in spec order), keeping the leaves.
    pub fn load(&mut self, values: &[Vec<f32>]) -> Result<()> {
        if values.len() != self.tensors.len() {
            bail!(
                "{} buffers for {} parameters",
                values.len(),
                self.tensors.len()
            );
        }
        for ((t, spec), v) in self.tensors.iter_mut().zip(&self.specs).zip(values) {
            if v.len() != spec.numel() {
                bail!(
                    "{}: {} values for {} elements",
                    spec.name,
                    v.len(),
                    spec.numel()
                );
            }
            let src = Tensor::from_slice(v).view(t.size().as_slice());
            tch::no_grad(|| t.f_copy_(&src))?;
        }
        Ok(())
    }

    /// Clears every gradient.
    pub fn zero_grad(&mut self) {
        for t in &mut self.tensors {
            t.zero_grad();
        }
    }

    pub fn fingerprint(&self) -> Result<String> {
        Ok(fingerprint(&self.specs, &self.to_vecs()?))
    }
}

pub(crate) fn tensor_to_vec(t: &Tensor) -> Result<Vec<f32>> {
    let t = t
        .detach()
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous();
    let n = t.numel();
    let mut out = vec![0f32; n];
    t.f_copy_data(&mut out, n)?;
    Ok(out)
}

/// BLAKE3 over the names, shapes and little-endian f32 bytes of every parameter, in order; the
/// first 16 bytes as hex. Equal fingerprints mean bit-identical parameters.
pub fn fingerprint(specs: &[ParamSpec], values: &[Vec<f32>]) -> String {
    let mut h = blake3::Hasher::new();
    for (spec, v) in specs.iter().zip(values) {
        h.update(spec.name.as_bytes());
        for d in &spec.shape {
            h.update(&(*d as u64).to_le_bytes());
        }
        // Little-endian hosts only (x86-64, aarch64): the in-memory bytes are the LE bytes.
        h.update(bytemuck::cast_slice(v));
    }
    h.finalize().to_hex()[..32].to_owned()
}
