//! Who may join a run, how many are aggregated, round timing, and Gauntlet-style scoring.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Pattern of a peer's ed25519 public key: 32 bytes as 64 lowercase hex digits.
pub const PUBLIC_KEY_PATTERN: &str = "^[0-9a-f]{64}$";

/// Most validators the operator runs for one run: each evaluates every candidate it is given,
/// so more than a few only multiply the same work.
pub const MAX_VALIDATOR_REPLICAS: u32 = 16;

/// Admission, round timing and scoring of peers.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ParticipationSpec {
    /// open: anyone with a key may join; allowlist: only the keys in `allowlist`.
    pub mode: ParticipationMode,
    /// Admitted peers' ed25519 public keys (64 lowercase hex digits) when `mode` is allowlist.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = "^[0-9a-f]{64}$")))]
    pub allowlist: Vec<String>,
    /// Fewest members a round needs to open, and fewest submissions it needs to be aggregated
    /// at its deadline (ours: 1).
    #[schemars(range(min = 1))]
    pub min_peers: u32,
    /// Most peers aggregated per round (published: 20).
    #[schemars(range(min = 1))]
    pub max_peers: u32,
    /// Peers beyond `maxPeers` kept ready to replace failures (published: 10).
    pub reserve_peers: u32,
    /// Seconds from a round's opening to its boundary, the end of local training (ours).
    #[schemars(range(min = 1))]
    pub round_deadline_seconds: u32,
    /// Seconds after the round boundary during which submissions are accepted; later ones are
    /// ignored (production: 70).
    #[schemars(range(min = 1))]
    pub submission_window_seconds: u32,
    /// What happens when fewer than `minPeers` submitted by the end of the window.
    pub straggler_policy: StragglerPolicy,
    /// A peer with no heartbeat for this long is dropped from the round (ours).
    #[schemars(range(min = 1))]
    pub heartbeat_timeout_seconds: u32,
    /// Scoring of contributions (Gauntlet, arXiv 2505.21684).
    pub scoring: ScoringSpec,
}

impl Default for ParticipationSpec {
    fn default() -> Self {
        Self {
            mode: ParticipationMode::Open,
            allowlist: Vec::new(),
            min_peers: 1,
            max_peers: 20,
            reserve_peers: 10,
            round_deadline_seconds: 600,
            submission_window_seconds: 70,
            straggler_policy: StragglerPolicy::Aggregate,
            heartbeat_timeout_seconds: 30,
            scoring: ScoringSpec::default(),
        }
    }
}

impl ParticipationSpec {
    /// Whether `public_key` (hex) may join under this policy.
    pub fn admits(&self, public_key: &str) -> bool {
        match self.mode {
            ParticipationMode::Open => true,
            ParticipationMode::Allowlist => self
                .allowlist
                .iter()
                .any(|key| key.eq_ignore_ascii_case(public_key)),
        }
    }

    /// Peers admitted to a round at most: aggregated plus reserves.
    pub fn admitted_peers(&self) -> u32 {
        self.max_peers.saturating_add(self.reserve_peers)
    }
}

/// Who may join.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ParticipationMode {
    /// Anyone with a key (permissionless).
    #[default]
    Open,
    /// Only the keys listed in `allowlist`.
    Allowlist,
}

/// What the coordinator does when a round's window closes with fewer than `minPeers` submissions.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StragglerPolicy {
    /// Aggregate whatever arrived (at least one submission).
    #[default]
    Aggregate,
    /// Extend the window, one window at a time (at most 3), until `minPeers` have submitted;
    /// then skip the round.
    Extend,
    /// Publish no aggregate for the round; peers keep θ and their error feedback.
    Skip,
}

/// Gauntlet-style scoring (arXiv 2505.21684): each contribution is applied alone and judged by the
/// loss it removes; low-scoring peers are excluded from aggregation.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ScoringSpec {
    /// Score contributions and exclude low scorers.
    pub enabled: bool,
    /// α of the exponential moving average of the ±1 indicator (published: 0.05).
    #[schemars(range(min = 0.0, max = 1.0), extend("exclusiveMinimum" = true))]
    pub ema_alpha: f64,
    /// Rounds before a low average can zero a peer (published: 10).
    pub warmup_rounds: u32,
    /// After warm-up, a moving average below this zeroes the peer (published: 0.1).
    #[schemars(range(min = -1.0, max = 1.0))]
    pub zero_below: f64,
    /// Top-k position overlap at which the later submitter is marked a copier (published: 0.4).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub copy_overlap_threshold: f64,
    /// Scale of the outer lr at which a validator applies one update alone (published: 0.2).
    #[schemars(range(min = 0.0, max = 1.0), extend("exclusiveMinimum" = true))]
    pub eval_lr_scale: f64,
    /// ed25519 public keys (64 lowercase hex digits) of the validators this run trusts to score
    /// updates (`tributary-worker validate --key`). Empty: rounds are judged by the
    /// coordinator's cheap checks and the ratings so far alone, and their status says so.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = "^[0-9a-f]{64}$")))]
    pub validators: Vec<String>,
    /// Validators the operator runs in-cluster for this run, each with a key of its own that
    /// the operator mints, keeps in a Secret and adds to the run's trusted validators (on top of
    /// `validators`). 0: none.
    #[schemars(range(max = MAX_VALIDATOR_REPLICAS))]
    pub validator_replicas: u32,
    /// Seconds a closed round waits for every validator's scores before it aggregates without
    /// the missing ones (ours: 30).
    #[schemars(range(min = 1))]
    pub validator_window_seconds: u32,
    /// Updates each validator evaluates per round: 0 evaluates all of them, n a deterministic
    /// sample of n per validator (different validators get different samples).
    pub candidates_per_validator: u32,
}

impl Default for ScoringSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            ema_alpha: 0.05,
            warmup_rounds: 10,
            zero_below: 0.1,
            copy_overlap_threshold: 0.4,
            eval_lr_scale: 0.2,
            validators: Vec::new(),
            validator_replicas: 0,
            validator_window_seconds: 30,
            candidates_per_validator: 0,
        }
    }
}
