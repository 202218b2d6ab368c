//! Byte format of a contribution (specified in docs/protocol.md, "Codec byte format").

mod decode;
mod encode;
mod header;
mod production;

pub use decode::decode;
pub(crate) use decode::read_quant;
pub use encode::encode;
pub(crate) use header::{Cursor, inspect_exact, read_shapes, write_shapes};
pub use header::{DecodeLimits, HeaderInfo, encoded_len, inspect};
pub use production::production_wire_bytes;

/// First four bytes of every encoded contribution.
pub const MAGIC: [u8; 4] = *b"TRBC";
/// Format version written by this crate; decoders accept only this one.
pub const FORMAT_VERSION: u16 = 1;
/// Fixed header bytes before the shapes.
pub const FIXED_HEADER_LEN: usize = 22;
