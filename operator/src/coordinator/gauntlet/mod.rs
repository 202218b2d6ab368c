//! Gauntlet: which of a round's accepted candidates are aggregated, and with what weight.
//!
//! Pure logic, no IO: cheap checks over one round's candidates ([`checks`], using compact
//! [`sketch`]es of earlier updates and aggregates), per-peer ratings ([`rating`], Weng–Lin via
//! `skillratings`), per-peer standing ([`standing`]: moving average, sync, probation,
//! penalties), the selection with aggregation weights ([`selection`]) and the [`ledger`] that
//! closes a round with them. Every state here is
//! serde-serializable so the coordinator's store can persist it. docs/security.md ("Gauntlet:
//! scoring and selection") describes the rules and their defaults.
// Wired into the coordinator (store, SubmitScores, aggregation) in the next step of issue 18.
#![allow(dead_code)]

pub(crate) mod checks;
pub(crate) mod config;
mod exact;
pub(crate) mod ledger;
pub(crate) mod rating;
pub(crate) mod selection;
pub(crate) mod sketch;
pub(crate) mod standing;

#[cfg(test)]
mod props;
