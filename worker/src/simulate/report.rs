//! What a simulated run reports.

use std::collections::BTreeMap;

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
    /// How the Gauntlet treated each peer (judged runs only), in slot order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<PeerOutcome>,
    /// Rounds whose every update was left out (no aggregate; judged runs only).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rounds_skipped: u64,
}

fn is_zero(x: &u64) -> bool {
    *x == 0
}

/// One peer of a judged run: in which rounds its update was aggregated, and why it was not.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerOutcome {
    /// Its id in the run ("p00", ... in slot order).
    pub peer: String,
    /// "honest", or the hostile kind it plays.
    pub role: String,
    /// Rounds its update was aggregated in.
    pub aggregated: u64,
    /// The sum of its aggregation weights (each round's weights sum to 1).
    pub weight: f64,
    /// The last round it was aggregated in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_aggregated: Option<u64>,
    /// Rounds it was left out of, by reason label.
    pub left_out: BTreeMap<String, u64>,
    /// The rounds it was excluded in (a check, its standing, a negative score), as inclusive
    /// ranges.
    pub excluded: Vec<(u64, u64)>,
}

impl PeerOutcome {
    pub fn new(peer: &str, role: &str) -> Self {
        Self {
            peer: peer.to_owned(),
            role: role.to_owned(),
            ..Self::default()
        }
    }

    pub fn is_honest(&self) -> bool {
        self.role == HONEST
    }

    pub(super) fn selected(&mut self, round: u64, weight: f64) {
        self.aggregated += 1;
        self.weight += weight;
        self.last_aggregated = Some(round);
    }

    pub(super) fn left_out(&mut self, round: u64, reason: &str, exclusion: bool) {
        *self.left_out.entry(reason.to_owned()).or_default() += 1;
        if !exclusion {
            return;
        }
        match self.excluded.last_mut() {
            Some((_, end)) if *end + 1 == round => *end = round,
            _ => self.excluded.push((round, round)),
        }
    }

    /// The excluded rounds as "3–7, 9".
    pub fn excluded_ranges(&self) -> String {
        self.excluded
            .iter()
            .map(|(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}–{b}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The role of an honest peer.
pub const HONEST: &str = "honest";
