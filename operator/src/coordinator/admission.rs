//! The checks an update passes before the state machine sees it, in order, each with a named
//! reject reason. Header checks run before a payload byte is read; payload checks after the
//! bytes arrived and hashed; contribution checks on the decoded update. Scoring and
//! validation (a later stage) add [`ContributionCheck`]s.

use tributary_codec::{Contribution, decode};
use tributary_proto::identity::{self, IdentityError};
use tributary_proto::v1alpha1::{self, UpdateHeader};
use tributary_proto::{convert, is_compatible};

use super::RejectReason;
use super::run::RunConfig;

/// Why an update is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Reject {
    /// The first message of the stream was not a header.
    HeaderFirst,
    UnsupportedVersion,
    WrongRun,
    UnknownPeer,
    WrongCodec,
    /// The declared payload size is not the run's update size.
    WrongSize,
    BadSignature,
    /// A payload chunk larger than the negotiated chunk size.
    ChunkTooLarge,
    /// More or fewer bytes arrived than the header declared.
    LengthMismatch,
    HashMismatch,
    /// The payload does not decode as this run's contribution.
    Malformed(String),
    /// A contribution check failed.
    Check(&'static str, String),
    /// A header field out of its range (a non-finite loss, say).
    BadHeader(&'static str),
    /// Trained from another version of θ than the open round's.
    StaleModel {
        theirs: u64,
        round: u64,
    },
    /// The state machine's verdict (round, membership, duplicates, deadline).
    Round(RejectReason),
}

impl Reject {
    pub(super) fn label(&self) -> &'static str {
        match self {
            Self::HeaderFirst => "header-first",
            Self::UnsupportedVersion => "unsupported-version",
            Self::WrongRun => "wrong-run",
            Self::UnknownPeer => "unknown-peer",
            Self::WrongCodec => "wrong-codec",
            Self::WrongSize => "wrong-size",
            Self::BadSignature => "bad-signature",
            Self::ChunkTooLarge => "chunk-too-large",
            Self::LengthMismatch => "length-mismatch",
            Self::HashMismatch => "hash-mismatch",
            Self::Malformed(_) => "malformed-payload",
            Self::Check(name, _) => name,
            Self::BadHeader(_) => "bad-header",
            Self::StaleModel { .. } => "stale-model",
            Self::Round(r) => r.label(),
        }
    }

    pub(super) fn message(&self) -> String {
        match self {
            Self::Malformed(m) | Self::Check(_, m) => m.clone(),
            Self::BadHeader(why) => (*why).to_owned(),
            Self::StaleModel { theirs, round } => {
                format!("trained from model version {theirs}; the round trains from {round}")
            }
            other => other.label().replace('-', " "),
        }
    }

    /// The reason as the wire names it.
    pub(super) fn wire(&self) -> v1alpha1::RejectReason {
        use v1alpha1::RejectReason as W;
        match self {
            Self::HeaderFirst => W::HeaderFirst,
            Self::UnsupportedVersion => W::UnsupportedVersion,
            Self::WrongRun => W::WrongRun,
            Self::UnknownPeer => W::UnknownPeer,
            Self::WrongCodec => W::WrongCodec,
            Self::WrongSize => W::WrongSize,
            Self::BadSignature => W::BadSignature,
            Self::ChunkTooLarge => W::ChunkTooLarge,
            Self::LengthMismatch => W::LengthMismatch,
            Self::HashMismatch => W::HashMismatch,
            Self::Malformed(_) => W::MalformedPayload,
            Self::Check(..) => W::CheckFailed,
            Self::BadHeader(_) => W::BadHeader,
            Self::StaleModel { .. } => W::StaleModel,
            Self::Round(r) => r.wire(),
        }
    }
}

/// Largest inner loss a header may report: far above any language model's loss (ln of a
/// 262k vocabulary is 12.5), small enough that sums over any number of updates stay finite.
pub(super) const MAX_INNER_LOSS: f64 = 1e6;

/// Header checks: everything that can be decided before reading the payload. `peer_key` is
/// the registered public key of the header's peer, if any.
pub(super) fn check_header(
    run: &RunConfig,
    header: &UpdateHeader,
    peer_key: Option<&[u8]>,
) -> Result<(), Reject> {
    if !header.version.as_ref().is_some_and(is_compatible) {
        return Err(Reject::UnsupportedVersion);
    }
    if header.run_id != run.run_id {
        return Err(Reject::WrongRun);
    }
    let Some(key) = peer_key else {
        return Err(Reject::UnknownPeer);
    };
    if header.codec.as_ref() != Some(&run.wire_codec) {
        return Err(Reject::WrongCodec);
    }
    if header.payload_bytes != run.plan.tensors().update_bytes() {
        return Err(Reject::WrongSize);
    }
    // Self-reported and only summed into status, but stored: the values and their sums must
    // stay finite and read back.
    if !(header.inner_loss.is_finite() && (0.0..=MAX_INNER_LOSS).contains(&header.inner_loss)) {
        return Err(Reject::BadHeader(
            "inner_loss must be finite, non-negative and at most 1e6",
        ));
    }
    if header.tokens > run.plan.data().tokens_per_round() {
        return Err(Reject::BadHeader(
            "tokens exceed what one peer trains on in a round",
        ));
    }
    identity::verify(key, &identity::update_message(header), &header.signature).map_err(|e| match e
    {
        IdentityError::BadSignature | IdentityError::BadSignatureLength => Reject::BadSignature,
        _ => Reject::UnknownPeer,
    })
}

/// Payload checks: the bytes are the ones the header declared and signed.
pub(super) fn check_payload(header: &UpdateHeader, payload: &[u8]) -> Result<(), Reject> {
    if payload.len() as u64 != header.payload_bytes {
        return Err(Reject::LengthMismatch);
    }
    let declared = convert::digest("payload_sha256", &header.payload_sha256)
        .map_err(|_| Reject::HashMismatch)?;
    if identity::sha256(payload) != declared {
        return Err(Reject::HashMismatch);
    }
    Ok(())
}

/// A check on a decoded contribution.
pub trait ContributionCheck: Send + Sync {
    /// The reject label when it fails.
    fn name(&self) -> &'static str;
    fn check(&self, c: &Contribution) -> Result<(), String>;
}

/// Every carried value is finite and the update is not all zeros: a peer that trained sends a
/// non-zero pseudo-gradient.
pub(super) struct NonDegenerate;

impl ContributionCheck for NonDegenerate {
    fn name(&self) -> &'static str {
        "degenerate-update"
    }

    fn check(&self, c: &Contribution) -> Result<(), String> {
        let stats = c.stats();
        if !stats.finite {
            return Err("the update carries non-finite values".into());
        }
        if stats.norm == 0.0 {
            return Err("the update is all zeros".into());
        }
        Ok(())
    }
}

/// Decodes the payload strictly against the run's codec and shapes, then runs `checks`.
pub(super) fn check_contribution(
    run: &RunConfig,
    payload: &[u8],
    checks: &[Box<dyn ContributionCheck>],
) -> Result<Contribution, Reject> {
    let c = decode(payload, &run.plan.tensors().update_limits())
        .map_err(|e| Reject::Malformed(e.to_string()))?;
    for check in checks {
        check
            .check(&c)
            .map_err(|why| Reject::Check(check.name(), why))?;
    }
    Ok(c)
}

/// The built-in contribution checks.
pub(super) fn default_checks() -> Vec<Box<dyn ContributionCheck>> {
    vec![Box::new(NonDegenerate)]
}
