//! A compact, persistable sketch of an update's (or an aggregate's) kept positions and signs,
//! so replays are found without keeping whole updates.
//!
//! Coordinated sampling: a position (tensor, index) is sampled when a keyed hash of it falls
//! below a threshold. The threshold depends only on the run's layout, so every update and every
//! aggregate of a run samples the same positions, and "is this sampled position of the update
//! also in the reference, with the same sign?" is decided exactly for every entry. The rate is
//! set so an update keeps about `target` entries (all of them when it keeps fewer positions).
//! An entry is 8 bytes (63 bits of hash, 1 sign bit): 512 entries are 4 KiB per update; an
//! aggregate of R peers keeps up to R times more. The key is a coordinator secret, drawn once
//! per run and never published, so a peer cannot tell which positions are sampled and perturb
//! only those.

use serde::{Deserialize, Serialize};
use tributary_codec::{Contribution, Payload, SparseAggregate};

const SIGN: u64 = 1 << 63;
const HASH: u64 = !SIGN;

/// The run's secret sketch key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SketchKey {
    pub k0: u64,
    pub k1: u64,
}

impl SketchKey {
    /// A short fingerprint stored in each sketch, so sketches under different keys are never
    /// compared.
    fn id(&self) -> u64 {
        mix(mix(self.k0 ^ 0x5eed) ^ self.k1)
    }
}

/// How a run's sketches are taken: its key and its sampling threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SketchSpec {
    key: SketchKey,
    threshold: u64,
}

/// A sketch: the sampled entries of one update or aggregate, sorted by hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateSketch {
    key_id: u64,
    threshold: u64,
    /// `(hash >> 1) | (negative << 63)`, sorted by the hash bits, no two with the same hash.
    entries: Vec<u64>,
}

/// How much of an update a reference carries, over the update's sampled positions.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SketchMatch {
    /// The update's sampled positions (the evidence behind the two shares).
    pub sampled: usize,
    /// Share of them the reference carries with the same sign ...
    pub agreeing: f64,
    /// ... and with the opposite sign.
    pub opposing: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SketchError {
    #[error("sketches were taken with different keys or sampling rates")]
    Mismatch,
}

impl SketchSpec {
    /// About `target` entries per update of `kept` sparse positions (every position when
    /// `kept ≤ target`).
    pub fn new(key: SketchKey, kept: u64, target: u64) -> Self {
        let threshold = if kept <= target {
            u64::MAX
        } else {
            (u64::MAX / kept).saturating_mul(target)
        };
        Self { key, threshold }
    }

    /// The spec for updates laid out like `layout` (one contribution of the run).
    pub fn for_layout(key: SketchKey, layout: &Contribution, target: u64) -> Self {
        Self::new(key, sparse_positions(layout), target)
    }

    /// The sketch of a peer's update: its sparse tensors (dense ones carry every position).
    pub fn sketch(&self, c: &Contribution) -> UpdateSketch {
        let mut entries = Vec::new();
        for (t, tensor) in c.tensors.iter().enumerate() {
            if matches!(tensor.payload(), Payload::Sparse(_)) {
                tensor.for_each(|i, v| self.sample(t, i, v, &mut entries));
            }
        }
        self.finish(entries)
    }

    /// The sketch of a published aggregate: every position it carries.
    pub fn sketch_aggregate(&self, a: &SparseAggregate) -> UpdateSketch {
        let mut entries = Vec::new();
        for (t, tensor) in a.tensors.iter().enumerate() {
            tensor.for_each(|i, v| self.sample(t, i, v, &mut entries));
        }
        self.finish(entries)
    }

    fn sample(&self, tensor: usize, index: usize, value: f32, out: &mut Vec<u64>) {
        let h = mix(mix(index as u64 ^ self.key.k0) ^ mix(tensor as u64 ^ self.key.k1));
        if h <= self.threshold {
            out.push((h >> 1) | if value < 0.0 { SIGN } else { 0 });
        }
    }

    fn finish(&self, mut entries: Vec<u64>) -> UpdateSketch {
        entries.sort_unstable_by_key(|e| (e & HASH, *e));
        entries.dedup_by_key(|e| *e & HASH);
        UpdateSketch {
            key_id: self.key.id(),
            threshold: self.threshold,
            entries,
        }
    }
}

impl UpdateSketch {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of its entries (what the store persists, plus 16 bytes of header).
    pub fn entry_bytes(&self) -> usize {
        self.entries.len() * std::mem::size_of::<u64>()
    }

    /// How much of this update `reference` carries (containment, not symmetric: a reference
    /// aggregate carries many peers' positions). Equal-sized updates compare symmetrically.
    pub fn compare(&self, reference: &UpdateSketch) -> Result<SketchMatch, SketchError> {
        if self.key_id != reference.key_id || self.threshold != reference.threshold {
            return Err(SketchError::Mismatch);
        }
        let (mut agreeing, mut opposing) = (0usize, 0usize);
        let mut theirs = reference.entries.iter().peekable();
        for mine in &self.entries {
            while theirs.next_if(|t| *t & HASH < mine & HASH).is_some() {}
            if let Some(t) = theirs.peek()
                && *t & HASH == mine & HASH
            {
                if *t & SIGN == mine & SIGN {
                    agreeing += 1;
                } else {
                    opposing += 1;
                }
            }
        }
        let n = self.entries.len();
        let share = |x: usize| if n == 0 { 0.0 } else { x as f64 / n as f64 };
        Ok(SketchMatch {
            sampled: n,
            agreeing: share(agreeing),
            opposing: share(opposing),
        })
    }
}

/// Positions an update of this layout keeps in its sparse tensors.
fn sparse_positions(c: &Contribution) -> u64 {
    c.tensors
        .iter()
        .filter(|t| matches!(t.payload(), Payload::Sparse(_)))
        .map(|t| t.count() as u64)
        .sum()
}

/// The splitmix64 finalizer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tributary_codec::{
        CodecParams, ErrorFeedback, TensorShape, compress_contribution, similarity,
    };

    const KEY: SketchKey = SketchKey { k0: 11, k1: 29 };

    fn update(seed: u64, sign: f32) -> Contribution {
        let shapes = [
            TensorShape::new(&[64, 64]).unwrap(),
            TensorShape::new(&[64]).unwrap(),
        ];
        let xs: Vec<Vec<f32>> = shapes
            .iter()
            .map(|s| {
                (0..s.numel())
                    .map(|i| {
                        sign * (mix(i ^ seed.wrapping_mul(0x9e37)) as f32 / u64::MAX as f32 - 0.5)
                    })
                    .collect()
            })
            .collect();
        let refs: Vec<&[f32]> = xs.iter().map(|x| x.as_slice()).collect();
        let mut efs: Vec<ErrorFeedback> =
            xs.iter().map(|x| ErrorFeedback::zeros(x.len())).collect();
        compress_contribution(&mut efs, &refs, &shapes, &CodecParams::default()).unwrap()
    }

    #[test]
    fn replays_match_and_fresh_updates_do_not() {
        let a = update(1, 1.0);
        let spec = SketchSpec::for_layout(KEY, &a, 16);
        let sa = spec.sketch(&a);
        // 64 of 4096 kept in the matrix; about 16 sampled.
        assert!((4..=40).contains(&sa.len()), "{}", sa.len());
        assert_eq!(sa.entry_bytes(), 8 * sa.len());
        let same = sa.compare(&spec.sketch(&a)).unwrap();
        assert_eq!((same.agreeing, same.opposing), (1.0, 0.0));
        let negated = sa.compare(&spec.sketch(&update(1, -1.0))).unwrap();
        assert!(negated.opposing > 0.9, "{negated:?}");
        let fresh = spec.sketch(&update(2, 1.0));
        let m = sa.compare(&fresh).unwrap();
        assert!(m.agreeing < 0.5, "{m:?}");
        // Another key or rate: not comparable.
        let other = SketchSpec::for_layout(SketchKey { k0: 12, k1: 29 }, &a, 16);
        assert_eq!(sa.compare(&other.sketch(&a)), Err(SketchError::Mismatch));
    }

    /// With every position sampled, the sketch's agreeing share is the codec's (unweighted and
    /// weighted agree here: one sparse tensor).
    #[test]
    fn exhaustive_sketch_is_exact() {
        let (a, b) = (update(3, 1.0), update(4, 1.0));
        let spec = SketchSpec::for_layout(KEY, &a, u64::MAX);
        let m = spec.sketch(&a).compare(&spec.sketch(&b)).unwrap();
        let s = similarity(&a, &b).unwrap();
        assert_eq!(m.sampled, 64);
        assert!((m.agreeing - s.agreeing).abs() < 1e-12, "{m:?} {s:?}");
        assert!((m.opposing - s.opposing).abs() < 1e-12, "{m:?} {s:?}");
    }

    #[test]
    fn sketches_round_trip_through_serde() {
        let a = update(5, 1.0);
        let spec = SketchSpec::for_layout(KEY, &a, 8);
        let s = spec.sketch(&a);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<UpdateSketch>(&json).unwrap(), s);
    }
}
