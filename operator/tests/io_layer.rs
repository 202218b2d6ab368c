//! The coordinator's IO layer in process: commits leave the async runtime free, and published
//! aggregates are served with their hash, the newest from memory and older ones from the store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use tokio_stream::StreamExt;
use tonic::Request;
use tributary_codec::{ErrorFeedback, compress_contribution, encode};
use tributary_crds::{ModelPreset, ModelSpec, StopCondition, TrainingRunSpec};
use tributary_operator::coordinator::ExchangeService;
use tributary_operator::coordinator::RunConfig;
use tributary_operator::coordinator::UpdateMeta;
use tributary_operator::coordinator::{Attach, Shared};
use tributary_operator::coordinator::{Decision, Event, PeerId};
use tributary_proto::PROTOCOL_VERSION;
use tributary_proto::identity::{self, Identity};
use tributary_proto::v1alpha1::exchange_server::Exchange;
use tributary_proto::v1alpha1::{
    AggregatePublished, GetAggregateRequest, JoinRequest, RoundEvent, round_event,
};

const RUN: &str = "exchange-test";

/// A `tiny` run of one peer and two rounds.
fn shared(dir: &std::path::Path) -> Arc<Shared> {
    let mut spec = TrainingRunSpec::new(ModelSpec::preset(ModelPreset::Tiny));
    spec.participation.min_peers = 1;
    spec.participation.max_peers = 1;
    spec.participation.reserve_peers = 0;
    spec.stop = StopCondition {
        total_rounds: Some(2),
        total_tokens: None,
    };
    Shared::open(RunConfig::new(RUN, spec).unwrap(), dir).unwrap()
}

/// A valid update of the run: random pseudo-gradients, compressed.
fn update(shared: &Shared, seed: u32) -> Vec<u8> {
    let plan = shared.run.plan.tensors();
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    let deltas: Vec<Vec<f32>> = plan
        .shapes()
        .iter()
        .map(|s| {
            (0..s.numel())
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    (x as f32 / u32::MAX as f32 - 0.5) * 1e-3
                })
                .collect()
        })
        .collect();
    let refs: Vec<&[f32]> = deltas.iter().map(Vec::as_slice).collect();
    let mut efs: Vec<ErrorFeedback> = plan
        .shapes()
        .iter()
        .map(|s| ErrorFeedback::zeros(s.numel() as usize))
        .collect();
    encode(&compress_contribution(&mut efs, &refs, plan.shapes(), plan.codec()).unwrap()).unwrap()
}

async fn join(service: &ExchangeService, id: &Identity) {
    let unix_millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let key = id.public_key();
    service
        .join(Request::new(JoinRequest {
            version: Some(PROTOCOL_VERSION),
            run_id: RUN.into(),
            public_key: key.to_vec(),
            capabilities: None,
            unix_millis,
            signature: id.sign(&identity::join_message(RUN, &key, unix_millis)),
        }))
        .await
        .unwrap();
}

/// Submits `payload` for `round` as `peer` (signature checks are the service's; this is the
/// machine's side) and waits for the round's aggregate to be published.
async fn submit_and_publish(
    shared: &Arc<Shared>,
    events: &mut tokio::sync::broadcast::Receiver<RoundEvent>,
    peer: &str,
    round: u64,
    payload: Vec<u8>,
) -> AggregatePublished {
    let peer = PeerId::from(peer);
    let decisions = shared
        .commit(move |s, core| {
            let event = Event::Submission {
                peer,
                round,
                digest: identity::sha256(&payload),
                now_ms: tributary_operator::coordinator::now_ms(),
            };
            let meta = UpdateMeta {
                inner_loss: 1.0,
                tokens: 1,
                bytes: payload.len() as u64,
                accepted_unix_millis: tributary_operator::coordinator::now_ms(),
            };
            s.apply(
                core,
                event,
                Attach::Update {
                    payload: &payload,
                    meta,
                },
            )
        })
        .await
        .unwrap();
    assert!(
        matches!(decisions[0], Decision::Accepted { .. }),
        "{decisions:?}"
    );
    loop {
        let event = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .expect("no aggregate within 30 s")
            .unwrap();
        if let Some(round_event::Event::Published(p)) = event.event
            && p.round == round
        {
            return p;
        }
    }
}

async fn download(service: &ExchangeService, round: u64) -> (Vec<u8>, Vec<u8>) {
    let mut stream = service
        .get_aggregate(Request::new(GetAggregateRequest {
            version: Some(PROTOCOL_VERSION),
            round,
        }))
        .await
        .unwrap()
        .into_inner();
    let (mut bytes, mut sha) = (Vec::new(), Vec::new());
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        if chunk.offset == 0 {
            sha = chunk.sha256;
        }
        bytes.extend_from_slice(&chunk.data);
    }
    (bytes, sha)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_are_served_with_their_hash_the_newest_from_memory_older_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let shared = shared(dir.path());
    let service = ExchangeService::new(Arc::clone(&shared));
    let mut events = shared.subscribe();
    let id = Identity::from_seed([7; 32]);
    join(&service, &id).await;

    let first =
        submit_and_publish(&shared, &mut events, &id.peer_id(), 0, update(&shared, 1)).await;
    let (bytes, sha) = download(&service, 0).await;
    assert_eq!(sha, first.aggregate_sha256);
    assert_eq!(identity::sha256(&bytes).to_vec(), first.aggregate_sha256);
    assert_eq!(bytes.len() as u64, first.aggregate_bytes);
    assert_eq!(Some(bytes), shared.store.aggregate(0).unwrap());

    let second =
        submit_and_publish(&shared, &mut events, &id.peer_id(), 1, update(&shared, 2)).await;
    assert_ne!(first.aggregate_sha256, second.aggregate_sha256);
    for p in [&first, &second] {
        let (bytes, sha) = download(&service, p.round).await;
        assert_eq!(sha, p.aggregate_sha256, "round {}", p.round);
        assert_eq!(identity::sha256(&bytes).to_vec(), p.aggregate_sha256);
    }
    assert_eq!(shared.aggregate_blob(1).unwrap().unwrap().round, 1);
    assert!(shared.aggregate_blob(2).unwrap().is_none());
}

#[tokio::test(flavor = "current_thread")]
async fn a_commit_waiting_for_the_machine_leaves_the_runtime_free() {
    let dir = tempfile::tempdir().unwrap();
    let shared = shared(dir.path());
    let (locked, is_locked) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    // The holder keeps the lock until the runtime has run a timer while the commit waits for
    // it. Were the commit blocking the only runtime thread, that timer could never fire: the
    // holder gives up after a long hang guard and reports it, and the test fails on that
    // event, not on how long anything took.
    let holder = {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || {
            let _core = shared.lock();
            locked.send(()).unwrap();
            released.recv_timeout(Duration::from_secs(60)).is_ok()
        })
    };
    is_locked.recv().unwrap();
    let commit = tokio::spawn({
        let shared = Arc::clone(&shared);
        async move {
            shared
                .commit(|s, core| s.apply(core, Event::Tick { now_ms: 1 }, Attach::Nothing))
                .await
        }
    });
    // Lets the commit task start and wait for the lock, then needs the runtime for the timer.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let _ = release.send(());
    assert!(
        holder.join().unwrap(),
        "the runtime was blocked while the commit waited for the lock"
    );
    commit.await.unwrap().unwrap();
}
