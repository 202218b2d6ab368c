//! Gauntlet: which of a round's accepted candidates are aggregated, and with what weight.
//!
//! Pure logic, no IO: cheap checks over one round's candidates ([`checks`], using compact
//! [`sketch`]es of earlier updates and aggregates), per-peer ratings ([`rating`], Weng–Lin via
//! `skillratings`), per-peer standing ([`standing`]: moving average, sync, probation,
//! penalties), the selection with aggregation weights ([`selection`]), the [`ledger`] that
//! closes a round with them, and [`judge`], one whole round (checks, scores, selection) over the
//! state carried between rounds. Every state here is
//! serde-serializable so the coordinator's store can persist it. docs/security.md ("Gauntlet:
//! scoring and selection") describes the rules and their defaults.

use std::fmt;

use serde::{Deserialize, Serialize};

pub mod checks;
pub mod config;
mod exact;
pub mod judge;
pub mod ledger;
pub mod rating;
pub mod selection;
pub mod sketch;
pub mod standing;

#[cfg(test)]
mod props;

/// A peer's identity: the hex of a hash of its ed25519 public key (the coordinator derives it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PeerId(String);

impl PeerId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for PeerId {
    fn from(id: String) -> Self {
        Self(id)
    }
}

impl From<&str> for PeerId {
    fn from(id: &str) -> Self {
        Self(id.to_owned())
    }
}
