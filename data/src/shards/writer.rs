//! Writing a shard: tokens go to `<name>.tmp`, which is renamed only once it is complete.

use std::fs::{self, File};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::header::{ShardHeader, TokenWidth};
use crate::{Error, Result};

/// Appends tokens to a new shard. Until [`ShardWriter::finish`] the tokens live in
/// `<path>.tmp`, so a crash never leaves a partial file under a shard's name; dropping an
/// unfinished writer removes the `.tmp` file.
#[derive(Debug)]
pub struct ShardWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
    width: TokenWidth,
    vocab: u32,
    count: u64,
}

impl ShardWriter {
    /// Creates `<path>.tmp` (replacing one a crashed run left) for tokens `< vocab` of `width`.
    pub fn create(path: impl AsRef<Path>, vocab: u32, width: TokenWidth) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if vocab == 0 || u64::from(vocab) > width.max_vocab() {
            return Err(Error::Options(format!(
                "{}: vocab size {vocab} must be in 1..={} for {}-byte tokens",
                path.display(),
                width.max_vocab(),
                width.bytes()
            )));
        }
        let tmp = tmp_path(&path)?;
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut out = BufWriter::new(file);
        let header = ShardHeader {
            width,
            vocab,
            count: 0,
        };
        out.write_all(&header.encode())
            .map_err(|e| Error::io(&tmp, e))?;
        Ok(Self {
            path,
            tmp,
            out: Some(out),
            width,
            vocab,
            count: 0,
        })
    }

    /// Tokens written so far.
    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn push(&mut self, token: u32) -> Result<()> {
        if token >= self.vocab {
            return Err(Error::file(
                &self.path,
                format!(
                    "token {token} at position {} is not below the vocab size {}",
                    self.count, self.vocab
                ),
            ));
        }
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| Error::file(&self.path, "writer is already finished"))?;
        let written = match self.width {
            // for_vocab/create guarantee token < 65536 here.
            TokenWidth::U16 => out.write_all(&(token as u16).to_le_bytes()),
            TokenWidth::U32 => out.write_all(&token.to_le_bytes()),
        };
        written.map_err(|e| Error::io(&self.tmp, e))?;
        self.count += 1;
        Ok(())
    }

    pub fn extend(&mut self, tokens: &[u32]) -> Result<()> {
        tokens.iter().try_for_each(|t| self.push(*t))
    }

    /// Writes the token count into the header, syncs, and renames `.tmp` to the shard's name.
    pub fn finish(self) -> Result<PathBuf> {
        self.finish_staged()?.commit()
    }

    /// Completes the `.tmp` file without renaming it, so a caller can publish several shards
    /// only once all of them are complete.
    pub(crate) fn finish_staged(mut self) -> Result<StagedShard> {
        let tmp = std::mem::take(&mut self.tmp);
        let path = std::mem::take(&mut self.path);
        let out = self
            .out
            .take()
            .ok_or_else(|| Error::file(&path, "writer is already finished"))?;
        // From here on the staged shard owns the tmp file and removes it on failure.
        let staged = StagedShard {
            tmp,
            path,
            committed: false,
        };
        let mut file = out
            .into_inner()
            .map_err(|e| Error::io(&staged.tmp, e.into_error()))?;
        let header = ShardHeader {
            width: self.width,
            vocab: self.vocab,
            count: self.count,
        };
        let io = |e| Error::io(&staged.tmp, e);
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(&header.encode()).map_err(io)?;
        // Data reaches the disk before the rename, so a crash cannot leave a named, empty shard.
        file.sync_all().map_err(io)?;
        Ok(staged)
    }
}

impl Drop for ShardWriter {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            // Best effort: an unfinished shard must not linger; there is nobody to report to.
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// A complete shard still under its `.tmp` name; removed on drop unless committed.
#[derive(Debug)]
pub(crate) struct StagedShard {
    tmp: PathBuf,
    path: PathBuf,
    committed: bool,
}

impl StagedShard {
    /// Renames the `.tmp` file to the shard's name.
    pub(crate) fn commit(mut self) -> Result<PathBuf> {
        fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        self.committed = true;
        Ok(std::mem::take(&mut self.path))
    }
}

impl Drop for StagedShard {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// `<path>.tmp`: same directory (so the rename is atomic), a name no shard pattern matches.
fn tmp_path(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::file(path, "a shard path must end in a file name"))?;
    let mut tmp = name.to_os_string();
    tmp.push(".tmp");
    Ok(path.with_file_name(tmp))
}
