//! What a simulated run reports.

use serde::{Deserialize, Serialize};

use super::config::SimConfig;
use crate::provenance::Machine;

/// One evaluation of the global model on the held-out batch.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Point {
    /// Tokens processed by all peers so far.
    pub tokens: u64,
    /// Inner steps each peer has taken.
    pub step: u64,
    /// Bytes each peer has sent so far.
    pub bytes_per_peer: u64,
    /// Mean training loss since the previous point (0 at the start).
    pub train_loss: f64,
    /// Held-out loss (nats/token).
    pub eval_loss: f64,
    /// Held-out loss minus the floor on the same tokens.
    pub excess: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub config: SimConfig,
    /// True cross-entropy of the held-out tokens under the language (nats/token).
    pub floor: f64,
    pub final_eval_loss: f64,
    pub excess: f64,
    pub bytes_per_peer: u64,
    pub parameters: u64,
    pub wall_seconds: f64,
    /// Fingerprint of the final global parameters.
    pub fingerprint: String,
    pub points: Vec<Point>,
    /// The machine and commit of the run; absent in reports from before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<Machine>,
}
