//! Token shards: a flat little-endian file format (docs/data-shards.md), a crash-safe writer,
//! a memory-mapped reader, and [`ShardSet`], a directory of shards as a [`crate::TokenSource`].

mod header;
mod permutation;
mod set;
mod shard;
mod writer;

#[cfg(test)]
mod tests;

pub use header::{HEADER_BYTES, MAGIC, ShardHeader, TokenWidth, VERSION};
pub use set::{Schedule, ShardSet, WindowCount};
pub use shard::Shard;
pub use writer::ShardWriter;

pub(crate) use writer::StagedShard;
