//! Cutting a model into ranges that can be aggregated independently (threads, machines).

use crate::error::{Error, Result};
use crate::params::CodecParams;
use crate::shape::{Layout, TensorShape};
use std::ops::Range;

/// Elements per unit of a dense tensor (a sparse tensor's unit is one band of chunks).
const DENSE_UNIT: u64 = 1 << 16;

/// Whole bands of chunks of one tensor (whole blocks of 65,536 elements of a dense tensor):
/// consecutive row-major elements, so the aggregate's positions in it are consecutive too.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AggregateRange {
    pub tensor: usize,
    pub elements: Range<u64>,
}

/// The model's tensors cut into [`AggregateRange`]s of about equal size, in model order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregationPlan {
    ranges: Vec<AggregateRange>,
}

impl AggregationPlan {
    /// A size that keeps two threads busy on a 100M-parameter model and each range's output
    /// in the megabytes.
    pub const DEFAULT_TARGET_ELEMENTS: u64 = 1 << 20;

    /// Ranges of `target_elements` each, rounded up to whole units; a tensor's last range may
    /// be shorter. Ranges never span tensors.
    pub fn new(shapes: &[TensorShape], params: &CodecParams, target_elements: u64) -> Result<Self> {
        let mut ranges = Vec::new();
        for (tensor, s) in shapes.iter().enumerate() {
            let n = s.numel();
            let unit = unit_len(s, params)?;
            let step = target_elements.div_ceil(unit).max(1).saturating_mul(unit);
            let mut start = 0;
            while start < n {
                let end = start.saturating_add(step).min(n);
                ranges.push(AggregateRange {
                    tensor,
                    elements: start..end,
                });
                start = end;
            }
        }
        Ok(Self { ranges })
    }

    pub fn ranges(&self) -> &[AggregateRange] {
        &self.ranges
    }
}

/// Elements of one unit of this tensor: a band of chunks, or [`DENSE_UNIT`].
pub(crate) fn unit_len(shape: &TensorShape, params: &CodecParams) -> Result<u64> {
    Ok(match Layout::of(shape, params)? {
        Layout::Dense { .. } => DENSE_UNIT,
        Layout::Sparse(ch) => ch.band_len() as u64,
    })
}

/// Checks that `range` is whole units of a tensor of `numel` elements.
pub(crate) fn check_range(range: &AggregateRange, numel: u64, unit: u64) -> Result<()> {
    let Range { start, end } = range.elements;
    let aligned = |x: u64| x.is_multiple_of(unit) || x == numel;
    if start >= end || end > numel || !start.is_multiple_of(unit) || !aligned(end) {
        return Err(Error::InvalidRange);
    }
    Ok(())
}
