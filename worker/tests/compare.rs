//! A shortened strategy comparison, end to end through the CLI: every run of the plan trains,
//! the report, curves and plots are written, and the byte accounting has the ordering the claims
//! rest on. (The loss claims need the full 8M-token budget: docs/benchmarks.md.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use serde_json::Value;

#[test]
fn shortened_comparison_writes_the_report_with_consistent_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cmp");
    let status = Command::new(env!("CARGO_BIN_EXE_tributary-worker"))
        // 30 inner steps of 4 × 16 × 64 tokens: three whole SparseLoCo rounds of 10 steps, so the
        // byte ratios are those of a long run.
        .args([
            "compare", "--tokens", "122880", "--seeds", "5", "--jobs", "2",
        ])
        .args(["--replicates", "2"])
        .args(["--evals", "2", "--eval-sequences", "16", "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    for f in [
        "report.md",
        "results.json",
        "curves.csv",
        "loss-vs-tokens-seed5.svg",
        "loss-vs-bytes-seed5.svg",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let runs: Vec<Value> =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    let get = |prefix: &str| {
        runs.iter()
            .find(|r| r["config"]["name"].as_str().unwrap().starts_with(prefix))
            .unwrap_or_else(|| panic!("no run {prefix}"))
    };
    let bytes = |prefix: &str| get(prefix)["bytes_per_peer"].as_u64().unwrap() as f64;
    assert_eq!(runs.len(), 8);
    for r in &runs {
        let first = r["points"][0]["eval_loss"].as_f64().unwrap();
        let last = r["final_eval_loss"].as_f64().unwrap();
        assert!(
            last < first - 0.2,
            "{}: {first} -> {last}",
            r["config"]["name"]
        );
        assert!(
            r["excess"].as_f64().unwrap() > 0.0,
            "loss below the floor is impossible"
        );
        assert_eq!(
            r["floor"], runs[0]["floor"],
            "every run is judged on the same held-out tokens"
        );
    }
    let ours = bytes("sparseloco 1/64");
    assert!(
        bytes("ddp") >= 1000.0 * ours,
        "DDP {} vs ours {ours}",
        bytes("ddp")
    );
    // Production format at half the density costs about what ours costs at 1/64.
    let prod = bytes("production 1/128");
    assert!(
        (prod / ours - 1.0).abs() < 0.15,
        "production 1/128 {prod} vs ours {ours}"
    );
    // A replicate is the same run on another initialisation and data order: same bytes, same
    // held-out tokens (checked above), another trajectory.
    for name in ["ddp s5", "sparseloco 1/64 s5"] {
        let exact = |n: &str| {
            runs.iter()
                .find(|r| r["config"]["name"] == n)
                .unwrap_or_else(|| panic!("no run {n}"))
        };
        let (first, second) = (exact(name), exact(&format!("{name} rep2")));
        assert_eq!(second["config"]["replicate"], 1);
        assert_eq!(first["bytes_per_peer"], second["bytes_per_peer"]);
        assert_ne!(first["fingerprint"], second["fingerprint"]);
        assert_ne!(
            first["points"][0]["eval_loss"],
            second["points"][0]["eval_loss"]
        );
    }
    assert!(bytes("sparseloco 1/32") > ours);
    let large_h = runs
        .iter()
        .find(|r| {
            let name = r["config"]["name"].as_str().unwrap();
            name.starts_with("diloco H") && !name.starts_with("diloco H15 ")
        })
        .unwrap();
    // As many dense rounds as fit in 10× our bytes; this short run affords less than one, so it
    // gets exactly one.
    let steps = large_h["points"].as_array().unwrap().last().unwrap()["step"]
        .as_u64()
        .unwrap();
    assert!(large_h["config"]["inner_steps"].as_u64().unwrap() >= steps);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("## Claims")
            && report.contains("DDP sends")
            && report.contains("(mean of "),
        "{report}"
    );
}

/// The committed report (docs/compare) is what the current plan produces and meets the claims
/// by the current claim logic: changing a setting of the comparison without rerunning it, or
/// a report whose ordering fails, fails here.
#[test]
fn the_committed_report_matches_the_plan_and_meets_the_claims() {
    use tributary_worker::simulate::{CompareOptions, RunReport, check, plan};
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/compare/results.json");
    let reports: Vec<RunReport> = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let opts = CompareOptions {
        out_dir: std::path::PathBuf::new(),
        tokens: 8_388_608,
        seeds: vec![1, 2],
        jobs: 2,
        peers: 4,
        evals: 16,
        eval_sequences: 256,
        replicates: 2,
        hostile: Vec::new(),
        scored_per_round: 0,
        resume: false,
    };
    let mut planned = Vec::new();
    for seed in &opts.seeds {
        planned.extend(plan(&opts, *seed).unwrap());
    }
    assert_eq!(reports.len(), planned.len());
    for cfg in &planned {
        let report = reports
            .iter()
            .find(|r| r.config.name == cfg.name)
            .unwrap_or_else(|| panic!("{} is not in the committed report", cfg.name));
        assert_eq!(
            serde_json::to_value(&report.config).unwrap(),
            serde_json::to_value(cfg).unwrap(),
            "{}: the committed run's configuration differs from the plan; rerun `compare`",
            cfg.name
        );
        assert!(report.config.tokens >= 8_000_000);
    }
    let (lines, ok) = check(&reports, &opts.seeds);
    assert!(ok, "{lines:#?}");
    // The large-H DiLoCo is the baseline at ≤ 10× our bytes: the claims only judge DiLoCo runs
    // within that budget, so one outside it would drop out of them unnoticed.
    for seed in &opts.seeds {
        let bytes = |name: String| {
            reports
                .iter()
                .find(|r| r.config.name == name)
                .unwrap_or_else(|| panic!("no run {name}"))
                .bytes_per_peer
        };
        let ours = bytes(format!("sparseloco 1/64 s{seed}"));
        let large_h = planned
            .iter()
            .find(|c| c.seed == *seed && c.name.starts_with("diloco H") && c.inner_steps > 15)
            .unwrap();
        let large = bytes(large_h.name.clone());
        assert!(
            large <= 10 * ours,
            "{}: {large} bytes vs 10 × {ours}",
            large_h.name
        );
    }
}

fn docs(dir: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs")
        .join(dir)
}

/// Everything in the committed comparison that is a pure function of its configurations and
/// curves — floors, parameters, the evaluation steps, tokens and bytes at every point (DDP:
/// parameters × 4 × steps), excess = loss − floor, the claims — is what the code derives, and
/// report.md, curves.csv and the plots are exactly what the code renders from results.json.
#[test]
fn the_committed_comparison_is_what_the_code_derives_and_renders() {
    use tributary_worker::evidence::Verifier;
    use tributary_worker::simulate::{RunReport, options_of};
    let dir = docs("compare");
    let scratch = tempfile::tempdir().unwrap();
    let problems = Verifier::default()
        .compare_report(&dir, scratch.path())
        .unwrap();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The options read back from the runs are the documented command's.
    let reports: Vec<RunReport> =
        serde_json::from_slice(&std::fs::read(dir.join("results.json")).unwrap()).unwrap();
    let opts = options_of(&reports, dir).unwrap();
    assert_eq!(
        (
            opts.tokens,
            opts.seeds,
            opts.peers,
            opts.evals,
            opts.eval_sequences,
            opts.replicates
        ),
        (8_388_608, vec![1, 2], 4, 16, 256, 2)
    );
}

/// The committed devnet report: its totals are those of its curve and per-peer rows, and
/// report.md and loss.svg are what the code renders from results.json.
#[test]
fn the_committed_devnet_report_is_what_the_code_derives_and_renders() {
    use tributary_worker::evidence::Verifier;
    let scratch = tempfile::tempdir().unwrap();
    let problems = Verifier::default()
        .devnet_report(&docs("devnet"), scratch.path())
        .unwrap();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `text` with the first digit of the number at `range` changed.
fn edit(text: &str, range: &std::ops::Range<usize>) -> String {
    let mut b = text.as_bytes().to_vec();
    let first = range.start + usize::from(b[range.start] == b'-');
    b[first] = if b[first] == b'9' { b'8' } else { b[first] + 1 };
    String::from_utf8(b).unwrap()
}

/// Copies of the committed reports with one number edited by hand fail the checks: 40 numbers
/// spread over each of results.json, report.md and curves.csv (and of the devnet's
/// results.json and report.md), one edit at a time.
#[test]
fn a_hand_edited_number_in_a_committed_report_fails_the_checks() {
    use tributary_worker::evidence::Verifier;
    let mut verifier = Verifier::default();
    for (report, files) in [
        ("compare", &["results.json", "report.md", "curves.csv"][..]),
        ("devnet", &["results.json", "report.md"][..]),
        (
            "compare-hostile",
            &["results.json", "report.md", "curves.csv"][..],
        ),
    ] {
        let copy = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(docs(report)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
        }
        let verify = |v: &mut Verifier| {
            let scratch = tempfile::tempdir().unwrap();
            match report {
                "devnet" => v.devnet_report(copy.path(), scratch.path()),
                _ => v.compare_report(copy.path(), scratch.path()),
            }
            .unwrap()
        };
        assert!(
            verify(&mut verifier).is_empty(),
            "the copy of {report} passes"
        );
        for file in files {
            let path = copy.path().join(file);
            let original = std::fs::read_to_string(&path).unwrap();
            let all = tributary_worker::evidence::number_spans(&original, file.ends_with(".json"));
            assert!(all.len() >= 40, "{report}/{file}: {} numbers", all.len());
            for k in 0..40 {
                let range = &all[k * all.len() / 40];
                std::fs::write(&path, edit(&original, range)).unwrap();
                let problems = verify(&mut verifier);
                assert!(
                    !problems.is_empty(),
                    "{report}/{file}: editing {} at byte {} went unnoticed",
                    &original[range.clone()],
                    range.start
                );
            }
            std::fs::write(&path, &original).unwrap();
        }
    }
}

/// How far a committed run's first evaluations may be from a rerun on another kind of CPU
/// (nats/token; docs/benchmarks.md, "Reproducing the committed figures").
const CROSS_CPU_TOLERANCE: f64 = 2e-3;

/// The kinds of CPU on which the committed comparison is known to reproduce bit for bit: the one
/// its results.json records, if any, and those of docs/compare/reproduced-on.json (where the
/// first evaluations of every strategy were re-run and found bit-identical).
fn reproducing_cpus(
    report: &str,
    committed: &tributary_worker::simulate::RunReport,
) -> Vec<tributary_worker::provenance::Machine> {
    let mut cpus: Vec<_> = match std::fs::read(docs(report).join("reproduced-on.json")) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap(),
        Err(_) => Vec::new(),
    };
    cpus.extend(committed.machine.clone());
    cpus
}

/// Re-runs the first evaluation after step 0 of the committed run `name` from its committed
/// configuration with the current code: bit-identical on a kind of CPU known to reproduce the
/// report, within `CROSS_CPU_TOLERANCE` elsewhere. Steps, tokens and bytes are
/// machine-independent and always exact.
fn first_evaluations_reproduce(report: &str, name: &str) {
    use tributary_worker::provenance::Machine;
    use tributary_worker::simulate::{RunReport, simulate_prefix};
    let reports: Vec<RunReport> =
        serde_json::from_slice(&std::fs::read(docs(report).join("results.json")).unwrap()).unwrap();
    let committed = reports.iter().find(|r| r.config.name == name).unwrap();
    let here = Machine::current(committed.config.threads);
    let same_cpu = reproducing_cpus(report, committed)
        .iter()
        .any(|m| m.same_cpu(&here));
    eprintln!("this machine: {}", serde_json::to_string(&here).unwrap());
    let rerun = simulate_prefix(&committed.config, 2).unwrap();
    assert_eq!(rerun.points.len(), 2, "{name}");
    // The committed numbers went through JSON: so does the rerun's, to compare like with like.
    let as_committed =
        |x: f64| -> f64 { serde_json::from_str(&serde_json::to_string(&x).unwrap()).unwrap() };
    for (new, old) in rerun.points.iter().zip(&committed.points) {
        assert_eq!(
            (new.step, new.tokens, new.bytes_per_peer),
            (old.step, old.tokens, old.bytes_per_peer),
            "{name}"
        );
        for (what, a, b) in [
            ("held-out loss", as_committed(new.eval_loss), old.eval_loss),
            (
                "training loss",
                as_committed(new.train_loss),
                old.train_loss,
            ),
        ] {
            eprintln!(
                "{name} step {}: {what} {a} rerun vs {b} committed ({:+.2e})",
                new.step,
                a - b
            );
            if same_cpu {
                assert_eq!(a.to_bits(), b.to_bits(), "{name} step {}: {what}", new.step);
            } else {
                assert!(
                    (a - b).abs() <= CROSS_CPU_TOLERANCE,
                    "{name} step {}: {what} {a} vs committed {b}",
                    new.step
                );
            }
        }
    }
    assert_eq!(
        as_committed(rerun.floor).to_bits(),
        committed.floor.to_bits(),
        "{name}: the floor is machine-independent"
    );
}

#[test]
fn committed_ddp_run_reproduces_its_first_evaluations() {
    first_evaluations_reproduce("compare", "ddp s1");
}

#[test]
fn committed_diloco_run_reproduces_its_first_evaluations() {
    first_evaluations_reproduce("compare", "diloco H15 s1");
}

#[test]
fn committed_sparseloco_run_reproduces_its_first_evaluations() {
    first_evaluations_reproduce("compare", "sparseloco 1/64 s1");
}

/// The hostile run of the committed hostile-peer comparison: its first evaluations, Gauntlet
/// included, come out of the current code.
#[test]
fn committed_hostile_run_reproduces_its_first_evaluations() {
    first_evaluations_reproduce("compare-hostile", "gauntlet hostile 30% s1");
}

/// The committed hostile-peer comparison (docs/compare-hostile) is the current plan's, every
/// derivable figure and every rendered file is what the code makes of its results, and its claim
/// holds on both seeds; each seed's honest peers are never excluded and its hostile peers carry
/// little of the aggregate.
#[test]
fn the_committed_hostile_comparison_is_what_the_code_derives_and_meets_its_claim() {
    use tributary_worker::evidence::Verifier;
    use tributary_worker::simulate::{RunReport, check, options_of};
    let dir = docs("compare-hostile");
    let scratch = tempfile::tempdir().unwrap();
    let problems = Verifier::default()
        .compare_report(&dir, scratch.path())
        .unwrap();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let reports: Vec<RunReport> =
        serde_json::from_slice(&std::fs::read(dir.join("results.json")).unwrap()).unwrap();
    let opts = options_of(&reports, dir).unwrap();
    assert_eq!(opts.seeds, [1, 2]);
    let (lines, ok) = check(&reports, &opts.seeds);
    assert!(ok, "{lines:#?}");
    for r in &reports {
        let hostile = r.config.hostile.len() as f64;
        assert!(r.config.tokens >= 8_000_000, "{}", r.config.name);
        if !r.config.hostile.is_empty() {
            assert!(
                hostile / (hostile + f64::from(r.config.peers)) >= 0.3,
                "{}: at least 30% hostile",
                r.config.name
            );
        }
    }
}

/// A short hostile-peer comparison through the CLI: the three runs, the per-peer table, and the
/// Gauntlet leaving the ×100, sign-flipped and free-riding updates out of every round while the
/// honest ones are aggregated in every round.
#[test]
fn shortened_hostile_comparison_leaves_the_hostile_updates_out() {
    use tributary_worker::simulate::RunReport;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hostile");
    let status = Command::new(env!("CARGO_BIN_EXE_tributary-worker"))
        // 4 honest peers, 30 inner steps of 4 × 16 × 64 tokens: three rounds of 10 steps.
        .args([
            "compare", "--tokens", "122880", "--seeds", "5", "--jobs", "2",
        ])
        .args(["--hostile", "scaled,sign-flip,free-rider"])
        .args(["--evals", "1", "--eval-sequences", "16", "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let runs: Vec<RunReport> =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    let names: Vec<&str> = runs.iter().map(|r| r.config.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "gauntlet hostile 43% s5",
            "gauntlet honest-only s5",
            "no gauntlet hostile 43% s5",
            "no gauntlet honest-only s5"
        ]
    );
    let judged = &runs[0];
    assert_eq!(judged.peers.len(), 7);
    for p in &judged.peers {
        if p.is_honest() {
            assert_eq!(p.aggregated, 3, "{p:?}");
            assert!(p.excluded.is_empty(), "{p:?}");
        } else {
            assert_eq!(p.aggregated, 0, "{p:?}");
            assert_eq!(p.excluded, [(0, 2)], "{p:?}");
        }
    }
    let reason = |role: &str| {
        let p = judged.peers.iter().find(|p| p.role == role).unwrap();
        p.left_out.keys().cloned().collect::<Vec<_>>()
    };
    assert_eq!(reason("scaled"), ["norm-ceiling"]);
    assert_eq!(reason("sign-flip"), ["negative-score"]);
    assert_eq!(reason("free-rider"), ["norm-floor"]);
    // The honest peers alone: aggregated every round; without the Gauntlet nothing is judged.
    assert!(
        runs[1]
            .peers
            .iter()
            .all(|p| p.is_honest() && p.aggregated == 3)
    );
    assert!(runs[2].peers.is_empty() && runs[3].peers.is_empty());
    assert!(runs[3].config.hostile.is_empty() && runs[3].config.gauntlet.is_none());
    // The honest peers train on the same batches in every run.
    assert_eq!(runs[0].points[1].tokens, runs[1].points[1].tokens);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("# Hostile-peer comparison")
            && report.contains("| p05 | sign-flip | 0 | 0.0% | – | negative-score × 3 | 0–2 |"),
        "{report}"
    );
}
