//! Optimisation: the inner AdamW loop on libtorch tensors and the outer step on flat buffers.

mod adamw;
mod inner;
mod lookahead;
mod outer;
mod round;
mod score;

pub use adamw::{AdamW, AdamWConfig};
pub use inner::{InnerLoop, batch_tensor};
pub use lookahead::lookahead_start;
pub use outer::{OuterStep, pseudo_gradient};
pub use round::{LocalRound, compress_round, local_round, restore_unsent, round_start};
pub use score::{RoundData, RoundScorer, UpdateScore, median_norm};
