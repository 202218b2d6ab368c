//! The checks an update passes before the state machine sees it, in order, each with a named
//! reject reason. Header checks run before a payload byte is read; payload checks after the
//! bytes arrived and hashed; contribution checks on the decoded update. Scoring and
//! validation (a later stage) add [`ContributionCheck`]s.

use tributary_codec::{Contribution, decode};
use tributary_proto::identity::{self, IdentityError};
use tributary_proto::v1alpha1::UpdateHeader;
use tributary_proto::{convert, is_compatible};

use super::RejectReason;
use super::run::RunConfig;

/// Why an update is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
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
    /// The state machine's verdict (round, membership, duplicates, deadline).
    Round(RejectReason),
}

impl Reject {
    pub fn label(&self) -> &'static str {
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
            Self::Round(r) => r.label(),
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::Malformed(m) | Self::Check(_, m) => m.clone(),
            other => other.label().replace('-', " "),
        }
    }
}

/// Header checks: everything that can be decided before reading the payload. `peer_key` is
/// the registered public key of the header's peer, if any.
pub fn check_header(
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
    if header.payload_bytes != run.update_bytes {
        return Err(Reject::WrongSize);
    }
    let message = identity::update_message(
        &header.run_id,
        header.round,
        &header.peer_id,
        &run.wire_codec,
        &header.payload_sha256,
    );
    identity::verify(key, &message, &header.signature).map_err(|e| match e {
        IdentityError::BadSignature | IdentityError::BadSignatureLength => Reject::BadSignature,
        _ => Reject::UnknownPeer,
    })
}

/// Payload checks: the bytes are the ones the header declared and signed.
pub fn check_payload(header: &UpdateHeader, payload: &[u8]) -> Result<(), Reject> {
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
pub struct NonDegenerate;

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
pub fn check_contribution(
    run: &RunConfig,
    payload: &[u8],
    checks: &[Box<dyn ContributionCheck>],
) -> Result<Contribution, Reject> {
    let c = decode(payload, &run.decode_limits()).map_err(|e| Reject::Malformed(e.to_string()))?;
    for check in checks {
        check
            .check(&c)
            .map_err(|why| Reject::Check(check.name(), why))?;
    }
    Ok(c)
}

/// The built-in contribution checks.
pub fn default_checks() -> Vec<Box<dyn ContributionCheck>> {
    vec![Box::new(NonDegenerate)]
}
