//! Published aggregate → bytes.

use super::positions::{PositionCode, encode_positions};
use super::{AGGREGATE_FORMAT_VERSION, AGGREGATE_MAGIC, section_len};
use crate::aggregate::{AggregateTensor, SparseAggregate};
use crate::wire::write_shapes;
use rayon::prelude::*;

/// Encodes a published aggregate; the output is a pure function of its content (positions and
/// value bits), whatever the segmentation or the thread count.
pub fn encode_aggregate(a: &SparseAggregate) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&AGGREGATE_MAGIC);
    out.extend_from_slice(&AGGREGATE_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(a.tensors.len() as u64).to_le_bytes());
    write_shapes(&mut out, a.tensors.iter().map(|t| t.shape()));
    let mut lens = Vec::with_capacity(a.tensors.len());
    for t in &a.tensors {
        let (n, m) = (t.shape().numel(), t.len() as u64);
        out.extend_from_slice(&m.to_le_bytes());
        // An AggregateTensor holds n ≥ m values in memory: its section fits in memory too.
        lens.push(section_len(n, m).unwrap_or(0) as usize);
    }
    let header = out.len();
    out.resize(header + lens.iter().sum::<usize>(), 0);
    let mut sections = Vec::with_capacity(lens.len());
    let mut rest = out.get_mut(header..).unwrap_or_default();
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
    encode_positions(code, m, pos, |f| {
        t.segments.iter().for_each(|s| s.for_each(|p, _| f(p)));
    });
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
