//! The Tributary worker: trains a model with libtorch, compresses its pseudo-gradients and
//! exchanges them with the run's coordinator. Runs in a pod or on any external machine.

pub mod checkpoint;
pub mod cli;
pub mod devnet;
pub mod evidence;
pub mod export;
pub mod model;
pub mod peer;
pub mod provenance;
pub mod self_check;
pub mod simulate;
pub mod train;
