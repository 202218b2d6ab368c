//! A contribution as aggregation reads it, chunk by chunk: decoded, or straight from its
//! encoded bytes (fixed-size Elias–Fano blocks and codes make every chunk addressable), so a
//! coordinator need not hold many decoded contributions at once.

use crate::bits::read_bits;
use crate::error::{Error, Result};
use crate::params::CodecParams;
use crate::positions::EliasFano;
use crate::quant::Quant;
use crate::shape::{Chunking, Layout, TensorShape};
use crate::tensor::{Contribution, Payload};
use crate::wire::{Cursor, DecodeLimits, inspect_exact, read_quant};
use std::borrow::Cow;

/// One peer's contribution for aggregation; see [`ContributionView::from_bytes`].
#[derive(Debug, Clone)]
pub struct ContributionView<'a> {
    pub(crate) params: CodecParams,
    pub(crate) tensors: Vec<TensorView<'a>>,
}

#[derive(Debug, Clone)]
pub(crate) struct TensorView<'a> {
    pub shape: TensorShape,
    pub data: TensorData<'a>,
}

#[derive(Debug, Clone)]
pub(crate) enum TensorData<'a> {
    Dense(DenseValues<'a>),
    Sparse(SparseView<'a>),
}

/// Dense values: decoded f32, or f32 LE bytes already checked to be finite.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DenseValues<'a> {
    Decoded(&'a [f32]),
    Encoded(&'a [u8]),
}

#[derive(Debug, Clone)]
pub(crate) struct SparseView<'a> {
    pub chunking: Chunking,
    pub bits: u8,
    pub quant: Cow<'a, Quant>,
    source: SparseSource<'a>,
}

#[derive(Debug, Clone, Copy)]
enum SparseSource<'a> {
    Decoded {
        positions: &'a [u16],
        codes: &'a [u8],
    },
    /// The Elias–Fano block stream and the packed code stream of the section.
    Encoded {
        positions: &'a [u8],
        codes: &'a [u8],
    },
}

/// Reusable buffers for one chunk of an encoded tensor.
#[derive(Debug, Default)]
pub(crate) struct ChunkScratch {
    positions: Vec<u16>,
    codes: Vec<u8>,
}

impl<'a> ContributionView<'a> {
    /// A view of an encoded contribution. Checks what [`crate::decode`] checks in the header
    /// (limits, shapes, parameters), the exact length and every quantization parameter, and
    /// that dense values are finite; positions are checked (count, range, order) as the
    /// aggregation reads them, which then fails with the same errors `decode` gives.
    /// Padding bits are not looked at: `decode` remains the full canonical check.
    pub fn from_bytes(bytes: &'a [u8], limits: &DecodeLimits) -> Result<Self> {
        let info = inspect_exact(bytes, limits)?;
        let p = info.params;
        let mut c = Cursor {
            bytes,
            pos: info.header_len as usize,
        };
        let mut tensors = Vec::with_capacity(info.shapes.len());
        for (tensor, shape) in info.shapes.into_iter().enumerate() {
            let data = match Layout::of(&shape, &p)? {
                Layout::Dense { numel } => {
                    let raw = c.take(numel * 4)?;
                    if !raw.chunks_exact(4).all(|b| f32_at(b).is_finite()) {
                        return Err(Error::NonFiniteValue { tensor });
                    }
                    TensorData::Dense(DenseValues::Encoded(raw))
                }
                Layout::Sparse(ch) => {
                    let quant = read_quant(&mut c, &ch, &p, tensor)?;
                    let ef = EliasFano::new(ch.chunk_len(), ch.k);
                    let pos_len = (ch.nchunks as u64 * ef.block_bits()).div_ceil(8) as usize;
                    let positions = c.take(pos_len)?;
                    let code_len = (ch.kept() as u64 * u64::from(p.bits)).div_ceil(8) as usize;
                    let codes = c.take(code_len)?;
                    TensorData::Sparse(SparseView {
                        chunking: ch,
                        bits: p.bits,
                        quant: Cow::Owned(quant),
                        source: SparseSource::Encoded { positions, codes },
                    })
                }
            };
            tensors.push(TensorView { shape, data });
        }
        Ok(Self { params: p, tensors })
    }

    pub fn params(&self) -> &CodecParams {
        &self.params
    }

    pub fn num_tensors(&self) -> usize {
        self.tensors.len()
    }

    pub fn shape(&self, tensor: usize) -> Option<&TensorShape> {
        self.tensors.get(tensor).map(|t| &t.shape)
    }
}

impl<'a> From<&'a Contribution> for ContributionView<'a> {
    fn from(c: &'a Contribution) -> Self {
        let tensors = c
            .tensors
            .iter()
            .map(|t| TensorView {
                shape: t.shape.clone(),
                data: match &t.payload {
                    Payload::Dense(v) => TensorData::Dense(DenseValues::Decoded(v)),
                    Payload::Sparse(s) => TensorData::Sparse(SparseView {
                        chunking: s.chunking,
                        bits: s.bits,
                        quant: Cow::Borrowed(&s.quant),
                        source: SparseSource::Decoded {
                            positions: &s.positions,
                            codes: &s.codes,
                        },
                    }),
                },
            })
            .collect();
        Self {
            params: c.params,
            tensors,
        }
    }
}

#[inline]
fn f32_at(b: &[u8]) -> f32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(b.get(..4).unwrap_or(&[0; 4]));
    f32::from_le_bytes(a)
}

impl DenseValues<'_> {
    pub fn len(&self) -> usize {
        match self {
            Self::Decoded(v) => v.len(),
            Self::Encoded(b) => b.len() / 4,
        }
    }

    /// Calls `f(value)` for the elements `range`, in order.
    #[inline]
    pub fn for_each_in(&self, range: std::ops::Range<usize>, mut f: impl FnMut(f32)) {
        match self {
            Self::Decoded(v) => v.get(range).unwrap_or(&[]).iter().for_each(|&x| f(x)),
            Self::Encoded(b) => b
                .get(range.start * 4..range.end * 4)
                .unwrap_or(&[])
                .chunks_exact(4)
                .for_each(|x| f(f32_at(x))),
        }
    }
}

impl SparseView<'_> {
    /// Sorted chunk-local positions and codes of chunk `c`.
    #[inline]
    pub fn chunk<'s>(
        &'s self,
        c: usize,
        scratch: &'s mut ChunkScratch,
        tensor: usize,
    ) -> Result<(&'s [u16], &'s [u8])> {
        let k = self.chunking.k;
        match self.source {
            SparseSource::Decoded { positions, codes } => {
                let r = c * k..(c + 1) * k;
                match (positions.get(r.clone()), codes.get(r)) {
                    (Some(p), Some(q)) => Ok((p, q)),
                    _ => Err(Error::WrongCount { tensor, chunk: c }),
                }
            }
            SparseSource::Encoded { positions, codes } => {
                let ef = EliasFano::new(self.chunking.chunk_len(), k);
                scratch.positions.resize(k, 0);
                ef.decode_block(positions, c, &mut scratch.positions, tensor)?;
                scratch.codes.resize(k, 0);
                unpack_codes(codes, c, self.bits, &mut scratch.codes);
                Ok((&scratch.positions, &scratch.codes))
            }
        }
    }

    /// Calls `f(chunk, codes)` for every chunk, in wire order (positions not needed).
    #[inline]
    pub fn for_each_chunk_codes(&self, mut f: impl FnMut(usize, &[u8])) {
        let k = self.chunking.k;
        match self.source {
            SparseSource::Decoded { codes, .. } => {
                for (c, cs) in codes.chunks(k.max(1)).enumerate() {
                    f(c, cs);
                }
            }
            SparseSource::Encoded { codes, .. } => {
                let mut buf = vec![0u8; k];
                for c in 0..self.chunking.nchunks {
                    unpack_codes(codes, c, self.bits, &mut buf);
                    f(c, &buf);
                }
            }
        }
    }
}

/// Unpacks the `out.len()` codes of chunk `c` (chunks of `out.len()` codes of `bits` bits).
#[inline]
fn unpack_codes(src: &[u8], c: usize, bits: u8, out: &mut [u8]) {
    let bits = u32::from(bits);
    let per_read = (56 / bits) as usize;
    let mask = (1u64 << bits) - 1;
    let mut at = (c * out.len()) as u64 * u64::from(bits);
    for group in out.chunks_mut(per_read) {
        let mut w = read_bits(src, at, group.len() as u32 * bits);
        for q in group.iter_mut() {
            *q = (w & mask) as u8;
            w >>= bits;
        }
        at += group.len() as u64 * u64::from(bits);
    }
}
