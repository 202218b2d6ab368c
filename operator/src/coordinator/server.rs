//! The coordinator's IO layer: the state machine behind a lock, its store, the round-event
//! broadcast, the clock and the aggregation jobs. [`super::service`] maps gRPC onto it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use tokio::sync::broadcast;
use tracing::{error, info, info_span, warn};
use tributary_codec::{Aggregator, ContributionView, decode, encode_aggregate};
use tributary_crds::TrainingRunSpec;
use tributary_gauntlet::ledger::{Ledger, ValidatorScore};
use tributary_gauntlet::selection::ValidatorReport;
use tributary_gauntlet::sketch::SketchKey;
use tributary_proto::identity;
use tributary_proto::v1alpha1::{
    AggregatePublished, RoundEvent, RoundOpened, RoundSkipped, round_event,
};

use super::admission::{ContributionCheck, default_checks};
use super::run::RunConfig;
use super::store::{RoundRecord, RunRecord, SelectionRecord, Store, UpdateMeta};
use super::{Coordinator, Decision, Event, PeerId, Phase, SkipReason};
use tributary_gauntlet::judge::{Candidate, GauntletState, share};

/// Wall-clock milliseconds since the Unix epoch: the machine's time base, so deadlines in round
/// events mean the same to every peer.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What an event carries into the store with the machine state.
pub enum Attach<'a> {
    Nothing,
    Peer {
        key: &'a [u8],
    },
    Update {
        payload: &'a [u8],
        meta: UpdateMeta,
    },
    /// A judged round: its aggregate (none when the Gauntlet left out every update), its
    /// record and the Gauntlet's state after it.
    Judged {
        blob: Option<&'a [u8]>,
        record: RoundRecord,
        gauntlet: Option<&'a GauntletState>,
    },
}

/// A closed round, judged and (when anything was selected) aggregated: what
/// [`Attach::Judged`] stores.
struct JudgedRound {
    blob: Option<Vec<u8>>,
    record: RoundRecord,
    gauntlet: Option<GauntletState>,
}

/// Per-peer counters for status.
#[derive(Debug, Clone, Default)]
pub struct PeerCounters {
    pub accepted: u64,
    pub rejected: u64,
    pub last_round: Option<u64>,
}

pub struct Core {
    pub machine: Coordinator,
    pub peers: BTreeMap<String, PeerCounters>,
}

/// A published aggregate and its SHA-256.
#[derive(Clone)]
pub struct AggregateBlob {
    pub round: u64,
    pub bytes: Arc<[u8]>,
    pub sha256: [u8; 32],
}

pub struct Shared {
    pub run: RunConfig,
    pub store: Store,
    core: Mutex<Core>,
    /// Writers queue here, in order, without holding a thread (see [`Shared::commit`]).
    writers: tokio::sync::Mutex<()>,
    /// The newest aggregate: every peer fetches it right after it is published, so it is
    /// served from memory with its known hash instead of read and hashed once per peer.
    newest: Mutex<Option<AggregateBlob>>,
    events: broadcast::Sender<RoundEvent>,
    /// Set when the server shuts down: round streams end so the shutdown need not wait for
    /// peers to hang up.
    closing: tokio::sync::watch::Sender<bool>,
    pub checks: Vec<Box<dyn ContributionCheck>>,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// The closed round that is waiting for validator scores, if one is.
    scoring: Mutex<Option<u64>>,
    /// Wakes the wait for scores when a validator delivers.
    scores_in: tokio::sync::Notify,
    /// Ratings and standings after the last judged round (a copy of the stored state's, for
    /// status).
    ledger: Mutex<Ledger>,
}

impl Shared {
    /// Opens the run's store in `data_dir`: a fresh one starts the run, an existing one resumes
    /// it exactly where it stopped (and must belong to the same run and spec).
    pub fn open(run: RunConfig, data_dir: &Path) -> anyhow::Result<Arc<Self>> {
        let store = Store::open(data_dir)?;
        let spec_json = String::from_utf8(run.spec_json.clone()).context("spec is not UTF-8")?;
        let machine = match (store.run()?, store.machine()?) {
            (Some(record), Some(machine)) => {
                if record.run_id != run.run_id {
                    bail!(
                        "{} holds run {:?}, not {:?}: use another data directory",
                        data_dir.display(),
                        record.run_id,
                        run.run_id
                    );
                }
                let mut machine = machine;
                if record.spec_json != spec_json {
                    // Participation and operational fields may change between starts; what
                    // shapes training may not.
                    let stored: TrainingRunSpec = serde_json::from_str(&record.spec_json)
                        .context("the store's spec does not parse")?;
                    let refused = run.spec().frozen_changes(&stored);
                    if !refused.is_empty() {
                        bail!(
                            "{} holds run {:?} with a different spec: {refused}",
                            data_dir.display(),
                            run.run_id
                        );
                    }
                    machine.reconfigure(run.policy.clone());
                    store.init(
                        &RunRecord {
                            run_id: run.run_id.clone(),
                            spec_json: spec_json.clone(),
                        },
                        &machine,
                    )?;
                    info!(run = %run.run_id, "spec changed: new participation settings apply");
                }
                info!(
                    run = %run.run_id,
                    model_version = machine.model_version(),
                    "resuming from the store"
                );
                machine
            }
            _ => {
                let machine =
                    Coordinator::new(run.policy.clone()).with_round_limit(run.plan.total_rounds());
                let record = RunRecord {
                    run_id: run.run_id.clone(),
                    spec_json,
                };
                store.init(&record, &machine)?;
                info!(run = %run.run_id, "new run");
                machine
            }
        };
        let (events, _) = broadcast::channel(1024);
        let ledger = store.gauntlet()?.map(|g| g.ledger).unwrap_or_default();
        Ok(Arc::new(Self {
            run,
            store,
            core: Mutex::new(Core {
                machine,
                peers: BTreeMap::new(),
            }),
            writers: tokio::sync::Mutex::new(()),
            newest: Mutex::new(None),
            events,
            closing: tokio::sync::watch::channel(false).0,
            checks: default_checks(),
            bytes_received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            scoring: Mutex::new(None),
            scores_in: tokio::sync::Notify::new(),
            ledger: Mutex::new(ledger),
        }))
    }

    /// Ratings and standings after the last judged round.
    pub fn ledger(&self) -> Ledger {
        self.ledger
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The closed round that takes validator scores now, if any.
    pub fn scoring_round(&self) -> Option<u64> {
        *self.scoring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A validator delivered scores: the wait for them looks again.
    pub fn scores_delivered(&self) {
        self.scores_in.notify_one();
    }

    pub fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock cannot leave the machine half-applied (apply is
        // infallible), so a poisoned lock is still consistent.
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<RoundEvent> {
        self.events.subscribe()
    }

    /// Resolves once the server is shutting down.
    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Ends every round stream.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Runs `f` on the machine on the blocking pool, one writer at a time. A write commits to
    /// disk (fsync) under the machine's lock: done on an async worker, it would stall every
    /// other request on that worker, and writers waiting for the lock would block the rest.
    pub async fn commit<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Arc<Self>, &mut Core) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let _turn = self.writers.lock().await;
        let shared = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let mut core = shared.lock();
            f(&shared, &mut core)
        })
        .await
        .context("a commit task failed")?
    }

    /// The aggregate of `round` and its SHA-256: the newest from memory, older ones (a late
    /// joiner's replay) from the store.
    pub fn aggregate_blob(&self, round: u64) -> anyhow::Result<Option<AggregateBlob>> {
        let newest = self
            .newest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(newest) = newest.filter(|n| n.round == round) {
            return Ok(Some(newest));
        }
        Ok(self.store.aggregate(round)?.map(|bytes| AggregateBlob {
            round,
            sha256: identity::sha256(&bytes),
            bytes: bytes.into(),
        }))
    }

    /// Applies `event`, stores the new state (with `attach`) and announces the decisions.
    /// Returns the decisions; aggregation jobs they ask for are started. Every change of the
    /// machine goes through here, inside [`Shared::commit`].
    pub fn apply(
        self: &Arc<Self>,
        core: &mut Core,
        event: Event,
        attach: Attach<'_>,
    ) -> anyhow::Result<Vec<Decision>> {
        let quiet = matches!(event, Event::Tick { .. } | Event::Heartbeat { .. });
        let decisions = core.machine.apply(event);
        self.persist(core, &decisions, &attach, !quiet)?;
        count(core, &decisions);
        log(&decisions);
        if let Attach::Judged {
            blob,
            record,
            gauntlet,
        } = &attach
            && decisions.iter().any(|d| ends(d, record.round))
        {
            if let Some(blob) = blob {
                info!(
                    round = record.round,
                    model_version = record.model_version,
                    bytes = blob.len(),
                    loss = record.mean_loss,
                    "aggregate stored"
                );
                self.keep_newest(record, blob);
            }
            if let Some(g) = gauntlet {
                *self.ledger.lock().unwrap_or_else(|p| p.into_inner()) = g.ledger.clone();
            }
        }
        for event in self.announcements(core, &decisions, &attach) {
            // No subscribers is fine: watchers catch up from the store.
            let _ = self.events.send(event);
        }
        for d in &decisions {
            if let Decision::Aggregate { round, .. } = d {
                self.start_aggregation(*round);
            }
        }
        Ok(decisions)
    }

    /// Writes what the decisions change to the store, in one transaction per decision that
    /// carries data and one machine snapshot otherwise. The [`Attach`] contract: a join's
    /// `Peer` key is stored with `Admitted`, an `Update` with `Accepted`, an `Aggregate` with
    /// `Published`; a decision without its attachment stores the machine only.
    fn persist(
        &self,
        core: &Core,
        decisions: &[Decision],
        attach: &Attach<'_>,
        always: bool,
    ) -> anyhow::Result<()> {
        let machine = &core.machine;
        let mut saved = false;
        for d in decisions {
            match (d, attach) {
                (Decision::Admitted { peer }, Attach::Peer { key }) => {
                    self.store.register_peer(machine, peer.as_str(), key)?;
                    saved = true;
                }
                (Decision::Accepted { peer, round }, Attach::Update { payload, meta }) => {
                    self.store
                        .accept_update(machine, *round, peer.as_str(), payload, meta)?;
                    saved = true;
                }
                (
                    Decision::RoundSkipped { round, .. } | Decision::Published { round, .. },
                    Attach::Judged {
                        blob,
                        record,
                        gauntlet,
                    },
                ) if record.round == *round => {
                    self.store.end_round(machine, record, *blob, *gauntlet)?;
                    saved = true;
                }
                (Decision::RoundSkipped { round, reason }, _) => {
                    let record = skipped_record(*round, *reason, machine.model_version());
                    self.store.end_round(machine, &record, None, None)?;
                    saved = true;
                }
                _ => {}
            }
        }
        if !saved && (always || !decisions.is_empty()) {
            self.store.save_machine(machine)?;
        }
        Ok(())
    }

    /// The round events the decisions announce to watchers.
    fn announcements(
        &self,
        core: &Core,
        decisions: &[Decision],
        attach: &Attach<'_>,
    ) -> Vec<RoundEvent> {
        let version = core.machine.model_version();
        decisions
            .iter()
            .filter_map(|d| match (d, attach) {
                (
                    Decision::RoundOpened {
                        round,
                        deadline_ms,
                        members,
                    },
                    _,
                ) => Some(self.opened_event(*round, *deadline_ms, members, version)),
                (Decision::Published { round, .. }, Attach::Judged { record, .. })
                    if record.round == *round =>
                {
                    Some(published_event(record))
                }
                (Decision::RoundSkipped { round, reason }, _) => {
                    Some(skipped_event(&skipped_record(*round, *reason, version)))
                }
                _ => None,
            })
            .collect()
    }

    /// Every peer fetches the newest aggregate right after it is published: keep it in memory.
    fn keep_newest(&self, record: &RoundRecord, blob: &[u8]) {
        if let Ok(sha256) = record.aggregate_sha256.as_slice().try_into() {
            *self.newest.lock().unwrap_or_else(|p| p.into_inner()) = Some(AggregateBlob {
                round: record.round,
                bytes: Arc::from(blob),
                sha256,
            });
        }
    }

    fn opened_event(
        &self,
        round: u64,
        deadline_ms: u64,
        members: &[PeerId],
        model_version: u64,
    ) -> RoundEvent {
        RoundEvent {
            event: Some(round_event::Event::Opened(RoundOpened {
                round,
                deadline_unix_millis: deadline_ms,
                data_seed: self.run.spec().seed,
                admitted_peers: members.len() as u32,
                members: members.iter().map(ToString::to_string).collect(),
                model_version,
            })),
        }
    }

    /// The open round's event, for a watcher that arrives while it is open.
    pub fn current_opened(&self, core: &Core) -> Option<RoundEvent> {
        let (round, deadline, members) = core.machine.open_round()?;
        Some(self.opened_event(round, deadline, &members, core.machine.model_version()))
    }

    /// Advances the clock every `period` until the returned task is aborted.
    pub fn spawn_clock(self: &Arc<Self>, period: Duration) -> tokio::task::JoinHandle<()> {
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let ticked = shared
                    .commit(|s, core| {
                        s.apply(core, Event::Tick { now_ms: now_ms() }, Attach::Nothing)
                    })
                    .await;
                if let Err(e) = ticked {
                    error!("tick: {e:#}");
                }
            }
        })
    }

    /// A coordinator restarted mid-aggregation picks the job up again.
    pub fn resume(self: &Arc<Self>) {
        let phase = self.lock().machine.phase();
        if let Phase::Aggregating { round } = phase {
            self.start_aggregation(round);
        }
    }

    fn start_aggregation(self: &Arc<Self>, round: u64) {
        let shared = Arc::clone(self);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            error!(round, "aggregation needs the coordinator's runtime");
            return;
        };
        runtime.clone().spawn(async move {
            shared.await_scores(round).await;
            // Off the async threads: decoding, judging and aggregating is CPU work. The result
            // is stored through the one commit path, like every other change.
            let job = tokio::task::spawn_blocking(move || {
                let _span = info_span!("aggregate", round).entered();
                let stored = shared.judge_round(round).and_then(|judged| {
                    runtime.block_on(shared.commit(move |s, core| {
                        let JudgedRound {
                            blob,
                            mut record,
                            gauntlet,
                        } = judged;
                        let event = match &blob {
                            Some(b) => {
                                record.model_version = core.machine.model_version() + 1;
                                Event::AggregateStored {
                                    round,
                                    digest: identity::sha256(b),
                                }
                            }
                            None => {
                                record.model_version = core.machine.model_version();
                                Event::NothingSelected { round }
                            }
                        };
                        let attach = Attach::Judged {
                            blob: blob.as_deref(),
                            record,
                            gauntlet: gauntlet.as_ref(),
                        };
                        s.apply(core, event, attach)
                    }))
                });
                if let Err(e) = stored {
                    error!(round, "aggregation failed: {e:#}");
                }
            });
            if let Err(e) = job.await {
                error!(round, "aggregation task failed: {e}");
            }
        });
    }

    /// With validators, a closed round takes their scores until every validator delivered or
    /// `validatorWindowSeconds` passed (counted again from a restart).
    async fn await_scores(&self, round: u64) {
        if self.run.gauntlet.is_none() || self.run.validators.is_empty() {
            return;
        }
        let window = u64::from(
            self.run
                .spec()
                .participation
                .scoring
                .validator_window_seconds,
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(window);
        *self.scoring.lock().unwrap_or_else(|p| p.into_inner()) = Some(round);
        loop {
            let delivered = self.store.scores(round).map_or(0, |s| s.len());
            if delivered >= self.run.validators.len() {
                break;
            }
            if tokio::time::timeout_at(deadline, self.scores_in.notified())
                .await
                .is_err()
            {
                warn!(
                    round,
                    delivered,
                    expected = self.run.validators.len(),
                    "validator window closed"
                );
                break;
            }
        }
        *self.scoring.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The candidates a validator evaluates in `round` (its share of the accepted updates),
    /// with what their peers reported.
    pub fn validator_share(
        &self,
        round: u64,
        validator_key: &[u8],
    ) -> anyhow::Result<Vec<(PeerId, UpdateMeta)>> {
        let mut accepted: BTreeMap<PeerId, UpdateMeta> = self
            .store
            .candidates(round)?
            .into_iter()
            .map(|(p, meta)| (PeerId::from(p), meta))
            .collect();
        let peers: Vec<PeerId> = accepted.keys().cloned().collect();
        let n = self
            .run
            .spec()
            .participation
            .scoring
            .candidates_per_validator;
        Ok(share(round, validator_key, &peers, n)
            .into_iter()
            .filter_map(|p| accepted.remove(&p).map(|meta| (p, meta)))
            .collect())
    }

    /// The validators' scores of `round` per candidate, and what they delivered.
    fn round_scores(
        &self,
        round: u64,
        candidates: &[PeerId],
    ) -> anyhow::Result<(BTreeMap<PeerId, Vec<ValidatorScore>>, ValidatorReport)> {
        if self.run.validators.is_empty() {
            return Ok((BTreeMap::new(), ValidatorReport::NoValidators));
        }
        let per = self
            .run
            .spec()
            .participation
            .scoring
            .candidates_per_validator;
        let expected: std::collections::BTreeSet<PeerId> = self
            .run
            .validators
            .iter()
            .flat_map(|(key, _)| share(round, key, candidates, per))
            .collect();
        let mut scores: BTreeMap<PeerId, Vec<ValidatorScore>> = BTreeMap::new();
        for (_, by_peer) in self.store.scores(round)? {
            for (peer, s) in by_peer {
                scores
                    .entry(PeerId::from(peer))
                    .or_default()
                    .push(ValidatorScore::measured(
                        s.score,
                        s.improvement_own,
                        s.improvement_random,
                    ));
            }
        }
        let scored = expected.iter().filter(|p| scores.contains_key(*p)).count();
        let report = ValidatorReport::Expected {
            expected: expected.len(),
            scored,
        };
        Ok((scores, report))
    }

    /// Judges `round`'s stored updates (the Gauntlet, unless scoring is off) and aggregates the
    /// selected ones with their weights; the model version is set when it is committed.
    fn judge_round(&self, round: u64) -> anyhow::Result<JudgedRound> {
        let started = std::time::Instant::now();
        let updates = self.store.updates(round)?;
        let limits = self.run.plan.tensors().update_limits();
        let members: Vec<PeerId> = {
            let core = self.lock();
            match core.machine.aggregating_round() {
                Some((r, members, _)) if r == round => members.to_vec(),
                _ => Vec::new(),
            }
        };
        // (index into updates, weight) of the aggregated ones, and every update's fate.
        let (chosen, selection, degraded, gauntlet) = match &self.run.gauntlet {
            None => (
                (0..updates.len()).map(|i| (i, 1.0f32)).collect::<Vec<_>>(),
                updates
                    .iter()
                    .map(|(peer, _, _)| SelectionRecord {
                        peer: peer.clone(),
                        weight: 1.0 / updates.len().max(1) as f32,
                        excluded: String::new(),
                        score: None,
                    })
                    .collect::<Vec<_>>(),
                "scoring-disabled".to_owned(),
                None,
            ),
            Some(cfg) => {
                let mut state = self.store.gauntlet()?.unwrap_or_else(|| {
                    GauntletState::new(SketchKey {
                        k0: rand::random(),
                        k1: rand::random(),
                    })
                });
                let candidates = updates
                    .iter()
                    .map(|(peer, payload, meta)| {
                        Ok(Candidate {
                            peer: PeerId::from(peer.as_str()),
                            update: decode(payload, &limits)
                                .with_context(|| format!("stored update of {peer}"))?,
                            accepted_ms: meta.accepted_unix_millis,
                        })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let peers: Vec<PeerId> = candidates.iter().map(|c| c.peer.clone()).collect();
                let (scores, report) = self.round_scores(round, &peers)?;
                let judged = state.judge(cfg, &candidates, &members, &scores, report);
                let s = &judged.selection;
                let chosen = s
                    .selected
                    .iter()
                    .filter_map(|sel| {
                        let i = peers.iter().position(|p| *p == sel.peer)?;
                        Some((i, sel.weight))
                    })
                    .collect();
                let records = peers
                    .iter()
                    .map(|p| SelectionRecord {
                        peer: p.to_string(),
                        weight: s
                            .selected
                            .iter()
                            .find(|sel| sel.peer == *p)
                            .map_or(0.0, |sel| sel.weight),
                        excluded: s
                            .unselected
                            .get(p)
                            .map_or(String::new(), |u| u.label().to_owned()),
                        score: judged.scores.get(p).map(|v| v.score),
                    })
                    .collect();
                let degraded = s.degraded.map_or(String::new(), |d| d.label().to_owned());
                for (peer, why) in &s.unselected {
                    if why.is_exclusion() {
                        info!(round, %peer, reason = why.label(), "update excluded");
                    }
                }
                (chosen, records, degraded, Some(state))
            }
        };
        let picked: Vec<&(String, Vec<u8>, UpdateMeta)> =
            chosen.iter().filter_map(|(i, _)| updates.get(*i)).collect();
        let n = picked.len().max(1) as f64;
        let mut record = RoundRecord {
            round,
            published: !picked.is_empty(),
            skip_reason: String::new(),
            peers: picked.iter().map(|u| u.0.clone()).collect(),
            mean_loss: picked.iter().map(|u| u.2.inner_loss).sum::<f64>() / n,
            tokens: picked.iter().map(|u| u.2.tokens).sum(),
            aggregate_bytes: 0,
            aggregate_sha256: Vec::new(),
            update_bytes: updates.iter().map(|u| u.2.bytes).sum(),
            model_version: 0,
            ended_unix_millis: now_ms(),
            selection,
            degraded,
        };
        let mut gauntlet = gauntlet;
        if picked.is_empty() {
            record.skip_reason = SkipReason::AllExcluded.label().into();
            warn!(round, "every update was left out; the round is skipped");
            return Ok(JudgedRound {
                blob: None,
                record,
                gauntlet,
            });
        }
        // Straight from the stored encodings, partitioned by chunk bands (memory-bounded:
        // docs/benchmarks.md, "Aggregation").
        let views = picked
            .iter()
            .map(|(peer, payload, _)| {
                ContributionView::from_bytes(payload, &limits)
                    .with_context(|| format!("stored update of {peer}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let weights: Option<Vec<f32>> = self
            .run
            .gauntlet
            .is_some()
            .then(|| chosen.iter().map(|(_, w)| *w).collect());
        let aggregate =
            Aggregator::new(self.run.plan.rule()).aggregate_views(&views, weights.as_deref())?;
        if let Some(state) = &mut gauntlet {
            state.record_aggregate(&aggregate);
        }
        let blob = encode_aggregate(&aggregate);
        record.aggregate_bytes = blob.len() as u64;
        record.aggregate_sha256 = identity::sha256(&blob).to_vec();
        info!(
            round,
            peers = picked.len(),
            candidates = updates.len(),
            ms = started.elapsed().as_millis() as u64,
            "aggregated"
        );
        Ok(JudgedRound {
            blob: Some(blob),
            record,
            gauntlet,
        })
    }

    pub fn count_received(&self, bytes: usize) {
        self.bytes_received
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn count_sent(&self, bytes: usize) {
        self.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// Whether `d` ends `round` (published or skipped).
fn ends(d: &Decision, round: u64) -> bool {
    matches!(d, Decision::Published { round: r, .. } | Decision::RoundSkipped { round: r, .. } if *r == round)
}

/// Per-peer counters for status.
fn count(core: &mut Core, decisions: &[Decision]) {
    for d in decisions {
        match d {
            Decision::Admitted { peer } => {
                core.peers.entry(peer.to_string()).or_default();
            }
            Decision::Accepted { peer, round } => {
                let c = core.peers.entry(peer.to_string()).or_default();
                c.accepted += 1;
                c.last_round = Some(*round);
            }
            Decision::Rejected { peer, .. } => {
                core.peers.entry(peer.to_string()).or_default().rejected += 1;
            }
            _ => {}
        }
    }
}

fn log(decisions: &[Decision]) {
    for d in decisions {
        match d {
            Decision::Rejected {
                peer,
                round,
                reason,
            } => info!(%peer, round, reason = reason.label(), "update rejected"),
            Decision::Refused { peer, reason } => {
                info!(%peer, reason = reason.label(), "join refused")
            }
            Decision::PeerExpired { peer } => info!(%peer, "peer expired"),
            Decision::RoundOpened { round, members, .. } => {
                info!(round, members = members.len(), "round opened")
            }
            Decision::Aggregate { round, peers } => {
                info!(round, peers = peers.len(), "round closed; aggregating")
            }
            Decision::DeadlineExtended { round, deadline_ms } => {
                info!(round, deadline_ms, "deadline extended")
            }
            Decision::RoundSkipped { round, reason } => {
                warn!(round, reason = reason.label(), "round skipped")
            }
            Decision::Published { round, .. } => info!(round, "aggregate published"),
            Decision::ResyncRequired {
                peer,
                model_version,
            } => warn!(%peer, model_version, "fingerprint disagrees with the majority"),
            Decision::Admitted { .. } | Decision::Accepted { .. } => {}
            Decision::FingerprintRecorded { .. } => {}
        }
    }
}

/// The stored record of a skipped round.
fn skipped_record(round: u64, reason: SkipReason, model_version: u64) -> RoundRecord {
    RoundRecord {
        round,
        published: false,
        skip_reason: reason.label().into(),
        peers: Vec::new(),
        mean_loss: 0.0,
        tokens: 0,
        aggregate_bytes: 0,
        aggregate_sha256: Vec::new(),
        update_bytes: 0,
        model_version,
        ended_unix_millis: now_ms(),
        selection: Vec::new(),
        degraded: String::new(),
    }
}

pub(super) fn published_event(r: &RoundRecord) -> RoundEvent {
    RoundEvent {
        event: Some(round_event::Event::Published(AggregatePublished {
            round: r.round,
            contributions: r.peers.len() as u32,
            aggregate_bytes: r.aggregate_bytes,
            aggregate_sha256: r.aggregate_sha256.clone(),
            mean_loss: r.mean_loss,
            peer_ids: r.peers.clone(),
            tokens: r.tokens,
            model_version: r.model_version,
        })),
    }
}

pub(super) fn skipped_event(r: &RoundRecord) -> RoundEvent {
    RoundEvent {
        event: Some(round_event::Event::Skipped(RoundSkipped {
            round: r.round,
            reason: wire_skip_reason(&r.skip_reason).into(),
        })),
    }
}

/// A stored skip label as the wire names it (unspecified for a label this build does not know).
pub(super) fn wire_skip_reason(label: &str) -> tributary_proto::v1alpha1::SkipReason {
    SkipReason::from_label(label).map_or(
        tributary_proto::v1alpha1::SkipReason::Unspecified,
        SkipReason::wire,
    )
}

/// The event a stored round record announces.
pub(super) fn history_event(r: &RoundRecord) -> RoundEvent {
    if r.published {
        published_event(r)
    } else {
        skipped_event(r)
    }
}
