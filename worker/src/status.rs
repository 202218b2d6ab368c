//! `tributary-worker status`: a run's state from its coordinator's `GetStatus`, for people
//! outside the cluster — what `kubectl get trainingruns` shows, plus this peer's standing.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use tracing::warn;
use tributary_proto::v1alpha1::{RunPhase, RunStatus, SkipReason};

use crate::peer::Client;
use crate::peer::failure::{self, Permanent};

/// How often `--watch` asks.
const WATCH_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// The coordinator's gRPC address.
    #[arg(
        long,
        env = "TRIBUTARY_COORDINATOR",
        default_value = "http://127.0.0.1:7400"
    )]
    pub coordinator: String,
    /// The run expected at that address; another run there is an error.
    #[arg(long, env = "TRIBUTARY_RUN_ID")]
    pub run_id: Option<String>,
    /// This peer's key file: adds its standing in the run.
    #[arg(long, env = "TRIBUTARY_KEY")]
    pub key: Option<PathBuf>,
    /// Keep asking (every 2 s) and print the status whenever it changes; Ctrl-C stops.
    #[arg(long)]
    pub watch: bool,
}

pub async fn run(args: StatusArgs) -> Result<()> {
    failure::check_coordinator_url(&args.coordinator)?;
    let me = match &args.key {
        Some(path) => Some(crate::peer::load_key(path, false)?.peer_id()),
        None => None,
    };
    let mut last = String::new();
    loop {
        let shown = match ask(&args).await {
            Ok(status) => render(&status, me.as_deref()),
            Err(e) if !args.watch || e.downcast_ref::<Permanent>().is_some() => return Err(e),
            Err(e) => {
                warn!("{e:#}; retrying in {} s", WATCH_EVERY.as_secs());
                tokio::time::sleep(WATCH_EVERY).await;
                continue;
            }
        };
        if shown != last {
            println!("{shown}");
            last = shown;
        }
        if !args.watch {
            return Ok(());
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
}

async fn ask(args: &StatusArgs) -> Result<RunStatus> {
    let mut client = Client::connect(&args.coordinator).await?;
    let status = client.status(false).await?;
    if let Some(expected) = &args.run_id
        && *expected != status.run_id
    {
        return Err(Permanent {
            what: format!(
                "unknown run: this coordinator serves run {:?}, not {expected:?}",
                status.run_id
            ),
            fix: "check --run-id (the TrainingRun's name) and --coordinator (each run has its own coordinator)",
        }
        .into());
    }
    if status.run_id.is_empty() {
        bail!("the coordinator names no run");
    }
    Ok(status)
}

/// A peer's standing in words: excluded (why), on probation, or aggregated last round.
fn standing(p: &tributary_proto::v1alpha1::PeerStatus) -> String {
    if !p.excluded.is_empty() {
        format!("excluded: {}", p.excluded)
    } else if p.probationary {
        "probation".to_owned()
    } else if p.selected {
        "aggregated".to_owned()
    } else {
        "not aggregated last round".to_owned()
    }
}

/// The phase as `kubectl get trainingruns` would say it.
fn phase_label(phase: RunPhase) -> &'static str {
    match phase {
        RunPhase::Unspecified => "Unknown",
        RunPhase::Waiting => "Waiting",
        RunPhase::Open => "Running",
        RunPhase::Aggregating => "Aggregating",
        RunPhase::Succeeded => "Succeeded",
    }
}

/// Why a round was skipped, in words.
fn skip_label(reason: SkipReason) -> &'static str {
    match reason {
        SkipReason::Unspecified => "unknown reason",
        SkipReason::NoSubmissions => "no updates",
        SkipReason::TooFewSubmissions => "too few updates",
        SkipReason::ExtensionsExhausted => "too few updates after every extension",
        SkipReason::AllExcluded => "every update was left out by the Gauntlet",
    }
}

/// The status as a few lines: the run, its peers, and `me`'s standing when given.
pub fn render(s: &RunStatus, me: Option<&str>) -> String {
    let mut out = String::new();
    let of_total = match s.total_rounds {
        0 => String::new(),
        t => format!(" of {t}"),
    };
    let _ = write!(
        out,
        "run {}: {}, round {}, {}{of_total} rounds completed",
        s.run_id,
        phase_label(s.phase()),
        s.round,
        s.model_version
    );
    if s.model_version > 0 {
        let _ = write!(out, ", loss {:.4}", s.loss);
    }
    let _ = write!(out, ", {} tokens", s.tokens);
    if let Some(last) = s.history.last().filter(|r| !r.published) {
        let _ = write!(
            out,
            "\nlast round {} skipped: {}",
            last.round,
            skip_label(last.skip_reason())
        );
    }
    let _ = write!(
        out,
        "\npeers: {} active, {} with rejected updates",
        s.active_peers, s.rejected_peers
    );
    if let Some(last) = s.history.last().filter(|r| !r.degraded.is_empty()) {
        let _ = write!(
            out,
            "\nround {} judged without validator scores: {}",
            last.round, last.degraded
        );
    }
    if !s.peers.is_empty() {
        let _ = write!(
            out,
            "\n  {:<34} {:<8} {:>8} {:>8} {:>10} {:>7} {:>10}  STANDING",
            "PEER", "MEMBER", "ACCEPTED", "REJECTED", "LAST ROUND", "RATING", "LAST SCORE"
        );
    }
    for p in &s.peers {
        let _ = write!(
            out,
            "\n  {:<34} {:<8} {:>8} {:>8} {:>10} {:>7.2} {:>10}  {}",
            p.peer_id,
            if p.active { "yes" } else { "no" },
            p.accepted_updates,
            p.rejected_updates,
            p.last_round_submitted,
            p.score,
            p.last_score.map_or("–".to_owned(), |v| format!("{v:.4}")),
            standing(p)
        );
    }
    if let Some(me) = me {
        let _ = write!(out, "\nthis peer {me}: ");
        match s.peers.iter().find(|p| p.peer_id == me) {
            Some(p) => {
                let _ = write!(
                    out,
                    "{}, {} updates accepted, {} rejected, rating {:.2} ({})",
                    if p.active {
                        "a member"
                    } else {
                        "no longer a member (join again)"
                    },
                    p.accepted_updates,
                    p.rejected_updates,
                    p.score,
                    standing(p)
                );
                if p.accepted_updates + p.rejected_updates > 0 {
                    let _ = write!(out, ", last submitted round {}", p.last_round_submitted);
                }
            }
            None => out.push_str("not in this run (join with `tributary-worker join`)"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use tributary_proto::v1alpha1::{PeerStatus, RoundSummary};

    use super::*;

    fn status() -> RunStatus {
        RunStatus {
            run_id: "tiny-demo".into(),
            round: 8,
            phase: RunPhase::Open.into(),
            loss: 4.69765,
            tokens: 98_304,
            active_peers: 2,
            rejected_peers: 1,
            model_version: 7,
            total_rounds: 60,
            peers: vec![
                PeerStatus {
                    peer_id: "pa".into(),
                    active: true,
                    last_round_submitted: 7,
                    accepted_updates: 6,
                    rejected_updates: 1,
                    score: 1.25,
                    last_score: Some(0.0123),
                    selected: true,
                    ..PeerStatus::default()
                },
                PeerStatus {
                    peer_id: "pb".into(),
                    active: false,
                    ..PeerStatus::default()
                },
            ],
            ..RunStatus::default()
        }
    }

    #[test]
    fn shows_the_run_its_peers_and_my_standing() {
        let text = render(&status(), Some("pa"));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "run tiny-demo: Running, round 8, 7 of 60 rounds completed, loss 4.6977, 98304 tokens"
        );
        assert_eq!(lines[1], "peers: 2 active, 1 with rejected updates");
        assert!(
            lines[3].contains("pa")
                && lines[3].contains("yes")
                && lines[3].contains("1.25")
                && lines[3].contains("0.0123")
                && lines[3].ends_with("aggregated"),
            "{text}"
        );
        assert!(
            lines[4].contains("pb")
                && lines[4].contains("no")
                && lines[4].ends_with("not aggregated last round"),
            "{text}"
        );
        assert_eq!(
            lines[5],
            "this peer pa: a member, 6 updates accepted, 1 rejected, rating 1.25 (aggregated), \
             last submitted round 7"
        );
        let other = render(&status(), Some("pz"));
        assert!(
            other.ends_with("this peer pz: not in this run (join with `tributary-worker join`)")
        );
        assert!(
            render(&status(), Some("pb")).contains("this peer pb: no longer a member"),
            "{text}"
        );
    }

    #[test]
    fn a_fresh_run_shows_no_loss_and_a_skipped_round_says_why() {
        let mut s = status();
        s.model_version = 0;
        s.total_rounds = 0;
        s.peers.clear();
        s.history.push(RoundSummary {
            round: 0,
            published: false,
            skip_reason: SkipReason::TooFewSubmissions.into(),
            ..RoundSummary::default()
        });
        let text = render(&s, None);
        assert!(text.starts_with("run tiny-demo: Running, round 8, 0 rounds completed, 98304"));
        assert!(
            text.contains("last round 0 skipped: too few updates"),
            "{text}"
        );
        assert!(
            !text.contains("PEER") && !text.contains("this peer"),
            "{text}"
        );
    }
}
