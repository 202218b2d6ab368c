//! `tributary-worker validate`: a validator the run trusts (its key is on the run's
//! `participation.scoring.validators`). It holds θ at the current version like a late joiner
//! (checkpoint, then every aggregate), and for each round that closes it fetches its share of the
//! candidates, applies each alone (clipped to the round's median norm, at `evalLrScale` × the
//! outer lr) and measures the loss improvement on the peer's assigned batches and on held-out
//! batches nobody trained on; it signs and submits the scores. docs/security.md has the rules.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::task::block_in_place;
use tracing::{Instrument, info, info_span, warn};
use tributary_codec::decode;
use tributary_crds::TrainingRunSpec;
use tributary_proto::identity::Identity;
use tributary_proto::v1alpha1::{PeerScore, RunPhase, round_event};

use super::failure::{self, Backoff, Permanent};
use super::{Client, PeerState, load_key};
use crate::train::median_norm;

/// How long one ListCandidates call waits for its round to close.
const LIST_WAIT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, clap::Args)]
pub struct ValidateArgs {
    /// The coordinator's gRPC address.
    #[arg(
        long,
        env = "TRIBUTARY_COORDINATOR",
        default_value = "http://127.0.0.1:7400"
    )]
    pub coordinator: String,
    /// The run to validate (the TrainingRun's name).
    #[arg(long, env = "TRIBUTARY_RUN_ID")]
    pub run_id: String,
    /// This validator's ed25519 key file; its public key must be on the run's
    /// `participation.scoring.validators`.
    #[arg(long, env = "TRIBUTARY_KEY")]
    pub key: PathBuf,
    /// libtorch threads.
    #[arg(long, env = "TRIBUTARY_THREADS", default_value_t = 1)]
    pub threads: u32,
}

/// Validates until the run's round limit is reached, or until a [`Permanent`] failure.
pub(crate) async fn run(args: ValidateArgs) -> Result<()> {
    tch::set_num_threads(args.threads.max(1) as i32);
    failure::check_coordinator_url(&args.coordinator)?;
    let id = load_key(&args.key, false)?;
    info!(
        "validator {} for run {:?} at {}",
        id.peer_id(),
        args.run_id,
        args.coordinator
    );
    let mut state: Option<PeerState> = None;
    let mut backoff = Backoff::default();
    loop {
        match session(&args, &id, &mut state, &mut backoff).await {
            Ok(()) => return Ok(()),
            Err(e) if e.downcast_ref::<Permanent>().is_some() => return Err(e),
            Err(e) => {
                let (attempt, delay) = backoff.next_delay();
                warn!(
                    "{e:#}; retrying in {:.1} s (attempt {attempt})",
                    delay.as_secs_f64()
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// One connection's worth of validating; returns Ok when the run is finished.
async fn session(
    args: &ValidateArgs,
    id: &Identity,
    slot: &mut Option<PeerState>,
    backoff: &mut Backoff,
) -> Result<()> {
    let mut client = Client::connect(&args.coordinator).await?;
    let status = client.status(true).await?;
    if status.run_id != args.run_id {
        return Err(Permanent {
            what: format!(
                "unknown run: this coordinator serves run {:?}, not {:?}",
                status.run_id, args.run_id
            ),
            fix: "check --run-id (the TrainingRun's name) and --coordinator",
        }
        .into());
    }
    let spec =
        TrainingRunSpec::from_json(status.run_spec_json.as_bytes()).map_err(|e| Permanent {
            what: format!("this worker cannot read the run's spec: {e}"),
            fix: "install the tributary-worker release that matches the coordinator",
        })?;
    let me = hex::encode(id.public_key());
    if !spec.participation.scoring.validators.contains(&me) {
        return Err(Permanent {
            what: format!("key {me} is not one of the run's validators"),
            fix: "add it to spec.participation.scoring.validators, or use a validator's key",
        }
        .into());
    }
    backoff.reset();
    if slot.as_ref().is_some_and(|s| *s.spec() != spec) {
        return Err(Permanent {
            what: "the run's spec changed under this validator".into(),
            fix: "restart the validator to start from the new spec",
        }
        .into());
    }
    if slot.is_none() {
        *slot = Some(start(&mut client, spec).await?);
    }
    let Some(state) = slot.as_mut() else {
        bail!("no state");
    };
    let total = state.plan().total_rounds();
    let mut events = client.watch(&id.peer_id(), 0).await?;
    while let Some(event) = events.message().await.context("round stream")? {
        match event.event {
            Some(round_event::Event::Published(p)) => {
                if p.model_version <= state.version {
                    continue;
                }
                if p.model_version != state.version + 1 {
                    bail!(
                        "aggregate of round {} makes version {}, but this validator is at {}",
                        p.round,
                        p.model_version,
                        state.version
                    );
                }
                let blob = client.aggregate(p.round, &p.aggregate_sha256).await?;
                block_in_place(|| state.apply_aggregate(p.round, &blob, false))?;
                if total.is_some_and(|t| state.version >= t) {
                    info!(version = state.version, "run finished");
                    return Ok(());
                }
            }
            Some(round_event::Event::Opened(o)) if o.model_version == state.version => {
                score_round(args, id, &mut client, state, o.round)
                    .instrument(info_span!("validate", round = o.round))
                    .await?;
            }
            Some(round_event::Event::Opened(o)) => {
                info!(
                    round = o.round,
                    "not at the round's model version; not scoring it"
                );
            }
            Some(round_event::Event::Skipped(_)) | None => {}
        }
    }
    bail!("the coordinator closed the round stream")
}

/// θ from the newest checkpoint (hash-verified), or the run's seeded initialization.
async fn start(client: &mut Client, spec: TrainingRunSpec) -> Result<PeerState> {
    match client.latest_checkpoint().await? {
        Some(info) => {
            let bytes = client.checkpoint(&info).await?;
            block_in_place(|| PeerState::from_checkpoint(spec, &bytes))
        }
        None => block_in_place(|| PeerState::new(spec)),
    }
}

/// Waits for `round` to close, scores this validator's share of its candidates and submits.
async fn score_round(
    args: &ValidateArgs,
    id: &Identity,
    client: &mut Client,
    state: &mut PeerState,
    round: u64,
) -> Result<()> {
    let listed = loop {
        let listed = client
            .list_candidates(id, &args.run_id, round, LIST_WAIT)
            .await?;
        if listed.ready {
            break listed;
        }
        let status = client.status(false).await?;
        if status.round != round || status.phase() == RunPhase::Succeeded {
            info!(round, "the round ended before it took scores");
            return Ok(());
        }
    };
    if listed.model_version != state.version {
        warn!(
            round,
            version = state.version,
            "the round was trained from another version; not scoring it"
        );
        return Ok(());
    }
    let limits = state.plan().tensors().update_limits();
    let mut updates = Vec::new();
    for c in &listed.candidates {
        let payload = client.candidate(id, &args.run_id, round, c).await?;
        match decode(&payload, &limits) {
            Ok(update) => updates.push((c, update)),
            // The coordinator decoded it on receipt; a failure here is worth a log, not a score.
            Err(e) => warn!(peer = %c.peer_id, "candidate does not decode: {e}"),
        }
    }
    if updates.is_empty() {
        return Ok(());
    }
    let lr_scale = state.spec().participation.scoring.eval_lr_scale;
    let median = median_norm(updates.iter().map(|(_, u)| u));
    let scorer = block_in_place(|| state.round_scorer(round, lr_scale, median))?;
    let mut scores = Vec::with_capacity(updates.len());
    for (c, update) in &updates {
        let s = block_in_place(|| state.score_update(&scorer, update, c.slot))?;
        info!(
            peer = %c.peer_id,
            score = s.random,
            own = s.own,
            norm = s.norm,
            "candidate scored"
        );
        scores.push(PeerScore {
            peer_id: c.peer_id.clone(),
            score: s.random,
            loss_improvement_own: s.own,
            loss_improvement_random: s.random,
        });
    }
    let n = scores.len();
    let r = client
        .submit_scores(id, &args.run_id, round, scores)
        .await?;
    if r.accepted {
        info!(round, scores = n, "scores accepted");
    } else {
        warn!(round, reason = ?r.reason(), message = %r.message, "scores refused");
    }
    Ok(())
}
