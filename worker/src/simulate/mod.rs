//! Single-process simulator: N peers on disjoint streams of the embedded language, trained with
//! `ddp`, `diloco` or `sparseloco` at equal tokens, with loss against the entropy floor and the
//! bytes each peer would have sent.

mod compare;
mod config;
mod judged;
pub mod plot;
mod report;
mod run;

pub use compare::{
    CompareOptions, DDP_LR, INNER_LR, OUTER_LR_DROP, SPARSE_H, SPARSE_OUTER_LR, base, check,
    compare, diloco_outer, hostile_plan, options_of, plan, render_csv, render_markdown,
    round_bytes, write_plots,
};
pub use config::{HostileKind, OuterLrDrop, SimConfig, SimGauntlet, Strategy, WireFormat};
pub use report::{HONEST, PeerOutcome, Point, RunReport};
pub use run::{simulate, simulate_prefix};
