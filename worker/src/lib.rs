//! The Tributary worker: trains a model with libtorch, compresses its pseudo-gradients and
//! exchanges them with the run's coordinator. Runs in a pod or on any external machine.

pub mod cli;
pub mod self_check;
pub mod telemetry;
