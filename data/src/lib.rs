//! Training tokens for Tributary, as plain Rust (no libtorch): the embedded synthetic language
//! whose entropy floor is computable, memory-mapped token shards, and `prepare-data`.
//!
//! Every batch is addressed by a [`StreamId`] (run seed, peer, round, step), so any validator
//! can regenerate exactly the tokens a peer was assigned.

mod error;
pub mod prepare;
pub mod shards;
mod stream;
pub mod synthetic;

pub use error::{Error, Result};
pub use stream::{Batch, StreamId, TokenSource};
