//! Codec benchmark: `cargo bench -p tributary-codec` (TRIBUTARY_BENCH_PARAMS=<n> to shrink).
//! Prints compress+EF throughput next to the memory-bandwidth bound measured in the same run,
//! decode+accumulate throughput, and bytes per parameter on the wire. Compress+EF is measured
//! in the steady state of a peer (the contribution's buffers reused from the previous round),
//! and once more for the first call (fresh buffers).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rayon::prelude::*;
use std::time::Instant;
use tributary_codec::{
    CodecParams, Contribution, DecodeLimits, ErrorFeedback, Payload, QuantMode, TensorShape,
    code_entropy_bits, compress, compress_contribution_into, decode, encode,
};

const COLS: usize = 4096;

fn main() {
    let params: usize = std::env::var("TRIBUTARY_BENCH_PARAMS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1 << 28);
    let rows = (params / COLS).clamp(64, 4096) / 64 * 64;
    let count = (params / (rows * COLS)).max(1);
    let n = rows * COLS;
    let shapes: Vec<TensorShape> = (0..count)
        .map(|_| TensorShape::new(&[rows, COLS]).unwrap())
        .collect();
    let total = n * count;
    println!(
        "# tributary-codec bench: {count} tensors of [{rows}, {COLS}] = {total} params ({:.2} GiB f32)",
        gib(total * 4)
    );
    let t = Instant::now();
    let deltas: Vec<Vec<f32>> = (0..count).map(|i| pseudo_gradient(n, i as u64)).collect();
    println!(
        "# generated pseudo-gradient in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    if std::env::var("TRIBUTARY_BENCH_PROFILE").is_ok() {
        let p = CodecParams::default();
        let mut efs: Vec<ErrorFeedback> = (0..count).map(|_| ErrorFeedback::zeros(n)).collect();
        // Touched once, like a worker's buffers after its first round.
        for ef in &mut efs {
            ef.as_mut_slice().fill(0.0);
        }
        let refs: Vec<&[f32]> = deltas.iter().map(|d| d.as_slice()).collect();
        let mut contrib = Contribution::default();
        let compress = |efs: &mut [ErrorFeedback], c: &mut Contribution| {
            compress_contribution_into(efs, &refs, &shapes, &p, c).unwrap();
            std::hint::black_box(&c);
        };
        let faults = minor_faults();
        let first = best_of(1, || compress(&mut efs, &mut contrib));
        let first_faults = minor_faults().zip(faults).map(|(b, a)| b - a);
        let (mut bw, mut cp) = (f64::INFINITY, f64::INFINITY);
        let mut faults = None;
        for _ in 0..10 {
            bw = bw.min(best_of(1, || {
                for (ef, d) in efs.iter_mut().zip(&deltas) {
                    bandwidth_pass(ef.as_mut_slice(), d);
                }
            }));
            let before = minor_faults();
            cp = cp.min(best_of(1, || compress(&mut efs, &mut contrib)));
            faults = minor_faults().zip(before).map(|(b, a)| b - a);
        }
        let f = |n: Option<u64>| n.map_or("?".into(), |n| n.to_string());
        eprintln!(
            "bw {:.1} ms, compress {:.1} ms (buffers reused; {} page faults), ratio {:.0}%; first call {:.1} ms ({} page faults), ratio {:.0}%",
            bw * 1e3,
            cp * 1e3,
            f(faults),
            100.0 * bw / cp,
            first * 1e3,
            f(first_faults),
            100.0 * bw / first,
        );
        return;
    }
    let all = rayon::current_num_threads();
    let mut threads = vec![1];
    if all > 1 {
        threads.push(all);
    }
    println!(
        "\n| threads | bandwidth bound (read Δ,e; write e) | compress+EF, buffers reused | ratio | compress+EF params/s | first call (fresh buffers) | ratio | encode | decode+accumulate |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let p = CodecParams::default();
    for &th in &threads {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(th)
            .build()
            .unwrap();
        pool.install(|| run(&deltas, &shapes, &p, th, total));
    }
    sizes(&deltas[0], &shapes[0]);
}

fn run(deltas: &[Vec<f32>], shapes: &[TensorShape], p: &CodecParams, th: usize, total: usize) {
    let mut efs: Vec<ErrorFeedback> = shapes
        .iter()
        .map(|s| ErrorFeedback::zeros(s.numel() as usize))
        .collect();
    let mut bufs: Vec<Vec<f32>> = shapes
        .iter()
        .map(|s| vec![0.0; s.numel() as usize])
        .collect();
    let bytes = (total * 12) as f64; // read Δ, read e, write e
    let bw = best_of(3, || {
        for (e, d) in bufs.iter_mut().zip(deltas) {
            bandwidth_pass(e, d);
        }
        std::hint::black_box(&bufs);
    });
    let refs: Vec<&[f32]> = deltas.iter().map(|d| d.as_slice()).collect();
    // Error feedback touched once (as after a worker's first round): the first call then
    // differs from the next ones by its freshly allocated output buffers only.
    for ef in &mut efs {
        ef.as_mut_slice().fill(0.0);
    }
    let mut contrib = Contribution::default();
    let first = best_of(1, || {
        compress_contribution_into(&mut efs, &refs, shapes, p, &mut contrib).unwrap();
    });
    // A peer's steady state: the previous round's contribution is overwritten.
    let comp = best_of(3, || {
        compress_contribution_into(&mut efs, &refs, shapes, p, &mut contrib).unwrap();
    });
    let mut wire = Vec::new();
    let enc = best_of(3, || wire = encode(&contrib).unwrap());
    let limits = DecodeLimits {
        expected_shapes: Some(shapes.to_vec()),
        ..DecodeLimits::default()
    };
    let dec = best_of(3, || {
        let c = decode(&wire, &limits).unwrap();
        c.tensors
            .par_iter()
            .zip(bufs.par_iter_mut())
            .for_each(|(t, out)| t.accumulate_into(out, 1.0).unwrap());
    });
    println!(
        "| {th} | {:.2} GB/s | {:.2} GB/s | {:.0}% | {:.2e} | {:.2} GB/s | {:.0}% | {:.2e} params/s | {:.2e} params/s ({:.2} GB/s of f32 output) |",
        bytes / bw / 1e9,
        bytes / comp / 1e9,
        100.0 * bw / comp,
        total as f64 / comp,
        bytes / first / 1e9,
        100.0 * bw / first,
        total as f64 / enc,
        total as f64 / dec,
        total as f64 * 4.0 / dec / 1e9,
    );
}

fn sizes(delta: &[f32], shape: &TensorShape) {
    let n = delta.len() as f64;
    println!(
        "\n## Bytes per parameter on the wire (chunk 64x64 = 4096, 2-bit values; measured = encode() of one [{}] tensor)\n",
        shape
            .dims()
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "| density | k | f32 dense | bf16 dense | int8 dense | production (12-bit pos + u8 code) | positions bound log2 C(4096,k) | bound + 2k bits | ours, Production | ours, Balanced | ours / bound | bf16 / ours | entropy/code Production | entropy/code Balanced | rel. sq. error of kept values P / B |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for k in [128usize, 64, 32] {
        let lc = log2_binom(4096, k);
        let per = |bits: f64| bits / 8.0 / 4096.0;
        let mut row = Vec::new();
        let mut ent = Vec::new();
        for mode in [QuantMode::Production, QuantMode::Balanced] {
            let p = CodecParams {
                k_per_chunk: k as u16,
                mode,
                ..CodecParams::default()
            };
            let mut ef = ErrorFeedback::zeros(delta.len());
            let t = compress(&mut ef, delta, shape, &p).unwrap();
            if let Payload::Sparse(s) = t.payload() {
                ent.push(code_entropy_bits(s.codes()));
            }
            // Relative squared error of the kept values.
            let (mut err, mut tot) = (0f64, 0f64);
            t.for_each(|i, v| {
                err += f64::from(v - delta[i]).powi(2);
                tot += f64::from(delta[i]).powi(2);
            });
            ent.push(err / tot);
            let c = tributary_codec::Contribution {
                params: p,
                tensors: vec![t],
            };
            row.push(encode(&c).unwrap().len() as f64 / n);
        }
        let bound_scale = per(lc + 2.0 * k as f64 + 16.0); // with a 16-bit per-chunk scale
        println!(
            "| 1/{} | {k} | 4 | 2 | 1 | {:.5} | {:.5} | {:.5} | {:.5} | {:.5} | {:.3} / {:.3} | {:.0}x | {:.2} bits | {:.2} bits | {:.3} / {:.3} |",
            4096 / k,
            per(20.0 * k as f64),
            per(lc),
            per(lc + 2.0 * k as f64),
            row[0],
            row[1],
            row[0] / per(lc + 2.0 * k as f64),
            row[1] / bound_scale,
            2.0 / row[0],
            ent[0],
            ent[2],
            ent[1],
            ent[3],
        );
    }
    println!(
        "\n(ours / bound: Production vs log2C+2k per chunk; Balanced vs log2C+2k+16 scale bits per chunk)"
    );
}

/// The bound: one pass reading Δ and e and writing e (e ← β·e + Δ), nothing else.
fn bandwidth_pass(e: &mut [f32], d: &[f32]) {
    e.par_chunks_mut(1 << 16)
        .zip(d.par_chunks(1 << 16))
        .for_each(|(e, d)| {
            for (x, y) in e.iter_mut().zip(d) {
                *x = 0.95 * *x + y;
            }
        });
    std::hint::black_box(e);
}

fn log2_binom(n: usize, k: usize) -> f64 {
    (0..k)
        .map(|i| ((n - i) as f64 / (i + 1) as f64).log2())
        .sum()
}

fn best_of(reps: usize, mut f: impl FnMut()) -> f64 {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Minor page faults of this process so far (Linux; `None` elsewhere).
fn minor_faults() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; minflt is field 10 of the whole line.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(7)?.parse().ok()
}

fn gib(b: usize) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

/// Gaussian-like values with a per-row scale, from a counter-based hash (parallel, reproducible).
fn pseudo_gradient(n: usize, seed: u64) -> Vec<f32> {
    let mut v = vec![0f32; n];
    v.par_chunks_mut(COLS).enumerate().for_each(|(r, row)| {
        let scale = 1e-3 * (1.0 + (mix(seed ^ (r as u64) << 20) % 8) as f32);
        for (c, x) in row.iter_mut().enumerate() {
            let h = mix(seed.wrapping_mul(0x9e37_79b9) ^ ((r * COLS + c) as u64));
            // Sum of four uniforms ≈ Gaussian.
            let s: f32 = (0..4)
                .map(|j| ((h >> (16 * j)) & 0xffff) as f32 / 65536.0)
                .sum::<f32>()
                - 2.0;
            *x = s * scale;
        }
    });
    v
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
