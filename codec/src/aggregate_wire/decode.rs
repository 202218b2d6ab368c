//! Bytes → published aggregate, strictly: every malformed input is a typed error, never a panic.

use super::positions::{PositionCode, decode_positions};
use super::{AGGREGATE_FORMAT_VERSION, AGGREGATE_MAGIC, FIXED_HEADER_LEN, section_len};
use crate::aggregate::{AggregateSegment, AggregateTensor, Carried, SparseAggregate};
use crate::error::{Error, Result};
use crate::shape::TensorShape;
use crate::wire::{Cursor, DecodeLimits, read_shapes};
use rayon::prelude::*;

/// Inputs (and value runs) from this size on are decoded in parallel.
const PARALLEL_BYTES: usize = 1 << 20;

/// Decodes a published aggregate. Shapes are checked against `limits` (`max_tensors`,
/// `max_total_elements`, `expected_shapes`; `expected_params` does not apply) and the exact
/// length against the header before anything sized by the input is allocated; what is then
/// allocated is at most about 3× the input.
pub fn decode_aggregate(bytes: &[u8], limits: &DecodeLimits) -> Result<SparseAggregate> {
    let mut c = Cursor { bytes, pos: 0 };
    if c.take(4)? != AGGREGATE_MAGIC {
        return Err(Error::BadMagic);
    }
    let version = c.u16()?;
    if version != AGGREGATE_FORMAT_VERSION {
        return Err(Error::UnsupportedVersion(version));
    }
    if c.u16()? != 0 {
        return Err(Error::ReservedNonZero);
    }
    let count = u64::from_le_bytes(c.array()?);
    if count > limits.max_tensors {
        return Err(Error::TooManyTensors {
            count,
            max: limits.max_tensors,
        });
    }
    debug_assert_eq!(c.pos as u64, FIXED_HEADER_LEN);
    let shapes = read_shapes(&mut c, count, limits)?;
    // `read_shapes` read ≥ 1 byte per shape, so this list is bounded by the input too.
    let mut counts = Vec::with_capacity(shapes.len());
    let mut end = 0u64;
    for (tensor, s) in shapes.iter().enumerate() {
        let m = u64::from_le_bytes(c.array()?);
        let n = s.numel();
        if m > n {
            return Err(Error::WrongCount { tensor, chunk: 0 });
        }
        let len = section_len(n, m).ok_or(Error::TooLarge {
            declared: n,
            max: limits.max_total_elements,
        })?;
        end = end.saturating_add(len);
        counts.push(m);
    }
    let header = c.pos as u64;
    let needed = header.saturating_add(end);
    let available = bytes.len() as u64;
    if available < needed {
        return Err(Error::Truncated { needed, available });
    }
    if available > needed {
        return Err(Error::TrailingBytes {
            extra: available - needed,
        });
    }
    let mut sections = Vec::with_capacity(shapes.len());
    for (s, &m) in shapes.iter().zip(&counts) {
        let len = section_len(s.numel(), m).unwrap_or(0) as usize;
        sections.push(c.take(len)?);
    }
    let jobs = shapes.into_iter().zip(counts).zip(sections).enumerate();
    let decode = |(tensor, ((shape, m), bytes))| section(tensor, shape, m, bytes);
    // Small inputs stay on the caller's thread: no pool round trip for a few kilobytes.
    let tensors = if bytes.len() < PARALLEL_BYTES {
        jobs.map(decode).collect::<Result<Vec<_>>>()?
    } else {
        jobs.collect::<Vec<_>>()
            .into_par_iter()
            .map(decode)
            .collect::<Result<Vec<_>>>()?
    };
    Ok(SparseAggregate { tensors })
}

fn section(tensor: usize, shape: TensorShape, m: u64, bytes: &[u8]) -> Result<AggregateTensor> {
    let n = shape.numel();
    let code = PositionCode::of(n, m);
    let (pos, vals) = bytes.split_at((code.bytes(n, m) as usize).min(bytes.len()));
    let carried = if code == PositionCode::Bitmap && Carried::prefers_bitmap(n, m) {
        // The wire bitmap is the in-memory one: copy the words, then check them.
        let mut bits = vec![0u64; n.div_ceil(64) as usize];
        for (w, b) in bits.iter_mut().zip(pos.chunks(8)) {
            let mut a = [0u8; 8];
            a[..b.len()].copy_from_slice(b);
            *w = u64::from_le_bytes(a);
        }
        check_bitmap(&bits, n, m, tensor)?;
        Carried::Bitmap(bits)
    } else if Carried::prefers_bitmap(n, m) {
        let mut bits = vec![0u64; n.div_ceil(64) as usize];
        decode_positions(code, n, m, pos, tensor, |p| {
            if let Some(w) = bits.get_mut((p / 64) as usize) {
                *w |= 1 << (p % 64);
            }
        })?;
        Carried::Bitmap(bits)
    } else {
        let mut list = Vec::with_capacity(m as usize);
        decode_positions(code, n, m, pos, tensor, |p| list.push(p))?;
        Carried::List(list)
    };
    let mut values = vec![0f32; m as usize];
    let convert = |(out, raw): (&mut [f32], &[u8])| {
        for (o, b) in out.iter_mut().zip(raw.chunks_exact(4)) {
            *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        out.iter().all(|x| x.is_finite())
    };
    let finite = if vals.len() < PARALLEL_BYTES {
        convert((&mut values, vals))
    } else {
        values
            .par_chunks_mut(PARALLEL_BYTES / 4)
            .zip(vals.par_chunks(PARALLEL_BYTES))
            .all(convert)
    };
    if !finite {
        return Err(Error::NonFiniteValue { tensor });
    }
    Ok(AggregateTensor {
        shape,
        segments: vec![AggregateSegment {
            tensor,
            start: 0,
            end: n,
            carried,
            values,
        }],
    })
}

/// A bitmap of `n` bits has exactly `m` set and none at or past bit n.
fn check_bitmap(bits: &[u64], n: u64, m: u64, tensor: usize) -> Result<()> {
    let tail = n % 64;
    if tail != 0 && bits.last().is_some_and(|w| w >> tail != 0) {
        return Err(Error::NonZeroPadding { tensor });
    }
    let count: u64 = bits.iter().map(|w| u64::from(w.count_ones())).sum();
    if count != m {
        return Err(Error::WrongCount { tensor, chunk: 0 });
    }
    Ok(())
}
