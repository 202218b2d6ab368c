//! The Tributary operator: the kube-rs controller of TrainingRuns and Contributors, and the
//! per-run coordinator that runs a run's rounds.

pub mod cli;
pub mod controller;
pub mod coordinator;
mod error;

pub use error::{Error, Result};
