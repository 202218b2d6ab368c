//! A peer told by the coordinator that its parameters differ from the majority's drops its
//! state and syncs again (docs/protocol.md, Heartbeat). Two members driven by this test over
//! gRPC agree on a fingerprint the real peer cannot have; the real peer must re-sync.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use tributary_e2e::devnet::Devnet;
use tributary_proto::PROTOCOL_VERSION;
use tributary_proto::identity::{self, Identity};
use tributary_proto::v1alpha1::exchange_client::ExchangeClient;
use tributary_proto::v1alpha1::{HeartbeatRequest, JoinRequest};

const MANIFEST: &str = r#"
apiVersion: tributary.dev/v1alpha1
kind: TrainingRun
metadata:
  name: resync
spec:
  model:
    preset: tiny
  data:
    batchSize: 2
  innerOptimizer:
    innerSteps: 2
  participation:
    minPeers: 4
    maxPeers: 4
    reservePeers: 0
    roundDeadlineSeconds: 600
    heartbeatTimeoutSeconds: 600
  stop:
    totalRounds: 3
  seed: 5
"#;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_told_to_resync_drops_its_state_and_syncs_again() {
    let tmp = tempfile::tempdir().unwrap();
    let mut net = Devnet::new(tmp.path(), "resync", MANIFEST).unwrap();
    let mut coordinator = net.start_coordinator().unwrap();
    let mut real = net.start_peer("real", &[]).unwrap();

    // Two members that agree on a fingerprint nobody trained: with minPeers 4 no round opens,
    // so every member stays at version 0.
    let mut c = ExchangeClient::connect(net.url().unwrap()).await.unwrap();
    let fakes: Vec<Identity> = (0..2).map(|_| Identity::generate()).collect();
    for id in &fakes {
        let key = id.public_key();
        let at = now_ms();
        c.join(JoinRequest {
            version: Some(PROTOCOL_VERSION),
            run_id: "resync".into(),
            public_key: key.to_vec(),
            capabilities: None,
            unix_millis: at,
            signature: id.sign(&identity::join_message("resync", &key, at)),
        })
        .await
        .unwrap();
    }
    let log = tmp.path().join("real.log");
    let deadline = Instant::now() + Duration::from_secs(60);
    let resyncs = loop {
        for id in &fakes {
            c.heartbeat(HeartbeatRequest {
                version: Some(PROTOCOL_VERSION),
                peer_id: id.peer_id(),
                model_version: 0,
                parameter_fingerprint: b"not what anyone trained".to_vec(),
            })
            .await
            .unwrap();
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let resyncs = text
            .matches("re-syncing from the newest checkpoint")
            .count();
        // Twice: the peer acted on the first report and, synced again, heard it again.
        if resyncs >= 2 {
            break resyncs;
        }
        assert!(
            Instant::now() < deadline,
            "the peer never re-synced; its log:\n{text}"
        );
        assert!(real.exited().is_none(), "the peer exited; its log:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(resyncs >= 2);
    real.kill();
    coordinator.kill();
}
