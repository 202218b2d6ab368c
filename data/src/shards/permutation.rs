//! A keyed bijection of `0..n`: a balanced Feistel network with cycle walking.
//!
//! The network permutes the `2k`-bit domain, `2k` the even bit count ≥ the bits of `n - 1`;
//! values that land at or above `n` are fed through again ("cycle walking") until one lands
//! below `n`. A bijection of a finite set maps every orbit to itself, so the walk ends, and
//! the domain is less than `4n`, so it takes fewer than four passes on average.

use crate::stream::mix;

const ROUNDS: usize = 6;

#[derive(Debug, Clone)]
pub(crate) struct Permutation {
    n: u64,
    half_bits: u32,
    half_mask: u64,
    keys: [u64; ROUNDS],
}

impl Permutation {
    pub(crate) fn new(n: u64, key: u64) -> Self {
        let bits = 64 - n.saturating_sub(1).leading_zeros();
        let half_bits = bits.div_ceil(2);
        // half_bits ≤ 32, so the shift cannot overflow.
        let half_mask = (1u64 << half_bits) - 1;
        let mut keys = [0u64; ROUNDS];
        let mut k = mix(key ^ 0x6665_6973_7465_6c21);
        for slot in &mut keys {
            k = mix(k);
            *slot = k;
        }
        Self {
            n,
            half_bits,
            half_mask,
            keys,
        }
    }

    /// The image of `x`, which must be `< n` (then the image is too).
    pub(crate) fn apply(&self, x: u64) -> u64 {
        if self.n <= 1 {
            return x;
        }
        let mut y = self.feistel(x);
        while y >= self.n {
            y = self.feistel(y);
        }
        y
    }

    fn feistel(&self, x: u64) -> u64 {
        let (mut l, mut r) = (x >> self.half_bits, x & self.half_mask);
        for k in &self.keys {
            (l, r) = (r, l ^ (mix(k ^ r) & self.half_mask));
        }
        (l << self.half_bits) | r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_a_bijection_for_small_domains() {
        for n in [1u64, 2, 3, 4, 5, 7, 8, 9, 100, 255, 256, 257, 1000, 4097] {
            for key in [0u64, 1, 0xdead_beef] {
                let p = Permutation::new(n, key);
                let mut seen = vec![false; n as usize];
                for x in 0..n {
                    let y = p.apply(x);
                    assert!(y < n, "n={n} x={x} y={y}");
                    assert!(!seen[y as usize], "n={n} key={key}: {y} twice");
                    seen[y as usize] = true;
                }
            }
        }
    }

    #[test]
    fn keys_give_different_orders_and_huge_domains_work() {
        let a: Vec<u64> = (0..64)
            .map(|x| Permutation::new(1000, 1).apply(x))
            .collect();
        let b: Vec<u64> = (0..64)
            .map(|x| Permutation::new(1000, 2).apply(x))
            .collect();
        assert_ne!(a, b);
        assert_ne!(a, (0..64).collect::<Vec<_>>());
        for n in [u64::MAX, u64::MAX / 3, 1 << 63] {
            let p = Permutation::new(n, 9);
            assert!(p.apply(n - 1) < n && p.apply(0) < n);
        }
    }
}
