//! SparseLoCo compression of pseudo-gradients (pure Rust over slices).
//!
//! Per tensor: error feedback `e ← β·e + Δ`, exact top-k per chunk, 2/4/8-bit quantization
//! (production or balanced mode), `e ← e − decoded`; a versioned byte format with
//! Elias–Fano positions and a strict, allocation-bounded decoder; aggregation of many
//! peers into dense buffers or into the sparse published aggregate, which has its own byte
//! format. Both byte formats are specified in docs/protocol.md.

mod aggregate;
mod aggregate_wire;
mod bits;
mod error;
mod error_feedback;
mod params;
mod positions;
mod quant;
mod shape;
mod simd;
mod similarity;
mod tensor;
mod topk;
mod wire;

pub use aggregate::{
    AggregateRange, AggregateSegment, AggregateTensor, AggregationPlan, AggregationRule,
    Aggregator, ContributionStats, ContributionView, PeerScales, SparseAggregate, TensorStats,
    position_overlap, tensor_stats,
};
pub use aggregate_wire::{
    AGGREGATE_FORMAT_VERSION, AGGREGATE_MAGIC, decode_aggregate, encode_aggregate,
};
pub use error::{Error, Result};
pub use error_feedback::{
    ErrorFeedback, compress, compress_contribution, compress_contribution_into,
};
pub use params::{
    CodecParams, MAX_ABS_PARAM, MAX_CHUNK_SIDE, MAX_SCALE, MIN_PRODUCTION_SCALE, OneDPolicy,
    QuantMode,
};
pub use quant::{Quant, code_entropy_bits};
pub use shape::{MAX_NDIM, TensorShape};
pub use similarity::{Similarity, similarity};
pub use tensor::{CompressedTensor, Contribution, Payload, SparseTensor};
pub use wire::{
    DecodeLimits, FORMAT_VERSION, HeaderInfo, MAGIC, decode, encode, encoded_len, inspect,
    production_wire_bytes,
};
