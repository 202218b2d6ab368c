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

/// Where a slice lies in memory, for prefetch hints only (never dereferenced), so that a
/// slice can be prefetched while it is borrowed mutably elsewhere.
#[derive(Clone, Copy)]
pub(crate) struct Span {
    ptr: *const f32,
    len: usize,
}

impl Span {
    pub fn of(data: &[f32]) -> Self {
        Self {
            ptr: data.as_ptr(),
            len: data.len(),
        }
    }
    const EMPTY: Self = Self {
        ptr: std::ptr::null(),
        len: 0,
    };
}

/// Prefetches the cache line holding element `i` of `data`, if any (a hint; no effect on
/// results).
#[inline(always)]
fn prefetch_line(data: Span, i: usize) {
    #[cfg(target_arch = "x86_64")]
    if i < data.len {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch never faults and reads nothing architecturally (the address is
        // inside the span anyway); SSE is part of the x86_64 baseline.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(data.ptr.wrapping_add(i).cast()) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, i);
}

/// Walks a block of rows in two arrays and prefetches a few cache lines per `tick`, so that
/// memory transfers for the next block overlap with computing on the current one.
pub(crate) struct Prefetch {
    pub a: Span,
    pub b: Span,
    pub start: usize,
    pub stride: usize,
    pub width: usize,
    pub rows: usize,
    pub per_tick: usize,
    pub pos: usize,
    pub row: usize,
    pub line: usize,
}

impl Prefetch {
    pub fn none() -> Self {
        Prefetch {
            a: Span::EMPTY,
            b: Span::EMPTY,
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

    #[inline(always)]
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

// ---------------------------------------------------------------------------------------------
// Kernels of the band pipeline (chunks whose width is a multiple of 8). Every kernel has a
// portable version and an AVX2 version (the candidate gather and count also an AVX-512 one)
// with identical results (integer compares on magnitude keys; the error-feedback update is
// the same f32 multiply-then-add, never an FMA).

/// Magnitude key of a float's bits (sign cleared): monotone in |x| for non-NaN values.
const ABS: u32 = 0x7fff_ffff;
/// Keys above this are infinities or NaN.
const MAX_FINITE: u32 = 0x7f7f_ffff;

/// `e ← β·e + Δ` over one chunk row (`e.len() == d.len()`, a multiple of 8); folds the
/// magnitude keys into 8 lane maxima (`lanes[j]` = max over columns ≡ j mod 8) and returns
/// `true` if a value is not finite.
#[cfg(test)]
pub(crate) fn ef_row(e: &mut [f32], d: &[f32], beta: f32, lanes: &mut [u32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was detected on this CPU just above.
        return unsafe { ef_row_avx2(e, d, beta, lanes) };
    }
    ef_row_scalar(e, d, beta, lanes)
}

#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn ef_row_scalar(e: &mut [f32], d: &[f32], beta: f32, lanes: &mut [u32]) -> bool {
    let mut mx = [0u32; 8];
    for (ev, dv) in e.chunks_exact_mut(8).zip(d.chunks_exact(8)) {
        for ((x, &y), m) in ev.iter_mut().zip(dv).zip(mx.iter_mut()) {
            *x = beta * *x + y;
            *m = (*m).max(x.to_bits() & ABS);
        }
    }
    for (l, m) in lanes.iter_mut().zip(mx) {
        *l = m;
    }
    // A value is not finite iff its key exceeds MAX_FINITE, iff some lane maximum does.
    mx.iter().any(|&m| m > MAX_FINITE)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn ef_row_avx2(e: &mut [f32], d: &[f32], beta: f32, lanes: &mut [u32]) -> bool {
    use std::arch::x86_64::*;
    let b = _mm256_set1_ps(beta);
    let abs = _mm256_set1_epi32(ABS as i32);
    let fin = _mm256_set1_epi32(MAX_FINITE as i32);
    let mut mx = _mm256_setzero_si256();
    for (ev, dv) in e.chunks_exact_mut(8).zip(d.chunks_exact(8)) {
        let (Ok(ev), Ok(dv)) = (<&mut [f32; 8]>::try_from(ev), <&[f32; 8]>::try_from(dv)) else {
            continue;
        };
        // SAFETY: `ev` and `dv` are 8 valid f32 each; unaligned loads/stores are allowed.
        unsafe {
            let x = _mm256_loadu_ps(ev.as_ptr());
            let y = _mm256_loadu_ps(dv.as_ptr());
            let x = _mm256_add_ps(_mm256_mul_ps(b, x), y);
            _mm256_storeu_ps(ev.as_mut_ptr(), x);
            // Keys are non-negative as i32, so a signed maximum orders them.
            mx = _mm256_max_epi32(mx, _mm256_and_si256(_mm256_castps_si256(x), abs));
        }
    }
    if let Some(Ok(l)) = lanes.get_mut(..8).map(<&mut [u32; 8]>::try_from) {
        // SAFETY: `l` is 8 valid u32.
        unsafe { _mm256_storeu_si256(l.as_mut_ptr().cast(), mx) };
    }
    // A value is not finite iff its key exceeds MAX_FINITE, iff some lane maximum does.
    _mm256_movemask_epi8(_mm256_cmpgt_epi32(mx, fin)) != 0
}

/// One group of chunks (a run of `n` chunks of one band) inside a row-major matrix.
pub(crate) struct GroupRows {
    /// Offset of the group's first value, row stride, chunk width and height, chunks.
    pub base: usize,
    pub cols: usize,
    pub cw: usize,
    pub rows: usize,
    pub n: usize,
}

/// [`ef_row`] over every chunk row of a group, row by row (streaming); lane maxima of chunk
/// j's row r go to `gm[(j·rows + r)·8..][..8]`. Returns `true` if a value is not finite.
/// `pf` ticks once per chunk row.
pub(crate) fn ef_group(
    g: &GroupRows,
    es: &mut [f32],
    ds: &[f32],
    beta: f32,
    gm: &mut [u32],
    pf: &mut Prefetch,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was detected on this CPU just above.
        return unsafe { ef_group_avx2(g, es, ds, beta, gm, pf) };
    }
    ef_group_with(g, es, ds, gm, pf, |e, d, l| ef_row_scalar(e, d, beta, l))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn ef_group_avx2(
    g: &GroupRows,
    es: &mut [f32],
    ds: &[f32],
    beta: f32,
    gm: &mut [u32],
    pf: &mut Prefetch,
) -> bool {
    ef_group_with(g, es, ds, gm, pf, |e, d, l| ef_row_avx2(e, d, beta, l))
}

#[inline(always)]
fn ef_group_with(
    g: &GroupRows,
    es: &mut [f32],
    ds: &[f32],
    gm: &mut [u32],
    pf: &mut Prefetch,
    mut row: impl FnMut(&mut [f32], &[f32], &mut [u32]) -> bool,
) -> bool {
    let mut bad = false;
    for r in 0..g.rows {
        let off = g.base + r * g.cols;
        for j in 0..g.n {
            pf.tick();
            let o = off + j * g.cw;
            let l = (j * g.rows + r) * 8;
            if let (Some(er), Some(dr), Some(lanes)) = (
                es.get_mut(o..o + g.cw),
                ds.get(o..o + g.cw),
                gm.get_mut(l..l + 8),
            ) {
                bad |= row(er, dr, lanes);
            }
        }
    }
    bad
}

/// Gathers every value of chunk `j` of the group whose key is ≥ `t` (bits and chunk-local
/// index, in index order) into `bits`/`idx` (room for `chunk_len + 8` needed), skipping
/// rows whose lane maxima `gm` (the chunk's, 8 per row) all stay under `t`; returns the count.
/// `pf` ticks once per row.
#[allow(clippy::too_many_arguments)]
pub(crate) fn collect_chunk(
    g: &GroupRows,
    j: usize,
    es: &[f32],
    gm: &[u32],
    t: u32,
    bits: &mut [u32],
    idx: &mut [u32],
    pf: &mut Prefetch,
) -> usize {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("popcnt") {
        // SAFETY: AVX-512F and POPCNT were detected on this CPU just above.
        return unsafe { collect_chunk_avx512(g, j, es, gm, t, bits, idx, pf) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("popcnt") {
        // SAFETY: AVX2 and POPCNT were detected on this CPU just above.
        return unsafe { collect_chunk_avx2(g, j, es, gm, t, bits, idx, pf) };
    }
    collect_chunk_with(g, j, es, gm, t, pf, |row, base, m| {
        collect_row_scalar(row, base, t, bits, idx, m)
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,popcnt")]
#[allow(clippy::too_many_arguments)]
fn collect_chunk_avx512(
    g: &GroupRows,
    j: usize,
    es: &[f32],
    gm: &[u32],
    t: u32,
    bits: &mut [u32],
    idx: &mut [u32],
    pf: &mut Prefetch,
) -> usize {
    collect_chunk_with(g, j, es, gm, t, pf, |row, base, m| {
        collect_row_avx512(row, base, t, bits, idx, m)
    })
}

/// [`collect_row_avx2`] 16 values at a time, with the native compress of AVX-512.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,popcnt")]
#[inline]
fn collect_row_avx512(
    row: &[f32],
    base: u32,
    t: u32,
    bits: &mut [u32],
    idx: &mut [u32],
    mut m: usize,
) -> usize {
    use std::arch::x86_64::*;
    let tv = _mm512_set1_epi32(t as i32);
    let abs = _mm512_set1_epi32(ABS as i32);
    let mut iv = _mm512_add_epi32(
        _mm512_set1_epi32(base as i32),
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
    );
    let sixteen = _mm512_set1_epi32(16);
    let blocks = row.chunks_exact(16);
    let tail = blocks.remainder();
    for o in blocks {
        let (Ok(o), Some(bs), Some(is)) = (
            <&[f32; 16]>::try_from(o),
            bits.get_mut(m..m + 16),
            idx.get_mut(m..m + 16),
        ) else {
            break;
        };
        // SAFETY: `o` is 16 valid f32 and `bs`/`is` are 16 valid u32 each; unaligned loads
        // and stores are allowed.
        unsafe {
            let v = _mm512_castps_si512(_mm512_loadu_ps(o.as_ptr()));
            let k = _mm512_cmpge_epu32_mask(_mm512_and_si512(v, abs), tv);
            _mm512_storeu_si512(bs.as_mut_ptr().cast(), _mm512_maskz_compress_epi32(k, v));
            _mm512_storeu_si512(is.as_mut_ptr().cast(), _mm512_maskz_compress_epi32(k, iv));
            m += (k as u32).count_ones() as usize;
        }
        iv = _mm512_add_epi32(iv, sixteen);
    }
    if tail.is_empty() {
        return m;
    }
    let done = row.len() - tail.len();
    collect_row_avx2(tail, base + done as u32, t, bits, idx, m)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt")]
#[allow(clippy::too_many_arguments)]
fn collect_chunk_avx2(
    g: &GroupRows,
    j: usize,
    es: &[f32],
    gm: &[u32],
    t: u32,
    bits: &mut [u32],
    idx: &mut [u32],
    pf: &mut Prefetch,
) -> usize {
    collect_chunk_with(g, j, es, gm, t, pf, |row, base, m| {
        collect_row_avx2(row, base, t, bits, idx, m)
    })
}

#[inline(always)]
fn collect_chunk_with(
    g: &GroupRows,
    j: usize,
    es: &[f32],
    gm: &[u32],
    t: u32,
    pf: &mut Prefetch,
    mut row: impl FnMut(&[f32], u32, usize) -> usize,
) -> usize {
    let start = g.base + j * g.cw;
    let mut m = 0;
    for (r, lanes) in gm.chunks_exact(8).enumerate() {
        pf.tick();
        // A row whose maxima all stay under t holds no candidate.
        if lanes.iter().all(|&x| x < t) {
            continue;
        }
        let o = start + r * g.cols;
        m = row(es.get(o..o + g.cw).unwrap_or(&[]), (r * g.cw) as u32, m);
    }
    m
}

/// Number of magnitude keys ≥ `t` (`t ≤ 2^31`) among `keys`, float bits whose sign is ignored.
#[inline]
pub(crate) fn count_ge(keys: &[u32], t: u32) -> usize {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("popcnt") {
        // SAFETY: AVX-512F and POPCNT were detected on this CPU just above.
        return unsafe { count_ge_avx512(keys, t) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was detected on this CPU just above.
        return unsafe { count_ge_avx2(keys, t) };
    }
    count_ge_scalar(keys, t)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,popcnt")]
fn count_ge_avx512(keys: &[u32], t: u32) -> usize {
    use std::arch::x86_64::*;
    let tv = _mm512_set1_epi32(t as i32);
    let abs = _mm512_set1_epi32(ABS as i32);
    let blocks = keys.chunks_exact(16);
    let tail = blocks.remainder();
    let mut n = 0usize;
    for o in blocks {
        let Ok(o) = <&[u32; 16]>::try_from(o) else {
            continue;
        };
        // SAFETY: `o` is 16 valid u32.
        let v = unsafe { _mm512_loadu_si512(o.as_ptr().cast()) };
        let k = _mm512_cmpge_epu32_mask(_mm512_and_si512(v, abs), tv);
        n += (k as u32).count_ones() as usize;
    }
    n + count_ge_avx2(tail, t)
}

#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn count_ge_scalar(keys: &[u32], t: u32) -> usize {
    keys.iter().filter(|&&x| x & ABS >= t).count()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn count_ge_avx2(keys: &[u32], t: u32) -> usize {
    use std::arch::x86_64::*;
    // key ≥ t ⇔ key > t − 1 as i32 (keys are non-negative as i32; t = 0 gives −1).
    let tv = _mm256_set1_epi32(t.wrapping_sub(1) as i32);
    let abs = _mm256_set1_epi32(ABS as i32);
    let mut acc = _mm256_setzero_si256();
    let octs = keys.chunks_exact(8);
    let tail = octs.remainder();
    for o in octs {
        let Ok(o) = <&[u32; 8]>::try_from(o) else {
            continue;
        };
        // SAFETY: `o` is 8 valid u32.
        let v = unsafe { _mm256_loadu_si256(o.as_ptr().cast()) };
        let v = _mm256_and_si256(v, abs);
        acc = _mm256_sub_epi32(acc, _mm256_cmpgt_epi32(v, tv));
    }
    let mut lanes = [0u32; 8];
    // SAFETY: `lanes` is 8 valid u32.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), acc) };
    lanes.iter().map(|&c| c as usize).sum::<usize>() + count_ge_scalar(tail, t)
}

/// Shuffle table for the compress-store: entry m lists the set lanes of m, lowest first.
const COMPRESS: [[u32; 8]; 256] = {
    let mut t = [[0u32; 8]; 256];
    let mut m = 0;
    while m < 256 {
        let (mut j, mut n) = (0, 0);
        while j < 8 {
            if m >> j & 1 == 1 {
                t[m][n] = j as u32;
                n += 1;
            }
            j += 1;
        }
        m += 1;
    }
    t
};

/// Appends the bits and row-major chunk index of every value of one chunk row whose key is
/// ≥ `t` to `bits`/`idx` from offset `m`, in index order; returns the new count. Both
/// buffers need room for `m + row.len() + 8` entries.
#[cfg(test)]
pub(crate) fn collect_row(
    row: &[f32],
    base: u32,
    t: u32,
    bits: &mut [u32],
    idx: &mut [u32],
    m: usize,
) -> usize {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("popcnt") {
        // SAFETY: AVX-512F and POPCNT were detected on this CPU just above.
        return unsafe { collect_row_avx512(row, base, t, bits, idx, m) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("popcnt") {
        // SAFETY: AVX2 and POPCNT were detected on this CPU just above.
        return unsafe { collect_row_avx2(row, base, t, bits, idx, m) };
    }
    collect_row_scalar(row, base, t, bits, idx, m)
}

#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn collect_row_scalar(
    row: &[f32],
    base: u32,
    t: u32,
    bits: &mut [u32],
    idx: &mut [u32],
    mut m: usize,
) -> usize {
    for (j, x) in row.iter().enumerate() {
        let b = x.to_bits();
        if b & ABS >= t
            && let (Some(bs), Some(is)) = (bits.get_mut(m), idx.get_mut(m))
        {
            *bs = b;
            *is = base + j as u32;
            m += 1;
        }
    }
    m
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt")]
#[inline]
fn collect_row_avx2(
    row: &[f32],
    base: u32,
    t: u32,
    bits: &mut [u32],
    idx: &mut [u32],
    mut m: usize,
) -> usize {
    use std::arch::x86_64::*;
    let tv = _mm256_set1_epi32(t.wrapping_sub(1) as i32);
    let abs = _mm256_set1_epi32(ABS as i32);
    let mut iv = _mm256_add_epi32(
        _mm256_set1_epi32(base as i32),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    );
    let eight = _mm256_set1_epi32(8);
    let octs = row.chunks_exact(8);
    let tail = octs.remainder();
    for o in octs {
        let (Ok(o), Some(bs), Some(is)) = (
            <&[f32; 8]>::try_from(o),
            bits.get_mut(m..m + 8),
            idx.get_mut(m..m + 8),
        ) else {
            break;
        };
        // SAFETY: `o` is 8 valid f32, `bs`/`is` are 8 valid u32 each, and every entry of
        // COMPRESS is a lane index < 8.
        unsafe {
            let v = _mm256_castps_si256(_mm256_loadu_ps(o.as_ptr()));
            let hit = _mm256_cmpgt_epi32(_mm256_and_si256(v, abs), tv);
            let mask = _mm256_movemask_ps(_mm256_castsi256_ps(hit)) as usize & 0xff;
            let perm = _mm256_loadu_si256(COMPRESS[mask].as_ptr().cast());
            _mm256_storeu_si256(bs.as_mut_ptr().cast(), _mm256_permutevar8x32_epi32(v, perm));
            _mm256_storeu_si256(
                is.as_mut_ptr().cast(),
                _mm256_permutevar8x32_epi32(iv, perm),
            );
            m += mask.count_ones() as usize;
        }
        iv = _mm256_add_epi32(iv, eight);
    }
    let done = row.len() - tail.len();
    collect_row_scalar(tail, base + done as u32, t, bits, idx, m)
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

    fn sample(n: usize, seed: u64) -> Vec<f32> {
        let mut z = seed;
        (0..n)
            .map(|i| {
                z = z
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let v = ((z >> 40) % 64) as f32 - 31.5;
                match i % 11 {
                    0 => 0.0,
                    1 => -0.0,
                    2 => 4.0, // ties
                    _ => v * 0.37,
                }
            })
            .collect()
    }

    #[test]
    fn band_kernels_match_scalar() {
        for (len, seed) in [
            (8, 1),
            (64, 2),
            (128, 3),
            (64, 4),
            (24, 5),
            (56, 6),
            (40, 7),
        ] {
            let e0 = sample(len, seed);
            let d = sample(len, seed + 100);
            let mut e1 = e0.clone();
            let mut l1 = [0u32; 8];
            let b1 = ef_row(&mut e1, &d, 0.95, &mut l1);
            let mut e2 = e0.clone();
            let mut l2 = [0u32; 8];
            let b2 = ef_row_scalar(&mut e2, &d, 0.95, &mut l2);
            assert_eq!((b1, l1), (b2, l2));
            assert_eq!(
                e1.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                e2.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            );
            let keys: Vec<u32> = e1.iter().map(|x| x.to_bits()).collect();
            for t in [
                0u32,
                1,
                0x3f80_0000,
                0x4080_0000,
                0x4100_0000,
                0x7fff_ffff,
                0x8000_0000,
            ] {
                assert_eq!(count_ge(&keys, t), count_ge_scalar(&keys, t), "t={t:#x}");
                let (mut b1, mut i1) = (vec![0; len + 16], vec![0; len + 16]);
                let (mut b2, mut i2) = (vec![0; len + 16], vec![0; len + 16]);
                let m1 = collect_row(&e1, 5, t, &mut b1, &mut i1, 3);
                let m2 = collect_row_scalar(&e1, 5, t, &mut b2, &mut i2, 3);
                assert_eq!(m1, m2);
                assert_eq!((&b1[..m1], &i1[..m1]), (&b2[..m2], &i2[..m2]));
                // The AVX2 kernels too, where the dispatch above took AVX-512.
                #[cfg(target_arch = "x86_64")]
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("popcnt")
                {
                    // SAFETY: AVX2 and POPCNT were detected on this CPU just above.
                    let (n, m3) = unsafe {
                        (
                            count_ge_avx2(&keys, t),
                            collect_row_avx2(&e1, 5, t, &mut b1, &mut i1, 3),
                        )
                    };
                    assert_eq!(n, count_ge_scalar(&keys, t), "t={t:#x}");
                    assert_eq!((&b1[..m3], &i1[..m3]), (&b2[..m2], &i2[..m2]));
                }
            }
        }
        let mut nan = vec![1.0f32; 16];
        nan[9] = f32::NAN;
        let mut l = [0u32; 8];
        assert!(ef_row(&mut nan, &[0.0; 16], 1.0, &mut l));
        assert!(ef_row_scalar(&mut nan, &[0.0; 16], 1.0, &mut l));
    }
}
