//! The `tributary.v1alpha1.Exchange` gRPC service over [`Shared`].

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, info, info_span};
use tributary_proto::identity;
use tributary_proto::v1alpha1::exchange_server::Exchange;
use tributary_proto::v1alpha1::{
    BlobChunk, Candidate, CheckpointInfo, GetAggregateRequest, GetCandidateRequest,
    GetCheckpointRequest, GetStatusRequest, HeartbeatRequest, HeartbeatResponse, JoinRequest,
    JoinResponse, ListCandidatesRequest, ListCandidatesResponse, ListCheckpointsRequest,
    ListCheckpointsResponse, PeerStatus, PutCheckpointMessage, PutCheckpointResponse, RoundEvent,
    RoundSummary, RunPhase, RunStatus, ScoresRejectReason, Selection, SubmitScoresRequest,
    SubmitScoresResponse, SubmitUpdateMessage, SubmitUpdateResponse, WatchRoundsRequest,
    put_checkpoint_message, round_event, submit_update_message,
};
use tributary_proto::{CHUNK_BYTES, is_compatible};

use super::admission::{self, Reject};
use super::server::{Attach, Shared, history_event, now_ms, wire_skip_reason};
use super::store::{CheckpointRecord, ScoreRecord, UpdateMeta};
use super::{Decision, Event, Fingerprint, PeerId, Phase};

/// A join signature older or newer than this is refused (replay protection; clocks must be
/// roughly right).
const JOIN_CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;
const HEARTBEAT_INTERVAL_MS: u32 = 2000;
/// Fingerprints are hex digests; anything longer is refused rather than kept in memory.
const MAX_FINGERPRINT_BYTES: usize = 128;
/// Longest a validator's ListCandidates waits for its round to close.
const MAX_CANDIDATES_WAIT_MS: u32 = 30_000;

pub struct ExchangeService {
    shared: Arc<Shared>,
}

impl ExchangeService {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

fn check_version(v: Option<&tributary_proto::v1alpha1::ProtocolVersion>) -> Result<(), Status> {
    match v {
        Some(v) if is_compatible(v) => Ok(()),
        _ => Err(Status::failed_precondition(format!(
            "unsupported protocol version {v:?}; this coordinator speaks {}.x",
            tributary_proto::PROTOCOL_VERSION.major
        ))),
    }
}

/// A blob as bounded chunks, its hash and total with the first; each chunk is copied out only
/// when the response stream asks for it, so a download in flight holds about one chunk, not a
/// copy of the whole blob.
pub struct BlobChunks {
    blob: Arc<[u8]>,
    sha256: Vec<u8>,
    offset: usize,
    done: bool,
}

impl BlobChunks {
    pub fn new(blob: Arc<[u8]>, sha256: &[u8]) -> Self {
        Self {
            blob,
            sha256: sha256.to_vec(),
            offset: 0,
            done: false,
        }
    }
}

impl Iterator for BlobChunks {
    type Item = Result<BlobChunk, Status>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let first = self.offset == 0;
        let end = (self.offset + CHUNK_BYTES).min(self.blob.len());
        let data = self.blob.get(self.offset..end).unwrap_or_default().to_vec();
        let chunk = BlobChunk {
            offset: self.offset as u64,
            data,
            total_bytes: if first { self.blob.len() as u64 } else { 0 },
            sha256: if first {
                self.sha256.clone()
            } else {
                Vec::new()
            },
        };
        self.offset = end;
        // An empty blob is still one chunk, carrying the hash.
        self.done = self.offset >= self.blob.len();
        Some(Ok(chunk))
    }
}

fn rejected(reason: &Reject) -> Response<SubmitUpdateResponse> {
    Response::new(SubmitUpdateResponse {
        accepted: false,
        reason: reason.wire().into(),
        message: reason.message(),
    })
}

type BlobStream = tokio_stream::Iter<BlobChunks>;

#[tonic::async_trait]
impl Exchange for ExchangeService {
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let r = request.into_inner();
        check_version(r.version.as_ref())?;
        let run = &self.shared.run;
        if r.run_id != run.run_id {
            return Err(Status::not_found(format!(
                "this coordinator serves run {:?}, not {:?}",
                run.run_id, r.run_id
            )));
        }
        let key: [u8; 32] = r
            .public_key
            .as_slice()
            .try_into()
            .map_err(|_| Status::invalid_argument("public_key must be 32 bytes"))?;
        let now = now_ms();
        if now.abs_diff(r.unix_millis) > JOIN_CLOCK_SKEW_MS {
            return Err(Status::unauthenticated(
                "join signed more than 5 minutes from the coordinator's clock; check the clock",
            ));
        }
        let message = identity::join_message(&r.run_id, &key, r.unix_millis);
        identity::verify(&key, &message, &r.signature)
            .map_err(|e| Status::unauthenticated(format!("join signature: {e}")))?;
        if !run.admits(&key) {
            return Err(Status::permission_denied(
                "this run admits only allowlisted keys",
            ));
        }
        let peer_id = identity::peer_id(&key);
        let peer = PeerId::from(peer_id.as_str());
        let (decisions, round, model_version) = self
            .shared
            .commit(move |shared, core| {
                let event = Event::Join { peer, now_ms: now };
                let decisions = shared.apply(core, event, Attach::Peer { key: &key })?;
                Ok((
                    decisions,
                    current_round(&core.machine),
                    core.machine.model_version(),
                ))
            })
            .await
            .map_err(internal)?;
        if let Some(Decision::Refused { reason, .. }) = decisions
            .iter()
            .find(|d| matches!(d, Decision::Refused { .. }))
        {
            return Err(Status::resource_exhausted(format!(
                "join refused: {}",
                reason.label()
            )));
        }
        let latest = self
            .shared
            .store
            .checkpoints()
            .map_err(internal)?
            .pop()
            .map(checkpoint_info);
        info!(peer = %peer_id, "peer joined");
        Ok(Response::new(JoinResponse {
            peer_id,
            run_spec_json: run.spec_json.clone(),
            current_round: round,
            latest_checkpoint: latest,
            max_chunk_bytes: run.max_chunk_bytes,
            max_update_bytes: run.plan.tensors().update_bytes(),
            heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
            model_version,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let r = request.into_inner();
        check_version(r.version.as_ref())?;
        if r.parameter_fingerprint.len() > MAX_FINGERPRINT_BYTES {
            return Err(Status::invalid_argument(format!(
                "a parameter fingerprint has at most {MAX_FINGERPRINT_BYTES} bytes"
            )));
        }
        let peer = PeerId::from(r.peer_id.as_str());
        if !self.shared.lock().machine.is_member(&peer) {
            return Err(Status::not_found(
                "not a member (expired or never joined): join again",
            ));
        }
        let fingerprint = (!r.parameter_fingerprint.is_empty()).then_some(Fingerprint {
            model_version: r.model_version,
            digest: r.parameter_fingerprint,
        });
        let event = Event::Heartbeat {
            peer,
            now_ms: now_ms(),
            fingerprint,
        };
        let (decisions, round) = self
            .shared
            .commit(move |shared, core| {
                let decisions = shared.apply(core, event, Attach::Nothing)?;
                Ok((decisions, current_round(&core.machine)))
            })
            .await
            .map_err(internal)?;
        Ok(Response::new(HeartbeatResponse {
            current_round: round,
            resync_required: decisions
                .iter()
                .any(|d| matches!(d, Decision::ResyncRequired { .. })),
        }))
    }

    type WatchRoundsStream = ReceiverStream<Result<RoundEvent, Status>>;

    async fn watch_rounds(
        &self,
        request: Request<WatchRoundsRequest>,
    ) -> Result<Response<Self::WatchRoundsStream>, Status> {
        let r = request.into_inner();
        check_version(r.version.as_ref())?;
        // Subscribe before reading history, so nothing falls between the two.
        let mut live = self.shared.subscribe();
        let history = self.shared.store.rounds(r.from_round).map_err(internal)?;
        let opened = {
            let core = self.shared.lock();
            self.shared.current_opened(&core)
        };
        let (tx, rx) = mpsc::channel(64);
        let mut closing = self.shared.closing();
        tokio::spawn(async move {
            // Highest round whose end (published/skipped) and opening were sent.
            let mut ended: Option<u64> = None;
            let mut opened_sent: Option<u64> = None;
            for record in &history {
                ended = Some(record.round);
                if tx.send(Ok(history_event(record))).await.is_err() {
                    return;
                }
            }
            if let Some(event) = opened {
                opened_sent = event_round(&event);
                if opened_sent >= Some(r.from_round) && tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            loop {
                let received = tokio::select! {
                    r = live.recv() => r,
                    _ = closing.changed() => {
                        let _ = tx.send(Err(Status::unavailable("coordinator shutting down"))).await;
                        return;
                    }
                };
                let event = match received {
                    Ok(event) => event,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // The watcher reconnects from its last round and catches up.
                        let _ = tx
                            .send(Err(Status::data_loss("watcher fell behind; reconnect")))
                            .await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let round = event_round(&event);
                let fresh = match &event.event {
                    Some(round_event::Event::Opened(_)) => round > opened_sent,
                    _ => round > ended,
                };
                if !fresh || round < Some(r.from_round) {
                    continue;
                }
                match &event.event {
                    Some(round_event::Event::Opened(_)) => opened_sent = round,
                    _ => ended = round,
                }
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn submit_update(
        &self,
        request: Request<Streaming<SubmitUpdateMessage>>,
    ) -> Result<Response<SubmitUpdateResponse>, Status> {
        let mut stream = request.into_inner();
        let header = match stream.message().await?.and_then(|m| m.part) {
            Some(submit_update_message::Part::Header(h)) => h,
            _ => return Ok(rejected(&Reject::HeaderFirst)),
        };
        let span = info_span!("submit", round = header.round, peer = %header.peer_id);
        async move {
            let shared = &self.shared;
            let key = shared.store.peer_key(&header.peer_id).map_err(internal)?;
            if let Err(reason) = admission::check_header(&shared.run, &header, key.as_deref()) {
                return Ok(self.reject(&header.peer_id, &reason));
            }
            // The round verdict before reading the payload: a late update costs nothing.
            let precheck = {
                let core = shared.lock();
                let machine = &core.machine;
                machine
                    .check_submission(&PeerId::from(header.peer_id.as_str()), header.round)
                    .map_err(Reject::Round)
                    .and_then(|()| match machine.model_version() {
                        v if v == header.model_version => Ok(()),
                        round => Err(Reject::StaleModel {
                            theirs: header.model_version,
                            round,
                        }),
                    })
            };
            if let Err(reason) = precheck {
                return Ok(self.reject(&header.peer_id, &reason));
            }
            let mut payload = Vec::with_capacity(header.payload_bytes as usize);
            while let Some(message) = stream.message().await? {
                let Some(submit_update_message::Part::PayloadChunk(chunk)) = message.part else {
                    return Ok(self.reject(&header.peer_id, &Reject::HeaderFirst));
                };
                if chunk.len() > shared.run.max_chunk_bytes as usize {
                    return Ok(self.reject(&header.peer_id, &Reject::ChunkTooLarge));
                }
                if (payload.len() + chunk.len()) as u64 > header.payload_bytes {
                    return Ok(self.reject(&header.peer_id, &Reject::LengthMismatch));
                }
                shared.count_received(chunk.len());
                payload.extend_from_slice(&chunk);
            }
            if let Err(reason) = admission::check_payload(&header, &payload) {
                return Ok(self.reject(&header.peer_id, &reason));
            }
            let arrived_ms = now_ms();
            // The payload moves into the check and back: no copy of an update-sized buffer.
            let (payload, checked) = {
                let shared = Arc::clone(shared);
                tokio::task::spawn_blocking(move || {
                    let checked =
                        admission::check_contribution(&shared.run, &payload, &shared.checks);
                    (payload, checked.map(|_| ()))
                })
                .await
                .map_err(internal)?
            };
            if let Err(reason) = checked {
                return Ok(self.reject(&header.peer_id, &reason));
            }
            let event = Event::Submission {
                peer: PeerId::from(header.peer_id.as_str()),
                round: header.round,
                digest: identity::sha256(&payload),
                now_ms: arrived_ms,
            };
            let meta = UpdateMeta {
                inner_loss: header.inner_loss,
                tokens: header.tokens,
                bytes: payload.len() as u64,
                accepted_unix_millis: arrived_ms,
            };
            let decisions = shared
                .commit(move |shared, core| {
                    let attach = Attach::Update {
                        payload: &payload,
                        meta,
                    };
                    shared.apply(core, event, attach)
                })
                .await
                .map_err(internal)?;
            match decisions.into_iter().find_map(|d| match d {
                Decision::Accepted { .. } => Some(Ok(())),
                Decision::Rejected { reason, .. } => Some(Err(reason)),
                _ => None,
            }) {
                Some(Ok(())) => Ok(Response::new(SubmitUpdateResponse {
                    accepted: true,
                    reason: tributary_proto::v1alpha1::RejectReason::Unspecified.into(),
                    message: String::new(),
                })),
                Some(Err(reason)) => Ok(rejected(&Reject::Round(reason))),
                None => Err(Status::internal("the state machine gave no verdict")),
            }
        }
        .instrument(span)
        .await
    }

    type GetAggregateStream = BlobStream;

    async fn get_aggregate(
        &self,
        request: Request<GetAggregateRequest>,
    ) -> Result<Response<Self::GetAggregateStream>, Status> {
        let r = request.into_inner();
        check_version(r.version.as_ref())?;
        let blob = self
            .shared
            .aggregate_blob(r.round)
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("no aggregate for round {}", r.round)))?;
        Ok(self.send_blob(blob.bytes, &blob.sha256))
    }

    async fn list_checkpoints(
        &self,
        request: Request<ListCheckpointsRequest>,
    ) -> Result<Response<ListCheckpointsResponse>, Status> {
        check_version(request.into_inner().version.as_ref())?;
        let checkpoints = self.shared.store.checkpoints().map_err(internal)?;
        Ok(Response::new(ListCheckpointsResponse {
            checkpoints: checkpoints.into_iter().map(checkpoint_info).collect(),
        }))
    }

    type GetCheckpointStream = BlobStream;

    async fn get_checkpoint(
        &self,
        request: Request<GetCheckpointRequest>,
    ) -> Result<Response<Self::GetCheckpointStream>, Status> {
        let r = request.into_inner();
        check_version(r.version.as_ref())?;
        let blob = self
            .shared
            .store
            .checkpoint(r.model_version)
            .map_err(internal)?
            .ok_or_else(|| {
                Status::not_found(format!("no checkpoint at version {}", r.model_version))
            })?;
        let sha = identity::sha256(&blob);
        Ok(self.send_blob(blob.into(), &sha))
    }

    async fn put_checkpoint(
        &self,
        request: Request<Streaming<PutCheckpointMessage>>,
    ) -> Result<Response<PutCheckpointResponse>, Status> {
        let mut stream = request.into_inner();
        let refuse = |message: String| {
            Ok(Response::new(PutCheckpointResponse {
                accepted: false,
                message,
            }))
        };
        let header = match stream.message().await?.and_then(|m| m.part) {
            Some(put_checkpoint_message::Part::Header(h)) => h,
            _ => return refuse("the first message must be the header".into()),
        };
        check_version(header.version.as_ref())?;
        let Some(info) = header.info else {
            return refuse("header without checkpoint info".into());
        };
        let shared = &self.shared;
        let Some(key) = shared.store.peer_key(&header.peer_id).map_err(internal)? else {
            return refuse("unknown peer".into());
        };
        let message =
            identity::checkpoint_message(&shared.run.run_id, info.model_version, &info.sha256);
        if identity::verify(&key, &message, &header.signature).is_err() {
            return refuse("bad signature".into());
        }
        let version = shared.lock().machine.model_version();
        if info.model_version == 0 || info.model_version > version {
            return refuse(format!(
                "checkpoint version {} is not in 1..={version}",
                info.model_version
            ));
        }
        if info.bytes > shared.run.plan.tensors().max_checkpoint_bytes() {
            return refuse(format!(
                "checkpoint of {} bytes exceeds this model's {}",
                info.bytes,
                shared.run.plan.tensors().max_checkpoint_bytes()
            ));
        }
        let mut data = Vec::with_capacity(info.bytes as usize);
        while let Some(m) = stream.message().await? {
            let Some(put_checkpoint_message::Part::DataChunk(chunk)) = m.part else {
                return refuse("a second header".into());
            };
            if chunk.len() > shared.run.max_chunk_bytes as usize
                || (data.len() + chunk.len()) as u64 > info.bytes
            {
                return refuse("chunk too large or more bytes than declared".into());
            }
            shared.count_received(chunk.len());
            data.extend_from_slice(&chunk);
        }
        if data.len() as u64 != info.bytes || identity::sha256(&data).as_slice() != info.sha256 {
            return refuse("size or sha256 does not match the header".into());
        }
        let record = CheckpointRecord {
            round: info.model_version,
            bytes: info.bytes,
            sha256: info.sha256,
            writer: header.peer_id,
        };
        shared
            .store
            .put_checkpoint(&record, &data, shared.run.spec().checkpoints.keep)
            .map_err(internal)?;
        info!(version = record.round, bytes = record.bytes, writer = %record.writer, "checkpoint stored");
        Ok(Response::new(PutCheckpointResponse {
            accepted: true,
            message: String::new(),
        }))
    }

    async fn list_candidates(
        &self,
        request: Request<ListCandidatesRequest>,
    ) -> Result<Response<ListCandidatesResponse>, Status> {
        let r = request.into_inner();
        check_version(r.version.as_ref())?;
        let message = identity::candidates_message(
            &r.run_id,
            r.round,
            &r.validator_public_key,
            "",
            r.unix_millis,
        );
        self.validator(
            &r.run_id,
            &r.validator_public_key,
            r.unix_millis,
            &message,
            &r.signature,
        )?;
        let wait = r.wait_millis.min(MAX_CANDIDATES_WAIT_MS);
        let until = tokio::time::Instant::now() + std::time::Duration::from_millis(wait.into());
        while self.shared.scoring_round() != Some(r.round) {
            if tokio::time::Instant::now() >= until {
                return Ok(Response::new(ListCandidatesResponse {
                    round: r.round,
                    ready: false,
                    ..ListCandidatesResponse::default()
                }));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let (model_version, members, digests) = {
            let core = self.shared.lock();
            let (members, digests) = match core.machine.aggregating_round() {
                Some((round, members, digests)) if round == r.round => {
                    (members.to_vec(), digests.clone())
                }
                _ => Default::default(),
            };
            (core.machine.model_version(), members, digests)
        };
        let mine = self
            .shared
            .validator_share(r.round, &r.validator_public_key)
            .map_err(internal)?;
        let candidates = mine
            .iter()
            .filter_map(|(peer, meta)| {
                let slot = members.iter().position(|m| m == peer)?;
                let digest = digests.get(peer)?;
                Some(Candidate {
                    peer_id: peer.to_string(),
                    slot: slot as u32,
                    payload_bytes: meta.bytes,
                    payload_sha256: digest.to_vec(),
                })
            })
            .collect();
        Ok(Response::new(ListCandidatesResponse {
            round: r.round,
            ready: true,
            model_version,
            candidates,
            members: members.len() as u32,
        }))
    }

    type GetCandidateStream = BlobStream;

    async fn get_candidate(
        &self,
        request: Request<GetCandidateRequest>,
    ) -> Result<Response<Self::GetCandidateStream>, Status> {
        let r = request.into_inner();
        check_version(r.version.as_ref())?;
        let message = identity::candidates_message(
            &r.run_id,
            r.round,
            &r.validator_public_key,
            &r.peer_id,
            r.unix_millis,
        );
        self.validator(
            &r.run_id,
            &r.validator_public_key,
            r.unix_millis,
            &message,
            &r.signature,
        )?;
        if self.shared.scoring_round() != Some(r.round) {
            return Err(Status::failed_precondition(format!(
                "round {} is not waiting for scores",
                r.round
            )));
        }
        let mine = self
            .shared
            .validator_share(r.round, &r.validator_public_key)
            .map_err(internal)?;
        if !mine.iter().any(|(p, _)| p.as_str() == r.peer_id) {
            return Err(Status::not_found(format!(
                "{} is not among this validator's candidates of round {}",
                r.peer_id, r.round
            )));
        }
        let payload = self
            .shared
            .store
            .update(r.round, &r.peer_id)
            .map_err(internal)?
            .ok_or_else(|| Status::not_found("the update is gone (the round ended)"))?;
        let sha = identity::sha256(&payload);
        Ok(self.send_blob(payload.into(), &sha))
    }

    async fn submit_scores(
        &self,
        request: Request<SubmitScoresRequest>,
    ) -> Result<Response<SubmitScoresResponse>, Status> {
        let r = request.into_inner();
        check_version(r.version.as_ref())?;
        let message = identity::scores_message(
            &r.run_id,
            r.round,
            &r.validator_public_key,
            r.unix_millis,
            &r.scores,
        );
        let validator = self
            .validator(
                &r.run_id,
                &r.validator_public_key,
                r.unix_millis,
                &message,
                &r.signature,
            )?
            .to_owned();
        let refuse = |reason: ScoresRejectReason, message: String| {
            info!(%validator, round = r.round, ?reason, "scores refused");
            Ok(Response::new(SubmitScoresResponse {
                accepted: false,
                reason: reason.into(),
                message,
            }))
        };
        if self.shared.scoring_round() != Some(r.round) {
            return refuse(
                ScoresRejectReason::RoundNotScoring,
                format!("round {} is not waiting for scores", r.round),
            );
        }
        let delivered = self.shared.store.scores(r.round).map_err(internal)?;
        if delivered.iter().any(|(v, _)| *v == validator) {
            return refuse(
                ScoresRejectReason::Duplicate,
                "this validator's scores of the round are in".into(),
            );
        }
        let mine = self
            .shared
            .validator_share(r.round, &r.validator_public_key)
            .map_err(internal)?;
        let mut scores = std::collections::BTreeMap::new();
        for s in &r.scores {
            if !mine.iter().any(|(p, _)| p.as_str() == s.peer_id) {
                return refuse(
                    ScoresRejectReason::NotACandidate,
                    format!("{} is not among this validator's candidates", s.peer_id),
                );
            }
            let values = [s.score, s.loss_improvement_own, s.loss_improvement_random];
            if !values.iter().all(|v| v.is_finite()) {
                return refuse(
                    ScoresRejectReason::NotFinite,
                    format!("the score of {} is not finite", s.peer_id),
                );
            }
            scores.insert(
                s.peer_id.clone(),
                ScoreRecord {
                    score: s.score,
                    improvement_own: s.loss_improvement_own,
                    improvement_random: s.loss_improvement_random,
                },
            );
        }
        self.shared
            .store
            .put_scores(r.round, &validator, &scores)
            .map_err(internal)?;
        self.shared.scores_delivered();
        info!(%validator, round = r.round, scores = scores.len(), "scores accepted");
        Ok(Response::new(SubmitScoresResponse {
            accepted: true,
            reason: ScoresRejectReason::Unspecified.into(),
            message: String::new(),
        }))
    }

    async fn get_status(
        &self,
        request: Request<GetStatusRequest>,
    ) -> Result<Response<RunStatus>, Status> {
        let history = self.shared.store.rounds(0).map_err(internal)?;
        let shown = match request.get_ref().history_limit as usize {
            0 => &history[..],
            limit => &history[history.len().saturating_sub(limit)..],
        };
        let ledger = self.shared.ledger();
        let cfg = self.shared.run.gauntlet.clone().unwrap_or_default();
        let last_selected: Vec<&str> = history
            .iter()
            .rev()
            .find(|r| r.published)
            .map(|r| r.peers.iter().map(String::as_str).collect())
            .unwrap_or_default();
        let core = self.shared.lock();
        let machine = &core.machine;
        let phase = match machine.phase() {
            Phase::Waiting { .. } => RunPhase::Waiting,
            Phase::Open { .. } => RunPhase::Open,
            Phase::Aggregating { .. } => RunPhase::Aggregating,
            Phase::Finished => RunPhase::Succeeded,
        };
        let peers: Vec<PeerStatus> = machine
            .members()
            .map(|p| (p.to_string(), true))
            .chain(
                core.peers
                    .keys()
                    .filter(|p| !machine.is_member(&PeerId::from(p.as_str())))
                    .map(|p| (p.clone(), false)),
            )
            .map(|(id, active)| {
                let c = core.peers.get(&id).cloned().unwrap_or_default();
                let peer = PeerId::from(id.as_str());
                let standing = ledger.standings.get(&peer);
                PeerStatus {
                    selected: last_selected.contains(&id.as_str()),
                    peer_id: id,
                    active,
                    last_round_submitted: c.last_round.unwrap_or(0),
                    accepted_updates: c.accepted,
                    rejected_updates: c.rejected,
                    score: ledger.ratings.value(&cfg, &peer),
                    last_score: standing.last_score,
                    probationary: standing.probationary(&cfg),
                    excluded: standing
                        .exclusion(&cfg)
                        .map_or(String::new(), |e| e.label().to_owned()),
                    indicator: standing.indicator_ema,
                }
            })
            .collect();
        let last_loss = history
            .iter()
            .rev()
            .find(|r| r.published)
            .map_or(0.0, |r| r.mean_loss);
        Ok(Response::new(RunStatus {
            run_id: self.shared.run.run_id.clone(),
            round: current_round(machine),
            phase: phase.into(),
            loss: last_loss,
            tokens: history.iter().map(|r| r.tokens).sum(),
            active_peers: machine.members().count() as u32,
            // Peers with a refused update, or one the Gauntlet left out of the last round.
            rejected_peers: core
                .peers
                .iter()
                .filter(|(id, c)| {
                    c.rejected > 0
                        || history.last().is_some_and(|r| {
                            r.selection
                                .iter()
                                .any(|x| x.peer == **id && !x.excluded.is_empty())
                        })
                })
                .count() as u32,
            peers,
            bytes_received: self.shared.bytes_received.load(Ordering::Relaxed),
            bytes_sent: self.shared.bytes_sent.load(Ordering::Relaxed),
            model_version: machine.model_version(),
            history: shown
                .iter()
                .map(|r| RoundSummary {
                    round: r.round,
                    published: r.published,
                    skip_reason: wire_skip_reason(&r.skip_reason).into(),
                    contributions: r.peers.len() as u32,
                    mean_loss: r.mean_loss,
                    tokens: r.tokens,
                    aggregate_bytes: r.aggregate_bytes,
                    update_bytes: r.update_bytes,
                    ended_unix_millis: r.ended_unix_millis,
                    selection: r
                        .selection
                        .iter()
                        .map(|s| Selection {
                            peer_id: s.peer.clone(),
                            weight: s.weight,
                            excluded: s.excluded.clone(),
                            score: s.score,
                        })
                        .collect(),
                    degraded: r.degraded.clone(),
                })
                .collect(),
            total_rounds: self.shared.run.plan.total_rounds().unwrap_or(0),
            run_spec_json: if request.get_ref().include_spec {
                String::from_utf8_lossy(&self.shared.run.spec_json).into_owned()
            } else {
                String::new()
            },
        }))
    }
}

impl ExchangeService {
    /// The validator (its peer id) behind a signed validator request: the run, a key on the
    /// run's validator list, a time within the clock skew, and the signature over `message`.
    fn validator(
        &self,
        run_id: &str,
        key: &[u8],
        unix_millis: u64,
        message: &[u8],
        signature: &[u8],
    ) -> Result<&str, Status> {
        let run = &self.shared.run;
        if run_id != run.run_id {
            return Err(Status::not_found(format!(
                "this coordinator serves run {:?}, not {run_id:?}",
                run.run_id
            )));
        }
        let Some(validator) = run.validator(key) else {
            return Err(Status::permission_denied(
                "not a validator of this run (participation.scoring.validators)",
            ));
        };
        if now_ms().abs_diff(unix_millis) > JOIN_CLOCK_SKEW_MS {
            return Err(Status::unauthenticated(
                "request signed more than 5 minutes from the coordinator's clock",
            ));
        }
        identity::verify(key, message, signature)
            .map_err(|e| Status::unauthenticated(format!("validator signature: {e}")))?;
        Ok(validator)
    }

    /// A blob as a stream of chunks, made as the stream asks for them.
    fn send_blob(&self, blob: std::sync::Arc<[u8]>, sha256: &[u8]) -> Response<BlobStream> {
        self.shared.count_sent(blob.len());
        Response::new(tokio_stream::iter(BlobChunks::new(blob, sha256)))
    }

    fn reject(&self, peer: &str, reason: &Reject) -> Response<SubmitUpdateResponse> {
        info!(%peer, reason = reason.label(), "update refused");
        // Only admitted peers are counted: strangers must not grow the table.
        if let Some(c) = self.shared.lock().peers.get_mut(peer) {
            c.rejected += 1;
        }
        rejected(reason)
    }
}

fn checkpoint_info(c: CheckpointRecord) -> CheckpointInfo {
    CheckpointInfo {
        model_version: c.round,
        bytes: c.bytes,
        sha256: c.sha256,
        writer_peer_id: c.writer,
    }
}

/// The round running now, or the next to open; the last one once the run finished.
fn current_round(machine: &super::Coordinator) -> u64 {
    match machine.phase() {
        Phase::Waiting { next_round } => next_round,
        Phase::Open { round, .. } | Phase::Aggregating { round } => round,
        Phase::Finished => machine.published().last().map_or(0, |p| p.round),
    }
}

fn event_round(e: &RoundEvent) -> Option<u64> {
    match &e.event {
        Some(round_event::Event::Opened(o)) => Some(o.round),
        Some(round_event::Event::Published(p)) => Some(p.round),
        Some(round_event::Event::Skipped(s)) => Some(s.round),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_chunks_cover_the_blob_in_order_with_hash_and_total_first() {
        for len in [0, 1, CHUNK_BYTES - 1, CHUNK_BYTES, 2 * CHUNK_BYTES + 5] {
            let blob: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let sha = identity::sha256(&blob);
            let chunks: Vec<BlobChunk> = BlobChunks::new(blob.clone().into(), &sha)
                .map(Result::unwrap)
                .collect();
            assert_eq!(chunks.len(), len.div_ceil(CHUNK_BYTES).max(1), "{len}");
            assert_eq!(
                (chunks[0].total_bytes, &chunks[0].sha256[..]),
                (len as u64, &sha[..])
            );
            let mut joined = Vec::new();
            for c in &chunks {
                assert_eq!(c.offset, joined.len() as u64);
                assert!(c.data.len() <= CHUNK_BYTES);
                joined.extend_from_slice(&c.data);
            }
            assert!(
                chunks[1..]
                    .iter()
                    .all(|c| c.sha256.is_empty() && c.total_bytes == 0)
            );
            assert_eq!(joined, blob);
        }
    }
}
