//! Byte format of a published aggregate (specified in docs/protocol.md, "Aggregate byte format").

mod decode;
mod encode;
mod positions;

pub use decode::decode_aggregate;
pub use encode::encode_aggregate;

/// First four bytes of every encoded aggregate.
pub const AGGREGATE_MAGIC: [u8; 4] = *b"TRBA";
/// Aggregate format version written by this crate; decoders accept only this one.
pub const AGGREGATE_FORMAT_VERSION: u16 = 1;
/// Fixed header bytes before the shapes: magic, version, reserved u16, tensor count u64.
const FIXED_HEADER_LEN: u64 = 16;

/// Bytes of one tensor's section: its positions, then `m` f32 values.
fn section_len(n: u64, m: u64) -> Option<u64> {
    positions::PositionCode::of(n, m)
        .bytes(n, m)
        .checked_add(m.checked_mul(4)?)
}
