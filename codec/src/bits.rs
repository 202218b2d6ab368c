//! LSB-first bit packing: bit i of a stream is bit (i mod 8) of byte ⌊i/8⌋.

use crate::error::{Error, Result};

pub(crate) struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    acc: u64,
    nbits: u32,
}

impl<'a> BitWriter<'a> {
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        Self {
            out,
            acc: 0,
            nbits: 0,
        }
    }

    /// Appends the low `n` bits of `v` (n ≤ 32).
    #[inline]
    pub fn write(&mut self, v: u64, n: u32) {
        debug_assert!(n <= 32 && (n == 64 || v >> n == 0));
        self.acc |= v << self.nbits;
        self.nbits += n;
        while self.nbits >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.nbits -= 8;
        }
    }

    /// Appends `n` zero bits.
    pub fn zeros(&mut self, mut n: u64) {
        while n > 0 {
            let t = n.min(32) as u32;
            self.write(0, t);
            n -= u64::from(t);
        }
    }

    /// Pads with zero bits to a byte boundary.
    pub fn finish(self) {
        if self.nbits > 0 {
            self.out.push(self.acc as u8);
        }
    }
}

/// Reader over a byte slice that returns an error instead of reading past it.
pub(crate) struct BitReader<'a> {
    bytes: &'a [u8],
    pos: u64,
}

impl<'a> BitReader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// Reads `n` ≤ 56 bits.
    #[inline]
    pub fn read(&mut self, n: u32, on_short: impl Fn() -> Error) -> Result<u64> {
        if n == 0 {
            return Ok(0);
        }
        let end = self.pos + u64::from(n);
        if end > self.bytes.len() as u64 * 8 {
            return Err(on_short());
        }
        let first = (self.pos / 8) as usize;
        let shift = (self.pos % 8) as u32;
        let mut word = [0u8; 8];
        let avail = self.bytes.get(first..).unwrap_or(&[]);
        let take = avail.len().min(8);
        word[..take].copy_from_slice(&avail[..take]);
        let v = (u64::from_le_bytes(word) >> shift) & ((1u64 << n) - 1);
        self.pos = end;
        Ok(v)
    }

    /// Checks the bits up to the next byte boundary are zero and at the end of the slice.
    pub fn finish_strict(self, on_bad: impl Fn() -> Error) -> Result<()> {
        let used = self.pos.div_ceil(8);
        if used != self.bytes.len() as u64 {
            return Err(on_bad());
        }
        let rem = (self.pos % 8) as u32;
        if rem != 0 {
            let last = self.bytes.last().copied().unwrap_or(0);
            if last >> rem != 0 {
                return Err(on_bad());
            }
        }
        Ok(())
    }
}

/// Reads `n` ≤ 64 bits at bit offset `pos` of `src` (LSB-first); bits past the end read as 0.
#[inline]
pub(crate) fn read_bits(src: &[u8], pos: u64, n: u32) -> u64 {
    if n == 0 {
        return 0;
    }
    let byte = (pos / 8) as usize;
    let shift = (pos % 8) as u32;
    let mut v = match src.get(byte..byte + 8) {
        Some(w) => {
            let mut a = [0u8; 8];
            a.copy_from_slice(w);
            u64::from_le_bytes(a) >> shift
        }
        None => {
            let mut a = [0u8; 8];
            let tail = src.get(byte..).unwrap_or(&[]);
            a[..tail.len().min(8)].copy_from_slice(&tail[..tail.len().min(8)]);
            u64::from_le_bytes(a) >> shift
        }
    };
    if n + shift > 64 {
        let next = src.get(byte + 8).copied().unwrap_or(0);
        v |= u64::from(next) << (64 - shift);
    }
    if n < 64 { v & ((1u64 << n) - 1) } else { v }
}

/// ORs the low `n` ≤ 64 bits of `v` into `dst` at bit offset `pos` (LSB-first); bits past the
/// end of `dst` are dropped.
#[inline]
pub(crate) fn or_bits(dst: &mut [u8], mut pos: u64, mut v: u64, mut n: u32) {
    if n < 64 {
        v &= (1u64 << n) - 1;
    }
    while n > 0 {
        let shift = (pos % 8) as u32;
        let take = (8 - shift).min(n);
        if let Some(b) = dst.get_mut((pos / 8) as usize) {
            *b |= ((v << shift) & 0xff) as u8;
        }
        v = v.checked_shr(take).unwrap_or(0);
        pos += u64::from(take);
        n -= take;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        let mut w = BitWriter::new(&mut buf);
        let items: Vec<(u64, u32)> = (0..500u64)
            .map(|i| (i * 7919 % (1 << (i % 30 + 1)), (i % 30 + 1) as u32))
            .collect();
        for &(v, n) in &items {
            w.write(v, n);
        }
        w.finish();
        let mut r = BitReader::new(&buf);
        for &(v, n) in &items {
            assert_eq!(r.read(n, || Error::BadMagic).unwrap(), v);
        }
        r.finish_strict(|| Error::BadMagic).unwrap();
        let mut r = BitReader::new(&buf[..3]);
        assert!(r.read(25, || Error::BadMagic).is_err());
    }

    #[test]
    fn positional_bits() {
        let mut buf = vec![0u8; 256];
        let items: Vec<(u64, u32)> = (0..40u64)
            .map(|i| {
                let n = (i * 13 % 64 + 1) as u32;
                (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - n), n)
            })
            .collect();
        let mut pos = 0;
        for &(v, n) in &items {
            or_bits(&mut buf, pos, v, n);
            pos += u64::from(n);
        }
        let mut pos = 0;
        for &(v, n) in &items {
            if pos + u64::from(n) <= 2048 {
                assert_eq!(read_bits(&buf, pos, n), v, "pos {pos} n {n}");
            }
            pos += u64::from(n);
        }
        assert_eq!(read_bits(&buf, 10_000, 64), 0);
    }
}
