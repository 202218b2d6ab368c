//! A test-side "process kubelet" for a cluster whose nodes are fake (see the "Dev cluster"
//! section of the operator contract).
//!
//! - [`plan`], [`env`], [`expand`], [`mounts`], [`service_refs`]: pod spec → process plan (pure).

pub mod env;
pub mod expand;
pub mod mounts;
pub mod plan;
pub mod service_refs;
