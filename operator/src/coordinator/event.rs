//! What the IO layer tells the round state machine ([`Event`]) and what the machine decides in
//! return ([`Decision`]).

use serde::{Deserialize, Serialize};

/// SHA-256 of a payload: a peer's submission or a round's stored aggregate.
pub type Digest = [u8; 32];

pub use tributary_gauntlet::PeerId;

/// An input to the machine. Times are milliseconds on the IO layer's clock; the machine never
/// reads a clock itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A peer asks to join (the IO layer has verified its key and the allowlist).
    Join { peer: PeerId, now_ms: u64 },
    /// A peer is alive, and (optionally) reports the fingerprint of the θ it holds.
    Heartbeat {
        peer: PeerId,
        now_ms: u64,
        fingerprint: Option<Fingerprint>,
    },
    /// A peer leaves the run.
    Leave { peer: PeerId, now_ms: u64 },
    /// A complete submission arrived; signature, size and decoding are already checked.
    Submission {
        peer: PeerId,
        round: u64,
        digest: Digest,
        now_ms: u64,
    },
    /// Time passed. Deadlines and heartbeat expiry are judged after every event; the IO layer
    /// sends ticks so that they are judged when nothing else happens.
    Tick { now_ms: u64 },
    /// The IO layer stored the aggregate of `round` that the machine asked for.
    AggregateStored { round: u64, digest: Digest },
    /// The IO layer judged every accepted update of `round` unfit to aggregate (Gauntlet):
    /// the round ends without an aggregate.
    NothingSelected { round: u64 },
}

/// A hash of a peer's parameters at a model version (the bytes are the peer's, bounded in size
/// by the IO layer).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Fingerprint {
    pub model_version: u64,
    pub digest: Vec<u8>,
}

/// An output of the machine: what the IO layer must do or announce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    Admitted {
        peer: PeerId,
    },
    Refused {
        peer: PeerId,
        reason: RefuseReason,
    },
    /// Removed from the membership: no heartbeat or submission within the heartbeat timeout.
    PeerExpired {
        peer: PeerId,
    },
    RoundOpened {
        round: u64,
        /// Submissions are accepted while the clock is below this.
        deadline_ms: u64,
        /// The round's members, sorted; only they may submit to this round.
        members: Vec<PeerId>,
    },
    Accepted {
        peer: PeerId,
        round: u64,
    },
    Rejected {
        peer: PeerId,
        round: u64,
        reason: RejectReason,
    },
    /// Aggregate these peers' accepted submissions of `round`, store the result and answer with
    /// [`Event::AggregateStored`].
    Aggregate {
        round: u64,
        /// Sorted, without repeats.
        peers: Vec<PeerId>,
    },
    DeadlineExtended {
        round: u64,
        deadline_ms: u64,
    },
    /// The round ends without an aggregate; its number is consumed and θ is unchanged.
    RoundSkipped {
        round: u64,
        reason: SkipReason,
    },
    /// Announce the aggregate of `round`; θ advances by one version.
    Published {
        round: u64,
        digest: Digest,
    },
    /// A member's fingerprint at `model_version` was recorded (new or changed).
    FingerprintRecorded {
        peer: PeerId,
        model_version: u64,
    },
    /// The member's parameters at `model_version` differ from what a majority of at least
    /// [`RESYNC_QUORUM`](super::machine::RESYNC_QUORUM) other members hold: it must re-sync
    /// from a checkpoint.
    ResyncRequired {
        peer: PeerId,
        model_version: u64,
    },
}

/// Why a join was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefuseReason {
    /// The run already has `maxPeers + reservePeers` members.
    RunFull,
}

impl RefuseReason {
    /// Stable label for responses and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::RunFull => "run-full",
        }
    }
}

/// Why a submission was rejected, in the order the machine checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectReason {
    /// The peer is not a member of the run (never joined, left, or expired).
    NotAMember,
    /// No round is open or aggregating.
    RoundNotOpen,
    /// The submission names a round other than the current one.
    WrongRound,
    /// The peer already has an accepted submission for this round.
    Duplicate,
    /// The peer is a member but not in this round's member list (it joined mid-round).
    NotInRound,
    /// The round's deadline has passed.
    PastDeadline,
    /// The round closed early, before its deadline, with `maxPeers` submissions.
    RoundClosed,
}

impl RejectReason {
    /// Every reason, in the order the machine checks.
    pub const ALL: [RejectReason; 7] = [
        Self::NotAMember,
        Self::RoundNotOpen,
        Self::WrongRound,
        Self::Duplicate,
        Self::NotInRound,
        Self::PastDeadline,
        Self::RoundClosed,
    ];

    /// The reason as the wire names it.
    pub fn wire(self) -> tributary_proto::v1alpha1::RejectReason {
        use tributary_proto::v1alpha1::RejectReason as W;
        match self {
            Self::NotAMember => W::NotAMember,
            Self::RoundNotOpen => W::RoundNotOpen,
            Self::WrongRound => W::WrongRound,
            Self::Duplicate => W::Duplicate,
            Self::NotInRound => W::NotInRound,
            Self::PastDeadline => W::PastDeadline,
            Self::RoundClosed => W::RoundClosed,
        }
    }

    /// Stable label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::NotAMember => "not-a-member",
            Self::RoundNotOpen => "round-not-open",
            Self::WrongRound => "wrong-round",
            Self::Duplicate => "duplicate",
            Self::NotInRound => "not-in-round",
            Self::PastDeadline => "past-deadline",
            Self::RoundClosed => "round-closed",
        }
    }
}

/// Why a round ended without an aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SkipReason {
    /// Straggler policy `aggregate`, and nothing was accepted.
    NoSubmissions,
    /// Fewer than `minPeers` accepted, under policy `skip`, or when no round member is left who
    /// could still submit.
    TooFewSubmissions,
    /// Straggler policy `extend`, and fewer than `minPeers` after the last extension.
    ExtensionsExhausted,
    /// Every accepted update was left out by the Gauntlet (checks, scores or standing).
    AllExcluded,
}

impl SkipReason {
    /// Every reason, for the label mapping's tests.
    pub const ALL: [SkipReason; 4] = [
        Self::NoSubmissions,
        Self::TooFewSubmissions,
        Self::ExtensionsExhausted,
        Self::AllExcluded,
    ];

    /// The reason of a stored label ([`label`](Self::label) read back).
    pub fn from_label(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.label() == label)
    }

    /// The reason a wire value names (`None` for unspecified or one this build does not know).
    pub fn from_wire(w: tributary_proto::v1alpha1::SkipReason) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.wire() == w)
    }

    /// The reason as the wire names it.
    pub fn wire(self) -> tributary_proto::v1alpha1::SkipReason {
        use tributary_proto::v1alpha1::SkipReason as W;
        match self {
            Self::NoSubmissions => W::NoSubmissions,
            Self::TooFewSubmissions => W::TooFewSubmissions,
            Self::ExtensionsExhausted => W::ExtensionsExhausted,
            Self::AllExcluded => W::AllExcluded,
        }
    }

    /// Stable label for the store, logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::NoSubmissions => "no-submissions",
            Self::TooFewSubmissions => "too-few-submissions",
            Self::ExtensionsExhausted => "extensions-exhausted",
            Self::AllExcluded => "all-excluded",
        }
    }
}
