//! Size of a contribution in the production run's wire format (SPARSELOCO.md), our baseline:
//! 12-bit chunk-local positions packed two per 3 bytes, one byte per value code, and per tensor
//! a 4-entry f32 lookup table plus f32 shift and scale; dense tensors as f32.

use crate::tensor::{Contribution, Payload};

/// Bytes per sparse tensor besides positions and codes: lookup table, shift, scale.
const PER_TENSOR_QUANT_BYTES: u64 = 4 * 4 + 4 + 4;

/// Bytes `c` would take in the production wire format.
pub fn production_wire_bytes(c: &Contribution) -> u64 {
    c.tensors
        .iter()
        .map(|t| match &t.payload {
            Payload::Dense(v) => 4 * v.len() as u64,
            Payload::Sparse(s) => {
                let n = s.positions.len() as u64;
                (n * 12).div_ceil(8) + n + PER_TENSOR_QUANT_BYTES
            }
        })
        .sum()
}
