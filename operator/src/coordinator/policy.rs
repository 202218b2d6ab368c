//! The rules of a run's rounds, taken from its `ParticipationSpec`, with times in milliseconds.

use serde::{Deserialize, Serialize};
use tributary_crds::{ParticipationSpec, StragglerPolicy};

use crate::Error;

/// How many times straggler policy `extend` extends a round's deadline before skipping it: three
/// windows give slow peers room without letting one missing peer stall the run.
pub const MAX_EXTENSIONS: u32 = 3;

/// Round timing and membership limits. Built only from a validated [`ParticipationSpec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundPolicy {
    min_peers: u32,
    max_peers: u32,
    reserve_peers: u32,
    round_deadline_ms: u64,
    submission_window_ms: u64,
    straggler_policy: StragglerPolicy,
    max_extensions: u32,
    heartbeat_timeout_ms: u64,
    /// Rounds are judged (`scoring.enabled`): every member may submit and the Gauntlet picks
    /// `max_peers` of them by rating; otherwise the first `max_peers` accepted close the round.
    #[serde(default)]
    selects: bool,
}

impl RoundPolicy {
    /// Members needed to open a round, and accepted submissions needed to aggregate it.
    pub fn min_peers(&self) -> u32 {
        self.min_peers
    }

    /// Most submissions aggregated per round.
    pub fn max_peers(&self) -> u32 {
        self.max_peers
    }

    /// Most submissions accepted per round: every member's when rounds are judged (so arrival
    /// order never decides who is aggregated), else `max_peers`.
    pub fn accepts(&self) -> u32 {
        if self.selects {
            self.capacity()
        } else {
            self.max_peers
        }
    }

    /// Members beyond `max_peers`: they train too and stand in for peers that fail.
    pub fn reserve_peers(&self) -> u32 {
        self.reserve_peers
    }

    /// Most members of the run: `max_peers + reserve_peers`.
    pub fn capacity(&self) -> u32 {
        self.max_peers.saturating_add(self.reserve_peers)
    }

    /// From a round's opening to its boundary (the end of local training).
    pub fn round_deadline_ms(&self) -> u64 {
        self.round_deadline_ms
    }

    /// After the boundary, how long submissions are still accepted; also one extension's length.
    pub fn submission_window_ms(&self) -> u64 {
        self.submission_window_ms
    }

    /// From a round's opening to its deadline: `round_deadline_ms + submission_window_ms`.
    pub fn round_duration_ms(&self) -> u64 {
        self.round_deadline_ms
            .saturating_add(self.submission_window_ms)
    }

    pub fn straggler_policy(&self) -> StragglerPolicy {
        self.straggler_policy
    }

    /// Extensions allowed under straggler policy `extend` ([`MAX_EXTENSIONS`]).
    pub fn max_extensions(&self) -> u32 {
        self.max_extensions
    }

    /// Silence after which a member expires.
    pub fn heartbeat_timeout_ms(&self) -> u64 {
        self.heartbeat_timeout_ms
    }
}

impl TryFrom<&ParticipationSpec> for RoundPolicy {
    type Error = Error;

    fn try_from(spec: &ParticipationSpec) -> Result<Self, Error> {
        let invalid = |what: &str| Err(Error::InvalidParticipation(what.to_owned()));
        if spec.min_peers == 0 {
            return invalid("minPeers must be at least 1");
        }
        if spec.max_peers < spec.min_peers {
            return invalid("maxPeers must be at least minPeers");
        }
        if spec.round_deadline_seconds == 0 {
            return invalid("roundDeadlineSeconds must be at least 1");
        }
        if spec.submission_window_seconds == 0 {
            return invalid("submissionWindowSeconds must be at least 1");
        }
        if spec.heartbeat_timeout_seconds == 0 {
            return invalid("heartbeatTimeoutSeconds must be at least 1");
        }
        let ms = |seconds: u32| u64::from(seconds) * 1000;
        Ok(Self {
            min_peers: spec.min_peers,
            max_peers: spec.max_peers,
            reserve_peers: spec.reserve_peers,
            round_deadline_ms: ms(spec.round_deadline_seconds),
            submission_window_ms: ms(spec.submission_window_seconds),
            straggler_policy: spec.straggler_policy,
            max_extensions: MAX_EXTENSIONS,
            heartbeat_timeout_ms: ms(spec.heartbeat_timeout_seconds),
            selects: spec.scoring.enabled,
        })
    }
}

impl TryFrom<ParticipationSpec> for RoundPolicy {
    type Error = Error;

    fn try_from(spec: ParticipationSpec) -> Result<Self, Error> {
        Self::try_from(&spec)
    }
}
