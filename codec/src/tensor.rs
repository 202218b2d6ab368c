//! Compressed tensors and contributions (one peer's tensors of one round).

use crate::error::{Error, Result};
use crate::params::CodecParams;
use crate::quant::Quant;
use crate::shape::{Chunking, Layout, TensorShape};

/// Top-k positions, value codes and quantization parameters of one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseTensor {
    pub(crate) chunking: Chunking,
    /// Chunk-local positions, `k` per chunk, strictly increasing inside each chunk.
    pub(crate) positions: Vec<u16>,
    /// One code per position, in the same order.
    pub(crate) codes: Vec<u8>,
    pub(crate) quant: Quant,
    pub(crate) bits: u8,
}

/// How one tensor travels.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// Every value as f32 (production policy for 1-D tensors).
    Dense(Vec<f32>),
    Sparse(SparseTensor),
}

/// One compressed tensor; built by [`crate::compress`] or [`crate::decode`] only.
#[derive(Debug, Clone, PartialEq)]
pub struct CompressedTensor {
    pub(crate) shape: TensorShape,
    pub(crate) payload: Payload,
}

/// Everything one peer sends for one round: parameters and tensors, in model order.
/// `Default` is an empty contribution (e.g. to compress into, see
/// [`crate::compress_contribution_into`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Contribution {
    pub params: CodecParams,
    pub tensors: Vec<CompressedTensor>,
}

impl Contribution {
    /// L2 norm of the dequantized values (what the update moves θ by, before any weighting).
    pub fn norm(&self) -> f64 {
        let mut sum = 0f64;
        for t in &self.tensors {
            t.for_each(|_, v| sum += f64::from(v) * f64::from(v));
        }
        sum.sqrt()
    }
}

impl SparseTensor {
    /// Values kept per chunk.
    pub fn k(&self) -> usize {
        self.chunking.k
    }
    pub fn num_chunks(&self) -> usize {
        self.chunking.nchunks
    }
    /// Chunk-local positions of chunk `c` (sorted).
    pub fn chunk_positions(&self, c: usize) -> &[u16] {
        self.positions
            .get(c * self.k()..(c + 1) * self.k())
            .unwrap_or(&[])
    }
    pub fn codes(&self) -> &[u8] {
        &self.codes
    }
    pub fn quant(&self) -> &Quant {
        &self.quant
    }

    /// Calls `f(global_index, value)` for every kept value, in chunk order.
    #[inline]
    pub fn for_each(&self, mut f: impl FnMut(usize, f32)) {
        let k = self.k();
        for (c, (ps, cs)) in self
            .positions
            .chunks(k)
            .zip(self.codes.chunks(k))
            .enumerate()
        {
            for (&p, &q) in ps.iter().zip(cs) {
                f(
                    self.chunking.global_index(c, usize::from(p)),
                    self.quant.value(c, q, self.bits),
                );
            }
        }
    }
}

impl CompressedTensor {
    /// A placeholder (a scalar with no values) that compression overwrites.
    pub(crate) fn empty() -> Self {
        Self {
            shape: TensorShape::from_u32(Vec::new()),
            payload: Payload::Dense(Vec::new()),
        }
    }

    pub fn shape(&self) -> &TensorShape {
        &self.shape
    }
    pub fn payload(&self) -> &Payload {
        &self.payload
    }
    pub fn numel(&self) -> usize {
        self.shape.numel() as usize
    }
    /// Number of values carried (kept positions, or every element when dense).
    pub fn count(&self) -> usize {
        match &self.payload {
            Payload::Dense(v) => v.len(),
            Payload::Sparse(s) => s.positions.len(),
        }
    }

    /// Calls `f(global_index, value)` for every carried value.
    pub fn for_each(&self, mut f: impl FnMut(usize, f32)) {
        match &self.payload {
            Payload::Dense(v) => v.iter().enumerate().for_each(|(i, &x)| f(i, x)),
            Payload::Sparse(s) => s.for_each(f),
        }
    }

    /// `out[i] += weight · value` for every carried value.
    pub fn accumulate_into(&self, out: &mut [f32], weight: f32) -> Result<()> {
        if out.len() != self.numel() {
            return Err(Error::LengthMismatch {
                expected: self.numel() as u64,
                got: out.len() as u64,
            });
        }
        self.for_each(|i, v| {
            if let Some(o) = out.get_mut(i) {
                *o += weight * v;
            }
        });
        Ok(())
    }

    /// The dense reconstruction (zeros where nothing was kept).
    pub fn to_dense(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.numel()];
        self.for_each(|i, v| {
            if let Some(o) = out.get_mut(i) {
                *o = v;
            }
        });
        out
    }

    /// Sorted global indices of the carried values (all indices when dense).
    pub fn global_positions(&self) -> Vec<u64> {
        let mut out = Vec::with_capacity(self.count());
        self.for_each(|i, _| out.push(i as u64));
        out.sort_unstable();
        out
    }

    pub(crate) fn layout_matches(&self, params: &CodecParams) -> bool {
        match (Layout::of(&self.shape, params), &self.payload) {
            (Ok(Layout::Dense { numel }), Payload::Dense(v)) => numel == v.len(),
            (Ok(Layout::Sparse(c)), Payload::Sparse(s)) => c == s.chunking,
            _ => false,
        }
    }
}
