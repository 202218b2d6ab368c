//! Header parsing, limits, and the sizes derived from the header before anything is allocated.

use super::{FIXED_HEADER_LEN, FORMAT_VERSION, MAGIC};
use crate::error::{Error, Result};
use crate::params::{CodecParams, OneDPolicy, QuantMode};
use crate::positions::EliasFano;
use crate::shape::{Chunking, Layout, MAX_NDIM, TensorShape};

/// What a receiver accepts; everything a peer declares is checked against it before allocating.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeLimits {
    pub max_tensors: u64,
    /// Sum of the declared tensors' element counts.
    pub max_total_elements: u64,
    /// The run's parameters; `None` accepts any valid ones.
    pub expected_params: Option<CodecParams>,
    /// The model's shapes in order; `None` accepts any within the limits.
    pub expected_shapes: Option<Vec<TensorShape>>,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_tensors: 1 << 16,
            max_total_elements: 1 << 36,
            expected_params: None,
            expected_shapes: None,
        }
    }
}

/// What the header declares, and the sizes that follow from it.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderInfo {
    pub params: CodecParams,
    pub shapes: Vec<TensorShape>,
    /// Bytes of the header itself.
    pub header_len: u64,
    /// Exact length of the whole encoding the header implies.
    pub encoded_len: u64,
    /// Upper bound on the bytes `decode` allocates for this input.
    pub allocation_bound: u64,
}

/// Bounds-checked little-endian reader.
pub(crate) struct Cursor<'a> {
    pub bytes: &'a [u8],
    pub pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(Error::Truncated {
                needed: self.pos as u64 + n as u64,
                available: self.bytes.len() as u64,
            });
        };
        let s = self.bytes.get(self.pos..end).unwrap_or(&[]);
        self.pos = end;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn f32(&mut self) -> Result<f32> {
        Ok(f32::from_le_bytes(self.array()?))
    }
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
}

/// Bytes of one tensor's section, and what decoding it allocates.
pub(crate) fn section_sizes(layout: &Layout, params: &CodecParams) -> Option<(u64, u64)> {
    match layout {
        Layout::Dense { numel } => {
            let b = (*numel as u64).checked_mul(4)?;
            Some((b, b))
        }
        Layout::Sparse(ch) => {
            let kept = ch.kept() as u64;
            let quant = quant_bytes(ch, params)?;
            let ef = EliasFano::new(ch.chunk_len(), ch.k);
            let pos = (ch.nchunks as u64)
                .checked_mul(ef.block_bits())?
                .div_ceil(8);
            let codes = kept.checked_mul(u64::from(params.bits))?.div_ceil(8);
            let bytes = 2u64
                .checked_add(quant)?
                .checked_add(pos)?
                .checked_add(codes)?;
            // positions u16 + codes u8 per kept value, plus the quantization parameters.
            let alloc = kept.checked_mul(3)?.checked_add(quant)?;
            Some((bytes, alloc))
        }
    }
}

fn quant_bytes(ch: &Chunking, params: &CodecParams) -> Option<u64> {
    let levels = params.levels() as u64;
    match params.mode {
        QuantMode::Production => Some(8 + 4 * levels),
        QuantMode::Balanced => (ch.nchunks as u64).checked_mul(2)?.checked_add(2 * levels),
    }
}

/// Parses and checks the header (a prefix suffices): params, shapes, limits, implied sizes.
pub fn inspect(bytes: &[u8], limits: &DecodeLimits) -> Result<HeaderInfo> {
    let mut c = Cursor { bytes, pos: 0 };
    if c.take(4)? != MAGIC {
        return Err(Error::BadMagic);
    }
    let version = c.u16()?;
    if version != FORMAT_VERSION {
        return Err(Error::UnsupportedVersion(version));
    }
    let chunk_side = c.u16()?;
    let k_per_chunk = c.u16()?;
    let bits = c.u8()?;
    let mode = match c.u8()? {
        0 => QuantMode::Production,
        1 => QuantMode::Balanced,
        _ => return Err(Error::InvalidParams("unknown quantizer mode")),
    };
    let one_d = match c.u8()? {
        0 => OneDPolicy::Dense,
        1 => OneDPolicy::Sparse,
        _ => return Err(Error::InvalidParams("unknown 1-D policy")),
    };
    if c.u8()? != 0 {
        return Err(Error::ReservedNonZero);
    }
    let beta = c.f32()?;
    let params = CodecParams {
        chunk_side,
        k_per_chunk,
        bits,
        mode,
        beta,
        one_d,
    };
    params.validate()?;
    if limits.expected_params.is_some_and(|p| p != params) {
        return Err(Error::UnexpectedParams);
    }
    let count = u64::from(c.u32()?);
    if count > limits.max_tensors {
        return Err(Error::TooManyTensors {
            count,
            max: limits.max_tensors,
        });
    }
    debug_assert_eq!(c.pos, FIXED_HEADER_LEN);
    let shapes = read_shapes(&mut c, count, limits)?;
    let too_large = |declared| Error::TooLarge {
        declared,
        max: limits.max_total_elements,
    };
    let header_len = c.pos as u64;
    let mut encoded_len = header_len;
    let mut allocation_bound =
        (count + 1) * (std::mem::size_of::<crate::CompressedTensor>() as u64 + 64);
    for s in &shapes {
        let layout = Layout::of(s, &params)?;
        let (b, a) = section_sizes(&layout, &params).ok_or_else(|| too_large(u64::MAX))?;
        encoded_len = encoded_len
            .checked_add(b)
            .ok_or_else(|| too_large(u64::MAX))?;
        allocation_bound = allocation_bound
            .saturating_add(a)
            .saturating_add(4 * MAX_NDIM as u64);
    }
    Ok(HeaderInfo {
        params,
        shapes,
        header_len,
        encoded_len,
        allocation_bound,
    })
}

/// Reads `count` shapes (`ndim` u8, then `ndim` u32 dims ≥ 1), checking them against `limits`
/// (total elements, expected shapes) as they come; shared by the contribution and aggregate
/// headers.
pub(crate) fn read_shapes(
    c: &mut Cursor<'_>,
    count: u64,
    limits: &DecodeLimits,
) -> Result<Vec<TensorShape>> {
    // Each shape takes at least one byte: the shape list is bounded by the input length.
    let remaining = (c.bytes.len() - c.pos.min(c.bytes.len())) as u64;
    if count > remaining {
        return Err(Error::Truncated {
            needed: c.pos as u64 + count,
            available: c.bytes.len() as u64,
        });
    }
    let mut shapes = Vec::with_capacity(count as usize);
    let mut total = 0u64;
    for index in 0..count as usize {
        let ndim = usize::from(c.u8()?);
        if ndim > MAX_NDIM {
            return Err(Error::InvalidShape("more than 8 dimensions"));
        }
        let mut dims = Vec::with_capacity(ndim);
        let mut numel = 1u64;
        for _ in 0..ndim {
            let d = c.u32()?;
            if d == 0 {
                return Err(Error::InvalidShape("zero dimension"));
            }
            numel = numel.saturating_mul(u64::from(d));
            dims.push(d);
        }
        total = total.saturating_add(numel);
        if total > limits.max_total_elements {
            return Err(Error::TooLarge {
                declared: total,
                max: limits.max_total_elements,
            });
        }
        let shape = TensorShape::from_u32(dims);
        if let Some(exp) = &limits.expected_shapes
            && exp.get(index) != Some(&shape)
        {
            return Err(Error::UnexpectedShape { index });
        }
        shapes.push(shape);
    }
    if let Some(exp) = &limits.expected_shapes
        && exp.len() != shapes.len()
    {
        return Err(Error::UnexpectedShape {
            index: shapes.len().min(exp.len()),
        });
    }
    Ok(shapes)
}

/// Appends shapes as [`read_shapes`] reads them.
pub(crate) fn write_shapes<'a>(
    out: &mut Vec<u8>,
    shapes: impl IntoIterator<Item = &'a TensorShape>,
) {
    for s in shapes {
        out.push(s.dims().len() as u8);
        for d in s.dims() {
            out.extend_from_slice(&d.to_le_bytes());
        }
    }
}

/// [`inspect`], and the input is exactly as long as its header implies.
pub(crate) fn inspect_exact(bytes: &[u8], limits: &DecodeLimits) -> Result<HeaderInfo> {
    let info = inspect(bytes, limits)?;
    let actual = bytes.len() as u64;
    if actual < info.encoded_len {
        return Err(Error::Truncated {
            needed: info.encoded_len,
            available: actual,
        });
    }
    if actual > info.encoded_len {
        return Err(Error::TrailingBytes {
            extra: actual - info.encoded_len,
        });
    }
    Ok(info)
}

/// Exact length of the encoding of any contribution with these parameters and shapes — what
/// a receiver can require of a declared payload size before reading a byte of it.
pub fn encoded_len(params: &CodecParams, shapes: &[TensorShape]) -> Result<u64> {
    params.validate()?;
    let overflow = || Error::TooLarge {
        declared: u64::MAX,
        max: u64::MAX,
    };
    let mut len = FIXED_HEADER_LEN as u64;
    for s in shapes {
        let layout = Layout::of(s, params)?;
        let (section, _) = section_sizes(&layout, params).ok_or_else(overflow)?;
        len = len
            .checked_add(1 + 4 * s.dims().len() as u64)
            .and_then(|l| l.checked_add(section))
            .ok_or_else(overflow)?;
    }
    Ok(len)
}
