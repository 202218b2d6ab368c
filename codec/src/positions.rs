//! Elias–Fano coding of the sorted positions of one chunk, as a fixed-size bit block.
//!
//! For k of n positions: l = ⌊log2(n/k)⌋ low bits each, then a unary high part padded to
//! exactly k + ((n−1) >> l) + 1 bits, so every chunk's block has the same length.

use crate::bits::{BitReader, BitWriter, read_bits};
use crate::error::{Error, Result};

/// Bit layout of one chunk's block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EliasFano {
    pub n: usize,
    pub k: usize,
    pub low_bits: u32,
}

impl EliasFano {
    pub fn new(n: usize, k: usize) -> Self {
        let ratio = (n / k.max(1)).max(1);
        Self {
            n,
            k,
            low_bits: ratio.ilog2(),
        }
    }

    pub fn high_bits(&self) -> u64 {
        (self.k + ((self.n - 1) >> self.low_bits) + 1) as u64
    }

    /// Bits of one block.
    pub fn block_bits(&self) -> u64 {
        self.k as u64 * u64::from(self.low_bits) + self.high_bits()
    }

    /// Appends the block for strictly increasing `pos` (len k, each < n).
    pub fn encode(&self, pos: &[u16], w: &mut BitWriter<'_>) {
        let mask = (1u64 << self.low_bits) - 1;
        for &p in pos {
            w.write(u64::from(p) & mask, self.low_bits);
        }
        let mut prev_high = 0u64;
        for &p in pos {
            let h = u64::from(p) >> self.low_bits;
            w.zeros(h - prev_high);
            w.write(1, 1);
            prev_high = h;
        }
        w.zeros(self.high_bits() - prev_high - pos.len() as u64);
    }

    /// Reads one block into `out` (len k), checking count, range and strict order.
    pub fn decode(
        &self,
        r: &mut BitReader<'_>,
        out: &mut [u16],
        tensor: usize,
        chunk: usize,
    ) -> Result<()> {
        let short = || Error::Truncated {
            needed: 0,
            available: 0,
        };
        for o in out.iter_mut() {
            *o = r.read(self.low_bits, short)? as u16;
        }
        self.decode_highs(out, tensor, chunk, |_, take| r.read(take, short))
    }

    /// The high parts after the low parts are in `out`: `next(offset, n)` yields the next `n`
    /// bits of the H-bit window (LSB first). Checks count, range and strict order.
    #[inline]
    fn decode_highs(
        &self,
        out: &mut [u16],
        tensor: usize,
        chunk: usize,
        mut next: impl FnMut(u64, u32) -> Result<u64>,
    ) -> Result<()> {
        let l = self.low_bits;
        let total = self.high_bits();
        let (mut base, mut count, mut prev) = (0u64, 0usize, None::<u64>);
        while base < total {
            let take = (total - base).min(56) as u32;
            let mut word = next(base, take)?;
            while word != 0 {
                let bit = base + u64::from(word.trailing_zeros());
                word &= word - 1;
                let Some(slot) = out.get_mut(count) else {
                    return Err(Error::WrongCount { tensor, chunk });
                };
                let p = ((bit - count as u64) << l) | u64::from(*slot);
                if p >= self.n as u64 {
                    return Err(Error::PositionOutOfRange { tensor, chunk });
                }
                if prev.is_some_and(|q| q >= p) {
                    return Err(Error::DuplicatePosition { tensor, chunk });
                }
                *slot = p as u16;
                prev = Some(p);
                count += 1;
            }
            base += u64::from(take);
        }
        if count != self.k {
            return Err(Error::WrongCount { tensor, chunk });
        }
        Ok(())
    }

    /// Reads block `chunk` of a stream of concatenated blocks (random access), into `out`
    /// (len k), with the same checks and errors as [`EliasFano::decode`].
    #[inline]
    pub fn decode_block(
        &self,
        src: &[u8],
        chunk: usize,
        out: &mut [u16],
        tensor: usize,
    ) -> Result<()> {
        let bit0 = chunk as u64 * self.block_bits();
        if bit0 + self.block_bits() > src.len() as u64 * 8 || out.len() != self.k {
            return Err(Error::Truncated {
                needed: (bit0 + self.block_bits()).div_ceil(8),
                available: src.len() as u64,
            });
        }
        let l = self.low_bits;
        let high0 = bit0 + self.k as u64 * u64::from(l);
        if l > 0 {
            // Several low parts per 56-bit read.
            let mask = (1u64 << l) - 1;
            let mut at = bit0;
            for group in out.chunks_mut((56 / l) as usize) {
                let mut w = read_bits(src, at, group.len() as u32 * l);
                for o in group.iter_mut() {
                    *o = (w & mask) as u16;
                    w >>= l;
                }
                at += group.len() as u64 * u64::from(l);
            }
        } else {
            out.fill(0);
        }
        // Fast pass, checks folded into one flag; on failure the checked pass names the error.
        let total = self.high_bits();
        let (mut base, mut count, mut prev, mut bad) = (0u64, 0usize, -1i64, false);
        while base < total {
            let take = (total - base).min(56) as u32;
            let mut word = read_bits(src, high0 + base, take);
            while word != 0 {
                let bit = base + u64::from(word.trailing_zeros());
                word &= word - 1;
                match out.get_mut(count) {
                    Some(slot) => {
                        let p = ((bit - count as u64) << l) | u64::from(*slot);
                        bad |= p as i64 <= prev;
                        prev = p as i64;
                        *slot = p as u16;
                    }
                    None => bad = true,
                }
                count += 1;
            }
            base += u64::from(take);
        }
        if bad || count != self.k || prev >= self.n as i64 {
            return self.decode_block_checked(src, chunk, out, tensor);
        }
        Ok(())
    }

    /// [`EliasFano::decode_block`] checking each position as it comes, for the exact error.
    #[cold]
    fn decode_block_checked(
        &self,
        src: &[u8],
        chunk: usize,
        out: &mut [u16],
        tensor: usize,
    ) -> Result<()> {
        let bit0 = chunk as u64 * self.block_bits();
        let l = self.low_bits;
        let mut at = bit0;
        for o in out.iter_mut() {
            *o = read_bits(src, at, l) as u16;
            at += u64::from(l);
        }
        self.decode_highs(out, tensor, chunk, |base, take| {
            Ok(read_bits(src, at + base, take))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_size_near_entropy() {
        let ef = EliasFano::new(4096, 64);
        assert_eq!(ef.low_bits, 6);
        assert_eq!(ef.block_bits(), 512);
    }

    #[test]
    fn round_trip_edges() {
        for (n, k) in [
            (4096, 64),
            (1, 1),
            (7, 7),
            (7, 3),
            (65536, 64),
            (100, 1),
            (64, 63),
        ] {
            let ef = EliasFano::new(n, k);
            let step = n / k;
            let pos: Vec<u16> = (0..k)
                .map(|i| (i * step + (n - 1 - (k - 1) * step).min(i)) as u16)
                .collect();
            assert!(pos.windows(2).all(|w| w[0] < w[1]) && (*pos.last().unwrap() as usize) < n);
            let mut buf = Vec::new();
            let mut w = BitWriter::new(&mut buf);
            ef.encode(&pos, &mut w);
            w.finish();
            assert_eq!(buf.len() as u64, ef.block_bits().div_ceil(8));
            let mut out = vec![0u16; k];
            let mut r = BitReader::new(&buf);
            ef.decode(&mut r, &mut out, 0, 0).unwrap();
            assert_eq!(out, pos, "n={n} k={k}");
            // Random access to the second of two blocks.
            let mut two = Vec::new();
            let mut w = BitWriter::new(&mut two);
            ef.encode(&pos, &mut w);
            ef.encode(&pos, &mut w);
            w.finish();
            let mut out = vec![0u16; k];
            ef.decode_block(&two, 1, &mut out, 0).unwrap();
            assert_eq!(out, pos, "n={n} k={k}");
        }
    }
}
