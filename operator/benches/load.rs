//! Coordinator load: `cargo bench -p tributary-operator --bench load`.
//!
//! One coordinator in this process on 127.0.0.1:0 (its own runtime, a temporary store) and
//! TRIBUTARY_LOAD_PEERS (200) light peers on a second runtime. Each peer has its own ed25519 key
//! and connection; it joins (signed), heartbeats, watches rounds, submits one pre-compressed
//! update per round (its own bytes every round, signed for that round) and fetches every
//! published aggregate. The run is the `tiny` preset with minPeers = maxPeers = N, so a round
//! closes once every peer has submitted; it stops after TRIBUTARY_LOAD_ROUNDS (5) aggregates, or
//! fails at TRIBUTARY_LOAD_TIMEOUT_S (300). Afterwards, the same updates are aggregated without
//! RPC or store (the floor of the aggregation step), and decode + aggregate is measured on one
//! 4096×4096 tensor for TRIBUTARY_LOAD_AGG_PEERS (4,20) peers (docs/scale.md extrapolates it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tonic::transport::{Channel, Endpoint};
use tributary_codec::{
    Aggregator, CodecParams, Contribution, DecodeLimits, ErrorFeedback, TensorShape,
    compress_contribution, decode, encode, encode_aggregate,
};
use tributary_crds::{ModelPreset, ModelSpec, StopCondition, StragglerPolicy, TrainingRunSpec};
use tributary_operator::coordinator::RunConfig;
use tributary_operator::coordinator::Shared;
use tributary_operator::coordinator::serve;
use tributary_proto::identity::{self, Identity};
use tributary_proto::v1alpha1::exchange_client::ExchangeClient;
use tributary_proto::v1alpha1::{
    GetAggregateRequest, HeartbeatRequest, JoinRequest, RoundEvent, SubmitUpdateMessage,
    UpdateHeader, WatchRoundsRequest, round_event, submit_update_message,
};
use tributary_proto::{CHUNK_BYTES, MAX_MESSAGE_BYTES, PROTOCOL_VERSION};

mod common;
use common::env_or;

const RUN_ID: &str = "load";

struct Settings {
    peers: usize,
    rounds: u64,
    timeout: Duration,
    agg_peers: Vec<usize>,
}

impl Settings {
    fn from_env() -> Self {
        let agg: String = env_or("TRIBUTARY_LOAD_AGG_PEERS", "4,20".to_owned());
        Self {
            peers: env_or("TRIBUTARY_LOAD_PEERS", 200usize).max(1),
            rounds: env_or("TRIBUTARY_LOAD_ROUNDS", 5u64).max(1),
            timeout: Duration::from_secs(env_or("TRIBUTARY_LOAD_TIMEOUT_S", 300u64)),
            agg_peers: agg
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().parse().expect("TRIBUTARY_LOAD_AGG_PEERS: numbers"))
                .collect(),
        }
    }
}

/// The run: `tiny`, every peer in every round, deadlines far beyond the bench's timeout so
/// that rounds close on completeness, never on the clock.
fn run_spec(s: &Settings) -> TrainingRunSpec {
    let mut spec = TrainingRunSpec::new(ModelSpec::preset(ModelPreset::Tiny));
    spec.seed = 1;
    let p = &mut spec.participation;
    p.min_peers = s.peers as u32;
    p.max_peers = s.peers as u32;
    p.reserve_peers = 0;
    p.round_deadline_seconds = 3600;
    p.submission_window_seconds = 600;
    p.heartbeat_timeout_seconds = 60;
    p.straggler_policy = StragglerPolicy::Aggregate;
    spec.stop = StopCondition {
        total_rounds: Some(s.rounds),
        total_tokens: None,
    };
    spec
}

/// Deterministic pseudo-random numbers (xorshift64*): no dependency, same bytes every run.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Uniform in [-1, 1).
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((x >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    }
}

/// One compressed update of random pseudo-gradients (scaled per tensor, as real ones are).
fn contribution(seed: u64, shapes: &[TensorShape], codec: &CodecParams) -> Contribution {
    let mut rng = Rng::new(seed);
    let deltas: Vec<Vec<f32>> = shapes
        .iter()
        .enumerate()
        .map(|(t, s)| {
            let scale = 1e-3 * (1.0 + t as f32 / 8.0);
            (0..s.numel()).map(|_| scale * rng.next_f32()).collect()
        })
        .collect();
    let refs: Vec<&[f32]> = deltas.iter().map(Vec::as_slice).collect();
    let mut efs: Vec<ErrorFeedback> = shapes
        .iter()
        .map(|s| ErrorFeedback::zeros(s.numel() as usize))
        .collect();
    compress_contribution(&mut efs, &refs, shapes, codec).expect("compressing")
}

/// What a light peer brings: its key and its update, made before anything is timed.
struct PeerKit {
    id: Identity,
    peer_id: String,
    payload: Vec<u8>,
    sha: Vec<u8>,
}

impl PeerKit {
    fn new(i: usize, run: &RunConfig) -> Self {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
        let id = Identity::from_seed(seed);
        let payload = encode(&contribution(
            i as u64 + 1,
            run.plan.tensors().shapes(),
            run.plan.tensors().codec(),
        ))
        .expect("encoding");
        assert_eq!(
            payload.len() as u64,
            run.plan.tensors().update_bytes(),
            "update size"
        );
        Self {
            peer_id: id.peer_id(),
            sha: identity::sha256(&payload).to_vec(),
            id,
            payload,
        }
    }
}

/// What was seen of one round.
#[derive(Default, Clone)]
struct RoundStats {
    members: usize,
    /// Since the bench started, as seen by an observer that watches rounds.
    opened: Option<Duration>,
    published: Option<Duration>,
    /// Last submission answered accepted; last peer done fetching the aggregate.
    last_accept: Option<Duration>,
    last_fetch: Option<Duration>,
    accepted: u64,
    rejected: u64,
    reject_reasons: BTreeMap<String, u64>,
    errors: u64,
    fetched: u64,
    aggregate_bytes: u64,
}

struct Stats {
    start: Instant,
    rounds: Mutex<BTreeMap<u64, RoundStats>>,
    /// Errors outside a round's submit and fetch: join, watch, heartbeat.
    other_errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    peer_bytes_up: AtomicU64,
    peer_bytes_down: AtomicU64,
    heartbeats: AtomicU64,
    submit_ms: Mutex<Vec<f64>>,
    heartbeat_ms: Mutex<Vec<f64>>,
}

impl Stats {
    fn since(&self) -> Duration {
        self.start.elapsed()
    }

    fn round(&self, round: u64, f: impl FnOnce(&mut RoundStats)) {
        f(self.rounds.lock().unwrap().entry(round).or_default());
    }

    fn error(&self, round: Option<u64>, e: &anyhow::Error) {
        match round {
            Some(r) => self.round(r, |s| s.errors += 1),
            None => {
                self.other_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.first_error
            .lock()
            .unwrap()
            .get_or_insert_with(|| format!("{e:#}"));
    }
}

struct Ctx {
    url: String,
    run_id: String,
    wire_codec: tributary_proto::v1alpha1::CodecParams,
    rounds: u64,
    stats: Stats,
}

type Client = ExchangeClient<Channel>;

async fn connect(url: &str) -> anyhow::Result<Client> {
    let channel = Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .context("connecting")?;
    Ok(ExchangeClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn watch(
    client: &mut Client,
    from_round: u64,
) -> anyhow::Result<tonic::Streaming<RoundEvent>> {
    Ok(client
        .watch_rounds(WatchRoundsRequest {
            version: Some(PROTOCOL_VERSION),
            peer_id: String::new(),
            from_round,
        })
        .await
        .context("watching rounds")?
        .into_inner())
}

/// The peers' agreed parameter fingerprint after applying `aggregate_sha` to `previous`.
fn next_fingerprint(previous: &[u8], aggregate_sha: &[u8]) -> Vec<u8> {
    let mut both = previous.to_vec();
    both.extend_from_slice(aggregate_sha);
    hex::encode(identity::sha256(&both)).into_bytes()
}

/// One light peer, from join to the last aggregate.
async fn light_peer(kit: Arc<PeerKit>, ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let mut client = connect(&ctx.url).await?;
    let unix_millis = unix_ms();
    let key = kit.id.public_key();
    let joined = client
        .join(JoinRequest {
            version: Some(PROTOCOL_VERSION),
            run_id: ctx.run_id.clone(),
            public_key: key.to_vec(),
            capabilities: None,
            unix_millis,
            signature: kit
                .id
                .sign(&identity::join_message(&ctx.run_id, &key, unix_millis)),
        })
        .await
        .context("join")?
        .into_inner();
    if joined.peer_id != kit.peer_id {
        bail!("the coordinator named this peer {}", joined.peer_id);
    }
    let fingerprint = Arc::new(Mutex::new((
        0u64,
        next_fingerprint(b"init", ctx.run_id.as_bytes()),
    )));
    let heartbeat = tokio::spawn(heartbeat(
        client.clone(),
        Arc::clone(&kit),
        Arc::clone(&ctx),
        Arc::clone(&fingerprint),
        Duration::from_millis(u64::from(joined.heartbeat_interval_ms.max(100))),
    ));
    let result = follow(&mut client, &kit, &ctx, &fingerprint).await;
    heartbeat.abort();
    result
}

async fn heartbeat(
    mut client: Client,
    kit: Arc<PeerKit>,
    ctx: Arc<Ctx>,
    fingerprint: Arc<Mutex<(u64, Vec<u8>)>>,
    every: Duration,
) {
    loop {
        tokio::time::sleep(every).await;
        let (version, fp) = fingerprint.lock().unwrap().clone();
        let t0 = Instant::now();
        let r = client
            .heartbeat(HeartbeatRequest {
                version: Some(PROTOCOL_VERSION),
                peer_id: kit.peer_id.clone(),
                model_version: version,
                parameter_fingerprint: fp,
            })
            .await;
        ctx.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        ctx.stats.heartbeat_ms.lock().unwrap().push(ms);
        if let Err(e) = r {
            ctx.stats
                .error(None, &anyhow::Error::new(e).context("heartbeat"));
        }
    }
}

/// Follows round events until the run's last aggregate is fetched; a broken stream is
/// counted and watched again from the round it stopped at.
async fn follow(
    client: &mut Client,
    kit: &PeerKit,
    ctx: &Ctx,
    fingerprint: &Mutex<(u64, Vec<u8>)>,
) -> anyhow::Result<()> {
    let mut from = 0;
    let mut version = 0;
    let mut rewatches = 0;
    let mut events = watch(client, from).await?;
    loop {
        let event = match events.message().await {
            Ok(Some(event)) => event,
            Ok(None) => bail!("the coordinator closed the round stream"),
            Err(status) => {
                ctx.stats
                    .error(None, &anyhow::Error::new(status).context("round stream"));
                rewatches += 1;
                if rewatches > 3 {
                    bail!("the round stream broke {rewatches} times");
                }
                events = watch(client, from).await?;
                continue;
            }
        };
        match event.event {
            Some(round_event::Event::Opened(o)) => {
                from = o.round;
                if !o.members.contains(&kit.peer_id) {
                    continue;
                }
                let t0 = Instant::now();
                match submit(client, kit, ctx, o.round, o.model_version).await {
                    Ok(r) => {
                        let ms = t0.elapsed().as_secs_f64() * 1e3;
                        ctx.stats.submit_ms.lock().unwrap().push(ms);
                        let now = ctx.stats.since();
                        ctx.stats.round(o.round, |s| {
                            if r.accepted {
                                s.accepted += 1;
                                s.last_accept = s.last_accept.max(Some(now));
                            } else {
                                s.rejected += 1;
                                *s.reject_reasons
                                    .entry(r.reason().as_str_name().to_owned())
                                    .or_default() += 1;
                            }
                        });
                    }
                    Err(e) => ctx.stats.error(Some(o.round), &e),
                }
            }
            Some(round_event::Event::Published(p)) => {
                from = p.round + 1;
                if p.model_version <= version {
                    continue;
                }
                match fetch(client, p.round, &p.aggregate_sha256).await {
                    Ok(bytes) => {
                        ctx.stats
                            .peer_bytes_down
                            .fetch_add(bytes as u64, Ordering::Relaxed);
                        let now = ctx.stats.since();
                        ctx.stats.round(p.round, |s| {
                            s.fetched += 1;
                            s.last_fetch = s.last_fetch.max(Some(now));
                        });
                    }
                    Err(e) => ctx.stats.error(Some(p.round), &e),
                }
                version = p.model_version;
                {
                    let mut fp = fingerprint.lock().unwrap();
                    let next = next_fingerprint(&fp.1, &p.aggregate_sha256);
                    *fp = (version, next);
                }
                if version >= ctx.rounds {
                    return Ok(());
                }
            }
            Some(round_event::Event::Skipped(s)) => from = s.round + 1,
            None => {}
        }
    }
}

/// Signs the peer's bytes for `round` and streams them: the header, then bounded chunks.
async fn submit(
    client: &mut Client,
    kit: &PeerKit,
    ctx: &Ctx,
    round: u64,
    model_version: u64,
) -> anyhow::Result<tributary_proto::v1alpha1::SubmitUpdateResponse> {
    let mut header = UpdateHeader {
        version: Some(PROTOCOL_VERSION),
        run_id: ctx.run_id.clone(),
        round,
        peer_id: kit.peer_id.clone(),
        codec: Some(ctx.wire_codec),
        payload_bytes: kit.payload.len() as u64,
        payload_sha256: kit.sha.clone(),
        inner_loss: 3.0,
        tokens: 1024,
        signature: Vec::new(),
        model_version,
    };
    header.signature = kit.id.sign(&identity::update_message(&header));
    let mut messages = vec![SubmitUpdateMessage {
        part: Some(submit_update_message::Part::Header(header)),
    }];
    messages.extend(
        kit.payload
            .chunks(CHUNK_BYTES)
            .map(|c| SubmitUpdateMessage {
                part: Some(submit_update_message::Part::PayloadChunk(c.to_vec())),
            }),
    );
    let r = client
        .submit_update(tokio_stream::iter(messages))
        .await
        .context("submitting")?
        .into_inner();
    ctx.stats
        .peer_bytes_up
        .fetch_add(kit.payload.len() as u64, Ordering::Relaxed);
    Ok(r)
}

/// Downloads the aggregate of `round` and checks it against the announced hash.
async fn fetch(client: &mut Client, round: u64, sha: &[u8]) -> anyhow::Result<usize> {
    let mut stream = client
        .get_aggregate(GetAggregateRequest {
            version: Some(PROTOCOL_VERSION),
            round,
        })
        .await
        .context("fetching the aggregate")?
        .into_inner();
    let mut blob = Vec::new();
    while let Some(chunk) = stream.message().await.context("aggregate stream")? {
        if chunk.offset != blob.len() as u64 {
            bail!(
                "aggregate chunk at offset {} after {}",
                chunk.offset,
                blob.len()
            );
        }
        blob.extend_from_slice(&chunk.data);
    }
    if identity::sha256(&blob).as_slice() != sha {
        bail!("aggregate of round {round}: SHA-256 mismatch");
    }
    Ok(blob.len())
}

/// Watches rounds without joining and timestamps openings and publications.
async fn observer(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let mut client = connect(&ctx.url).await?;
    let mut events = watch(&mut client, 0).await?;
    while let Some(event) = events.message().await.context("observer stream")? {
        let now = ctx.stats.since();
        match event.event {
            Some(round_event::Event::Opened(o)) => ctx.stats.round(o.round, |s| {
                s.opened.get_or_insert(now);
                s.members = o.members.len();
            }),
            Some(round_event::Event::Published(p)) => {
                ctx.stats.round(p.round, |s| {
                    s.published.get_or_insert(now);
                    s.aggregate_bytes = p.aggregate_bytes;
                });
                if p.model_version >= ctx.rounds {
                    return Ok(());
                }
            }
            _ => {}
        }
    }
    bail!("the coordinator closed the observer's stream")
}

/// Every peer and the observer, to the end.
async fn drive(kits: Vec<Arc<PeerKit>>, ctx: Arc<Ctx>) -> anyhow::Result<usize> {
    let observer = tokio::spawn(observer(Arc::clone(&ctx)));
    // Let the observer subscribe before the first round can open.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let tasks: Vec<_> = kits
        .into_iter()
        .map(|kit| tokio::spawn(light_peer(kit, Arc::clone(&ctx))))
        .collect();
    let mut failed = 0;
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failed += 1;
                ctx.stats.error(None, &e);
            }
            Err(e) => {
                failed += 1;
                ctx.stats.error(None, &anyhow::Error::new(e));
            }
        }
    }
    observer.await??;
    Ok(failed)
}

/// Peak resident set of this process (VmHWM), KiB.
fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resets VmHWM to the current RSS (Linux `clear_refs` 5), so a phase's peak is its own.
fn reset_hwm() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Option<Duration>) -> f64 {
    d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

fn main() {
    let s = Settings::from_env();
    if std::env::var_os("RUST_LOG").is_some() {
        tributary_telemetry::init_logging();
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let run = RunConfig::new(RUN_ID, run_spec(&s)).expect("run config");
    let numel = run.plan.tensors().numel();
    println!(
        "coordinator load: {} peers, {} rounds, `tiny` ({} parameters, {} tensors), update {} bytes, {} cores",
        s.peers,
        s.rounds,
        numel,
        run.plan.tensors().shapes().len(),
        run.plan.tensors().update_bytes(),
        cores
    );

    let t = Instant::now();
    let kits: Vec<Arc<PeerKit>> = (0..s.peers)
        .map(|i| Arc::new(PeerKit::new(i, &run)))
        .collect();
    println!(
        "setup: {} keys and updates in {:.0} ms (not timed below); VmHWM {:.1} MiB",
        kits.len(),
        t.elapsed().as_secs_f64() * 1e3,
        vm_hwm_kib() as f64 / 1024.0
    );

    let dir = match std::env::var_os("TRIBUTARY_LOAD_DIR") {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .expect("data dir");
    // Separate runtimes, so the peers' work never runs on the coordinator's worker threads.
    let coordinator_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .thread_name("coordinator")
        .enable_all()
        .build()
        .expect("coordinator runtime");
    let peers_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .thread_name("peers")
        .enable_all()
        .build()
        .expect("peers runtime");
    let shared = Shared::open(run.clone(), dir.path()).expect("store");
    let listener = coordinator_rt
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .expect("listening");
    let addr = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = coordinator_rt.spawn(serve(Arc::clone(&shared), listener, async {
        let _ = stopped.await;
    }));

    let ctx = Arc::new(Ctx {
        url: format!("http://{addr}"),
        run_id: RUN_ID.to_owned(),
        wire_codec: run.wire_codec,
        rounds: s.rounds,
        stats: Stats {
            start: Instant::now(),
            rounds: Mutex::new(BTreeMap::new()),
            other_errors: AtomicU64::new(0),
            first_error: Mutex::new(None),
            peer_bytes_up: AtomicU64::new(0),
            peer_bytes_down: AtomicU64::new(0),
            heartbeats: AtomicU64::new(0),
            submit_ms: Mutex::new(Vec::new()),
            heartbeat_ms: Mutex::new(Vec::new()),
        },
    });
    let hwm_reset = reset_hwm();
    let outcome = peers_rt.block_on(async {
        tokio::time::timeout(s.timeout, drive(kits.clone(), Arc::clone(&ctx))).await
    });
    let wall = ctx.stats.since();
    let hwm_load = vm_hwm_kib();
    let received = shared.bytes_received.load(Ordering::Relaxed);
    let sent = shared.bytes_sent.load(Ordering::Relaxed);
    let _ = stop.send(());
    let _ = coordinator_rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), server).await });
    peers_rt.shutdown_timeout(Duration::from_secs(1));
    coordinator_rt.shutdown_timeout(Duration::from_secs(1));

    let rounds = ctx.stats.rounds.lock().unwrap().clone();
    println!();
    println!(
        "| round | members | accepted | rejected | errors | open→last accepted ms | open→published ms | open→all fetched ms | aggregate bytes |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut latencies = Vec::new();
    let mut round_errors = 0;
    for (round, r) in &rounds {
        let since_open = |t: Option<Duration>| match (r.opened, t) {
            (Some(o), Some(t)) => Some(t.saturating_sub(o)),
            _ => None,
        };
        let published = since_open(r.published);
        if let Some(p) = published {
            latencies.push(p.as_secs_f64() * 1e3);
        }
        round_errors += r.errors;
        let reasons = if r.reject_reasons.is_empty() {
            String::new()
        } else {
            format!(" {:?}", r.reject_reasons)
        };
        println!(
            "| {round} | {} | {} | {}{reasons} | {} | {:.0} | {:.0} | {:.0} | {} |",
            r.members,
            r.accepted,
            r.rejected,
            r.errors,
            ms(since_open(r.last_accept)),
            ms(published),
            ms(since_open(r.last_fetch)),
            r.aggregate_bytes,
        );
    }
    latencies.sort_by(f64::total_cmp);
    let mut submit_ms = ctx.stats.submit_ms.lock().unwrap().clone();
    submit_ms.sort_by(f64::total_cmp);
    let mut heartbeat_ms = ctx.stats.heartbeat_ms.lock().unwrap().clone();
    heartbeat_ms.sort_by(f64::total_cmp);
    let other_errors = ctx.stats.other_errors.load(Ordering::Relaxed);
    println!();
    println!(
        "round open→published: p50 {:.0} ms, max {:.0} ms over {} rounds; submit RPC p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 0.5),
        latencies.last().copied().unwrap_or(f64::NAN),
        latencies.len(),
        percentile(&submit_ms, 0.5),
        percentile(&submit_ms, 0.99),
        submit_ms.last().copied().unwrap_or(f64::NAN),
    );
    println!(
        "heartbeat RPC (control plane under load): {} sent, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ctx.stats.heartbeats.load(Ordering::Relaxed),
        percentile(&heartbeat_ms, 0.5),
        percentile(&heartbeat_ms, 0.99),
        heartbeat_ms.last().copied().unwrap_or(f64::NAN),
    );
    println!(
        "errors: {round_errors} in rounds, {other_errors} other (join/watch/heartbeat/peer exits)"
    );
    if let Some(e) = ctx.stats.first_error.lock().unwrap().as_ref() {
        println!("first error: {e}");
    }
    println!(
        "coordinator payload bytes: received {received} ({:.2} MiB), sent {sent} ({:.2} MiB); peers counted up {}, down {}",
        mib(received),
        mib(sent),
        ctx.stats.peer_bytes_up.load(Ordering::Relaxed),
        ctx.stats.peer_bytes_down.load(Ordering::Relaxed),
    );
    println!(
        "peak RSS (VmHWM) during the load phase: {:.1} MiB{} (coordinator and peers, one process); wall {:.2} s",
        hwm_load as f64 / 1024.0,
        if hwm_reset {
            ""
        } else {
            " (since process start: clear_refs not allowed)"
        },
        wall.as_secs_f64()
    );

    let ok = match outcome {
        Ok(Ok(0)) => true,
        Ok(Ok(failed)) => {
            println!("FAILED: {failed} peers stopped early");
            false
        }
        Ok(Err(e)) => {
            println!("FAILED: {e:#}");
            false
        }
        Err(_) => {
            println!("FAILED: timed out after {} s", s.timeout.as_secs());
            false
        }
    };

    println!();
    covenant_sizes(&s);
    aggregation_floor(&run, &kits);
    for &p in &s.agg_peers {
        large_tensor_aggregation(run.plan.tensors().codec(), p);
    }
    if !ok || round_errors + other_errors > 0 {
        std::process::exit(1);
    }
}

/// The exact update size of the 72B preset with this run's codec (docs/scale.md starts from it).
fn covenant_sizes(s: &Settings) {
    let mut spec = run_spec(s);
    spec.model = ModelSpec::preset(ModelPreset::Covenant72b);
    let run = RunConfig::new(RUN_ID, spec).expect("covenant-72b run config");
    let numel = run.plan.tensors().numel();
    println!(
        "covenant-72b: {} parameters in {} tensors, update {} bytes ({:.5} B/param)",
        numel,
        run.plan.tensors().shapes().len(),
        run.plan.tensors().update_bytes(),
        run.plan.tensors().update_bytes() as f64 / numel as f64
    );
}

/// What the coordinator's aggregation step costs without RPC or store: decode the N stored
/// updates, aggregate them (the run's rule), encode the published aggregate. Best of 3.
fn aggregation_floor(run: &RunConfig, kits: &[Arc<PeerKit>]) {
    let limits = run.plan.tensors().update_limits();
    let mut best = f64::INFINITY;
    let mut bytes = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let decoded: Vec<Contribution> = kits
            .iter()
            .map(|k| decode(&k.payload, &limits).expect("decode"))
            .collect();
        let refs: Vec<&Contribution> = decoded.iter().collect();
        let aggregate = Aggregator::new(run.plan.rule())
            .aggregate_sparse(&refs, None)
            .expect("aggregate");
        bytes = encode_aggregate(&aggregate).len();
        best = best.min(t.elapsed().as_secs_f64());
    }
    let numel = run.plan.tensors().numel();
    let peer_params = numel as f64 * kits.len() as f64;
    println!(
        "aggregation floor (same {} updates, no RPC/store): {:.1} ms per round, {:.2} ns per peer-parameter, aggregate {} bytes",
        kits.len(),
        best * 1e3,
        best * 1e9 / peer_params,
        bytes
    );
}

/// Decode + aggregate + encode of `peers` updates of one 4096×4096 tensor (a 72B-sized chunk
/// grid): one tensor runs on one core, so this is a per-core figure. Best of 3.
fn large_tensor_aggregation(codec: &CodecParams, peers: usize) {
    let shapes = vec![TensorShape::new(&[4096, 4096]).expect("shape")];
    let limits = DecodeLimits {
        max_tensors: 1,
        max_total_elements: shapes[0].numel(),
        expected_params: Some(*codec),
        expected_shapes: Some(shapes.clone()),
    };
    let payloads: Vec<Vec<u8>> = (0..peers)
        .map(|i| encode(&contribution(1000 + i as u64, &shapes, codec)).expect("encode"))
        .collect();
    let (mut decode_s, mut total_s) = (f64::INFINITY, f64::INFINITY);
    let (mut agg_bytes, mut carried) = (0, 0);
    for _ in 0..3 {
        let t = Instant::now();
        let decoded: Vec<Contribution> = payloads
            .iter()
            .map(|p| decode(p, &limits).expect("decode"))
            .collect();
        let d = t.elapsed().as_secs_f64();
        let refs: Vec<&Contribution> = decoded.iter().collect();
        let aggregate = Aggregator::default()
            .aggregate_sparse(&refs, None)
            .expect("aggregate");
        agg_bytes = encode_aggregate(&aggregate).len();
        let all = t.elapsed().as_secs_f64();
        carried = aggregate.tensors.iter().map(|t| t.len()).sum();
        decode_s = decode_s.min(d);
        total_s = total_s.min(all);
    }
    let numel = shapes[0].numel() as f64;
    let peer_params = numel * peers as f64;
    println!(
        "4096×4096, {peers} peers: update {} bytes ({:.4} B/param), decode {:.1} ms ({:.3} ns/peer-param), decode+aggregate+encode {:.1} ms ({:.3} ns/peer-param), aggregate {} bytes ({:.4} B/param, union {:.1}% of positions)",
        payloads[0].len(),
        payloads[0].len() as f64 / numel,
        decode_s * 1e3,
        decode_s * 1e9 / peer_params,
        total_s * 1e3,
        total_s * 1e9 / peer_params,
        agg_bytes,
        agg_bytes as f64 / numel,
        100.0 * carried as f64 / numel,
    );
}
