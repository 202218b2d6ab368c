//! The Tributary worker: trains a model with libtorch, compresses its pseudo-gradients and
//! exchanges them with the run's coordinator. Runs in a pod or on any external machine.

// What another crate (the binary, tests, benches) uses is `pub`; the rest is crate-private.
#![warn(unreachable_pub)]

pub mod checkpoint;
pub mod cli;
mod devnet;
pub mod evidence;
pub mod export;
pub mod model;
mod peer;
pub mod provenance;
mod self_check;
pub mod simulate;
pub mod status;
pub mod train;
