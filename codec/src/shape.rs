//! Tensor shapes and the chunking rule ("largest divisor ≤ chunk_side" per side).

use crate::error::{Error, Result};
use crate::params::{CodecParams, OneDPolicy};

/// Most dimensions a tensor may declare.
pub const MAX_NDIM: usize = 8;

/// Shape of a parameter tensor, row-major.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TensorShape {
    dims: Vec<u32>,
}

impl TensorShape {
    /// A shape with 0..=8 dims, each ≥ 1 (an empty dims list is a scalar).
    pub fn new(dims: &[usize]) -> Result<Self> {
        if dims.len() > MAX_NDIM {
            return Err(Error::InvalidShape("more than 8 dimensions"));
        }
        let dims = dims
            .iter()
            .map(|&d| match u32::try_from(d) {
                Ok(d) if d >= 1 => Ok(d),
                _ => Err(Error::InvalidShape("dimension must be in 1..=u32::MAX")),
            })
            .collect::<Result<Vec<u32>>>()?;
        Ok(Self { dims })
    }

    pub(crate) fn from_u32(dims: Vec<u32>) -> Self {
        Self { dims }
    }

    pub fn dims(&self) -> &[u32] {
        &self.dims
    }

    /// Number of elements (product of dims; 1 for a scalar).
    pub fn numel(&self) -> u64 {
        // Saturates: a peer may declare absurd shapes, which the limits then reject.
        self.dims
            .iter()
            .fold(1u64, |a, &d| a.saturating_mul(u64::from(d)))
    }

    /// Matrix view: (product of all dims but the last, last dim); 1-D and scalars are one row.
    pub(crate) fn matrix(&self) -> (u64, u64) {
        match self.dims.split_last() {
            None => (1, 1),
            Some((&last, rest)) => (
                rest.iter().map(|&d| u64::from(d)).product(),
                u64::from(last),
            ),
        }
    }
}

/// Largest divisor of `n` that is ≤ `max` (≥ 1).
pub(crate) fn largest_divisor_at_most(n: u64, max: u64) -> u64 {
    (1..=max.min(n))
        .rev()
        .find(|d| n.is_multiple_of(*d))
        .unwrap_or(1)
}

/// How one tensor is cut into chunks and how many values each chunk keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chunking {
    pub rows: usize,
    pub cols: usize,
    /// Chunk height and width.
    pub ch: usize,
    pub cw: usize,
    /// Values kept per chunk.
    pub k: usize,
    pub nchunks: usize,
}

/// Sparse (chunked top-k) or dense transport of one tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    Dense { numel: usize },
    Sparse(Chunking),
}

impl Chunking {
    pub fn chunk_len(&self) -> usize {
        self.ch * self.cw
    }
    pub fn chunks_per_row(&self) -> usize {
        self.cols / self.cw
    }
    /// Elements of one band of chunks (`ch` full rows).
    pub fn band_len(&self) -> usize {
        self.ch * self.cols
    }
    pub fn kept(&self) -> usize {
        self.nchunks * self.k
    }
    /// Global row-major index of chunk-local position `p` of chunk `c`.
    #[inline]
    pub fn global_index(&self, c: usize, p: usize) -> usize {
        let (bi, bj) = (c / self.chunks_per_row(), c % self.chunks_per_row());
        (bi * self.ch + p / self.cw) * self.cols + bj * self.cw + p % self.cw
    }
}

impl Layout {
    /// Derives the layout; errors if the tensor does not fit in memory indices.
    pub fn of(shape: &TensorShape, params: &CodecParams) -> Result<Self> {
        let too_big = Error::InvalidShape("tensor too large for this platform");
        let numel = usize::try_from(shape.numel()).map_err(|_| too_big.clone())?;
        let one_d = shape.dims().len() <= 1;
        if one_d && params.one_d == OneDPolicy::Dense {
            return Ok(Self::Dense { numel });
        }
        let (rows, cols) = shape.matrix();
        let side = u64::from(params.chunk_side);
        let ch = largest_divisor_at_most(rows, side);
        let cw = largest_divisor_at_most(cols, side);
        let n_c = ch * cw;
        let k_full = u64::from(params.k_per_chunk);
        let k = if one_d {
            // Paper code: 1-D tensors keep the same density as a full chunk.
            (k_full * n_c).div_ceil(side * side).clamp(1, n_c)
        } else {
            k_full.min(n_c)
        };
        let conv = |v: u64| usize::try_from(v).map_err(|_| too_big.clone());
        Ok(Self::Sparse(Chunking {
            rows: conv(rows)?,
            cols: conv(cols)?,
            ch: conv(ch)?,
            cw: conv(cw)?,
            k: conv(k)?,
            nchunks: conv((rows / ch) * (cols / cw))?,
        }))
    }
}
