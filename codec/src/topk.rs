//! Exact top-k by magnitude inside one chunk, in O(chunk) time.
//!
//! Order: larger |x| first, ties to the lower chunk-local index (row-major in the chunk).
//! A threshold from a fixed strided sample narrows the candidates (blocks without a hit are
//! skipped with one vector compare); an exact selection on the unique composite
//! (|x| bits, !index) then picks exactly k. The sample only affects speed, never the result.

/// Reusable per-thread buffers: nothing is allocated per chunk.
pub(crate) struct Scratch {
    sample: Vec<u32>,
    cand: Vec<u64>,
    pub work: Vec<u64>,
    /// k-th largest magnitude of the previous chunk (0 before the first).
    last_kth: f32,
    /// Band pipeline: per chunk row, 8 lane maxima of the magnitude keys.
    pub gm: Vec<u32>,
    /// Band pipeline: candidates' bits and chunk-local indices, and the selection buffer.
    pub bits: Vec<u32>,
    pub idx: Vec<u32>,
    /// Band pipeline: the previous chunk's threshold (a guess for the next one).
    pub last_t: u32,
}

impl Scratch {
    pub fn new(chunk_len: usize) -> Self {
        Self {
            sample: Vec::with_capacity(2 * SAMPLE),
            cand: vec![0; chunk_len],
            work: Vec::with_capacity(chunk_len),
            last_kth: 0.0,
            gm: Vec::new(),
            bits: Vec::new(),
            idx: Vec::new(),
            last_t: 0,
        }
    }
}

const SAMPLE: usize = 128;

use crate::simd::{Prefetch, hit_mask};

/// Magnitude key of a float: its bits without the sign (monotone in |x| for non-NaN).
#[inline(always)]
pub(crate) fn key(x: f32) -> u32 {
    x.to_bits() & 0x7fff_ffff
}

/// A chunk inside a row-major matrix: `rows` rows of `width` values, `stride` apart.
#[derive(Clone, Copy)]
pub(crate) struct ChunkView<'a> {
    pub data: &'a [f32],
    pub start: usize,
    pub stride: usize,
    pub rows: usize,
    pub width: usize,
}

impl ChunkView<'_> {
    #[inline]
    fn row(&self, r: usize) -> &[f32] {
        let off = self.start + r * self.stride;
        self.data.get(off..off + self.width).unwrap_or(&[])
    }
    #[inline]
    pub fn get(&self, p: usize) -> f32 {
        let (r, c) = crate::error_feedback::split(p, self.width);
        let off = self.start + r * self.stride + c;
        self.data.get(off).copied().unwrap_or(0.0)
    }
    fn len(&self) -> usize {
        self.rows * self.width
    }
}

/// Writes the k chunk-local indices of the largest |x|, ascending, into `out` (len k).
pub(crate) fn select(s: &mut Scratch, chunk: &ChunkView<'_>, out: &mut [u16], pf: &mut Prefetch) {
    let n = chunk.len();
    let k = out.len();
    if k >= n {
        for (i, o) in out.iter_mut().enumerate() {
            *o = i as u16;
        }
        return;
    }
    // Neighbouring chunks look alike: first just under the previous chunk's k-th magnitude,
    // then sampled guesses, then everything. Only speed depends on the guess.
    let mut m = 0;
    if s.last_kth > 0.0 {
        m = collect(chunk, s.last_kth * 0.9, &mut s.cand, pf);
    }
    if m < k || m > 4 * k {
        for slack in [0, 1, 2] {
            let threshold = estimate_threshold(chunk, k, &mut s.sample, slack);
            m = collect(chunk, threshold, &mut s.cand, pf);
            if m >= k {
                break;
            }
        }
    }
    let cand = s.cand.get(..m).unwrap_or(&[]);
    if m == k {
        for (o, c) in out.iter_mut().zip(cand) {
            *o = (u32::MAX - (*c as u32)) as u16;
        }
        s.last_kth = cand
            .iter()
            .map(|c| f32::from_bits((c >> 32) as u32))
            .fold(f32::MAX, f32::min);
        return;
    }
    // The k-th largest composite key; candidates are in index order, so filtering keeps order.
    s.work.clear();
    s.work.extend_from_slice(cand);
    let (_, kth, _) = s.work.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
    let kth = *kth;
    s.last_kth = f32::from_bits((kth >> 32) as u32);
    let mut o = out.iter_mut();
    for c in cand.iter().filter(|&&c| c >= kth) {
        if let Some(slot) = o.next() {
            *slot = (u32::MAX - (*c as u32)) as u16;
        }
    }
}

/// A magnitude that ≥ k of the chunk's values reach with high probability, from a fixed
/// strided sample: slack 0 aims at ~2k, 1 at ~4k, 2 returns 0 (everything).
fn estimate_threshold(chunk: &ChunkView<'_>, k: usize, sample: &mut Vec<u32>, slack: u32) -> f32 {
    let n = chunk.len();
    if slack >= 2 {
        return 0.0;
    }
    let every = (n / SAMPLE).max(1);
    let (row_step, col_step) = if every <= chunk.width {
        (1, every)
    } else {
        (every / chunk.width, chunk.width)
    };
    sample.clear();
    for r in (0..chunk.rows).step_by(row_step) {
        sample.extend(chunk.row(r).iter().step_by(col_step).map(|&x| key(x)));
    }
    let m = sample.len();
    let expected = (k * m).div_ceil(n); // sample hits expected above the true k-th value
    let rank = (expected * (2 << slack) + 2).min(m);
    if rank >= m || rank == 0 {
        return 0.0;
    }
    let (_, nth, _) = sample.select_nth_unstable_by(rank - 1, |a, b| b.cmp(a));
    f32::from_bits(*nth)
}

/// Gathers (key, !index) of values with |x| ≥ threshold, in ascending index order.
#[inline]
fn collect(chunk: &ChunkView<'_>, threshold: f32, cand: &mut [u64], pf: &mut Prefetch) -> usize {
    let mut m = 0usize;
    for r in 0..chunk.rows {
        pf.tick();
        let row = chunk.row(r);
        for (g, seg) in row.chunks(64).enumerate() {
            let base = r * chunk.width + g * 64;
            let mut hits = hit_mask(seg, threshold);
            while hits != 0 {
                let j = hits.trailing_zeros() as usize;
                hits &= hits - 1;
                let i = base + j;
                if let (Some(slot), Some(&x)) = (cand.get_mut(m), seg.get(j)) {
                    *slot = (u64::from(key(x)) << 32) | u64::from(u32::MAX - i as u32);
                    m += 1;
                }
            }
        }
    }
    m
}

/// A key threshold `t` such that at least `k` of the group maxima `gm` reach it (so at least
/// `k` values of the chunk do: each such group holds one), aiming at no more than 1.5k groups;
/// `guess` (e.g. the neighbouring chunk's threshold) only affects speed. 0 if `gm` has fewer
/// than `k` entries (then every value is a candidate).
pub(crate) fn group_threshold(gm: &[u32], k: usize, guess: u32) -> u32 {
    use crate::simd::count_ge;
    const TOP: u32 = 0x8000_0000; // above every key: counts 0
    if gm.len() < k || k == 0 {
        return 0;
    }
    // Invariant: count(lo) ≥ k > count(hi); found_lo/found_hi say whether they were measured.
    let (mut lo, mut hi) = (0u32, TOP);
    let (mut found_lo, mut found_hi) = (false, false);
    let mut step = 1u32 << 20; // ≈ 12% in magnitude
    let mut mid = if guess == 0 || guess >= TOP {
        gm.iter()
            .copied()
            .max()
            .unwrap_or(0)
            .saturating_sub(1 << 22)
    } else {
        guess
    };
    for _ in 0..64 {
        let c = count_ge(gm, mid);
        if c >= k {
            lo = mid;
            found_lo = true;
            if 2 * c <= 3 * k {
                break;
            }
        } else {
            hi = mid;
            found_hi = true;
        }
        if hi - lo <= 1 {
            break;
        }
        mid = match (found_lo, found_hi) {
            (true, false) => lo.saturating_add(step).min(TOP),
            (false, true) => hi.saturating_sub(step),
            _ => lo + (hi - lo) / 2,
        };
        step = step.saturating_mul(2);
    }
    lo
}

/// Exactly the top `k` of `m ≥ k` candidates whose magnitude keys are all ≥ `t` (`bits`:
/// the values' bits, `idx`: chunk-local indices, ascending): writes their indices
/// (ascending) and values to `out`/`vals`. Larger |x| first, ties to the lower index.
pub(crate) fn select_candidates(
    t: u32,
    bits: &[u32],
    idx: &[u32],
    out: &mut [u16],
    vals: &mut [f32],
) {
    use crate::simd::count_ge;
    let k = out.len();
    // The k-th largest key: the largest x with count(key ≥ x) ≥ k (count(lo) ≥ k > count(hi)).
    let mut lo = t;
    if bits.len() > k {
        let mut hi = bits.iter().map(|&b| b & 0x7fff_ffff).max().unwrap_or(t) + 1;
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            let c = count_ge(bits, mid);
            if c >= k {
                lo = mid;
                if c == k {
                    break;
                }
            } else {
                hi = mid;
            }
        }
    }
    // Keys above lo are all taken (fewer than k of them); keys equal to lo fill the rest in
    // index order. Usually count(≥ lo) == k: then a branchless pass takes key ≥ lo.
    let above = count_ge(bits, lo.saturating_add(1)).min(k);
    let equal = count_ge(bits, lo) - above;
    if above + equal == k {
        let mut n = 0usize;
        for (&b, &i) in bits.iter().zip(idx) {
            if let (Some(o), Some(v)) = (out.get_mut(n), vals.get_mut(n)) {
                *o = i as u16;
                *v = f32::from_bits(b);
            }
            n += usize::from(b & 0x7fff_ffff >= lo);
        }
        return;
    }
    let mut ties = k - above;
    let mut slots = out.iter_mut().zip(vals.iter_mut());
    for (&b, &i) in bits.iter().zip(idx) {
        let key = b & 0x7fff_ffff;
        let take = key > lo || (key == lo && ties > 0);
        if take {
            ties -= usize::from(key == lo);
            if let Some((o, v)) = slots.next() {
                *o = i as u16;
                *v = f32::from_bits(b);
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(xs: &[f32], k: usize) -> Vec<u16> {
        let mut idx: Vec<usize> = (0..xs.len()).collect();
        idx.sort_by(|&a, &b| key(xs[b]).cmp(&key(xs[a])).then(a.cmp(&b)));
        let mut out: Vec<u16> = idx[..k].iter().map(|&i| i as u16).collect();
        out.sort_unstable();
        out
    }

    fn run(xs: &[f32], rows: usize, k: usize) -> Vec<u16> {
        let mut s = Scratch::new(xs.len());
        let view = ChunkView {
            data: xs,
            start: 0,
            stride: xs.len() / rows,
            rows,
            width: xs.len() / rows,
        };
        let mut out = vec![0; k];
        select(&mut s, &view, &mut out, &mut Prefetch::none());
        out
    }

    /// One step of a 64-bit linear congruential generator: reproducible test data.
    fn lcg(state: u64) -> u64 {
        state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407)
    }

    #[test]
    fn matches_sort_with_ties_and_zeros() {
        let mut state = 0x1234_5678_u64;
        for case in 0..200 {
            let rows = 1 + case % 4;
            let n = rows * (1 + case * 37 % 1024);
            let k = 1 + case * 13 % n;
            let xs: Vec<f32> = (0..n)
                .map(|_| {
                    state = lcg(state);
                    let v = ((state >> 40) % 7) as f32 - 3.0; // many ties
                    if case % 3 == 0 {
                        v
                    } else {
                        v * (state >> 20 & 0xff) as f32
                    }
                })
                .collect();
            assert_eq!(run(&xs, rows, k), reference(&xs, k), "n={n} k={k}");
        }
        assert_eq!(run(&[0.0; 64], 1, 3), vec![0, 1, 2]);
    }

    #[test]
    fn band_selection_matches_sort() {
        let mut state = 0x9abc_def0_u64;
        for case in 0..300 {
            let n = 8 * (1 + case % 64);
            let k = 1 + case * 7 % n;
            let xs: Vec<f32> = (0..n)
                .map(|_| {
                    state = lcg(state);
                    let v = ((state >> 40) % 9) as f32 - 4.0; // many ties and zeros
                    if case % 2 == 0 {
                        v
                    } else {
                        v * (state >> 20 & 0xff) as f32
                    }
                })
                .collect();
            // Lane maxima of rows of 8, as the error-feedback pass folds them.
            let gm: Vec<u32> = xs.iter().map(|&x| key(x)).collect();
            let guess = [0, 1, 0x3f80_0000, 0x7f00_0000][case % 4];
            let t = group_threshold(&gm, k, guess);
            assert!(crate::simd::count_ge(&gm, t) >= k);
            let (mut bits, mut idx) = (vec![0; n + 8], vec![0; n + 8]);
            let m = crate::simd::collect_row(&xs, 0, t, &mut bits, &mut idx, 0);
            let (mut out, mut vals) = (vec![0u16; k], vec![0f32; k]);
            select_candidates(t, &bits[..m], &idx[..m], &mut out, &mut vals);
            assert_eq!(out, reference(&xs, k), "n={n} k={k}");
            for (&o, &v) in out.iter().zip(&vals) {
                assert_eq!(v.to_bits(), xs[usize::from(o)].to_bits());
            }
        }
    }
}
