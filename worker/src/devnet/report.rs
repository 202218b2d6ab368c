//! The devnet's report: the held-out loss curve against the entropy floor, bytes per peer
//! against dense exchange, and per-peer statistics, from the peers' logs and the
//! coordinator's status.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tributary_crds::TrainingRunSpec;
use tributary_proto::v1alpha1::RunStatus;

use crate::peer::{LogLine, read_log};
use crate::provenance::{Machine, describe};
use crate::simulate::plot::{Series, XAxis, curve_plot};

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PeerSummary {
    pub name: String,
    pub rounds_applied: u64,
    pub rounds_trained: u64,
    pub rounds_included: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub mean_train_loss: Option<f64>,
    pub mean_round_seconds: Option<f64>,
    pub mean_train_seconds: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct DevnetReport {
    pub wall_seconds: f64,
    pub peers: u32,
    pub parameters: u64,
    pub rounds_published: u64,
    pub rounds_skipped: u64,
    pub tokens: u64,
    pub floor: Option<f64>,
    pub first_eval_loss: Option<f64>,
    pub final_eval_loss: Option<f64>,
    /// (tokens of all peers so far, held-out loss) after each aggregate, from peer 0.
    pub curve: Vec<(u64, f64)>,
    /// Mean over peers of the bytes each uploaded.
    pub bytes_up_per_peer: f64,
    /// What dense f32 pseudo-gradients would have cost each peer for the same rounds.
    pub dense_bytes_per_peer: f64,
    /// Share of a peer's round wall time not spent in inner steps and compression.
    pub share_outside_compute: Option<f64>,
    pub per_peer: Vec<PeerSummary>,
    /// The machine and commit of the devnet; absent in reports from before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<Machine>,
}

fn mean(xs: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = xs.fold((0.0, 0u64), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// The entropy floor peer 0 logged, once it has.
pub(super) fn floor_of(log: &Path) -> Option<f64> {
    read_log(log).ok()?.iter().find_map(|l| l.floor)
}

impl DevnetReport {
    pub(crate) fn build(
        out: &Path,
        peers: u32,
        spec: &TrainingRunSpec,
        status: &RunStatus,
        wall: Duration,
    ) -> Result<Self> {
        let parameters = spec.model_config()?.parameter_count();
        let mut logs: Vec<(String, Vec<LogLine>)> = Vec::new();
        for i in 0..peers {
            let name = format!("peer-{i}");
            let mut lines = read_log(&out.join(&name).join("peer.jsonl")).unwrap_or_default();
            // A restarted peer replays versions it logged before: keep each version once.
            let mut seen = std::collections::BTreeSet::new();
            lines.retain(|l| seen.insert(l.version));
            logs.push((name, lines));
        }
        let per_peer: Vec<PeerSummary> = logs
            .iter()
            .map(|(name, lines)| {
                let trained: Vec<&LogLine> =
                    lines.iter().filter(|l| l.train_loss.is_some()).collect();
                PeerSummary {
                    name: name.clone(),
                    rounds_applied: lines.len() as u64,
                    rounds_trained: trained.len() as u64,
                    rounds_included: lines.iter().filter(|l| l.included).count() as u64,
                    bytes_up: lines.iter().map(|l| l.bytes_up).sum(),
                    bytes_down: lines.iter().map(|l| l.bytes_down).sum(),
                    mean_train_loss: mean(trained.iter().filter_map(|l| l.train_loss)),
                    mean_round_seconds: mean(trained.iter().filter_map(|l| l.round_seconds)),
                    mean_train_seconds: mean(trained.iter().filter_map(|l| l.train_seconds)),
                }
            })
            .collect();
        let evaluator = logs.first().map(|l| l.1.as_slice()).unwrap_or(&[]);
        let mut tokens = 0u64;
        let curve: Vec<(u64, f64)> = evaluator
            .iter()
            .filter_map(|l| {
                tokens += l.round_tokens;
                l.eval_loss.map(|e| (tokens, e))
            })
            .collect();
        let trained_rounds: Vec<u64> = per_peer.iter().map(|p| p.rounds_trained).collect();
        let all_lines = || logs.iter().flat_map(|l| l.1.iter());
        let round_s: f64 = all_lines().filter_map(|l| l.round_seconds).sum();
        let train_s: f64 = all_lines().filter_map(|l| l.train_seconds).sum();
        Ok(Self {
            wall_seconds: wall.as_secs_f64(),
            peers,
            parameters,
            rounds_published: status.history.iter().filter(|r| r.published).count() as u64,
            rounds_skipped: status.history.iter().filter(|r| !r.published).count() as u64,
            tokens: status.tokens,
            floor: evaluator.iter().find_map(|l| l.floor),
            first_eval_loss: curve.first().map(|c| c.1),
            final_eval_loss: curve.last().map(|c| c.1),
            bytes_up_per_peer: mean(per_peer.iter().map(|p| p.bytes_up as f64)).unwrap_or(0.0),
            dense_bytes_per_peer: mean(trained_rounds.iter().map(|r| (*r * 4 * parameters) as f64))
                .unwrap_or(0.0),
            share_outside_compute: (round_s > 0.0).then(|| 1.0 - train_s / round_s),
            curve,
            per_peer,
            machine: None,
        })
    }

    pub(crate) fn summary(&self) -> String {
        let f = |x: Option<f64>| x.map_or("–".to_owned(), |v| format!("{v:.4}"));
        let mut s = format!(
            "devnet: {} peers, {} aggregates ({} skipped), {} tokens in {:.0} s\n",
            self.peers, self.rounds_published, self.rounds_skipped, self.tokens, self.wall_seconds
        );
        s += &format!(
            "held-out loss {} → {} (entropy floor {}, excess {})\n",
            f(self.first_eval_loss),
            f(self.final_eval_loss),
            f(self.floor),
            f(self.final_eval_loss.zip(self.floor).map(|(a, b)| a - b)),
        );
        s += &format!(
            "bytes sent per peer {} vs dense f32 {} ({:.0}× less)\n",
            indicatif::HumanBytes(self.bytes_up_per_peer as u64),
            indicatif::HumanBytes(self.dense_bytes_per_peer as u64),
            self.dense_bytes_per_peer / self.bytes_up_per_peer.max(1.0)
        );
        if let Some(share) = self.share_outside_compute {
            s += &format!(
                "share of round time outside training compute: {:.0}%\n",
                100.0 * share
            );
        }
        s
    }

    /// report.md: the summary, the machine, the plot, the per-peer table and the curve.
    pub(crate) fn markdown(&self) -> String {
        let f = |x: Option<f64>| x.map_or("–".to_owned(), |v| format!("{v:.3}"));
        let mut md = format!(
            "# Devnet report\n\n{}\n{}\n\n![held-out loss](loss.svg)\n\n| peer | aggregates applied | rounds trained | in aggregate | bytes up | bytes down | mean train loss | round s | train s |\n|---|---|---|---|---|---|---|---|---|\n",
            self.summary().replace('\n', "  \n"),
            describe(self.machine.as_ref())
        );
        for p in &self.per_peer {
            md += &format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                p.name,
                p.rounds_applied,
                p.rounds_trained,
                p.rounds_included,
                p.bytes_up,
                p.bytes_down,
                f(p.mean_train_loss),
                f(p.mean_round_seconds),
                f(p.mean_train_seconds),
            );
        }
        // The curve itself, so that every point of the plot is in the text as well.
        md += "\n| tokens (all peers) | held-out loss |\n|---|---|\n";
        for (tokens, loss) in &self.curve {
            md += &format!("| {tokens} | {loss:.4} |\n");
        }
        md
    }
}

/// report.md, results.json and loss.svg in `out`.
pub(crate) fn write_report(out: &Path, r: &DevnetReport) -> Result<()> {
    std::fs::write(out.join("results.json"), serde_json::to_string_pretty(r)?)?;
    std::fs::write(out.join("report.md"), r.markdown())?;
    write_plot(out, r)
}

/// loss.svg in `out`: the held-out loss curve against the floor (none without either).
pub(crate) fn write_plot(out: &Path, r: &DevnetReport) -> Result<()> {
    if let (Some(floor), false) = (r.floor, r.curve.is_empty()) {
        let series = [Series {
            name: format!("SparseLoCo devnet, {} peers", r.peers),
            points: r.curve.iter().map(|(t, l)| (*t as f64, *l)).collect(),
        }];
        curve_plot(
            &out.join("loss.svg"),
            &series,
            floor,
            XAxis::Tokens,
            "Devnet: held-out loss vs tokens",
        )?;
    }
    Ok(())
}
