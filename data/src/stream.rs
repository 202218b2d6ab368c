//! Addressing of batches: which tokens a peer trains on in a given round and inner step.

/// Identifies one batch. The same id always yields the same tokens; different ids of one run
/// yield disjoint draws (independent streams for the synthetic language, disjoint windows for
/// shards).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamId {
    pub seed: u64,
    pub peer: u32,
    pub round: u64,
    pub step: u32,
}

impl StreamId {
    /// The held-out stream of a run: no peer is ever assigned it.
    pub const HELD_OUT_PEER: u32 = u32::MAX;

    pub fn held_out(seed: u64, index: u32) -> Self {
        Self {
            seed,
            peer: Self::HELD_OUT_PEER,
            round: u64::MAX,
            step: index,
        }
    }

    /// A 64-bit key mixing every field (splitmix64 finaliser per field), for seeding RNGs.
    pub fn key(&self) -> u64 {
        let mut h = mix(self.seed ^ 0x7472_6962_7574_6172);
        for v in [u64::from(self.peer), self.round, u64::from(self.step)] {
            h = mix(h ^ v);
        }
        h
    }
}

pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE5_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `sequences` rows of `len + 1` tokens each (inputs and next-token targets), row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub tokens: Vec<u32>,
    pub sequences: usize,
    pub len: usize,
}

impl Batch {
    pub fn row(&self, i: usize) -> &[u32] {
        let w = self.len + 1;
        &self.tokens[i * w..(i + 1) * w]
    }
}

/// Anything that can produce the batch of a stream id.
pub trait TokenSource: Send + Sync {
    /// Vocabulary size: every token is `< vocab()`.
    fn vocab(&self) -> u32;
    /// `sequences` rows of `len + 1` tokens for `id`.
    fn batch(&self, id: StreamId, sequences: usize, len: usize) -> crate::Result<Batch>;
}
