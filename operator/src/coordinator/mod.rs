//! The per-run coordinator's round logic as a pure state machine: no IO, no clock, no async.
//! The IO layer (gRPC server, storage) turns requests and timers into [`Event`]s, feeds them to
//! [`Coordinator::apply`], carries out the returned [`Decision`]s and stores the serialized
//! [`Coordinator`] after every apply. docs/protocol.md, "Round state machine", is the spec.

mod event;
mod machine;
mod policy;

#[cfg(test)]
mod tests;

pub use event::{Decision, Digest, Event, PeerId, RefuseReason, RejectReason, SkipReason};
pub use machine::{Contribution, Coordinator, Phase, PublishedRound, SkippedRound};
pub use policy::{MAX_EXTENSIONS, RoundPolicy};
