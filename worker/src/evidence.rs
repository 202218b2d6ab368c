//! Checks of committed reports against the code: everything in a report that is a pure function
//! of its configurations and measured curves is derived again and compared, and the files
//! rendered from results.json (report.md, curves.csv, the plots) are rendered again from it and
//! compared as text. What remains unchecked here — the measured losses themselves — is checked by
//! re-running a prefix of the runs (worker/tests/compare.rs).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use tributary_crds::TensorPlan;
use tributary_data::synthetic::Language;
use tributary_data::{StreamId, TokenSource};

use crate::devnet::{self, DevnetReport};
use crate::simulate::{
    CompareOptions, Point, RunReport, SimConfig, Strategy, check, options_of, plan, render_csv,
    render_markdown, round_bytes, write_plots,
};

/// The steps at which `simulate` evaluates `cfg` (step 0 first): every `steps / evals` steps
/// (rounded up) and at the end, a local strategy's only at the end of a round.
pub fn eval_steps(cfg: &SimConfig) -> Vec<u64> {
    let steps = cfg.steps();
    let every = steps.div_ceil(u64::from(cfg.evals.max(1))).max(1);
    let mut out = vec![0];
    let mut step = 0;
    while step < steps {
        let span = match cfg.strategy {
            Strategy::Ddp => 1,
            _ => u64::from(cfg.inner_steps.max(1)).min(steps - step),
        };
        let before = step;
        step += span;
        if step / every != before / every || step == steps {
            out.push(step);
        }
    }
    out
}

/// Derives and compares; keeps what is costly to derive (floors, round sizes) across calls.
#[derive(Default)]
pub struct Verifier {
    floors: HashMap<String, f64>,
    round_bytes: HashMap<String, u64>,
}

impl Verifier {
    /// The entropy floor of `cfg`'s held-out tokens, as `simulate` computes it.
    pub fn floor(&mut self, cfg: &SimConfig) -> Result<f64> {
        let key =
            serde_json::to_string(&(cfg.seed, &cfg.language, cfg.eval_sequences, cfg.seq_len))?;
        if let Some(f) = self.floors.get(&key) {
            return Ok(*f);
        }
        let language = Language::new(cfg.language).context("building the embedded language")?;
        let eval = language.batch(
            StreamId::held_out(cfg.seed, 0),
            cfg.eval_sequences as usize,
            cfg.seq_len as usize,
        )?;
        let floor = language.floor_nats(&eval)?;
        self.floors.insert(key, floor);
        Ok(floor)
    }

    /// Bytes each peer has sent after `step` inner steps of `cfg`: dense f32 gradients every
    /// step (DDP), one payload per started round otherwise.
    pub fn bytes_after(&mut self, cfg: &SimConfig, step: u64) -> Result<u64> {
        let per_step_or_round = {
            let key = serde_json::to_string(&(
                cfg.strategy,
                cfg.wire,
                &cfg.model,
                serde_json::to_value(cfg)?["codec"].clone(),
            ))?;
            match self.round_bytes.get(&key) {
                Some(b) => *b,
                None => {
                    let b = round_bytes(cfg)?;
                    self.round_bytes.insert(key, b);
                    b
                }
            }
        };
        Ok(match cfg.strategy {
            Strategy::Ddp => step * per_step_or_round,
            _ => step.div_ceil(u64::from(cfg.inner_steps.max(1))) * per_step_or_round,
        })
    }

    /// Every disagreement between the committed comparison in `dir` (results.json, report.md,
    /// curves.csv, the plots) and what the code derives from its configurations and curves.
    /// The plots are rendered into `scratch`, an empty directory.
    pub fn compare_report(&mut self, dir: &Path, scratch: &Path) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let text = read(dir, "results.json")?;
        let reports: Vec<RunReport> =
            serde_json::from_str(&text).context("parsing results.json")?;
        // Nothing in it that the report type does not hold (serde skips unknown fields).
        if !same_json(&text, &serde_json::to_string_pretty(&reports)?) {
            problems.push(
                "results.json is not what `compare` writes for its own content (a number or \
                 field edited by hand)"
                    .to_owned(),
            );
        }
        let Some(opts) = options_of(&reports, dir.to_path_buf()) else {
            problems.push("results.json has no runs".to_owned());
            return Ok(problems);
        };
        // A configuration the code cannot even build (an edited setting out of its range) is a
        // problem of the report, not a failure of the check.
        if let Err(e) = self.plan_matches(&reports, &opts, &mut problems) {
            problems.push(format!("the plan of these options: {e:#}"));
        }
        for r in &reports {
            if let Err(e) = self.run_matches(r, &mut problems) {
                problems.push(format!("{}: {e:#}", r.config.name));
            }
        }
        let (claims, _) = check(&reports, &opts.seeds);
        compare_text(
            &mut problems,
            "curves.csv",
            &read(dir, "curves.csv")?,
            &render_csv(&reports),
        );
        compare_text(
            &mut problems,
            "report.md",
            &read(dir, "report.md")?,
            &render_markdown(&reports, &claims, &opts),
        );
        write_plots(scratch, &reports, &opts.seeds)?;
        compare_dirs(&mut problems, dir, scratch, "svg")?;
        Ok(problems)
    }

    /// The runs are exactly those the current plan makes for the report's options.
    fn plan_matches(
        &mut self,
        reports: &[RunReport],
        opts: &CompareOptions,
        problems: &mut Vec<String>,
    ) -> Result<()> {
        let mut planned = Vec::new();
        for seed in &opts.seeds {
            planned.extend(plan(opts, *seed)?);
        }
        if planned.len() != reports.len() {
            problems.push(format!(
                "{} runs committed, the plan has {}",
                reports.len(),
                planned.len()
            ));
        }
        for cfg in &planned {
            match reports.iter().find(|r| r.config.name == cfg.name) {
                None => problems.push(format!("{} is not in the committed report", cfg.name)),
                Some(r) if serde_json::to_value(&r.config)? != serde_json::to_value(cfg)? => {
                    problems.push(format!(
                        "{}: the committed configuration differs from the plan; rerun `compare`",
                        cfg.name
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// What is derivable in one run: parameters, floor, the evaluation schedule, tokens and
    /// bytes at each point, excess = loss − floor, and the run's totals from its last point.
    fn run_matches(&mut self, r: &RunReport, problems: &mut Vec<String>) -> Result<()> {
        let cfg = &r.config;
        let name = &cfg.name;
        let mut expect = |what: &str, committed: String, derived: String| {
            if committed != derived {
                problems.push(format!(
                    "{name}: {what} is {committed}, the code derives {derived}"
                ));
            }
        };
        // Floats as parsed back from JSON: equal up to the parser's last-bit error.
        let near = |committed: f64, derived: f64| {
            if close(committed, derived) {
                derived.to_string()
            } else {
                committed.to_string()
            }
        };
        let parameters = TensorPlan::new(cfg.model, cfg.codec)?.numel();
        expect(
            "parameters",
            r.parameters.to_string(),
            parameters.to_string(),
        );
        let floor = self.floor(cfg)?;
        expect("the floor", near(r.floor, floor), floor.to_string());
        let steps: Vec<u64> = r.points.iter().map(|p| p.step).collect();
        expect(
            "the evaluation steps",
            format!("{steps:?}"),
            format!("{:?}", eval_steps(cfg)),
        );
        for p in &r.points {
            let at = format!("step {}", p.step);
            expect(
                &format!("tokens at {at}"),
                p.tokens.to_string(),
                (p.step * cfg.tokens_per_step()).to_string(),
            );
            expect(
                &format!("bytes per peer at {at}"),
                p.bytes_per_peer.to_string(),
                self.bytes_after(cfg, p.step)?.to_string(),
            );
            expect(
                &format!("excess at {at}"),
                near(p.excess, p.eval_loss - r.floor),
                (p.eval_loss - r.floor).to_string(),
            );
        }
        if let Some(first) = r.points.first() {
            expect(
                "the training loss before any step",
                first.train_loss.to_string(),
                "0".to_owned(),
            );
        }
        let last = r.points.last().cloned().unwrap_or_else(Point::default);
        expect(
            "the final held-out loss",
            r.final_eval_loss.to_string(),
            last.eval_loss.to_string(),
        );
        expect(
            "the excess",
            near(r.excess, r.final_eval_loss - r.floor),
            (r.final_eval_loss - r.floor).to_string(),
        );
        // DDP: parameters × 4 bytes × steps; the others: their payload × rounds.
        expect(
            "bytes per peer",
            r.bytes_per_peer.to_string(),
            self.bytes_after(cfg, cfg.steps())?.to_string(),
        );
        // A judged run: one outcome per slot, each round of each peer aggregated or left out
        // once, and each aggregated round's weights summing to 1.
        let mut judged = Vec::new();
        if cfg.gauntlet.is_some() {
            let roles: Vec<&str> = r.peers.iter().map(|p| p.role.as_str()).collect();
            expect(
                "the peers' roles",
                format!("{roles:?}"),
                format!("{:?}", cfg.roles()),
            );
            let rounds = cfg.rounds();
            for p in &r.peers {
                let left_out: u64 = p.left_out.values().sum();
                expect(
                    &format!("{}'s rounds aggregated + left out", p.peer),
                    (p.aggregated + left_out).to_string(),
                    rounds.to_string(),
                );
                let excluded: u64 = p.excluded.iter().map(|(a, b)| b + 1 - a).sum();
                if excluded > left_out || p.excluded.iter().any(|(a, b)| a > b || *b >= rounds) {
                    judged.push(format!(
                        "{name}: {}'s excluded rounds {:?} do not fit",
                        p.peer, p.excluded
                    ));
                }
            }
            let weight: f64 = r.peers.iter().map(|p| p.weight).sum();
            let aggregated = rounds.saturating_sub(r.rounds_skipped) as f64;
            if (weight - aggregated).abs() > 1e-3 * aggregated.max(1.0) {
                judged.push(format!(
                    "{name}: the weights sum to {weight}, not to the {aggregated} rounds aggregated"
                ));
            }
        }
        problems.extend(judged);
        Ok(())
    }

    /// Every disagreement between the committed devnet report in `dir` (results.json,
    /// report.md, loss.svg) and what the code derives and renders from its results; the plot
    /// is rendered into `scratch`, an empty directory.
    pub fn devnet_report(&mut self, dir: &Path, scratch: &Path) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let text = read(dir, "results.json")?;
        let r: DevnetReport = serde_json::from_str(&text).context("parsing results.json")?;
        if !same_json(&text, &serde_json::to_string_pretty(&r)?) {
            problems.push(
                "results.json is not what `devnet` writes for its own content (a number or \
                 field edited by hand)"
                    .to_owned(),
            );
        }
        let mut expect = |what: &str, committed: String, derived: String| {
            if committed != derived {
                problems.push(format!("{what} is {committed}, derived {derived}"));
            }
        };
        let mean = |xs: Vec<f64>| xs.iter().sum::<f64>() / xs.len().max(1) as f64;
        expect(
            "the first held-out loss",
            format!("{:?}", r.first_eval_loss),
            format!("{:?}", r.curve.first().map(|c| c.1)),
        );
        expect(
            "the final held-out loss",
            format!("{:?}", r.final_eval_loss),
            format!("{:?}", r.curve.last().map(|c| c.1)),
        );
        expect(
            "bytes up per peer",
            r.bytes_up_per_peer.to_string(),
            mean(r.per_peer.iter().map(|p| p.bytes_up as f64).collect()).to_string(),
        );
        // What dense f32 pseudo-gradients would have cost: 4 bytes × parameters per round.
        expect(
            "dense bytes per peer",
            r.dense_bytes_per_peer.to_string(),
            mean(
                r.per_peer
                    .iter()
                    .map(|p| (p.rounds_trained * 4 * r.parameters) as f64)
                    .collect(),
            )
            .to_string(),
        );
        compare_text(
            &mut problems,
            "report.md",
            &read(dir, "report.md")?,
            &r.markdown(),
        );
        devnet::write_plot(scratch, &r)?;
        compare_dirs(&mut problems, dir, scratch, "svg")?;
        Ok(problems)
    }
}

/// Whether `a` and `b` agree up to the last bits lost in parsing JSON (serde_json's default
/// float parsing is not always correctly rounded).
pub fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-13 * a.abs().max(b.abs())
}

/// Byte ranges of the numbers in `text`: in JSON those outside strings (sign, decimals and
/// exponent included), elsewhere every run of digits with its decimals.
pub fn number_spans(text: &str, json: bool) -> Vec<std::ops::Range<usize>> {
    let b = text.as_bytes();
    let (mut out, mut i, mut in_string) = (Vec::new(), 0, false);
    while i < b.len() {
        match b[i] {
            b'"' if json => in_string = !in_string,
            b'\\' if in_string => i += 1,
            c if !in_string && (c.is_ascii_digit() || (json && c == b'-')) => {
                let start = i;
                i += 1;
                while i < b.len()
                    && (b[i].is_ascii_digit()
                        || b[i] == b'.'
                        || (json && matches!(b[i], b'e' | b'E' | b'+' | b'-')))
                {
                    i += 1;
                }
                out.push(start..i);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Whether two JSON texts are the same apart from numbers that are `close` (read exactly).
fn same_json(a: &str, b: &str) -> bool {
    let (na, nb) = (number_spans(a, true), number_spans(b, true));
    if na.len() != nb.len() {
        return false;
    }
    let mut at = (0, 0);
    for (ra, rb) in na.iter().zip(&nb) {
        let numbers = a[ra.clone()]
            .parse::<f64>()
            .ok()
            .zip(b[rb.clone()].parse::<f64>().ok());
        if a[at.0..ra.start] != b[at.1..rb.start] || !numbers.is_some_and(|(x, y)| close(x, y)) {
            return false;
        }
        at = (ra.end, rb.end);
    }
    a[at.0..] == b[at.1..]
}

fn read(dir: &Path, file: &str) -> Result<String> {
    let path = dir.join(file);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// Records the first differing line of `committed` against what the code renders.
fn compare_text(problems: &mut Vec<String>, file: &str, committed: &str, rendered: &str) {
    if committed == rendered {
        return;
    }
    let (c, r): (Vec<&str>, Vec<&str>) = (committed.lines().collect(), rendered.lines().collect());
    let at = c
        .iter()
        .zip(&r)
        .position(|(a, b)| a != b)
        .unwrap_or(c.len().min(r.len()));
    problems.push(format!(
        "{file} differs from what the code renders from results.json at line {}:\n  committed: {}\n  rendered:  {}",
        at + 1,
        c.get(at).unwrap_or(&"<end>"),
        r.get(at).unwrap_or(&"<end>")
    ));
}

/// Every `ext` file rendered into `rendered` equals the committed one of the same name in
/// `committed`, and no committed one is missing from the rendering.
fn compare_dirs(
    problems: &mut Vec<String>,
    committed: &Path,
    rendered: &Path,
    ext: &str,
) -> Result<()> {
    let names = |dir: &Path| -> Result<Vec<String>> {
        let mut names: Vec<String> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(&format!(".{ext}")))
            .collect();
        names.sort();
        Ok(names)
    };
    let (c, r) = (names(committed)?, names(rendered)?);
    if c != r {
        problems.push(format!("plots committed {c:?}, rendered {r:?}"));
    }
    for name in r.iter().filter(|n| c.contains(n)) {
        compare_text(
            problems,
            name,
            &read(committed, name)?,
            &read(rendered, name)?,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::simulate::base;

    fn opts(tokens: u64, evals: u32) -> CompareOptions {
        CompareOptions {
            out_dir: std::path::PathBuf::new(),
            tokens,
            seeds: vec![1],
            jobs: 1,
            peers: 4,
            evals,
            eval_sequences: 8,
            replicates: 1,
            hostile: Vec::new(),
            scored_per_round: 0,
            resume: false,
        }
    }

    #[test]
    fn json_texts_agree_up_to_float_parsing_only() {
        let a = r#"{"x": 0.1, "n": [1, -2.5e-7], "s": "7"}"#;
        assert!(same_json(
            a,
            r#"{"x": 0.10000000000000002, "n": [1, -2.5e-7], "s": "7"}"#
        ));
        assert!(!same_json(
            a,
            r#"{"x": 0.1001, "n": [1, -2.5e-7], "s": "7"}"#
        ));
        assert!(!same_json(a, r#"{"x": 0.1, "n": [1, -2.5e-7], "s": "8"}"#));
        assert!(!same_json(
            a,
            r#"{"x": 0.1, "n": [1, -2.5e-7, 3], "s": "7"}"#
        ));
        assert!(!same_json(
            a,
            r#"{"x": 0.1, "n": [1, -2.5e-7], "s": "7", "y": 1}"#
        ));
        let spans: Vec<&str> = number_spans(a, true).into_iter().map(|r| &a[r]).collect();
        assert_eq!(spans, ["0.1", "1", "-2.5e-7"]);
    }

    #[test]
    fn evaluations_fall_at_round_ends_and_at_the_end() {
        // 2048 steps, 16 evaluations: every 128 steps; rounds of 10 end at 130, 260, …
        let mut cfg = base(&opts(8_388_608, 16), 1);
        let steps = eval_steps(&cfg);
        assert_eq!(&steps[..4], &[0, 130, 260, 390]);
        assert_eq!(*steps.last().unwrap(), 2048);
        assert_eq!(steps.len(), 17);
        cfg.strategy = Strategy::Ddp;
        let steps = eval_steps(&cfg);
        assert_eq!(&steps[..3], &[0, 128, 256]);
        assert_eq!(steps.len(), 17);
    }

    #[test]
    fn bytes_count_steps_for_ddp_and_started_rounds_otherwise() {
        let mut v = Verifier::default();
        let mut cfg = base(&opts(8_388_608, 16), 1);
        cfg.strategy = Strategy::Ddp;
        let params = TensorPlan::new(cfg.model, cfg.codec).unwrap().numel();
        assert_eq!(v.bytes_after(&cfg, 7).unwrap(), 7 * 4 * params);
        cfg.strategy = Strategy::Diloco;
        cfg.inner_steps = 10;
        // The last, shorter round is sent too.
        assert_eq!(v.bytes_after(&cfg, 21).unwrap(), 3 * 4 * params);
        cfg.strategy = Strategy::Sparseloco;
        let round = v.bytes_after(&cfg, 10).unwrap();
        assert!(round < 4 * params / 50, "{round}");
        assert_eq!(v.bytes_after(&cfg, 21).unwrap(), 3 * round);
    }
}
