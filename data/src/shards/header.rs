//! The 32-byte shard header (docs/data-shards.md is the normative description).

/// First 8 bytes of every shard.
pub const MAGIC: [u8; 8] = *b"TRBTOKS\0";
/// The only format version this crate reads and writes.
pub const VERSION: u16 = 1;
/// Bytes before the first token.
pub const HEADER_BYTES: usize = 32;

/// How many bytes one token takes in a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenWidth {
    U16,
    U32,
}

impl TokenWidth {
    pub fn bytes(self) -> usize {
        match self {
            TokenWidth::U16 => 2,
            TokenWidth::U32 => 4,
        }
    }

    /// The narrowest width that holds every token `< vocab`.
    pub fn for_vocab(vocab: u32) -> Self {
        if u64::from(vocab) <= TokenWidth::U16.max_vocab() {
            TokenWidth::U16
        } else {
            TokenWidth::U32
        }
    }

    /// The largest vocabulary whose tokens all fit this width.
    pub fn max_vocab(self) -> u64 {
        match self {
            TokenWidth::U16 => 1 << 16,
            TokenWidth::U32 => u64::from(u32::MAX),
        }
    }

    fn from_bytes(n: u16) -> Option<Self> {
        match n {
            2 => Some(TokenWidth::U16),
            4 => Some(TokenWidth::U32),
            _ => None,
        }
    }
}

/// What a shard's header says about its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardHeader {
    pub width: TokenWidth,
    pub vocab: u32,
    pub count: u64,
}

impl ShardHeader {
    pub(crate) fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut out = [0u8; HEADER_BYTES];
        out[0..8].copy_from_slice(&MAGIC);
        out[8..10].copy_from_slice(&VERSION.to_le_bytes());
        // Widths are 2 or 4, so the cast is exact.
        out[10..12].copy_from_slice(&(self.width.bytes() as u16).to_le_bytes());
        out[12..16].copy_from_slice(&self.vocab.to_le_bytes());
        out[16..24].copy_from_slice(&self.count.to_le_bytes());
        out
    }

    /// Parses and checks a header; the error is a message for the caller to put the path on.
    pub(crate) fn decode(bytes: &[u8; HEADER_BYTES]) -> Result<Self, String> {
        let (magic, rest) = bytes.split_at(8);
        if magic != MAGIC {
            return Err(format!(
                "not a token shard: magic is \"{}\" but should be \"{}\"",
                magic.escape_ascii(),
                MAGIC.escape_ascii()
            ));
        }
        let u16_at = |i: usize| u16::from_le_bytes([rest[i], rest[i + 1]]);
        let version = u16_at(0);
        if version != VERSION {
            return Err(format!(
                "unsupported format version {version} (this reader knows version {VERSION})"
            ));
        }
        let width_bytes = u16_at(2);
        let width = TokenWidth::from_bytes(width_bytes)
            .ok_or_else(|| format!("token width is {width_bytes} bytes but must be 2 or 4"))?;
        let vocab = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let count = u64::from_le_bytes([
            rest[8], rest[9], rest[10], rest[11], rest[12], rest[13], rest[14], rest[15],
        ]);
        if vocab == 0 {
            return Err("vocab size is 0 but must be at least 1".into());
        }
        if u64::from(vocab) > width.max_vocab() {
            return Err(format!(
                "vocab size {vocab} does not fit {}-byte tokens (at most {})",
                width.bytes(),
                width.max_vocab()
            ));
        }
        if rest[16..24].iter().any(|b| *b != 0) {
            return Err("reserved header bytes 24..32 are not zero".into());
        }
        Ok(Self {
            width,
            vocab,
            count,
        })
    }

    /// `32 + count · width`, or `None` if that overflows a u64.
    pub fn file_len(&self) -> Option<u64> {
        self.count
            .checked_mul(self.width.bytes() as u64)?
            .checked_add(HEADER_BYTES as u64)
    }
}
