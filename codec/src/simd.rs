//! Hit masks for the top-k scan: bit j set iff |x_j| ≥ threshold (up to 64 values).

/// Bit mask of the values of `seg` (len ≤ 64) whose magnitude reaches `t`.
#[inline]
pub(crate) fn hit_mask(seg: &[f32], t: f32) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was detected on this CPU just above.
            unsafe { hit_mask_avx2(seg, t) }
        } else {
            // SAFETY: SSE2 is part of the x86_64 baseline, so the feature is always present.
            unsafe { hit_mask_sse2(seg, t) }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        hit_mask_scalar(seg, t)
    }
}

/// Prefetches the cache line holding `data[i]`, if any (a hint; no effect on results).
#[inline(always)]
fn prefetch_line(data: &[f32], i: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(x) = data.get(i) {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: prefetching an address inside a live slice never faults and reads nothing
        // architecturally; SSE is part of the x86_64 baseline.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(x).cast()) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, i);
}

/// Walks a block of rows in two arrays and prefetches a few cache lines per `tick`, so that
/// memory transfers for the next block overlap with computing on the current one.
pub(crate) struct Prefetch<'a> {
    pub a: &'a [f32],
    pub b: &'a [f32],
    pub start: usize,
    pub stride: usize,
    pub width: usize,
    pub rows: usize,
    pub per_tick: usize,
    pub pos: usize,
    pub row: usize,
    pub line: usize,
}

impl Prefetch<'_> {
    pub fn none() -> Self {
        Prefetch {
            a: &[],
            b: &[],
            start: 0,
            stride: 0,
            width: 0,
            rows: 0,
            per_tick: 0,
            pos: 0,
            row: 0,
            line: 0,
        }
    }

    /// Issues whatever this block has left.
    pub fn finish(&mut self) {
        let lines = self.rows * self.width.div_ceil(16);
        while self.per_tick > 0 && self.pos < lines {
            self.tick();
        }
    }

    #[inline]
    pub fn tick(&mut self) {
        let lines = self.width.div_ceil(16);
        for _ in 0..self.per_tick {
            // pos counts lines row by row; `row`/`line` avoid a division per line.
            if lines == 0 || self.row >= self.rows {
                return;
            }
            let i = self.start + self.row * self.stride + self.line * 16;
            prefetch_line(self.a, i);
            prefetch_line(self.b, i);
            self.pos += 1;
            self.line += 1;
            if self.line == lines {
                self.line = 0;
                self.row += 1;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
#[inline]
fn hit_mask_sse2(seg: &[f32], t: f32) -> u64 {
    use std::arch::x86_64::{
        _mm_and_ps, _mm_castsi128_ps, _mm_cmpge_ps, _mm_movemask_ps, _mm_set1_epi32, _mm_set1_ps,
        _mm_setr_ps,
    };
    let tv = _mm_set1_ps(t);
    let abs = _mm_castsi128_ps(_mm_set1_epi32(0x7fff_ffff));
    let quads = seg.chunks_exact(4);
    let tail = quads.remainder();
    let mut mask = 0u64;
    for (q, c) in quads.enumerate() {
        if let [a, b, cc, d] = *c {
            let m = _mm_movemask_ps(_mm_cmpge_ps(_mm_and_ps(_mm_setr_ps(a, b, cc, d), abs), tv));
            mask |= u64::from(m as u32) << (4 * q);
        }
    }
    let base = seg.len() - tail.len();
    for (j, x) in tail.iter().enumerate() {
        mask |= u64::from(x.abs() >= t) << (base + j);
    }
    mask
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn hit_mask_avx2(seg: &[f32], t: f32) -> u64 {
    use std::arch::x86_64::{
        _CMP_GE_OQ, _mm256_and_ps, _mm256_castsi256_ps, _mm256_cmp_ps, _mm256_movemask_ps,
        _mm256_set1_epi32, _mm256_set1_ps, _mm256_setr_ps,
    };
    let tv = _mm256_set1_ps(t);
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let octs = seg.chunks_exact(8);
    let tail = octs.remainder();
    let mut mask = 0u64;
    for (q, c) in octs.enumerate() {
        if let [a, b, cc, d, e, f, g, h] = *c {
            let v = _mm256_setr_ps(a, b, cc, d, e, f, g, h);
            let m = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(_mm256_and_ps(v, abs), tv));
            mask |= u64::from(m as u32) << (8 * q);
        }
    }
    let base = seg.len() - tail.len();
    for (j, x) in tail.iter().enumerate() {
        mask |= u64::from(x.abs() >= t) << (base + j);
    }
    mask
}

#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn hit_mask_scalar(seg: &[f32], t: f32) -> u64 {
    seg.iter()
        .enumerate()
        .fold(0u64, |m, (j, x)| m | (u64::from(x.abs() >= t) << j))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simd_matches_scalar() {
        let xs: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 17) as f32 - 8.0) * 0.5)
            .collect();
        for len in [0, 1, 3, 4, 5, 63, 64] {
            for t in [0.0, 0.5, 2.0, 3.5, 10.0] {
                assert_eq!(hit_mask(&xs[..len], t), hit_mask_scalar(&xs[..len], t));
                // SAFETY: SSE2 is baseline on x86_64.
                #[cfg(target_arch = "x86_64")]
                assert_eq!(
                    unsafe { hit_mask_sse2(&xs[..len], t) },
                    hit_mask_scalar(&xs[..len], t)
                );
            }
        }
    }
}
