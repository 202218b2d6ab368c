//! Positions of one aggregate tensor on the wire: `m` strictly increasing indices in `[0, n)`.
//! `m = 0` and `m = n` take no bytes; otherwise Elias–Fano over `[0, n)` or an n-bit bitmap,
//! whichever is smaller. The choice follows from (n, m), so it is not transmitted.

use crate::bits::{or_bits, read_bits};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PositionCode {
    /// No bytes: nothing (m = 0) or everything (m = n) is carried.
    Implicit,
    /// `m` low parts of `low_bits` bits, then a window of `m + ((n−1) >> low_bits) + 1` bits.
    EliasFano { low_bits: u32 },
    /// Bit i set ⇔ position i carried.
    Bitmap,
}

impl PositionCode {
    /// The code for `m ≤ n` positions of `n`.
    pub fn of(n: u64, m: u64) -> Self {
        if m == 0 || m >= n {
            return Self::Implicit;
        }
        let low_bits = (n / m).ilog2();
        if ef_bits(n, m, low_bits) <= u128::from(n) {
            Self::EliasFano { low_bits }
        } else {
            Self::Bitmap
        }
    }

    /// Bytes of the code (byte-padded).
    pub fn bytes(&self, n: u64, m: u64) -> u64 {
        match *self {
            Self::Implicit => 0,
            // Chosen only when it is ≤ n bits, so it fits in u64.
            Self::EliasFano { low_bits } => ef_bits(n, m, low_bits).div_ceil(8) as u64,
            Self::Bitmap => n.div_ceil(8),
        }
    }
}

fn ef_bits(n: u64, m: u64, l: u32) -> u128 {
    u128::from(m) * u128::from(l + 1) + u128::from(((n - 1) >> l) + 1)
}

/// Writes `positions` (strictly increasing, each < n; `m` of them) into the zeroed `dst`.
pub(crate) fn encode_positions(
    code: PositionCode,
    m: u64,
    dst: &mut [u8],
    positions: impl FnOnce(&mut dyn FnMut(u64)),
) {
    match code {
        PositionCode::Implicit => {}
        PositionCode::Bitmap => positions(&mut |p| or_bits(dst, p, 1, 1)),
        PositionCode::EliasFano { low_bits } => {
            let high_base = m * u64::from(low_bits);
            let mut i = 0u64;
            positions(&mut |p| {
                or_bits(dst, i * u64::from(low_bits), p, low_bits);
                or_bits(dst, high_base + (p >> low_bits) + i, 1, 1);
                i += 1;
            });
        }
    }
}

/// Reads the positions of `src` (exactly the code's bytes), checking count, range, strict
/// order and zero padding; calls `f` for each, ascending. `tensor` names errors.
pub(crate) fn decode_positions(
    code: PositionCode,
    n: u64,
    m: u64,
    src: &[u8],
    tensor: usize,
    mut f: impl FnMut(u64),
) -> Result<()> {
    let total_bits = match code {
        PositionCode::Implicit => {
            if m == n {
                (0..n).for_each(f);
            }
            return Ok(());
        }
        PositionCode::Bitmap => {
            let mut count = 0u64;
            for (i, &b) in src.iter().enumerate() {
                let mut b = b;
                while b != 0 {
                    let p = i as u64 * 8 + u64::from(b.trailing_zeros());
                    b &= b - 1;
                    if p >= n {
                        return Err(Error::NonZeroPadding { tensor });
                    }
                    f(p);
                    count += 1;
                }
            }
            if count != m {
                return Err(wrong_count(tensor));
            }
            return Ok(());
        }
        PositionCode::EliasFano { low_bits } => {
            decode_ef(n, m, low_bits, src, tensor, f)?;
            ef_bits(n, m, low_bits) as u64
        }
    };
    // Padding after the window.
    let rem = (total_bits % 8) as u32;
    if rem != 0 && src.last().is_some_and(|&b| b >> rem != 0) {
        return Err(Error::NonZeroPadding { tensor });
    }
    Ok(())
}

fn wrong_count(tensor: usize) -> Error {
    Error::WrongCount { tensor, chunk: 0 }
}

fn decode_ef(
    n: u64,
    m: u64,
    l: u32,
    src: &[u8],
    tensor: usize,
    mut f: impl FnMut(u64),
) -> Result<()> {
    let high_base = m * u64::from(l);
    let window = ((n - 1) >> l) + 1 + m;
    let (mut count, mut prev) = (0u64, None::<u64>);
    let mut base = 0u64;
    while base < window {
        let take = (window - base).min(56) as u32;
        let mut word = read_bits(src, high_base + base, take);
        while word != 0 {
            let bit = base + u64::from(word.trailing_zeros());
            word &= word - 1;
            if count >= m {
                return Err(wrong_count(tensor));
            }
            let low = read_bits(src, count * u64::from(l), l);
            let p = ((bit - count) << l) | low;
            if p >= n {
                return Err(Error::PositionOutOfRange { tensor, chunk: 0 });
            }
            if prev.is_some_and(|q| q >= p) {
                return Err(Error::DuplicatePosition { tensor, chunk: 0 });
            }
            f(p);
            prev = Some(p);
            count += 1;
        }
        base += u64::from(take);
    }
    if count != m {
        return Err(wrong_count(tensor));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_code() {
        for (n, step) in [
            (1000u64, 1u64),
            (1000, 2),
            (1000, 3),
            (1000, 7),
            (1000, 64),
            (1000, 999),
            (1, 1),
            (70, 1),
            (1 << 20, 4099),
        ] {
            let pos: Vec<u64> = (0..n).step_by(step as usize).collect();
            let m = pos.len() as u64;
            let code = PositionCode::of(n, m);
            let mut buf = vec![0u8; code.bytes(n, m) as usize];
            encode_positions(code, m, &mut buf, |f| pos.iter().for_each(|&p| f(p)));
            let mut back = vec![];
            decode_positions(code, n, m, &buf, 0, |p| back.push(p)).unwrap();
            assert_eq!(back, pos, "n {n} step {step} code {code:?}");
        }
    }

    #[test]
    fn choice_tracks_the_bound() {
        assert_eq!(
            PositionCode::of(4096, 64),
            PositionCode::EliasFano { low_bits: 6 }
        );
        assert_eq!(PositionCode::of(4096, 2600), PositionCode::Bitmap);
        assert_eq!(PositionCode::of(4096, 4096), PositionCode::Implicit);
        assert_eq!(PositionCode::of(4096, 0), PositionCode::Implicit);
    }
}
