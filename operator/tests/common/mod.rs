//! A coordinator on loopback gRPC and signed requests to it, for the integration tests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    dead_code,
    unreachable_pub,
    unused_imports
)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio::net::TcpListener;
use tonic::transport::Channel;
use tributary_codec::{
    Aggregator, DecodeLimits, ErrorFeedback, compress_contribution, decode, decode_aggregate,
    encode,
};
use tributary_crds::{ModelPreset, ModelSpec, StopCondition, TrainingRunSpec};
use tributary_operator::coordinator::RunConfig;
use tributary_operator::coordinator::Shared;
use tributary_operator::coordinator::serve;
use tributary_proto::identity::{self, Identity};
use tributary_proto::v1alpha1::exchange_client::ExchangeClient;
use tributary_proto::v1alpha1::*;
use tributary_proto::{CHUNK_BYTES, PROTOCOL_VERSION};

pub const RUN: &str = "exchange-test";

pub fn spec(min_peers: u32, max_peers: u32) -> TrainingRunSpec {
    let mut spec = TrainingRunSpec::new(ModelSpec::preset(ModelPreset::Tiny));
    spec.participation.min_peers = min_peers;
    spec.participation.max_peers = max_peers;
    spec.participation.reserve_peers = 0;
    spec.participation.round_deadline_seconds = 600;
    spec.participation.heartbeat_timeout_seconds = 600;
    spec.stop = StopCondition {
        total_rounds: Some(10),
        total_tokens: None,
    };
    spec
}

pub struct Coordinator {
    pub url: String,
    pub shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Coordinator {
    pub async fn start(dir: &Path, spec: TrainingRunSpec) -> Self {
        let shared = Shared::open(RunConfig::new(RUN, spec).unwrap(), dir).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(Arc::clone(&shared), listener, async move {
            let _ = rx.await;
        }));
        Self {
            url,
            shared,
            stop: Some(tx),
            task,
        }
    }

    pub async fn client(&self) -> ExchangeClient<Channel> {
        ExchangeClient::connect(self.url.clone()).await.unwrap()
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

pub fn join_request(id: &Identity, run: &str, unix_millis: u64) -> JoinRequest {
    let key = id.public_key();
    JoinRequest {
        version: Some(PROTOCOL_VERSION),
        run_id: run.into(),
        public_key: key.to_vec(),
        capabilities: None,
        unix_millis,
        signature: id.sign(&identity::join_message(run, &key, unix_millis)),
    }
}

pub async fn join(c: &mut ExchangeClient<Channel>, id: &Identity) -> JoinResponse {
    c.join(join_request(id, RUN, now_ms()))
        .await
        .unwrap()
        .into_inner()
}

/// A valid update of the tiny model: random pseudo-gradients through the run's codec.
pub fn update(run: &RunConfig, seed: u64, scale: f32) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let deltas: Vec<Vec<f32>> = run
        .plan
        .tensors()
        .shapes()
        .iter()
        .map(|s| {
            (0..s.numel())
                .map(|_| scale * rng.gen_range(-1.0f32..1.0))
                .collect()
        })
        .collect();
    let mut efs: Vec<ErrorFeedback> = deltas
        .iter()
        .map(|d| ErrorFeedback::zeros(d.len()))
        .collect();
    let slices: Vec<&[f32]> = deltas.iter().map(Vec::as_slice).collect();
    let t = run.plan.tensors();
    encode(&compress_contribution(&mut efs, &slices, t.shapes(), t.codec()).unwrap()).unwrap()
}

/// A signed header of `round`, trained from version `round` (these runs skip no round).
pub fn header(id: &Identity, run: &RunConfig, round: u64, payload: &[u8]) -> UpdateHeader {
    signed(
        id,
        UpdateHeader {
            version: Some(PROTOCOL_VERSION),
            run_id: RUN.into(),
            round,
            peer_id: id.peer_id(),
            codec: Some(run.wire_codec),
            payload_bytes: payload.len() as u64,
            payload_sha256: identity::sha256(payload).to_vec(),
            inner_loss: 3.0,
            tokens: 1024,
            signature: Vec::new(),
            model_version: round,
        },
    )
}

pub fn signed(id: &Identity, mut h: UpdateHeader) -> UpdateHeader {
    h.signature = id.sign(&identity::update_message(&h));
    h
}

/// The wire reason of a label: the upper-case form of the label (docs/protocol.md), and
/// `CHECK_FAILED` for a contribution check's name.
pub fn wire(label: &str) -> RejectReason {
    if label == "degenerate-update" {
        return RejectReason::CheckFailed;
    }
    let name = format!("REJECT_REASON_{}", label.to_uppercase().replace('-', "_"));
    RejectReason::from_str_name(&name).unwrap_or_else(|| panic!("no wire reason {name}"))
}

pub fn head(h: UpdateHeader) -> SubmitUpdateMessage {
    SubmitUpdateMessage {
        part: Some(submit_update_message::Part::Header(h)),
    }
}

pub fn chunk(bytes: &[u8]) -> SubmitUpdateMessage {
    SubmitUpdateMessage {
        part: Some(submit_update_message::Part::PayloadChunk(bytes.to_vec())),
    }
}

pub fn valid(h: UpdateHeader, payload: &[u8]) -> Vec<SubmitUpdateMessage> {
    let mut m = vec![head(h)];
    m.extend(payload.chunks(4096).map(chunk));
    m
}

pub async fn submit(
    c: &mut ExchangeClient<Channel>,
    messages: Vec<SubmitUpdateMessage>,
) -> SubmitUpdateResponse {
    c.submit_update(tokio_stream::iter(messages))
        .await
        .unwrap()
        .into_inner()
}

pub async fn next_event(s: &mut tonic::Streaming<RoundEvent>) -> round_event::Event {
    tokio::time::timeout(Duration::from_secs(30), s.message())
        .await
        .expect("a round event within 30 s")
        .unwrap()
        .expect("the stream stays open")
        .event
        .unwrap()
}

pub async fn watch(
    c: &mut ExchangeClient<Channel>,
    from_round: u64,
) -> tonic::Streaming<RoundEvent> {
    c.watch_rounds(WatchRoundsRequest {
        version: Some(PROTOCOL_VERSION),
        peer_id: String::new(),
        from_round,
    })
    .await
    .unwrap()
    .into_inner()
}

pub async fn fetch_aggregate(c: &mut ExchangeClient<Channel>, round: u64) -> Vec<u8> {
    let mut s = c
        .get_aggregate(GetAggregateRequest {
            version: Some(PROTOCOL_VERSION),
            round,
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = s.message().await.unwrap() {
        out.extend_from_slice(&chunk.data);
    }
    out
}
