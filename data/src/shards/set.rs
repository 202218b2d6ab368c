//! A directory of shards as one corpus: cut into windows, dealt out to batches by stream id.

use std::fs;
use std::path::{Path, PathBuf};

use super::permutation::Permutation;
use super::shard::Shard;
use crate::stream::mix;
use crate::{Batch, Error, Result, StreamId, TokenSource};

/// Domain tags so training and held-out permutations of one seed are unrelated.
const TRAINING_TAG: u64 = 0x7472_6169_6e69_6e67;
const HELD_OUT_TAG: u64 = 0x6865_6c64_2d6f_7574;

/// The shards of a directory that match a pattern, read as one corpus in file-name order.
///
/// # Windows
/// For a sequence length `len` the corpus is cut into non-overlapping windows of `len + 1`
/// tokens. A window never crosses a shard boundary nor the held-out boundary; leftover tokens
/// at the end of a shard (fewer than `len + 1`) are never used.
///
/// The **held-out** tokens are the last `⌈f·N⌉` tokens of the corpus (`N` tokens in all, `f`
/// the held-out fraction, [`ShardSet::DEFAULT_HELD_OUT_FRACTION`] unless set), so they do not
/// depend on `len`: training windows are cut from the tokens before that boundary, held-out
/// windows from the tokens after it. Windows are numbered in file order: training windows
/// `0..T`, held-out windows `T..T+H`.
///
/// # Which window a row gets
/// With the schedule `P` peers × `S` steps per round ([`ShardSet::with_schedule`]), `B`
/// sequences per batch, row `i` of the training batch `(seed, peer, round, step)` takes
///
/// ```text
/// c      = ((round·S + step)·P + peer)·B + i        (exact, in u128)
/// epoch  = ⌊c / T⌋
/// window = π[seed, epoch](c mod T)
/// ```
///
/// where `π[seed, epoch]` is a keyed bijection of `0..T` (a Feistel network with cycle
/// walking). For `peer < P`, `step < S`, `i < B` the counter `c` is a mixed-radix number, so
/// distinct `(round, step, peer, i)` give distinct counters; the counters of one epoch are `T`
/// consecutive integers, so their residues are distinct and `π` maps them to distinct windows:
/// within one epoch no two rows of any peers, rounds or steps share a window, and every
/// training window is used exactly once. Each epoch (`T / (P·S·B)` rounds) is reshuffled.
/// This holds while every batch of the run uses the same `B` and `len`.
///
/// A held-out batch (`peer == StreamId::HELD_OUT_PEER`, as built by [`StreamId::held_out`])
/// is addressed by `step` alone: row `i` takes `T + π'[seed, epoch](c mod H)` with
/// `c = step·B + i`, `π'` a permutation independent of the training one.
#[derive(Debug)]
pub struct ShardSet {
    dir: PathBuf,
    shards: Vec<Shard>,
    vocab: u32,
    schedule: Option<Schedule>,
    held_out_fraction: f64,
}

/// How many peers train and how many inner steps each takes per round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub peers: u32,
    pub steps_per_round: u32,
}

/// Windows of one sequence length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowCount {
    pub training: u64,
    pub held_out: u64,
}

impl ShardSet {
    /// Share of the corpus's tokens (its tail) that training never uses.
    pub const DEFAULT_HELD_OUT_FRACTION: f64 = 0.01;

    /// Opens every file in `dir` (not its subdirectories) whose name matches `pattern`
    /// (`*`, `?`, `[...]` as in a shell), in file-name order. All must have one vocab size.
    pub fn open(dir: impl AsRef<Path>, pattern: &str) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let matcher = glob::Pattern::new(pattern)
            .map_err(|e| Error::file(&dir, format!("invalid file pattern {pattern:?}: {e}")))?;
        let mut paths = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let name = entry.file_name();
            // A name that is not UTF-8 cannot match a UTF-8 pattern.
            let Some(name) = name.to_str() else { continue };
            let path = entry.path();
            if matcher.matches(name) && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        let mut shards = Vec::with_capacity(paths.len());
        for path in &paths {
            shards.push(Shard::open(path)?);
        }
        let first = shards.first().ok_or_else(|| {
            Error::file(
                &dir,
                format!("no shard files match {pattern:?} in this directory"),
            )
        })?;
        let vocab = first.vocab();
        if let Some(other) = shards.iter().find(|s| s.vocab() != vocab) {
            return Err(Error::file(
                other.path(),
                format!(
                    "vocab size {} differs from {vocab} in {}",
                    other.vocab(),
                    first.path().display()
                ),
            ));
        }
        Ok(Self {
            dir,
            shards,
            vocab,
            schedule: None,
            held_out_fraction: Self::DEFAULT_HELD_OUT_FRACTION,
        })
    }

    /// The schedule training batches are dealt for; training batches need one.
    pub fn with_schedule(mut self, peers: u32, steps_per_round: u32) -> Result<Self> {
        if peers == 0 || steps_per_round == 0 {
            return Err(Error::Options(format!(
                "a schedule needs at least one peer and one step per round, not {peers} peers \
                 and {steps_per_round} steps"
            )));
        }
        self.schedule = Some(Schedule {
            peers,
            steps_per_round,
        });
        Ok(self)
    }

    /// Share of tokens (the corpus's tail) reserved for held-out batches, in `0.0..1.0`.
    pub fn with_held_out_fraction(mut self, fraction: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&fraction) {
            return Err(Error::Options(format!(
                "held-out fraction must be in [0, 1), not {fraction}"
            )));
        }
        self.held_out_fraction = fraction;
        Ok(self)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    pub fn schedule(&self) -> Option<Schedule> {
        self.schedule
    }

    /// Tokens in all shards.
    pub fn tokens(&self) -> u64 {
        self.shards.iter().map(Shard::len).sum()
    }

    /// Tokens reserved for held-out batches: `⌈fraction · tokens⌉`.
    pub fn held_out_tokens(&self) -> u64 {
        let total = self.tokens();
        // f64 rounding is deterministic, so every reader agrees on the boundary.
        ((total as f64 * self.held_out_fraction).ceil() as u64).min(total)
    }

    /// Training and held-out windows for sequences of `len` (windows of `len + 1` tokens).
    pub fn windows(&self, len: usize) -> Result<WindowCount> {
        let layout = self.layout(len)?;
        Ok(WindowCount {
            training: layout.training.windows,
            held_out: layout.held_out.windows,
        })
    }

    /// The window index of each row of `id`'s batch: training windows are `0..T`, held-out
    /// windows `T..T+H` (see the type's documentation).
    pub fn batch_windows(&self, id: StreamId, sequences: usize, len: usize) -> Result<Vec<u64>> {
        let layout = self.layout(len)?;
        self.assign(&layout, id, sequences)
    }

    /// Checks every token of every shard against the vocab size.
    pub fn validate_tokens(&self) -> Result<()> {
        self.shards.iter().try_for_each(Shard::validate_tokens)
    }

    fn layout(&self, len: usize) -> Result<Layout> {
        let window = u64::try_from(len)
            .ok()
            .and_then(|l| l.checked_add(1))
            .ok_or_else(|| Error::Options(format!("sequence length {len} is too large")))?;
        let boundary = self.tokens() - self.held_out_tokens();
        let (mut training, mut held_out) = (Windows::new(window), Windows::new(window));
        let mut offset = 0u64;
        for (shard, s) in self.shards.iter().enumerate() {
            let n = s.len();
            let train = boundary.saturating_sub(offset).min(n);
            training.add(shard, 0, train);
            held_out.add(shard, train, n - train);
            offset += n;
        }
        Ok(Layout { training, held_out })
    }

    fn assign(&self, layout: &Layout, id: StreamId, sequences: usize) -> Result<Vec<u64>> {
        let rows = sequences as u128;
        if id.peer == StreamId::HELD_OUT_PEER {
            let h = layout.held_out.windows;
            self.need(h, sequences, layout, "held-out")?;
            let first = u128::from(id.step) * rows;
            let t = layout.training.windows;
            return Ok((0..rows)
                .map(|i| t + deal(id.seed, HELD_OUT_TAG, first + i, h))
                .collect());
        }
        let s = self.schedule.ok_or_else(|| {
            Error::Schedule(format!(
                "{}: no schedule set: call with_schedule(peers, steps_per_round) before asking \
                 for training batches",
                self.dir.display()
            ))
        })?;
        if id.peer >= s.peers || id.step >= s.steps_per_round {
            return Err(Error::Schedule(format!(
                "peer {} step {} is outside {} peers × {} steps per round",
                id.peer, id.step, s.peers, s.steps_per_round
            )));
        }
        let t = layout.training.windows;
        self.need(t, sequences, layout, "training")?;
        // < 2^128: round < 2^64, steps and peers < 2^32.
        let slot = (u128::from(id.round) * u128::from(s.steps_per_round) + u128::from(id.step))
            * u128::from(s.peers)
            + u128::from(id.peer);
        // Checked so that `first + i` below cannot overflow either.
        let first = slot
            .checked_mul(rows)
            .filter(|f| f.checked_add(rows).is_some())
            .ok_or_else(|| {
                Error::Schedule(format!(
                    "round {} with {sequences} sequences overflows the window counter",
                    id.round
                ))
            })?;
        Ok((0..rows)
            .map(|i| deal(id.seed, TRAINING_TAG, first + i, t))
            .collect())
    }

    fn need(&self, have: u64, sequences: usize, layout: &Layout, what: &str) -> Result<()> {
        if (have as u128) < sequences as u128 {
            return Err(Error::file(
                &self.dir,
                format!(
                    "the corpus has {have} {what} windows of {} tokens but a batch needs \
                     {sequences}",
                    layout.training.window
                ),
            ));
        }
        Ok(())
    }
}

impl TokenSource for ShardSet {
    fn vocab(&self) -> u32 {
        self.vocab
    }

    fn batch(&self, id: StreamId, sequences: usize, len: usize) -> Result<Batch> {
        let layout = self.layout(len)?;
        let windows = self.assign(&layout, id, sequences)?;
        let width = len.saturating_add(1);
        let mut tokens = Vec::with_capacity(sequences.saturating_mul(width));
        for w in windows {
            let (shard, start) = layout
                .locate(w)
                .and_then(|(i, start)| Some((self.shards.get(i)?, start)))
                .ok_or_else(|| Error::file(&self.dir, format!("window {w} is out of range")))?;
            shard.read_into(start, width, &mut tokens)?;
        }
        Ok(Batch {
            tokens,
            sequences,
            len,
        })
    }
}

/// The training and held-out windows for one window size.
struct Layout {
    training: Windows,
    held_out: Windows,
}

impl Layout {
    /// Shard index and first token of a window numbered as in [`ShardSet::batch_windows`].
    fn locate(&self, w: u64) -> Option<(usize, u64)> {
        match w.checked_sub(self.training.windows) {
            None => self.training.locate(w),
            Some(h) => self.held_out.locate(h),
        }
    }
}

/// Consecutive windows of one part (training or held-out), over runs of shard tokens.
struct Windows {
    window: u64,
    runs: Vec<Run>,
    windows: u64,
}

/// `windows` windows starting at token `start` of shard `shard`, numbered from `first`.
struct Run {
    shard: usize,
    start: u64,
    first: u64,
    windows: u64,
}

impl Windows {
    fn new(window: u64) -> Self {
        Self {
            window,
            runs: Vec::new(),
            windows: 0,
        }
    }

    fn add(&mut self, shard: usize, start: u64, tokens: u64) {
        let windows = tokens / self.window;
        if windows > 0 {
            self.runs.push(Run {
                shard,
                start,
                first: self.windows,
                windows,
            });
            self.windows += windows;
        }
    }

    fn locate(&self, w: u64) -> Option<(usize, u64)> {
        let i = self.runs.partition_point(|r| r.first + r.windows <= w);
        let run = self.runs.get(i)?;
        let k = w.checked_sub(run.first)?;
        Some((run.shard, run.start + k * self.window))
    }
}

/// Window of counter `c` among `n`: epoch `⌊c/n⌋` picks the permutation, `c mod n` its input.
fn deal(seed: u64, tag: u64, c: u128, n: u64) -> u64 {
    let n128 = u128::from(n);
    let (epoch, pos) = (c / n128, (c % n128) as u64);
    let key = mix(mix(mix(seed ^ tag) ^ epoch as u64) ^ (epoch >> 64) as u64);
    Permutation::new(n, key).apply(pos)
}
