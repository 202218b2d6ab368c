//! Bytes → contribution, strictly: every malformed input is a typed error, never a panic.

use super::header::{Cursor, DecodeLimits, inspect_exact};
use crate::bits::BitReader;
use crate::error::{Error, Result};
use crate::params::{CodecParams, MAX_ABS_PARAM, MAX_SCALE, MIN_PRODUCTION_SCALE, QuantMode};
use crate::positions::EliasFano;
use crate::quant::{Quant, bf16_to_f32};
use crate::shape::{Chunking, Layout};
use crate::tensor::{CompressedTensor, Contribution, Payload, SparseTensor};

/// Decodes one contribution, checking it against `limits` before allocating anything sized
/// by the input (see [`crate::HeaderInfo::allocation_bound`]).
pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<Contribution> {
    let info = inspect_exact(bytes, limits)?;
    let params = info.params;
    let mut c = Cursor {
        bytes,
        pos: info.header_len as usize,
    };
    let mut tensors = Vec::with_capacity(info.shapes.len());
    for (index, shape) in info.shapes.into_iter().enumerate() {
        let payload = match Layout::of(&shape, &params)? {
            Layout::Dense { numel } => {
                let raw = c.take(numel * 4)?;
                let v: Vec<f32> = raw
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                if !v.iter().all(|x| x.is_finite()) {
                    return Err(Error::NonFiniteValue { tensor: index });
                }
                Payload::Dense(v)
            }
            Layout::Sparse(ch) => Payload::Sparse(sparse(&mut c, &ch, &params, index)?),
        };
        tensors.push(CompressedTensor { shape, payload });
    }
    Ok(Contribution { params, tensors })
}

fn sparse(
    c: &mut Cursor<'_>,
    ch: &Chunking,
    p: &CodecParams,
    tensor: usize,
) -> Result<SparseTensor> {
    let quant = read_quant(c, ch, p, tensor)?;
    let ef = EliasFano::new(ch.chunk_len(), ch.k);
    let pos_len = (ch.nchunks as u64 * ef.block_bits()).div_ceil(8) as usize;
    let mut r = BitReader::new(c.take(pos_len)?);
    let mut positions = vec![0u16; ch.kept()];
    for (chunk, out) in positions.chunks_mut(ch.k).enumerate() {
        ef.decode(&mut r, out, tensor, chunk)?;
    }
    r.finish_strict(|| Error::NonZeroPadding { tensor })?;
    let code_len = (ch.kept() as u64 * u64::from(p.bits)).div_ceil(8) as usize;
    let raw = c.take(code_len)?;
    let per_byte = 8 / usize::from(p.bits);
    let mask = ((1u16 << p.bits) - 1) as u8;
    let mut codes = Vec::with_capacity(raw.len() * per_byte);
    for &b in raw {
        for j in 0..per_byte {
            codes.push((b >> (j * usize::from(p.bits))) & mask);
        }
    }
    if codes.iter().skip(ch.kept()).any(|&q| q != 0) {
        return Err(Error::NonZeroPadding { tensor });
    }
    codes.truncate(ch.kept());
    Ok(SparseTensor {
        chunking: *ch,
        positions,
        codes,
        quant,
        bits: p.bits,
    })
}

/// Reads and checks a sparse section's k and quantization parameters.
pub(crate) fn read_quant(
    c: &mut Cursor<'_>,
    ch: &Chunking,
    p: &CodecParams,
    tensor: usize,
) -> Result<Quant> {
    let declared = c.u16()?;
    if usize::from(declared) != ch.k {
        return Err(Error::WrongK {
            tensor,
            declared: u64::from(declared),
            expected: ch.k as u64,
        });
    }
    let levels = p.levels();
    let bad = || Error::BadQuantParam { tensor };
    Ok(match p.mode {
        QuantMode::Production => {
            let shift = c.f32()?;
            let scale = c.f32()?;
            let lut = (0..levels).map(|_| c.f32()).collect::<Result<Vec<f32>>>()?;
            if !scale.is_finite() || !(MIN_PRODUCTION_SCALE..=MAX_SCALE).contains(&scale.abs()) {
                return Err(Error::ScaleOutOfRange { tensor, scale });
            }
            if !in_range(shift) || !lut.iter().all(|&l| in_range(l)) {
                return Err(bad());
            }
            Quant::Production { shift, scale, lut }
        }
        QuantMode::Balanced => {
            let lut = (0..levels / 2)
                .map(|_| c.f32())
                .collect::<Result<Vec<f32>>>()?;
            if !lut.iter().all(|&l| in_range(l)) {
                return Err(bad());
            }
            let raw = c.take(ch.nchunks * 2)?;
            let chunk_scales: Vec<u16> = raw
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .collect();
            if let Some(&s) = chunk_scales.iter().find(|&&s| !scale_ok(s)) {
                return Err(Error::ScaleOutOfRange {
                    tensor,
                    scale: bf16_to_f32(s),
                });
            }
            Quant::Balanced { lut, chunk_scales }
        }
    })
}

fn in_range(x: f32) -> bool {
    x.is_finite() && x.abs() <= MAX_ABS_PARAM
}

/// A chunk scale: finite, in [+0, MAX_SCALE]; a set sign bit is never canonical.
fn scale_ok(bits: u16) -> bool {
    let s = bf16_to_f32(bits);
    bits & 0x8000 == 0 && s.is_finite() && s <= MAX_SCALE
}
