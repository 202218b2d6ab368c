//! The per-run coordinator. The round logic is a pure state machine (event, machine, policy:
//! no IO, no clock, no async). The IO layer (server, service, store) turns requests and timers into [`Event`]s, feeds them to
//! [`Coordinator::apply`], carries out the returned [`Decision`]s and stores the serialized
//! [`Coordinator`] after every apply (its live state rewritten, its logs appended). docs/protocol.md, "Round state machine", is the spec.

pub mod admission;
mod event;
mod gauntlet;
mod machine;
mod policy;
pub mod run;
pub mod serve;
pub mod server;
pub mod service;
pub mod store;

#[cfg(test)]
mod tests;

pub use event::{Decision, Digest, Event, PeerId, RefuseReason, RejectReason, SkipReason};
pub use machine::{Contribution, Coordinator, LiveState, Phase, PublishedRound, SkippedRound};
pub use policy::{MAX_EXTENSIONS, RoundPolicy};
