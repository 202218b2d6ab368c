//! The Tributary operator: the kube-rs controller of TrainingRuns and Contributors, and the
//! per-run coordinator that runs a run's rounds.

// What another crate (the binary, tests, benches, e2e) uses is `pub`; the rest is crate-private.
#![warn(unreachable_pub)]

pub mod cli;
pub mod controller;
pub mod coordinator;
mod error;

pub use error::{Error, Result};
