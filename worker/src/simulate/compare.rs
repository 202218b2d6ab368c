//! The strategy comparison: every strategy at equal tokens for each seed, run as parallel
//! single-threaded child processes, then a report (markdown table, JSON, CSV, plots) and the
//! ordering checks of the SparseLoCo claim.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use tributary_codec::{
    CodecParams, ErrorFeedback, QuantMode, compress_contribution, encode, production_wire_bytes,
};
use tributary_crds::{InnerOptimizer, ModelPreset, OuterKind, OuterOptimizer, TensorPlan};
use tributary_data::synthetic::LanguageConfig;

use super::config::{HostileKind, OuterLrDrop, SimConfig, SimGauntlet, Strategy, WireFormat};
use super::plot::{XAxis, loss_plot};
use super::report::RunReport;
use crate::provenance::describe;

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
    /// Runs of DDP and of SparseLoCo 1/64 per seed, the pair whose ratio is the tightest claim;
    /// the claims use their mean excess (docs/benchmarks.md: one trajectory varies by ±0.005).
    pub replicates: u32,
    /// Hostile peers beside the honest `peers`: non-empty makes this the hostile-peer
    /// comparison ([`hostile_plan`]) instead of the strategy comparison.
    pub hostile: Vec<HostileKind>,
    /// Candidates the Gauntlet's validator scores per round in the hostile comparison (0: all).
    pub scored_per_round: u32,
    /// Reuse a run whose report is already in `out_dir` with the same configuration (a rerun
    /// after a change to the plan runs only what changed).
    pub resume: bool,
}

/// Inner learning rate of every peer-local AdamW (calibrated: docs/benchmarks.md).
pub const INNER_LR: f64 = 6e-3;
/// DDP's learning rate for its 4× larger batch (tuned: docs/benchmarks.md).
pub const DDP_LR: f64 = 4e-3;
/// Inner steps per SparseLoCo round (still ≥ 1000× fewer bytes than DDP).
pub const SPARSE_H: u32 = 10;
/// SparseLoCo's outer SGD learning rate (tuned: docs/benchmarks.md).
pub const SPARSE_OUTER_LR: f64 = 0.7;
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
        replicate: 0,
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
        lookahead: true,
        outer_lr_drop: Some(OUTER_LR_DROP),
        eval_sequences: opts.eval_sequences,
        evals: opts.evals,
        threads: 1,
        hostile: Vec::new(),
        gauntlet: None,
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
    if !opts.hostile.is_empty() {
        return Ok(hostile_plan(opts, seed));
    }
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
    let numel = TensorPlan::new(b.model, b.codec)?.numel();
    let large_rounds = (10 * sparse_bytes / (4 * numel)).max(1);
    let large_h = steps.div_ceil(large_rounds).max(1);
    let ddp = SimConfig {
        name: format!("ddp s{seed}"),
        strategy: Strategy::Ddp,
        inner: InnerOptimizer {
            lr: DDP_LR,
            // DDP's AdamW already sees the mean gradient of every peer's batch.
            second_moment_peers: Some(1),
            ..b.inner.clone()
        },
        ..b.clone()
    };
    let ours = sparse(
        "sparseloco 1/64",
        64,
        QuantMode::Balanced,
        WireFormat::Tributary,
    );
    let mut runs = replicated(&ddp, opts.replicates);
    runs.extend([
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
    ]);
    runs.extend(replicated(&ours, opts.replicates));
    runs.extend([
        sparse(
            "sparseloco 1/32",
            128,
            QuantMode::Balanced,
            WireFormat::Tributary,
        ),
        sparse(
            "production 1/128",
            32,
            QuantMode::Production,
            WireFormat::Production,
        ),
    ]);
    Ok(runs)
}

/// The runs of the hostile-peer comparison for one seed: SparseLoCo 1/64 with the honest peers
/// and the hostile ones judged by the Gauntlet; the same honest peers alone, judged too (what
/// the Gauntlet costs honest peers); the hostile run without the Gauntlet (what it defends
/// against); and the honest peers alone without it (the claim's baseline). Tokens count the
/// honest peers', so the honest peers train on the same batches in every run.
pub fn hostile_plan(opts: &CompareOptions, seed: u64) -> Vec<SimConfig> {
    let b = base(opts, seed);
    let gauntlet = Some(SimGauntlet {
        scored_per_round: opts.scored_per_round,
    });
    let share = hostile_share(opts.peers, opts.hostile.len());
    vec![
        SimConfig {
            name: format!("{HOSTILE_RUN} {share}% s{seed}"),
            hostile: opts.hostile.clone(),
            gauntlet,
            ..b.clone()
        },
        SimConfig {
            name: format!("{HONEST_RUN} s{seed}"),
            gauntlet,
            ..b.clone()
        },
        SimConfig {
            name: format!("{UNDEFENDED_RUN} {share}% s{seed}"),
            hostile: opts.hostile.clone(),
            ..b.clone()
        },
        SimConfig {
            name: format!("{BASELINE_RUN} s{seed}"),
            ..b
        },
    ]
}

/// Run names of the hostile-peer comparison.
const HOSTILE_RUN: &str = "gauntlet hostile";
const HONEST_RUN: &str = "gauntlet honest-only";
const UNDEFENDED_RUN: &str = "no gauntlet hostile";
const BASELINE_RUN: &str = "no gauntlet honest-only";

/// The hostile peers' share of all peers, in whole percent.
fn hostile_share(honest: u32, hostile: usize) -> u64 {
    let all = u64::from(honest) + hostile as u64;
    (100 * hostile as u64 + all / 2) / all.max(1)
}

/// `cfg` as `count` replicates (at least one): the first is `cfg` itself, the others are named
/// "… rep2", "… rep3" and differ only in `replicate`.
fn replicated(cfg: &SimConfig, count: u32) -> Vec<SimConfig> {
    (0..count.max(1))
        .map(|r| SimConfig {
            name: match r {
                0 => cfg.name.clone(),
                r => format!("{} rep{}", cfg.name, r + 1),
            },
            replicate: r,
            ..cfg.clone()
        })
        .collect()
}

/// Encoded bytes of one `tiny` contribution under `cfg.codec`. The wire size depends only on the
/// shapes and k (Elias–Fano positions, fixed-width codes), so any pseudo-gradient measures it.
fn sparse_round_bytes(cfg: &SimConfig) -> Result<u64> {
    Ok(encode(&sample_contribution(cfg)?)?.len() as u64)
}

/// One `tiny` contribution under `cfg.codec`, compressed from a fixed pseudo-random
/// pseudo-gradient.
fn sample_contribution(cfg: &SimConfig) -> Result<tributary_codec::Contribution> {
    let plan = TensorPlan::new(cfg.model, cfg.codec)?;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let deltas: Vec<Vec<f32>> = plan
        .layout()
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
    Ok(compress_contribution(
        &mut efs,
        &slices,
        plan.shapes(),
        plan.codec(),
    )?)
}

/// Runs the comparison; returns the reports and whether every claim held.
pub fn compare(opts: &CompareOptions) -> Result<(Vec<RunReport>, bool)> {
    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("creating {}", opts.out_dir.display()))?;
    let mut runs: Vec<SimConfig> = Vec::new();
    for seed in &opts.seeds {
        runs.extend(plan(opts, *seed)?);
    }
    let reports = run_pool(&runs, opts)?;
    let (checks, ok) = check(&reports, &opts.seeds);
    write_report(&opts.out_dir, &reports, &checks, opts)?;
    Ok((reports, ok))
}

/// Runs every configuration as a child `simulate` process, at most `opts.jobs` at a time: a new
/// run starts as soon as any finishes, so a short run never leaves a core idle behind a long one.
/// Returns the reports in the order of `runs`.
fn run_pool(runs: &[SimConfig], opts: &CompareOptions) -> Result<Vec<RunReport>> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let mut reports: Vec<Option<RunReport>> = vec![None; runs.len()];
    // DDP, the shortest runs, go last: the final wave then leaves the least idle time.
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by_key(|&i| runs[i].strategy == Strategy::Ddp);
    let mut pending = order.into_iter().map(|i| (i, &runs[i]));
    let mut running = Vec::new();
    loop {
        while running.len() < opts.jobs.max(1) {
            let Some((i, cfg)) = pending.next() else {
                break;
            };
            let stem = cfg.name.replace([' ', '/'], "_");
            let cfg_path = opts.out_dir.join(format!("{stem}.config.json"));
            let out_path = opts.out_dir.join(format!("{stem}.json"));
            if opts.resume
                && let Some(done) = finished_run(&out_path, cfg)
            {
                eprintln!("compare: reusing {} ({})", cfg.name, out_path.display());
                reports[i] = Some(done);
                continue;
            }
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
            running.push((i, child, out_path));
        }
        if running.is_empty() {
            break;
        }
        let mut finished = None;
        for (slot, (_, child, _)) in running.iter_mut().enumerate() {
            if let Some(status) = child.try_wait()? {
                finished = Some((slot, status));
                break;
            }
        }
        let Some((slot, status)) = finished else {
            std::thread::sleep(std::time::Duration::from_millis(200));
            continue;
        };
        let (i, _, out_path) = running.swap_remove(slot);
        let name = &runs[i].name;
        if !status.success() {
            // Don't leave the other runs computing for a comparison that has already failed.
            for (_, mut child, _) in running {
                let _ = child.kill();
                let _ = child.wait();
            }
            bail!("run {name} failed ({status})");
        }
        let report: RunReport = serde_json::from_slice(&std::fs::read(&out_path)?)
            .with_context(|| format!("reading {}", out_path.display()))?;
        eprintln!(
            "compare: {name}: loss {:.4}, excess {:.4}, {} bytes/peer, {:.0} s",
            report.final_eval_loss, report.excess, report.bytes_per_peer, report.wall_seconds
        );
        reports[i] = Some(report);
    }
    Ok(reports.into_iter().flatten().collect())
}

/// The report at `path` if it is a finished run of exactly `cfg`.
fn finished_run(path: &Path, cfg: &SimConfig) -> Option<RunReport> {
    let report: RunReport = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let same = serde_json::to_value(&report.config).ok()? == serde_json::to_value(cfg).ok()?;
    same.then_some(report)
}

/// The runs of `seed` whose name starts with `prefix` (a run and its replicates).
fn group<'a>(reports: &'a [RunReport], seed: u64, prefix: &str) -> Vec<&'a RunReport> {
    reports
        .iter()
        .filter(|r| r.config.seed == seed && r.config.name.starts_with(prefix))
        .collect()
}

/// A run's excess over the floor, averaged over its replicates.
struct Excess {
    mean: f64,
    each: Vec<f64>,
    bytes_per_peer: u64,
}

impl Excess {
    fn of(runs: &[&RunReport]) -> Option<Self> {
        let first = runs.first()?;
        let each: Vec<f64> = runs.iter().map(|r| r.excess).collect();
        Some(Self {
            mean: each.iter().sum::<f64>() / each.len() as f64,
            each,
            bytes_per_peer: first.bytes_per_peer,
        })
    }
}

impl std::fmt::Display for Excess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.4}", self.mean)?;
        if self.each.len() > 1 {
            let each: Vec<String> = self.each.iter().map(|x| format!("{x:.4}")).collect();
            write!(f, " (mean of {})", each.join(", "))?;
        }
        Ok(())
    }
}

/// The claims of the comparison, one line each, and whether all hold. Replicated runs are
/// judged on their mean excess.
pub fn check(reports: &[RunReport], seeds: &[u64]) -> (Vec<String>, bool) {
    if is_hostile(reports) {
        return check_hostile(reports, seeds);
    }
    let mut lines = Vec::new();
    let mut ok = true;
    let mut claim = |holds: bool, text: String| {
        ok &= holds;
        lines.push(format!("- [{}] {text}", if holds { "x" } else { " " }));
    };
    for &seed in seeds {
        let (Some(sl), Some(ddp), Some(prod)) = (
            Excess::of(&group(reports, seed, "sparseloco 1/64")),
            Excess::of(&group(reports, seed, "ddp")),
            Excess::of(&group(reports, seed, "production 1/128")),
        ) else {
            claim(false, format!("seed {seed}: runs missing"));
            continue;
        };
        claim(
            sl.mean <= 1.2 * ddp.mean,
            format!(
                "seed {seed}: SparseLoCo 1/64 excess {sl} ≤ 1.2 × DDP's {ddp} (= {:.4})",
                1.2 * ddp.mean
            ),
        );
        claim(
            sl.mean <= prod.mean,
            format!(
                "seed {seed}: SparseLoCo 1/64 excess {sl} ≤ production format at equal bytes ({} vs {} bytes/peer) {prod}",
                sl.bytes_per_peer, prod.bytes_per_peer
            ),
        );
        for d in reports.iter().filter(|r| {
            r.config.seed == seed
                && r.config.strategy == Strategy::Diloco
                && r.bytes_per_peer <= 10 * sl.bytes_per_peer
        }) {
            claim(
                sl.mean < d.excess,
                format!(
                    "seed {seed}: SparseLoCo 1/64 excess {sl} < {} ({} bytes/peer, {:.1}× ours) {:.4}",
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

/// Whether `reports` are a hostile-peer comparison's.
fn is_hostile(reports: &[RunReport]) -> bool {
    reports
        .iter()
        .any(|r| !r.config.hostile.is_empty() || r.config.gauntlet.is_some())
}

/// The claim of the hostile-peer comparison: with the Gauntlet, the run with hostile peers ends
/// within 1.2× the excess of its honest peers alone (without the Gauntlet: nothing of the
/// Gauntlet's own cost to honest peers is hidden in the baseline).
fn check_hostile(reports: &[RunReport], seeds: &[u64]) -> (Vec<String>, bool) {
    let mut lines = Vec::new();
    let mut ok = true;
    for &seed in seeds {
        let (Some(hostile), Some(honest)) = (
            group(reports, seed, HOSTILE_RUN).first().copied(),
            group(reports, seed, BASELINE_RUN).first().copied(),
        ) else {
            ok = false;
            lines.push(format!("- [ ] seed {seed}: runs missing"));
            continue;
        };
        let holds = hostile.excess <= 1.2 * honest.excess;
        ok &= holds;
        lines.push(format!(
            "- [{}] seed {seed}: with {} hostile of {} peers and the Gauntlet, excess {:.4} ≤ 1.2 × the honest peers' alone without it {:.4} (= {:.4})",
            if holds { "x" } else { " " },
            hostile.config.hostile.len(),
            hostile.config.peers as usize + hostile.config.hostile.len(),
            hostile.excess,
            honest.excess,
            1.2 * honest.excess
        ));
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
    std::fs::write(dir.join("curves.csv"), render_csv(reports))?;
    write_plots(dir, reports, &opts.seeds)?;
    std::fs::write(
        dir.join("report.md"),
        render_markdown(reports, checks, opts),
    )?;
    Ok(())
}

/// curves.csv: every evaluation of every run.
pub fn render_csv(reports: &[RunReport]) -> String {
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
    csv
}

/// The plots of each seed: held-out loss against tokens and against bytes sent.
pub fn write_plots(dir: &Path, reports: &[RunReport], seeds: &[u64]) -> Result<()> {
    for &seed in seeds {
        let runs: Vec<RunReport> = reports
            .iter()
            .filter(|r| r.config.seed == seed)
            .cloned()
            .collect();
        loss_plot(
            &dir.join(format!("loss-vs-tokens-seed{seed}.svg")),
            &runs,
            XAxis::Tokens,
            &format!("held-out loss vs tokens, seed {seed}"),
        )?;
        loss_plot(
            &dir.join(format!("loss-vs-bytes-seed{seed}.svg")),
            &runs,
            XAxis::Bytes,
            &format!("held-out loss vs bytes sent, seed {seed}"),
        )?;
    }
    Ok(())
}

/// report.md: the table of runs, the machine, the claims (`checks`) and the plots.
pub fn render_markdown(reports: &[RunReport], checks: &[String], opts: &CompareOptions) -> String {
    if is_hostile(reports) {
        return render_hostile_markdown(reports, checks, opts);
    }
    let mut md = String::new();
    let first = reports.first();
    let _ = writeln!(md, "# Strategy comparison\n");
    if let Some(r) = first {
        let _ = writeln!(
            md,
            "Model `tiny` ({} parameters), {} peers, {} tokens per run (all peers), batch {}×{} per peer per step, {} inner steps per peer, seeds {:?}. The peer-local strategies' AdamW uses the noise-corrected second moment for {} peers (docs/training.md); DDP's is plain. DDP and SparseLoCo 1/64 run {} times per seed (another initialisation and data order, same language and held-out tokens: \"rep\" rows); their claims use the mean excess.\n",
            r.parameters,
            opts.peers,
            opts.tokens,
            r.config.batch,
            r.config.seq_len,
            r.config.steps(),
            opts.seeds,
            opts.peers,
            opts.replicates
        );
    }
    let _ = writeln!(md, "{}\n", machines(reports));
    let _ = writeln!(
        md,
        "| run | final held-out loss | floor | excess over floor | bytes sent per peer | vs DDP bytes | wall s |\n|---|---|---|---|---|---|---|"
    );
    for r in reports {
        let ddp = group(reports, r.config.seed, "ddp")
            .first()
            .map_or(0, |d| d.bytes_per_peer);
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
        let _ = writeln!(
            md,
            "![loss vs tokens, seed {seed}](loss-vs-tokens-seed{seed}.svg)\n![loss vs bytes, seed {seed}](loss-vs-bytes-seed{seed}.svg)\n"
        );
    }
    md
}

/// report.md of the hostile-peer comparison: the runs, the claims, and per seed how the
/// Gauntlet treated every peer of the hostile run.
fn render_hostile_markdown(
    reports: &[RunReport],
    checks: &[String],
    opts: &CompareOptions,
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Hostile-peer comparison\n");
    if let Some(r) = reports.first() {
        let kinds: Vec<&str> = opts.hostile.iter().map(|k| k.name()).collect();
        let sample = match opts.scored_per_round {
            0 => "every candidate".to_owned(),
            n => format!("a deterministic sample of {n} candidates"),
        };
        let _ = writeln!(
            md,
            "SparseLoCo 1/64 on model `tiny` ({} parameters): {} honest peers and {} hostile ones ({}), {} tokens per run (the honest peers'), batch {}×{} per peer per step, {} inner steps per peer in rounds of {}, seeds {:?}. \"gauntlet\" runs judge every round as the coordinator does (cheap checks, ratings, standing, selection; a TrainingRun's default `participation.scoring`) with one validator scoring {sample} per round; \"no gauntlet\" aggregates every update. docs/security.md describes the hostile kinds and the checks.\n",
            r.parameters,
            opts.peers,
            opts.hostile.len(),
            kinds.join(", "),
            opts.tokens,
            r.config.batch,
            r.config.seq_len,
            r.config.steps(),
            r.config.inner_steps,
            opts.seeds,
        );
    }
    let _ = writeln!(md, "{}\n", machines(reports));
    let _ = writeln!(
        md,
        "| run | final held-out loss | floor | excess over floor | rounds skipped | wall s |\n|---|---|---|---|---|---|"
    );
    for r in reports {
        let _ = writeln!(
            md,
            "| {} | {:.4} | {:.4} | {:.4} | {} | {:.0} |",
            r.config.name, r.final_eval_loss, r.floor, r.excess, r.rounds_skipped, r.wall_seconds
        );
    }
    let _ = writeln!(md, "\n## Claims\n\n{}\n", checks.join("\n"));
    for r in reports.iter().filter(|r| !r.peers.is_empty()) {
        let rounds = r.config.rounds();
        let _ = writeln!(
            md,
            "## {}: who was aggregated\n\n{rounds} rounds. Weight: the peer's share of all aggregation weight over the run (each round's weights sum to 1).\n\n| peer | role | rounds aggregated | weight | last aggregated | left out (reason × rounds) | excluded in rounds |\n|---|---|---|---|---|---|---|",
            r.config.name
        );
        for p in &r.peers {
            let left_out: Vec<String> = p
                .left_out
                .iter()
                .map(|(why, n)| format!("{why} × {n}"))
                .collect();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {:.1}% | {} | {} | {} |",
                p.peer,
                p.role,
                p.aggregated,
                100.0 * p.weight / rounds.max(1) as f64,
                p.last_aggregated.map_or("–".to_owned(), |r| r.to_string()),
                left_out.join(", "),
                p.excluded_ranges()
            );
        }
        let _ = writeln!(md);
    }
    for &seed in &opts.seeds {
        let _ = writeln!(
            md,
            "![loss vs tokens, seed {seed}](loss-vs-tokens-seed{seed}.svg)\n![loss vs bytes, seed {seed}](loss-vs-bytes-seed{seed}.svg)\n"
        );
    }
    md
}

/// The machine line of the report: one machine when every run names the same, else each run's.
fn machines(reports: &[RunReport]) -> String {
    let first = reports.first().and_then(|r| r.machine.as_ref());
    if reports.iter().all(|r| r.machine.as_ref() == first) {
        return describe(first);
    }
    reports
        .iter()
        .map(|r| format!("{}: {}", r.config.name, describe(r.machine.as_ref())))
        .collect::<Vec<_>>()
        .join("  \n")
}

/// The options a committed comparison was run with, read back from its runs: the seeds in
/// order of appearance, the peers, tokens, evaluations and held-out sequences of its first
/// run, and the most replicates of any run.
pub fn options_of(reports: &[RunReport], out_dir: PathBuf) -> Option<CompareOptions> {
    let first = &reports.first()?.config;
    let mut seeds = Vec::new();
    for r in reports {
        if !seeds.contains(&r.config.seed) {
            seeds.push(r.config.seed);
        }
    }
    Some(CompareOptions {
        out_dir,
        tokens: first.tokens,
        seeds,
        jobs: 1,
        peers: first.peers,
        evals: first.evals,
        eval_sequences: first.eval_sequences,
        replicates: reports.iter().map(|r| r.config.replicate + 1).max()?,
        hostile: reports
            .iter()
            .find(|r| !r.config.hostile.is_empty())
            .map(|r| r.config.hostile.clone())
            .unwrap_or_default(),
        scored_per_round: reports
            .iter()
            .find_map(|r| r.config.gauntlet)
            .map_or(0, |g| g.scored_per_round),
        resume: false,
    })
}

/// Bytes one peer sends per round of `cfg` (a local strategy): dense f32 for DiLoCo, the
/// encoded contribution in `cfg.wire`'s format for SparseLoCo. The sizes depend only on the
/// shapes and the codec's parameters, so any pseudo-gradient measures them.
pub fn round_bytes(cfg: &SimConfig) -> Result<u64> {
    let numel = TensorPlan::new(cfg.model, cfg.codec)?.numel();
    match (cfg.strategy, cfg.wire) {
        (Strategy::Ddp | Strategy::Diloco, _) => Ok(4 * numel),
        (Strategy::Sparseloco, WireFormat::Tributary) => sparse_round_bytes(cfg),
        (Strategy::Sparseloco, WireFormat::Production) => {
            Ok(production_wire_bytes(&sample_contribution(cfg)?))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn opts(replicates: u32) -> CompareOptions {
        CompareOptions {
            out_dir: PathBuf::new(),
            tokens: 8_388_608,
            seeds: vec![3],
            jobs: 2,
            peers: 4,
            evals: 16,
            eval_sequences: 256,
            replicates,
            hostile: Vec::new(),
            scored_per_round: 0,
            resume: false,
        }
    }

    /// A finished run of `cfg` with the given excess and bytes.
    fn report(cfg: &SimConfig, excess: f64, bytes_per_peer: u64) -> RunReport {
        RunReport {
            config: cfg.clone(),
            floor: 2.0,
            final_eval_loss: 2.0 + excess,
            excess,
            bytes_per_peer,
            parameters: 1,
            wall_seconds: 0.0,
            fingerprint: String::new(),
            points: Vec::new(),
            machine: None,
            peers: Vec::new(),
            rounds_skipped: 0,
        }
    }

    /// `--resume` reuses a report only for exactly the configuration it was made from.
    #[test]
    fn a_finished_run_is_reused_only_for_its_own_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.json");
        let cfg = base(&opts(1), 3);
        assert!(finished_run(&path, &cfg).is_none(), "nothing there yet");
        std::fs::write(&path, serde_json::to_vec(&report(&cfg, 0.05, 10)).unwrap()).unwrap();
        assert_eq!(finished_run(&path, &cfg).unwrap().excess, 0.05);
        let other = SimConfig {
            seed: 4,
            ..cfg.clone()
        };
        assert!(finished_run(&path, &other).is_none());
        std::fs::write(&path, b"{ not a report").unwrap();
        assert!(finished_run(&path, &cfg).is_none());
    }

    #[test]
    fn the_plan_replicates_ddp_and_ours_only() {
        let runs = plan(&opts(3), 3).unwrap();
        let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        for n in ["ddp s3", "sparseloco 1/64 s3"] {
            for (r, name) in [
                (0, n.to_string()),
                (1, format!("{n} rep2")),
                (2, format!("{n} rep3")),
            ] {
                let run = runs.iter().find(|c| c.name == name).unwrap();
                assert_eq!(run.replicate, r);
            }
        }
        assert_eq!(runs.len(), 6 + 4, "{names:?}");
        assert!(runs.iter().all(|r| r.seed == 3));
        let seeds: std::collections::BTreeSet<u64> = runs
            .iter()
            .filter(|r| r.strategy == Strategy::Ddp)
            .map(SimConfig::train_seed)
            .collect();
        assert_eq!(seeds.len(), 3, "each replicate trains on its own stream");
        assert!(seeds.contains(&3), "replicate 0 is the seed's own run");
    }

    #[test]
    fn claims_are_judged_on_the_mean_of_the_replicates() {
        let runs = plan(&opts(2), 3).unwrap();
        let excess = |name: &str| match name {
            "ddp s3" => 0.050,
            "ddp s3 rep2" => 0.060,
            // Mean 0.066 = 1.2 × 0.055 exactly; each alone would fail against the other DDP run.
            "sparseloco 1/64 s3" => 0.070,
            "sparseloco 1/64 s3 rep2" => 0.062,
            "production 1/128 s3" => 0.067,
            _ => 0.1,
        };
        let bytes = |cfg: &SimConfig| match cfg.strategy {
            Strategy::Ddp => 1_500_000_000,
            Strategy::Sparseloco => 1_250_000,
            Strategy::Diloco => 12_000_000,
        };
        let mut reports: Vec<RunReport> = runs
            .iter()
            .map(|c| report(c, excess(&c.name), bytes(c)))
            .collect();
        let (lines, ok) = check(&reports, &[3]);
        assert!(ok, "{lines:#?}");
        assert!(
            lines[0].contains("0.0660 (mean of 0.0700, 0.0620)"),
            "{}",
            lines[0]
        );
        // One replicate a little worse: the mean ratio fails, and so does the production claim.
        for r in &mut reports {
            if r.config.name == "sparseloco 1/64 s3 rep2" {
                r.excess = 0.066;
            }
        }
        let (lines, ok) = check(&reports, &[3]);
        assert!(!ok);
        assert!(
            lines[0].starts_with("- [ ]") && lines[1].starts_with("- [ ]"),
            "{lines:#?}"
        );
        assert!(
            lines[2..].iter().all(|l| l.starts_with("- [x]")),
            "{lines:#?}"
        );
    }
}
