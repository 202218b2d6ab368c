//! Aggregation benchmark: `cargo bench -p tributary-codec --bench aggregate`.
//! TRIBUTARY_BENCH_PEERS (default 64) and TRIBUTARY_BENCH_PARAMS (default 24 × [2048, 2048]
//! = 100,663,296) shrink it. Contributions are compressed and encoded first (not timed); a
//! round is then: views of the 64 encodings, peer scales (norms, median clip), every range of
//! the plan, and `encode_aggregate` of the published aggregate. Peak heap comes from a
//! counting global allocator; VmHWM from /proc/self/status is printed alongside.
//! TRIBUTARY_BENCH_REPS (default 3) sets the best-of count; TRIBUTARY_BENCH_DECODED=0 and
//! TRIBUTARY_BENCH_BASELINE=0 skip the comparison paths (decode first; dense `aggregate`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rayon::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Instant;
use tributary_codec::{
    Aggregator, CodecParams, Contribution, ContributionView, DecodeLimits, ErrorFeedback,
    SparseAggregate, TensorShape, compress, decode, decode_aggregate, encode, encode_aggregate,
};

/// Live and peak heap bytes of the whole process.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grow(n: usize) {
    let live = LIVE.fetch_add(n, Relaxed) + n;
    PEAK.fetch_max(live, Relaxed);
}

// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        grow(l.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        grow(l.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if n > l.size() {
            grow(n - l.size());
        } else {
            LIVE.fetch_sub(l.size() - n, Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const COLS: usize = 2048;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let peers = env("TRIBUTARY_BENCH_PEERS", 64);
    let params = env("TRIBUTARY_BENCH_PARAMS", 24 * COLS * COLS);
    let rows = (params / COLS).clamp(64, COLS) / 64 * 64;
    let count = (params / (rows * COLS)).max(1);
    let shapes: Vec<TensorShape> = (0..count)
        .map(|_| TensorShape::new(&[rows, COLS]).unwrap())
        .collect();
    let total = count * rows * COLS;
    let dense_bytes = total * 4;
    let p = CodecParams::default();
    println!(
        "# aggregate bench: {peers} peers × {count} tensors of [{rows}, {COLS}] = {total} params; \
         64×64 chunks, k = {}, {} bits, Production; {} threads",
        p.k_per_chunk,
        p.bits,
        rayon::current_num_threads()
    );
    let t = Instant::now();
    let inputs: Vec<Vec<u8>> = (0..peers)
        .map(|r| encode(&peer(r as u64, &shapes, &p)).unwrap())
        .collect();
    let input_bytes: usize = inputs.iter().map(Vec::len).sum();
    println!(
        "# setup (not timed): compressed and encoded {peers} contributions in {:.1} s: {} ({:.4} bytes/param each); VmHWM {}",
        t.elapsed().as_secs_f64(),
        mb(input_bytes),
        inputs[0].len() as f64 / total as f64,
        status("VmHWM")
    );
    println!("# one dense f32 buffer of the model: {}\n", mb(dense_bytes));
    let agg = Aggregator::default();
    let limits = DecodeLimits {
        expected_shapes: Some(shapes.clone()),
        ..DecodeLimits::default()
    };

    println!(
        "| path | round (best of 3) | CPU time of that round | phases (last run) | peak heap above inputs | peak heap incl. inputs | ÷ dense buffer | VmHWM during (RSS before) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    // 1. From the encoded bytes (the coordinator's path).
    let mut published = Vec::new();
    let rss = status("VmRSS");
    let m = measure(|| {
        // The previous round's blob goes first: a round holds one.
        published = Vec::new();
        let t = Instant::now();
        let views: Vec<ContributionView> = inputs
            .iter()
            .map(|b| ContributionView::from_bytes(b, &limits).unwrap())
            .collect();
        let t_views = t.elapsed().as_secs_f64();
        let a = agg.aggregate_views(&views, None).unwrap();
        let t_agg = t.elapsed().as_secs_f64();
        published = encode_aggregate(&a);
        format!(
            "views {:.3} s, aggregate_views {:.3} s, encode_aggregate {:.3} s",
            t_views,
            t_agg - t_views,
            t.elapsed().as_secs_f64() - t_agg
        )
    });
    row(
        "from encoded bytes (views)",
        m,
        input_bytes,
        dense_bytes,
        rss,
    );

    // 2. Decode all contributions first, then the same aggregation.
    if env("TRIBUTARY_BENCH_DECODED", 1) == 1 {
        let rss = status("VmRSS");
        let m = measure(|| {
            let t = Instant::now();
            let cs: Vec<Contribution> = inputs
                .par_iter()
                .map(|b| decode(b, &limits).unwrap())
                .collect();
            let t_dec = t.elapsed().as_secs_f64();
            let refs: Vec<&Contribution> = cs.iter().collect();
            let a = agg.aggregate_sparse(&refs, None).unwrap();
            let t_agg = t.elapsed().as_secs_f64();
            let bytes = encode_aggregate(&a);
            assert_eq!(bytes, published, "decoded path differs");
            format!(
                "decode {:.3} s, aggregate_sparse {:.3} s, encode {:.3} s",
                t_dec,
                t_agg - t_dec,
                t.elapsed().as_secs_f64() - t_agg
            )
        });
        row(
            "decode all, then aggregate_sparse",
            m,
            input_bytes,
            dense_bytes,
            rss,
        );
    }

    // 3. Baseline: decode all, dense `aggregate` (one f32 buffer per tensor).
    if env("TRIBUTARY_BENCH_BASELINE", 1) == 1 {
        let rss = status("VmRSS");
        let m = measure(|| {
            let t = Instant::now();
            let cs: Vec<Contribution> = inputs
                .par_iter()
                .map(|b| decode(b, &limits).unwrap())
                .collect();
            let t_dec = t.elapsed().as_secs_f64();
            let refs: Vec<&Contribution> = cs.iter().collect();
            std::hint::black_box(agg.aggregate(&refs, None).unwrap());
            format!(
                "decode {:.3} s, dense aggregate {:.3} s (no encoding)",
                t_dec,
                t.elapsed().as_secs_f64() - t_dec
            )
        });
        row(
            "baseline: decode all, dense aggregate",
            m,
            input_bytes,
            dense_bytes,
            rss,
        );
    }
    // Sizes, the worker's decode and the peer scales alone (last, so that the first path's
    // resident-memory figures start from a fresh process).
    println!();
    {
        let views: Vec<ContributionView> = inputs
            .iter()
            .map(|b| ContributionView::from_bytes(b, &limits).unwrap())
            .collect();
        let mut scales = f64::INFINITY;
        for _ in 0..3 {
            let t = Instant::now();
            std::hint::black_box(agg.peer_scales(&views, None).unwrap());
            scales = scales.min(t.elapsed().as_secs_f64());
        }
        let a = agg.aggregate_views(&views, None).unwrap();
        let blob = encode_aggregate(&a);
        aggregate_stats(&a, blob.len(), total);
        drop(a);
        // What each worker does with the published blob.
        let mut dec = f64::INFINITY;
        for _ in 0..3 {
            let t = Instant::now();
            std::hint::black_box(decode_aggregate(&blob, &limits).unwrap());
            dec = dec.min(t.elapsed().as_secs_f64());
        }
        println!("# a worker's decode_aggregate of it: {dec:.3} s (best of 3)");
        println!(
            "# of a round, peer_scales (norms of every peer and tensor, median clip) takes {scales:.3} s (best of 3)"
        );
    }
}

/// Best of TRIBUTARY_BENCH_REPS wall times, the CPU time of that run, the largest peak heap
/// above the live bytes at the start, and the last run's phase breakdown.
fn measure(mut f: impl FnMut() -> String) -> (f64, f64, usize, String) {
    let (mut best, mut cpu, mut peak, mut phases) = (f64::INFINITY, 0.0, 0, String::new());
    // Resets VmHWM to the current RSS (Linux ≥ 4.0), so the table's VmHWM is this path's.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    for _ in 0..env("TRIBUTARY_BENCH_REPS", 3) {
        let base = LIVE.load(Relaxed);
        PEAK.store(base, Relaxed);
        let (t, c) = (Instant::now(), cpu_seconds());
        phases = f();
        let wall = t.elapsed().as_secs_f64();
        if wall < best {
            (best, cpu) = (wall, cpu_seconds() - c);
        }
        peak = peak.max(PEAK.load(Relaxed).saturating_sub(base));
    }
    (best, cpu, peak, phases)
}

/// User + system CPU time of the process so far (clock ticks of 10 ms).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends with ')'): utime and stime are 12th and 13th.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    f.iter().sum::<f64>() / 100.0
}

fn row(name: &str, m: (f64, f64, usize, String), inputs: usize, dense: usize, rss: String) {
    let (best, cpu, peak, phases) = m;
    println!(
        "| {name} | {best:.3} s | {cpu:.2} s | {phases} | {} | {} | {:.2}× | {} ({rss}) |",
        mb(peak),
        mb(peak + inputs),
        (peak + inputs) as f64 / dense as f64,
        status("VmHWM")
    );
}

/// Size of the published aggregate.
fn aggregate_stats(a: &SparseAggregate, bytes: usize, total: usize) {
    let m: usize = a.tensors.iter().map(|t| t.len()).sum();
    let n = total as f64;
    let h = |x: f64| -x * x.log2() - (1.0 - x) * (1.0 - x).log2();
    let pos_bytes = bytes as f64 - 4.0 * m as f64;
    println!(
        "# published aggregate: {} carried of {total} ({:.1}%), {} ({:.3} bytes/param); positions {:.0} bytes vs log2 C(n, m) ≈ {:.0} bytes",
        m,
        100.0 * m as f64 / n,
        mb(bytes),
        bytes as f64 / n,
        pos_bytes,
        n * h(m as f64 / n) / 8.0
    );
}

fn mb(b: usize) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}

/// A field of /proc/self/status (VmHWM: peak resident set; VmRSS: resident now).
fn status(field: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "n/a".into())
}

/// One peer's contribution, compressed tensor by tensor (so setup memory stays small):
/// independent Gaussian-like pseudo-gradients, the worst case for the size of the union.
fn peer(seed: u64, shapes: &[TensorShape], p: &CodecParams) -> Contribution {
    let (mut delta, mut ef) = (Vec::new(), Vec::new());
    let tensors = shapes
        .iter()
        .enumerate()
        .map(|(t, s)| {
            let n = s.numel() as usize;
            pseudo_gradient(&mut delta, n, seed * 1000 + t as u64);
            // Buffers reused across tensors: fresh pages would cost more than compression.
            ef.clear();
            ef.resize(n, 0.0);
            let mut e = ErrorFeedback::from_vec(std::mem::take(&mut ef));
            let c = compress(&mut e, &delta, s, p).unwrap();
            ef = e.into_vec();
            c
        })
        .collect();
    Contribution {
        params: *p,
        tensors,
    }
}

/// Gaussian-like values with a per-row scale, from a counter-based hash (parallel, reproducible).
fn pseudo_gradient(v: &mut Vec<f32>, n: usize, seed: u64) {
    v.resize(n, 0.0);
    v.par_chunks_mut(COLS).enumerate().for_each(|(r, row)| {
        let scale = 1e-3 * (1.0 + (mix(seed ^ ((r as u64) << 20)) % 8) as f32);
        let mut z = mix(seed.wrapping_mul(0x9e37_79b9) ^ r as u64);
        for x in row.iter_mut() {
            z ^= z << 13;
            z ^= z >> 7;
            z ^= z << 17;
            let s: f32 = (0..4)
                .map(|j| ((z >> (16 * j)) & 0xffff) as f32 / 65536.0)
                .sum::<f32>()
                - 2.0;
            *x = s * scale;
        }
    });
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
