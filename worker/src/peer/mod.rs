//! A training peer: joins a run's coordinator, follows its rounds, trains and submits, applies
//! published aggregates, and reconnects with backoff when the connection or the coordinator
//! goes away. A peer that (re)starts syncs first: the newest checkpoint (hash-verified), then
//! every aggregate published since, which gives bit-identical parameters.

mod client;
pub(crate) mod failure;
pub(crate) mod hostile;
mod log;
mod state;
pub(crate) mod validator;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::sync::Notify;
use tokio::task::block_in_place;
use tracing::{Instrument, info, info_span, warn};
use tributary_crds::TrainingRunSpec;
use tributary_proto::identity::Identity;
use tributary_proto::v1alpha1::{
    AggregatePublished, JoinResponse, RejectReason, RoundOpened, round_event,
};

pub(crate) use client::Client;
use client::UpdateReport;
use failure::{Backoff, Permanent};
use hostile::{Hostile, HostileKind};
pub(crate) use log::{LogLine, read_log};
pub(crate) use state::PeerState;

#[derive(Debug, Clone, clap::Args)]
pub struct PeerArgs {
    /// The coordinator's gRPC address.
    #[arg(
        long,
        env = "TRIBUTARY_COORDINATOR",
        default_value = "http://127.0.0.1:7400"
    )]
    pub coordinator: String,
    /// The run to join (the TrainingRun's name).
    #[arg(long, env = "TRIBUTARY_RUN_ID")]
    pub run_id: String,
    /// This peer's ed25519 key file (`tributary-worker keygen`). It must exist unless
    /// --create-key is given: a mistyped path would otherwise be a new peer.
    #[arg(long, env = "TRIBUTARY_KEY")]
    pub key: PathBuf,
    /// Create the key file when it does not exist (a new peer id).
    #[arg(long, env = "TRIBUTARY_CREATE_KEY")]
    pub create_key: bool,
    /// Where this peer writes its log (peer.jsonl).
    #[arg(long, env = "TRIBUTARY_DATA_DIR", default_value = ".")]
    pub data_dir: PathBuf,
    /// libtorch threads.
    #[arg(long, env = "TRIBUTARY_THREADS", default_value_t = 1)]
    pub threads: u32,
    /// Upload a checkpoint every `checkpoints.everyRounds` aggregates.
    #[arg(long, env = "TRIBUTARY_CHECKPOINT_WRITER")]
    pub checkpoint_writer: bool,
    /// Score θ on held-out data after every aggregate (logged with the entropy floor).
    #[arg(long, env = "TRIBUTARY_EVALUATE")]
    pub evaluate: bool,
    /// FOR TESTING THE COORDINATOR'S DEFENCES ONLY: make this peer hostile, a validly signed
    /// member that submits a bad update of this kind every round (it still follows rounds and
    /// applies aggregates like an honest peer). Never set on a run you want to train.
    #[arg(long, env = "TRIBUTARY_HOSTILE", value_name = "KIND")]
    pub hostile: Option<HostileKind>,
    /// Where a colluding pair meets (testing only): `--hostile colluder-origin` writes its
    /// payload of round R to DIR/round-R.bin, `--hostile copy` sends that file as its own.
    #[arg(
        long,
        env = "TRIBUTARY_COLLUDE_DIR",
        value_name = "DIR",
        required_if_eq_any([("hostile", "copy"), ("hostile", "colluder-origin")])
    )]
    pub collude_dir: Option<PathBuf>,
}

/// Runs the peer until the run's round limit is reached, or until a [`Permanent`] failure.
pub(crate) async fn run(args: PeerArgs) -> Result<()> {
    tch::set_num_threads(args.threads.max(1) as i32);
    failure::check_coordinator_url(&args.coordinator)?;
    let id = load_key(&args.key, args.create_key)?;
    let mut hostile = match args.hostile {
        Some(kind) => {
            let seed = hostile::seed_of(&id.public_key());
            let h = Hostile::new(kind, args.collude_dir.clone(), seed)?;
            warn!(
                "HOSTILE PEER (--hostile {kind}): this peer submits bad updates on purpose, to \
                 test the coordinator's defences"
            );
            Some(h)
        }
        None => None,
    };
    info!(
        "peer {} joining run {:?} at {}",
        id.peer_id(),
        args.run_id,
        args.coordinator
    );
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let mut log = log::Log::open(&args.data_dir.join("peer.jsonl"))?;
    let mut state: Option<PeerState> = None;
    let mut backoff = Backoff::default();
    loop {
        match session(&args, &id, &mut state, &mut hostile, &mut log, &mut backoff).await {
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

/// This peer's key: loaded, or created only when asked (`create`), so a mistyped path is an
/// error rather than a new peer id.
pub(crate) fn load_key(path: &std::path::Path, create: bool) -> Result<Identity> {
    if path.exists() {
        return Ok(Identity::load(path)?);
    }
    if !create {
        return Err(Permanent {
            what: format!("no key file at {}", path.display()),
            fix: "check --key, or create a key with `tributary-worker keygen --out PATH` (or pass --create-key)",
        }
        .into());
    }
    let id = Identity::generate();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    id.save(path)?;
    info!(peer = %id.peer_id(), path = %path.display(), "new key");
    Ok(id)
}

/// One connection's worth of work; returns Ok when the run is finished.
async fn session(
    args: &PeerArgs,
    id: &Identity,
    slot: &mut Option<PeerState>,
    hostile: &mut Option<Hostile>,
    log: &mut log::Log,
    backoff: &mut Backoff,
) -> Result<()> {
    let mut client = Client::connect(&args.coordinator).await?;
    let joined = client.join(id, &args.run_id).await?;
    backoff.reset();
    info!(peer = %joined.peer_id, round = joined.current_round, "joined");
    let spec = TrainingRunSpec::from_json(&joined.run_spec_json).map_err(|e| Permanent {
        what: format!("this worker cannot read the run's spec: {e}"),
        fix: "install the tributary-worker release that matches the coordinator",
    })?;
    if slot.as_ref().is_some_and(|s| *s.spec() != spec) {
        return Err(Permanent {
            what: "the run's spec changed under this peer".into(),
            fix: "restart the peer to start from the new spec",
        }
        .into());
    }
    if slot.is_none() {
        *slot = Some(sync_start(&mut client, &joined, spec).await?);
    }
    let Some(state) = slot.as_mut() else {
        bail!("no state");
    };
    let total = state.plan().total_rounds();
    if total.is_some_and(|t| state.version >= t) {
        info!(version = state.version, "run finished");
        return Ok(());
    }
    let beat = Arc::new(Mutex::new((state.version, state.fingerprint())));
    let diverged = Arc::new(Notify::new());
    let heartbeat = spawn_heartbeat(
        client.clone(),
        id.peer_id(),
        Arc::clone(&beat),
        Arc::clone(&diverged),
        Duration::from_millis(u64::from(joined.heartbeat_interval_ms.max(200))),
    );
    let result = tokio::select! {
        r = follow(args, id, &mut client, state, hostile, log, &beat) => r,
        () = diverged.notified() => Err(Diverged.into()),
    };
    heartbeat.abort();
    if result.as_ref().is_err_and(|e| e.is::<Diverged>()) {
        // Start over from the newest checkpoint and the aggregates since.
        *slot = None;
    }
    result
}

/// The coordinator reported that this peer's parameters differ from the majority's.
#[derive(Debug, thiserror::Error)]
#[error("this peer's parameters differ from the majority's; re-syncing from the newest checkpoint")]
pub(crate) struct Diverged;

/// Starting state: the newest checkpoint when there is one, else the seeded initialization.
async fn sync_start(
    client: &mut Client,
    joined: &JoinResponse,
    spec: tributary_crds::TrainingRunSpec,
) -> Result<PeerState> {
    match &joined.latest_checkpoint {
        Some(info) => {
            let bytes = client
                .checkpoint(info)
                .instrument(info_span!("sync", version = info.model_version))
                .await?;
            let state = block_in_place(|| PeerState::from_checkpoint(spec, &bytes))?;
            info!(
                version = state.version,
                bytes = bytes.len(),
                "started from the run's checkpoint"
            );
            Ok(state)
        }
        None => block_in_place(|| PeerState::new(spec)),
    }
}

fn spawn_heartbeat(
    mut client: Client,
    peer: String,
    beat: Arc<Mutex<(u64, String)>>,
    diverged: Arc<Notify>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let (version, fp) = beat.lock().map(|b| b.clone()).unwrap_or_default();
            match client.heartbeat(&peer, version, fp.as_bytes()).await {
                Ok(r) if r.resync_required => {
                    warn!(version, "coordinator reports divergent parameters");
                    diverged.notify_one();
                }
                Ok(_) => {}
                Err(e) => warn!("heartbeat: {e:#}"),
            }
        }
    })
}

/// Follows round events: applies aggregates in order, trains the rounds it is a member of.
async fn follow(
    args: &PeerArgs,
    id: &Identity,
    client: &mut Client,
    state: &mut PeerState,
    hostile: &mut Option<Hostile>,
    log: &mut log::Log,
    beat: &Arc<Mutex<(u64, String)>>,
) -> Result<()> {
    let me = id.peer_id();
    let total = state.plan().total_rounds();
    // Replays from the start of the log: events at versions already held are skipped.
    let mut events = client.watch(&me, 0).await?;
    let mut submitted: Option<Submitted> = None;
    while let Some(event) = events.message().await.context("round stream")? {
        match event.event {
            Some(round_event::Event::Published(p)) => {
                if p.model_version <= state.version {
                    continue;
                }
                if p.model_version != state.version + 1 {
                    bail!(
                        "aggregate of round {} makes version {}, but this peer is at {}",
                        p.round,
                        p.model_version,
                        state.version
                    );
                }
                apply(client, state, hostile.as_mut(), &p, &me).await?;
                *beat.lock().map_err(|_| anyhow::anyhow!("poisoned"))? =
                    (state.version, state.fingerprint());
                let eval = if args.evaluate {
                    block_in_place(|| state.evaluate())?
                } else {
                    None
                };
                let mine = submitted.filter(|s| s.round == p.round);
                log.write(&LogLine {
                    unix_ms: now_ms(),
                    round: p.round,
                    version: state.version,
                    contributions: p.contributions,
                    included: p.peer_ids.contains(&me),
                    train_loss: mine.map(|s| s.loss),
                    mean_loss: p.mean_loss,
                    eval_loss: eval.map(|e| e.0),
                    floor: eval.map(|e| e.1),
                    tokens: mine.map_or(0, |s| s.tokens),
                    round_tokens: p.tokens,
                    bytes_up: mine.map_or(0, |s| s.bytes),
                    bytes_down: p.aggregate_bytes,
                    round_seconds: mine.map(|s| s.started.elapsed().as_secs_f64()),
                    train_seconds: mine.map(|s| s.train_seconds),
                    fingerprint: state.fingerprint(),
                })?;
                if args.checkpoint_writer {
                    let every = u64::from(state.spec().checkpoints.every_rounds.max(1));
                    if state.version.is_multiple_of(every) {
                        let bytes = block_in_place(|| state.checkpoint_bytes())?;
                        client
                            .put_checkpoint(id, &args.run_id, state.version, bytes)
                            .await?;
                        info!(version = state.version, "checkpoint uploaded");
                    }
                }
                if total.is_some_and(|t| state.version >= t) {
                    info!(version = state.version, "run finished");
                    return Ok(());
                }
            }
            Some(round_event::Event::Skipped(s)) => {
                info!(round = s.round, reason = ?s.reason(), "round skipped");
                state.end_round(s.round);
            }
            Some(round_event::Event::Opened(o)) => {
                let Some(slot) = o.members.iter().position(|m| *m == me) else {
                    continue;
                };
                if o.model_version != state.version {
                    info!(
                        round = o.round,
                        "not at the round's model version yet; sitting this round out"
                    );
                    continue;
                }
                submitted = Some(
                    train_and_submit(args, id, client, state, hostile.as_mut(), &o, slot as u32)
                        .instrument(info_span!("round", round = o.round))
                        .await?,
                );
            }
            None => {}
        }
    }
    bail!("the coordinator closed the round stream")
}

async fn apply(
    client: &mut Client,
    state: &mut PeerState,
    hostile: Option<&mut Hostile>,
    p: &AggregatePublished,
    me: &str,
) -> Result<()> {
    let span = info_span!("apply", round = p.round, version = p.model_version);
    let blob = client
        .aggregate(p.round, &p.aggregate_sha256)
        .instrument(span.clone())
        .await?;
    let included = p.peer_ids.iter().any(|x| x == me);
    span.in_scope(|| block_in_place(|| state.apply_aggregate(p.round, &blob, included)))?;
    if let Some(h) = hostile {
        block_in_place(|| h.observe(state.plan().tensors(), &blob, p.mean_loss))?;
    }
    Ok(())
}

async fn train_and_submit(
    args: &PeerArgs,
    id: &Identity,
    client: &mut Client,
    state: &mut PeerState,
    hostile: Option<&mut Hostile>,
    o: &RoundOpened,
    slot: u32,
) -> Result<Submitted> {
    let t0 = Instant::now();
    let trained = info_span!("train", steps = state.plan().data().inner_steps).in_scope(|| {
        block_in_place(|| match hostile.as_deref() {
            Some(h) => h.train(state, o.round, slot),
            None => state.train(o.round, slot),
        })
    })?;
    let train_s = t0.elapsed().as_secs_f64();
    let mut payload = trained.payload;
    let mut model_version = o.model_version;
    if let Some(h) = hostile {
        let plan = state.plan().tensors();
        payload = block_in_place(|| h.disguise(plan, state.sent(), o.round, payload))?;
        payload = h.copy(o.round, plan.update_bytes(), payload).await;
        model_version = h.model_version(model_version);
        info!(kind = %h.kind(), "sending a hostile update");
    }
    let bytes = payload.len() as u64;
    let report = UpdateReport {
        round: o.round,
        model_version,
        inner_loss: trained.mean_loss,
        tokens: trained.tokens,
    };
    let wire_codec = tributary_proto::v1alpha1::CodecParams::from(state.plan().tensors().codec());
    let r = client
        .submit(id, &args.run_id, &wire_codec, &report, payload)
        .instrument(info_span!("submit", bytes))
        .await?;
    if r.accepted {
        info!(loss = trained.mean_loss, bytes, train_s, "update accepted");
    } else {
        warn!(reason = ?r.reason(), message = %r.message, "update rejected");
        if r.reason() == RejectReason::NotAMember {
            bail!("the coordinator no longer counts this peer as a member");
        }
    }
    Ok(Submitted {
        round: o.round,
        started: t0,
        train_seconds: train_s,
        loss: trained.mean_loss,
        tokens: trained.tokens,
        bytes,
    })
}

/// This peer's update of a round, for its log line.
#[derive(Clone, Copy)]
struct Submitted {
    round: u64,
    started: Instant,
    train_seconds: f64,
    loss: f64,
    tokens: u64,
    bytes: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
