//! Reading a shard: memory-mapped, validated once at open.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::header::{HEADER_BYTES, ShardHeader, TokenWidth};
use crate::{Error, Result};

/// An open, validated shard. Token reads never fail for indices below [`Shard::len`].
#[derive(Debug)]
pub struct Shard {
    path: PathBuf,
    header: ShardHeader,
    map: Mmap,
}

impl Shard {
    /// Maps `path` and checks its header and length (not its tokens: see
    /// [`Shard::validate_tokens`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let on_disk = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        if on_disk < HEADER_BYTES as u64 {
            return Err(Error::file(
                &path,
                format!(
                    "too short for a shard header: {on_disk} bytes, a header is {HEADER_BYTES}"
                ),
            ));
        }
        // SAFETY: the mapping is read-only and shards are immutable once renamed into place
        // (writers only touch `.tmp` files); another process truncating a shard under a reader
        // is outside the format's contract, as for every mmap-based reader.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
        let header_bytes: &[u8; HEADER_BYTES] = map
            .get(..HEADER_BYTES)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| Error::file(&path, "the file shrank while it was being opened"))?;
        let header = ShardHeader::decode(header_bytes).map_err(|m| Error::file(&path, m))?;
        let actual = map.len() as u64;
        let Some(expected) = header.file_len() else {
            return Err(Error::file(
                &path,
                format!(
                    "header says {} tokens, more than any file can hold",
                    header.count
                ),
            ));
        };
        if actual < expected {
            return Err(Error::file(
                &path,
                format!(
                    "truncated: header says {} tokens ({expected} bytes) but the file has {actual} bytes",
                    header.count
                ),
            ));
        }
        if actual > expected {
            return Err(Error::file(
                &path,
                format!(
                    "trailing bytes: header says {} tokens ({expected} bytes) but the file has {actual} bytes",
                    header.count
                ),
            ));
        }
        Ok(Self { path, header, map })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> ShardHeader {
        self.header
    }

    pub fn vocab(&self) -> u32 {
        self.header.vocab
    }

    pub fn width(&self) -> TokenWidth {
        self.header.width
    }

    /// Tokens in the shard.
    pub fn len(&self) -> u64 {
        self.header.count
    }

    pub fn is_empty(&self) -> bool {
        self.header.count == 0
    }

    /// The token at `index`, or `None` past the end.
    pub fn get(&self, index: u64) -> Option<u32> {
        let w = self.header.width.bytes();
        let start = usize::try_from(index).ok()?.checked_mul(w)?;
        decode(
            self.header.width,
            self.body().get(start..start.checked_add(w)?)?,
        )
        .next()
    }

    /// Appends tokens `start..start + n` to `out`.
    pub fn read_into(&self, start: u64, n: usize, out: &mut Vec<u32>) -> Result<()> {
        let w = self.header.width.bytes();
        let bytes = usize::try_from(start)
            .ok()
            .and_then(|s| {
                let from = s.checked_mul(w)?;
                self.body().get(from..from.checked_add(n.checked_mul(w)?)?)
            })
            .ok_or_else(|| {
                Error::file(
                    &self.path,
                    format!(
                        "tokens {start}..{start}+{n} are past the end ({} tokens)",
                        self.len()
                    ),
                )
            })?;
        out.extend(decode(self.header.width, bytes));
        Ok(())
    }

    /// Every token, in order.
    pub fn tokens(&self) -> impl Iterator<Item = u32> + '_ {
        decode(self.header.width, self.body())
    }

    /// Checks that every token is below the header's vocab size (reads the whole shard).
    pub fn validate_tokens(&self) -> Result<()> {
        let vocab = self.header.vocab;
        match self.tokens().enumerate().find(|(_, t)| *t >= vocab) {
            Some((i, t)) => Err(Error::file(
                &self.path,
                format!("token {t} at position {i} is not below the vocab size {vocab}"),
            )),
            None => Ok(()),
        }
    }

    fn body(&self) -> &[u8] {
        self.map.get(HEADER_BYTES..).unwrap_or_default()
    }
}

/// Little-endian tokens of `width` in `bytes` (a whole number of tokens).
fn decode(width: TokenWidth, bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    // Folding from the most significant byte reads both widths without a fallible conversion.
    bytes.chunks_exact(width.bytes()).map(|c| {
        c.iter()
            .rev()
            .fold(0u32, |acc, b| (acc << 8) | u32::from(*b))
    })
}
