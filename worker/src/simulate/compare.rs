//! The strategy comparison: every strategy at equal tokens for each seed, run as parallel
//! single-threaded child processes, then a report (markdown table, JSON, CSV, plots) and the
//! ordering checks of the SparseLoCo claim.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use tributary_codec::{CodecParams, ErrorFeedback, QuantMode, compress_contribution, encode};
use tributary_crds::{InnerOptimizer, ModelPreset, OuterKind, OuterOptimizer};
use tributary_data::synthetic::LanguageConfig;

use super::config::{OuterLrDrop, SimConfig, Strategy, WireFormat};
use super::plot::{XAxis, loss_plot};
use super::report::RunReport;
use crate::model::{codec_shapes, param_specs};

#[derive(Debug, Clone)]
pub struct CompareOptions {
    pub out_dir: PathBuf,
    /// Tokens per strategy per seed (all peers together).
    pub tokens: u64,
    pub seeds: Vec<u64>,
    /// Runs in parallel (each uses one libtorch thread).
    pub jobs: usize,
    pub peers: u32,
    pub evals: u32,
    pub eval_sequences: u32,
}

/// Inner learning rate of every peer-local AdamW (calibrated: docs/benchmarks.md).
pub const INNER_LR: f64 = 6e-3;
/// DDP's learning rate for its 4× larger batch (tuned: docs/benchmarks.md).
pub const DDP_LR: f64 = 4e-3;
/// Inner steps per SparseLoCo round (still ≥ 1000× fewer bytes than DDP).
pub const SPARSE_H: u32 = 10;
/// SparseLoCo's outer SGD learning rate (tuned: docs/benchmarks.md).
pub const SPARSE_OUTER_LR: f64 = 0.85;
/// Every outer optimizer's late drop: 0.4× its rate for the last 15% of the rounds (production
/// lowered 1.0 to 0.4 late in its run; tuned: docs/benchmarks.md).
pub const OUTER_LR_DROP: OuterLrDrop = OuterLrDrop {
    at: 0.85,
    ratio: 0.4,
};
/// The small-H DiLoCo baseline (the DiLoCo paper's H).
const DILOCO_H: u32 = 15;

/// The base configuration of the comparison for one seed.
pub fn base(opts: &CompareOptions, seed: u64) -> SimConfig {
    let model = ModelPreset::Tiny.config();
    SimConfig {
        name: String::new(),
        strategy: Strategy::Sparseloco,
        peers: opts.peers,
        tokens: opts.tokens,
        batch: 16,
        seq_len: model.context,
        inner_steps: SPARSE_H,
        seed,
        model,
        language: LanguageConfig::calibrated(seed, model.vocab),
        inner: InnerOptimizer {
            lr: INNER_LR,
            warmup_steps: 50,
            // Every local strategy normalises as AdamW over the peers' batches together would.
            second_moment_peers: Some(opts.peers),
            ..InnerOptimizer::default()
        },
        outer: OuterOptimizer {
            lr: Some(SPARSE_OUTER_LR),
            ..OuterOptimizer::default()
        },
        codec: CodecParams {
            mode: QuantMode::Balanced,
            ..CodecParams::default()
        },
        wire: WireFormat::Tributary,
        paper_mean: false,
        outer_lr_drop: Some(OUTER_LR_DROP),
        eval_sequences: opts.eval_sequences,
        evals: opts.evals,
        threads: 1,
    }
}

/// DiLoCo's outer optimizer: Nesterov, lr 0.7, momentum 0.9 (the DiLoCo paper's setting).
pub fn diloco_outer() -> OuterOptimizer {
    OuterOptimizer {
        kind: OuterKind::Nesterov,
        lr: Some(0.7),
        momentum: Some(0.9),
        lr_schedule: Vec::new(),
    }
}

/// Every run of the comparison for one seed.
pub fn plan(opts: &CompareOptions, seed: u64) -> Result<Vec<SimConfig>> {
    let b = base(opts, seed);
    let nesterov = diloco_outer();
    let sparse = |name: &str, k: u16, mode: QuantMode, wire: WireFormat| SimConfig {
        name: format!("{name} s{seed}"),
        codec: CodecParams {
            k_per_chunk: k,
            mode,
            ..b.codec
        },
        wire,
        ..b.clone()
    };
    // Large-H DiLoCo: as many dense rounds as fit in 10× SparseLoCo-1/64's bytes (at least one).
    let steps = b.steps();
    let sparse_bytes = steps.div_ceil(u64::from(SPARSE_H)) * sparse_round_bytes(&b)?;
    let numel: u64 = param_specs(&b.model)?
        .iter()
        .map(|s| s.numel() as u64)
        .sum();
    let large_rounds = (10 * sparse_bytes / (4 * numel)).max(1);
    let large_h = steps.div_ceil(large_rounds).max(1);
    Ok(vec![
        SimConfig {
            name: format!("ddp s{seed}"),
            strategy: Strategy::Ddp,
            inner: InnerOptimizer {
                lr: DDP_LR,
                // DDP's AdamW already sees the mean gradient of every peer's batch.
                second_moment_peers: Some(1),
                ..b.inner.clone()
            },
            ..b.clone()
        },
        SimConfig {
            name: format!("diloco H{DILOCO_H} s{seed}"),
            inner_steps: DILOCO_H,
            strategy: Strategy::Diloco,
            outer: nesterov.clone(),
            ..b.clone()
        },
        SimConfig {
            name: format!("diloco H{large_h} s{seed}"),
            strategy: Strategy::Diloco,
            inner_steps: u32::try_from(large_h)?,
            outer: nesterov,
            ..b.clone()
        },
        sparse(
            "sparseloco 1/64",
            64,
            QuantMode::Balanced,
            WireFormat::Tributary,
        ),
        sparse(
            "sparseloco 1/32",
            128,
            QuantMode::Balanced,
            WireFormat::Tributary,
        ),
        sparse(
            "production 1/64",
            64,
            QuantMode::Production,
            WireFormat::Production,
        ),
        sparse(
            "production 1/128",
            32,
            QuantMode::Production,
            WireFormat::Production,
        ),
    ])
}

/// Encoded bytes of one `tiny` contribution under `cfg.codec`. The wire size depends only on the
/// shapes and k (Elias–Fano positions, fixed-width codes), so any pseudo-gradient measures it.
fn sparse_round_bytes(cfg: &SimConfig) -> Result<u64> {
    let specs = param_specs(&cfg.model)?;
    let shapes = codec_shapes(&specs)?;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let deltas: Vec<Vec<f32>> = specs
        .iter()
        .map(|s| {
            (0..s.numel())
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                })
                .collect()
        })
        .collect();
    let mut efs: Vec<ErrorFeedback> = deltas
        .iter()
        .map(|d| ErrorFeedback::zeros(d.len()))
        .collect();
    let slices: Vec<&[f32]> = deltas.iter().map(Vec::as_slice).collect();
    let c = compress_contribution(&mut efs, &slices, &shapes, &cfg.codec)?;
    Ok(encode(&c)?.len() as u64)
}

/// Runs the comparison; returns the reports and whether every claim held.
pub fn compare(opts: &CompareOptions) -> Result<(Vec<RunReport>, bool)> {
    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("creating {}", opts.out_dir.display()))?;
    let mut runs: Vec<SimConfig> = Vec::new();
    for seed in &opts.seeds {
        runs.extend(plan(opts, *seed)?);
    }
    let exe = std::env::current_exe().context("locating this binary")?;
    let mut reports = Vec::new();
    for wave in runs.chunks(opts.jobs.max(1)) {
        let mut children = Vec::new();
        for cfg in wave {
            let stem = cfg.name.replace([' ', '/'], "_");
            let cfg_path = opts.out_dir.join(format!("{stem}.config.json"));
            let out_path = opts.out_dir.join(format!("{stem}.json"));
            std::fs::write(&cfg_path, serde_json::to_vec_pretty(cfg)?)?;
            eprintln!("compare: starting {}", cfg.name);
            let child = Command::new(&exe)
                .args(["simulate", "--config"])
                .arg(&cfg_path)
                .arg("--out")
                .arg(&out_path)
                .arg("--quiet")
                .spawn()
                .with_context(|| format!("starting {}", cfg.name))?;
            children.push((cfg.name.clone(), child, out_path));
        }
        for (name, mut child, out_path) in children {
            let status = child.wait()?;
            if !status.success() {
                bail!("run {name} failed ({status})");
            }
            let report: RunReport = serde_json::from_slice(&std::fs::read(&out_path)?)
                .with_context(|| format!("reading {}", out_path.display()))?;
            eprintln!(
                "compare: {name}: loss {:.4}, excess {:.4}, {} bytes/peer, {:.0} s",
                report.final_eval_loss, report.excess, report.bytes_per_peer, report.wall_seconds
            );
            reports.push(report);
        }
    }
    let (checks, ok) = check(&reports, &opts.seeds);
    write_report(&opts.out_dir, &reports, &checks, opts)?;
    Ok((reports, ok))
}

fn find<'a>(reports: &'a [RunReport], seed: u64, prefix: &str) -> Option<&'a RunReport> {
    reports
        .iter()
        .find(|r| r.config.seed == seed && r.config.name.starts_with(prefix))
}

/// The claims of the comparison, one line each, and whether all hold.
pub fn check(reports: &[RunReport], seeds: &[u64]) -> (Vec<String>, bool) {
    let mut lines = Vec::new();
    let mut ok = true;
    let mut claim = |holds: bool, text: String| {
        ok &= holds;
        lines.push(format!("- [{}] {text}", if holds { "x" } else { " " }));
    };
    for &seed in seeds {
        let (Some(sl), Some(ddp), Some(prod)) = (
            find(reports, seed, "sparseloco 1/64"),
            find(reports, seed, "ddp"),
            find(reports, seed, "production 1/128"),
        ) else {
            claim(false, format!("seed {seed}: runs missing"));
            continue;
        };
        claim(
            sl.excess <= 1.2 * ddp.excess,
            format!(
                "seed {seed}: SparseLoCo 1/64 excess {:.4} ≤ 1.2 × DDP's {:.4} (= {:.4})",
                sl.excess,
                ddp.excess,
                1.2 * ddp.excess
            ),
        );
        claim(
            sl.excess <= prod.excess,
            format!(
                "seed {seed}: SparseLoCo 1/64 excess {:.4} ≤ production format at equal bytes ({} vs {} bytes/peer) {:.4}",
                sl.excess, sl.bytes_per_peer, prod.bytes_per_peer, prod.excess
            ),
        );
        for d in reports.iter().filter(|r| {
            r.config.seed == seed
                && r.config.strategy == Strategy::Diloco
                && r.bytes_per_peer <= 10 * sl.bytes_per_peer
        }) {
            claim(
                sl.excess < d.excess,
                format!(
                    "seed {seed}: SparseLoCo 1/64 excess {:.4} < {} ({} bytes/peer, {:.1}× ours) {:.4}",
                    sl.excess,
                    d.config.name,
                    d.bytes_per_peer,
                    d.bytes_per_peer as f64 / sl.bytes_per_peer.max(1) as f64,
                    d.excess
                ),
            );
        }
        claim(
            ddp.bytes_per_peer >= 1000 * sl.bytes_per_peer,
            format!(
                "seed {seed}: DDP sends {:.0}× SparseLoCo 1/64's bytes (≥ 1000×)",
                ddp.bytes_per_peer as f64 / sl.bytes_per_peer.max(1) as f64
            ),
        );
    }
    (lines, ok)
}

fn write_report(
    dir: &Path,
    reports: &[RunReport],
    checks: &[String],
    opts: &CompareOptions,
) -> Result<()> {
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_vec_pretty(reports)?,
    )?;
    let mut csv =
        String::from("run,seed,strategy,tokens,bytes_per_peer,train_loss,eval_loss,excess\n");
    for r in reports {
        for p in &r.points {
            let _ = writeln!(
                csv,
                "{},{},{:?},{},{},{:.6},{:.6},{:.6}",
                r.config.name,
                r.config.seed,
                r.config.strategy,
                p.tokens,
                p.bytes_per_peer,
                p.train_loss,
                p.eval_loss,
                p.excess
            );
        }
    }
    std::fs::write(dir.join("curves.csv"), csv)?;
    let mut md = String::new();
    let first = reports.first();
    let _ = writeln!(md, "# Strategy comparison\n");
    if let Some(r) = first {
        let _ = writeln!(
            md,
            "Model `tiny` ({} parameters), {} peers, {} tokens per run (all peers), batch {}×{} per peer per step, {} inner steps per peer, seeds {:?}. The peer-local strategies' AdamW uses the noise-corrected second moment for {} peers (docs/training.md); DDP's is plain.\n",
            r.parameters,
            opts.peers,
            opts.tokens,
            r.config.batch,
            r.config.seq_len,
            r.config.steps(),
            opts.seeds,
            opts.peers
        );
    }
    let _ = writeln!(
        md,
        "| run | final held-out loss | floor | excess over floor | bytes sent per peer | vs DDP bytes | wall s |\n|---|---|---|---|---|---|---|"
    );
    for r in reports {
        let ddp = find(reports, r.config.seed, "ddp").map_or(0, |d| d.bytes_per_peer);
        let _ = writeln!(
            md,
            "| {} | {:.4} | {:.4} | {:.4} | {} | 1/{:.0} | {:.0} |",
            r.config.name,
            r.final_eval_loss,
            r.floor,
            r.excess,
            r.bytes_per_peer,
            ddp as f64 / r.bytes_per_peer.max(1) as f64,
            r.wall_seconds
        );
    }
    let _ = writeln!(md, "\n## Claims\n\n{}\n", checks.join("\n"));
    for &seed in &opts.seeds {
        let runs: Vec<RunReport> = reports
            .iter()
            .filter(|r| r.config.seed == seed)
            .cloned()
            .collect();
        let tokens = format!("loss-vs-tokens-seed{seed}.svg");
        let bytes = format!("loss-vs-bytes-seed{seed}.svg");
        loss_plot(
            &dir.join(&tokens),
            &runs,
            XAxis::Tokens,
            &format!("held-out loss vs tokens, seed {seed}"),
        )?;
        loss_plot(
            &dir.join(&bytes),
            &runs,
            XAxis::Bytes,
            &format!("held-out loss vs bytes sent, seed {seed}"),
        )?;
        let _ = writeln!(
            md,
            "![loss vs tokens, seed {seed}]({tokens})\n![loss vs bytes, seed {seed}]({bytes})\n"
        );
    }
    std::fs::write(dir.join("report.md"), md)?;
    Ok(())
}
