//! Bounded decoder fuzzing (stable Rust, deterministic seed, ~1–2 s): mutations of valid
//! encodings never panic, and decode never allocates more than the bound the header implies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use tributary_codec::*;

/// Counts this thread's live and peak heap bytes.
struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    let _ = LIVE.try_with(|l| {
        let v = l.get().saturating_add_signed(delta);
        l.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
    });
}

// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        track(l.size() as isize);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        track(-(l.size() as isize));
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        track(n as isize - l.size() as isize);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Peak bytes allocated by `f` above what was live when it started.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let r = f();
    (r, PEAK.with(Cell::get) - base)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let mut out = vec![];
    for (i, mode) in [QuantMode::Production, QuantMode::Balanced]
        .into_iter()
        .enumerate()
    {
        for bits in [2u8, 4, 8] {
            let p = CodecParams {
                chunk_side: 8,
                k_per_chunk: 3,
                bits,
                mode,
                one_d: if i == 0 {
                    OneDPolicy::Dense
                } else {
                    OneDPolicy::Sparse
                },
                ..CodecParams::default()
            };
            let shapes = [shape(&[16, 24]), shape(&[5]), shape(&[3, 7, 2])];
            out.push(encode(&contribution(&p, &shapes, u64::from(bits))).unwrap());
        }
    }
    out
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut b = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(4) {
        match rng.below(8) {
            0 | 1 => {
                let i = rng.below(b.len());
                if let Some(x) = b.get_mut(i) {
                    *x ^= 1 << rng.below(8);
                }
            }
            2 => {
                let i = rng.below(b.len());
                if let Some(x) = b.get_mut(i) {
                    *x = rng.next() as u8;
                }
            }
            3 => b.truncate(rng.below(b.len() + 1)),
            4 => {
                let o = &seeds[rng.below(seeds.len())];
                let (i, j) = (rng.below(b.len()), rng.below(o.len()));
                b.truncate(i);
                b.extend_from_slice(&o[j..]);
            }
            5 => (0..1 + rng.below(8)).for_each(|_| b.push(rng.next() as u8)),
            6 => {
                // Header fields: count and dims at offsets 18.. get extreme values.
                let i = 18 + rng.below(24);
                let v = [0u32, 1, 2, 255, 65535, u32::MAX, rng.next() as u32][rng.below(7)];
                if i + 4 <= b.len() {
                    b[i..i + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
            _ => b = (0..rng.below(64)).map(|_| rng.next() as u8).collect(),
        }
    }
    b
}

#[test]
fn fuzz_decoder_bounded() {
    let seeds = seeds();
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let limits = DecodeLimits::default();
    let (mut ok, mut errs) = (0usize, std::collections::BTreeMap::<&str, usize>::new());
    // A fixed number of inputs, not a time budget: the same inputs on every machine.
    let n = 200_000;
    for _ in 0..n {
        let input = mutate(&mut rng, &seeds);
        let bound = inspect(&input, &limits).map(|i| i.allocation_bound);
        let (res, peak) = peak_of(|| decode(&input, &limits));
        // Whatever the input, allocation stays within the header's bound (or tiny on early errors).
        let allowed = bound
            .as_ref()
            .map_or(0, |b| *b as usize)
            .max(64 * input.len() + 4096);
        assert!(
            peak <= allowed,
            "peak {peak} > {allowed} for input of {} bytes",
            input.len()
        );
        if let Ok(b) = bound {
            assert!(peak as u64 <= b.max(4096), "peak {peak} > bound {b}");
        }
        match res {
            Ok(c) => {
                ok += 1;
                // Anything accepted re-encodes to exactly the same bytes (canonical form).
                assert_eq!(encode(&c).unwrap(), input);
            }
            Err(e) => *errs.entry(e.label()).or_default() += 1,
        }
    }
    eprintln!("fuzz: {n} inputs, {ok} accepted, rejections {errs:?}");
    assert!(errs.len() >= 8, "too few kinds of rejection: {errs:?}");
}

#[test]
fn huge_claims_do_not_allocate() {
    let mut b = seeds()[0].clone();
    b[18..22].copy_from_slice(&3u32.to_le_bytes());
    b[23..27].copy_from_slice(&65536u32.to_le_bytes());
    b[27..31].copy_from_slice(&65536u32.to_le_bytes());
    let (res, peak) = peak_of(|| decode(&b, &DecodeLimits::default()));
    assert_eq!(res.unwrap_err().label(), "truncated");
    assert!(peak < 4096, "peak {peak}");
}

fn aggregate_seeds() -> Vec<Vec<u8>> {
    let mut out = vec![];
    for (i, (side, k)) in [(8u16, 2u16), (4, 3), (8, 20)].into_iter().enumerate() {
        let p = CodecParams {
            chunk_side: side,
            k_per_chunk: k,
            ..CodecParams::default()
        };
        let shapes = [
            shape(&[32, 32]),
            shape(&[2, 3]),
            shape(&[5]),
            shape(&[3, 7, 2]),
        ];
        let cs: Vec<Contribution> = (0..3)
            .map(|r| gaussian_contribution(&p, &shapes, 10 * i as u64 + r))
            .collect();
        let refs: Vec<&Contribution> = cs.iter().collect();
        let a = Aggregator::default().aggregate_sparse(&refs, None).unwrap();
        out.push(encode_aggregate(&a));
    }
    out
}

/// Mutated aggregates never panic, allocate at most 3× the input plus 256 bytes per tensor
/// (each declared tensor costs ≥ 9 input bytes), and re-encode identically when accepted.
#[test]
fn fuzz_aggregate_decoder_bounded() {
    let seeds = aggregate_seeds();
    let mut rng = Rng(0xa66_2e6a_7e00_0001);
    let limits = DecodeLimits::default();
    let (mut ok, mut errs) = (0usize, std::collections::BTreeMap::<&str, usize>::new());
    let n = 100_000;
    for _ in 0..n {
        let input = mutate(&mut rng, &seeds);
        let (res, peak) = peak_of(|| decode_aggregate(&input, &limits));
        let allowed = 3 * input.len() + 256 * (input.len() / 9) + 4096;
        assert!(
            peak <= allowed,
            "peak {peak} > {allowed} for {} bytes",
            input.len()
        );
        match res {
            Ok(a) => {
                ok += 1;
                assert_eq!(encode_aggregate(&a), input);
            }
            Err(e) => *errs.entry(e.label()).or_default() += 1,
        }
    }
    eprintln!("aggregate fuzz: {n} inputs, {ok} accepted, rejections {errs:?}");
    assert!(
        ok > 0 && errs.len() >= 6,
        "{ok} accepted, rejections {errs:?}"
    );
}

#[test]
fn huge_aggregate_claims_do_not_allocate() {
    let mut b = aggregate_seeds()[0].clone();
    // First shape [32, 32] → [65536, 65536], its count → 2^32: far beyond the input.
    b[17..21].copy_from_slice(&65536u32.to_le_bytes());
    b[21..25].copy_from_slice(&65536u32.to_le_bytes());
    let counts = 16 + 9 + 9 + 5 + 13;
    b[counts..counts + 8].copy_from_slice(&(1u64 << 32).to_le_bytes());
    let (res, peak) = peak_of(|| decode_aggregate(&b, &DecodeLimits::default()));
    assert_eq!(res.unwrap_err().label(), "truncated");
    assert!(peak < 4096, "peak {peak}");
}
