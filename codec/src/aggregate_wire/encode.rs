//! Published aggregate → bytes.

use super::positions::{PositionCode, encode_positions};
use super::{AGGREGATE_FORMAT_VERSION, AGGREGATE_MAGIC, section_len};
use crate::aggregate::{AggregateTensor, Carried, SparseAggregate};
use crate::wire::write_shapes;
use rayon::prelude::*;

/// Encodes a published aggregate; the output is a pure function of its content (positions and
/// value bits), whatever the segmentation or the thread count.
pub fn encode_aggregate(a: &SparseAggregate) -> Vec<u8> {
    let mut header = Vec::new();
    header.extend_from_slice(&AGGREGATE_MAGIC);
    header.extend_from_slice(&AGGREGATE_FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&0u16.to_le_bytes());
    header.extend_from_slice(&(a.tensors.len() as u64).to_le_bytes());
    write_shapes(&mut header, a.tensors.iter().map(|t| t.shape()));
    let mut lens = Vec::with_capacity(a.tensors.len());
    for t in &a.tensors {
        let (n, m) = (t.shape().numel(), t.len() as u64);
        header.extend_from_slice(&m.to_le_bytes());
        // An AggregateTensor holds n ≥ m values in memory: its section fits in memory too.
        lens.push(section_len(n, m).unwrap_or(0) as usize);
    }
    // Zeroed by the allocator (fresh pages): the sections are then written in parallel.
    let mut out = vec![0u8; header.len() + lens.iter().sum::<usize>()];
    let (head, mut rest) = out.split_at_mut(header.len());
    head.copy_from_slice(&header);
    let mut sections = Vec::with_capacity(lens.len());
    for &len in &lens {
        let (s, r) = rest.split_at_mut(len.min(rest.len()));
        sections.push(s);
        rest = r;
    }
    sections
        .into_par_iter()
        .zip(a.tensors.par_iter())
        .for_each(|(s, t)| write_section(t, s));
    out
}

fn write_section(t: &AggregateTensor, dst: &mut [u8]) {
    let (n, m) = (t.shape().numel(), t.len() as u64);
    let code = PositionCode::of(n, m);
    let (pos, mut values) = dst.split_at_mut((code.bytes(n, m) as usize).min(dst.len()));
    if code == PositionCode::Bitmap
        && t.segments
            .iter()
            .all(|s| s.start % 8 == 0 && matches!(s.carried, Carried::Bitmap(_)))
    {
        // Byte-aligned segment bitmaps are the wire bitmap already.
        for s in &t.segments {
            if let Carried::Bitmap(bits) = &s.carried {
                let dst = pos.get_mut((s.start / 8) as usize..).unwrap_or_default();
                for (d, b) in dst
                    .iter_mut()
                    .zip(bits.iter().flat_map(|w| w.to_le_bytes()))
                {
                    *d |= b;
                }
            }
        }
    } else {
        encode_positions(code, m, pos, |f| {
            t.segments.iter().for_each(|s| s.for_each(|p, _| f(p)));
        });
    }
    // Values segment by segment, in parallel: large tensors are most of a round's bytes.
    let mut parts = Vec::with_capacity(t.segments.len());
    for s in &t.segments {
        let (d, r) = values.split_at_mut((4 * s.values.len()).min(values.len()));
        parts.push((d, &s.values));
        values = r;
    }
    parts.into_par_iter().for_each(|(d, v)| {
        for (o, x) in d.chunks_exact_mut(4).zip(v.iter()) {
            o.copy_from_slice(&x.to_le_bytes());
        }
    });
}
