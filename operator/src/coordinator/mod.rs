//! The per-run coordinator. The round logic is a pure state machine (event, machine, policy:
//! no IO, no clock, no async). The IO layer (server, service, store) turns requests and timers into [`Event`]s, feeds them to
//! [`Coordinator::apply`], carries out the returned [`Decision`]s and stores the serialized
//! [`Coordinator`] after every apply (its live state rewritten, its logs appended). docs/protocol.md, "Round state machine", is the spec.

mod admission;
mod event;
mod machine;
mod policy;
mod run;
mod serve;
mod server;
mod service;
mod store;

#[cfg(test)]
mod tests;

pub use event::{
    Decision, Digest, Event, Fingerprint, PeerId, RefuseReason, RejectReason, SkipReason,
};
pub use machine::{
    Contribution, Coordinator, FINGERPRINT_VERSIONS, LiveState, Phase, PublishedRound,
    RESYNC_QUORUM, SkippedRound,
};
pub use policy::{MAX_EXTENSIONS, RoundPolicy};
pub use run::RunConfig;
pub use serve::{run as run_coordinator, serve};
pub use server::{Attach, Shared, now_ms};
pub use service::ExchangeService;
pub use store::UpdateMeta;
pub use tributary_gauntlet::judge::GauntletState;
