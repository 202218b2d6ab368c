//! Tokens into numbered shards of a fixed size, published only when every shard is complete.

use std::path::{Path, PathBuf};

use crate::shards::{ShardWriter, StagedShard, TokenWidth};
use crate::{Error, Result};

/// Shard names are zero-padded to five digits so that file-name order is shard order.
const MAX_SHARDS: usize = 100_000;

pub(super) struct ShardSink {
    dir: PathBuf,
    vocab: u32,
    width: TokenWidth,
    tokens_per_shard: u64,
    current: Option<ShardWriter>,
    /// Complete shards still under `.tmp` names: dropping the sink (an error) removes them.
    staged: Vec<StagedShard>,
}

impl ShardSink {
    pub(super) fn new(dir: &Path, vocab: u32, width: TokenWidth, tokens_per_shard: u64) -> Self {
        Self {
            dir: dir.to_path_buf(),
            vocab,
            width,
            tokens_per_shard,
            current: None,
            staged: Vec::new(),
        }
    }

    pub(super) fn extend(&mut self, tokens: &[u32]) -> Result<()> {
        tokens.iter().try_for_each(|t| self.push(*t))
    }

    pub(super) fn push(&mut self, token: u32) -> Result<()> {
        let writer = match &mut self.current {
            Some(w) => w,
            None => self.current.insert(self.open_next()?),
        };
        writer.push(token)?;
        if writer.len() >= self.tokens_per_shard {
            self.stage_current()?;
        }
        Ok(())
    }

    /// Completes the last shard and renames every staged shard into place, in order.
    pub(super) fn finish(mut self) -> Result<Vec<PathBuf>> {
        self.stage_current()?;
        std::mem::take(&mut self.staged)
            .into_iter()
            .map(StagedShard::commit)
            .collect()
    }

    fn stage_current(&mut self) -> Result<()> {
        if let Some(w) = self.current.take() {
            self.staged.push(w.finish_staged()?);
        }
        Ok(())
    }

    fn open_next(&self) -> Result<ShardWriter> {
        let index = self.staged.len();
        if index >= MAX_SHARDS {
            return Err(Error::Options(format!(
                "more than {MAX_SHARDS} shards: raise tokens_per_shard (now {})",
                self.tokens_per_shard
            )));
        }
        ShardWriter::create(self.dir.join(shard_name(index)), self.vocab, self.width)
    }
}

pub(super) fn shard_name(index: usize) -> String {
    format!("shard-{index:05}.bin")
}
