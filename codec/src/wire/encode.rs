//! Contribution → bytes.

use super::header::{section_sizes, write_shapes};
use super::{FORMAT_VERSION, MAGIC};
use crate::bits::BitWriter;
use crate::error::{Error, Result};
use crate::positions::EliasFano;
use crate::quant::Quant;
use crate::shape::Layout;
use crate::tensor::{Contribution, Payload};

/// Encodes a contribution; the output is a pure function of its content.
pub fn encode(c: &Contribution) -> Result<Vec<u8>> {
    let p = &c.params;
    p.validate()?;
    let count = u32::try_from(c.tensors.len()).map_err(|_| Error::TooManyTensors {
        count: c.tensors.len() as u64,
        max: u64::from(u32::MAX),
    })?;
    let mut len = 22u64;
    for (i, t) in c.tensors.iter().enumerate() {
        if !t.layout_matches(p) {
            return Err(Error::IncompatibleContribution { index: i });
        }
        let layout = Layout::of(&t.shape, p)?;
        let (b, _) = section_sizes(&layout, p).ok_or(Error::InvalidShape("tensor too large"))?;
        len += 1 + 4 * t.shape.dims().len() as u64 + b;
    }
    let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&p.chunk_side.to_le_bytes());
    out.extend_from_slice(&p.k_per_chunk.to_le_bytes());
    out.extend_from_slice(&[p.bits, p.mode_byte(), p.one_d_byte(), 0]);
    out.extend_from_slice(&p.beta.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    write_shapes(&mut out, c.tensors.iter().map(|t| &t.shape));
    for t in &c.tensors {
        match &t.payload {
            Payload::Dense(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Payload::Sparse(s) => {
                out.extend_from_slice(&(s.k() as u16).to_le_bytes());
                match &s.quant {
                    Quant::Production { shift, scale, lut } => {
                        out.extend_from_slice(&shift.to_le_bytes());
                        out.extend_from_slice(&scale.to_le_bytes());
                        lut.iter()
                            .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
                    }
                    Quant::Balanced { lut, chunk_scales } => {
                        lut.iter()
                            .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
                        chunk_scales
                            .iter()
                            .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
                    }
                }
                let ef = EliasFano::new(s.chunking.chunk_len(), s.k());
                let mut w = BitWriter::new(&mut out);
                for c in 0..s.num_chunks() {
                    ef.encode(s.chunk_positions(c), &mut w);
                }
                w.finish();
                let mut w = BitWriter::new(&mut out);
                for &q in &s.codes {
                    w.write(u64::from(q), u32::from(p.bits));
                }
                w.finish();
            }
        }
    }
    debug_assert_eq!(out.len() as u64, len);
    Ok(out)
}
