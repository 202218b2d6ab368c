//! An in-process coordinator and helpers for the tests that run `tributary-worker` against it.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc;
use std::time::Duration;

use tokio::net::TcpListener;
use tributary_crds::{ModelPreset, ModelSpec, StopCondition, TrainingRunSpec};
use tributary_operator::coordinator::{RunConfig, Shared, serve};
use tributary_proto::identity::{self, Identity};
use tributary_proto::v1alpha1::exchange_client::ExchangeClient;
use tributary_proto::v1alpha1::*;

pub const RUN: &str = "join-test";
/// Only a hang reaches this: every case here ends or progresses within seconds.
pub const HANG: Duration = Duration::from_secs(120);

pub fn spec() -> TrainingRunSpec {
    let mut spec = TrainingRunSpec::new(ModelSpec::preset(ModelPreset::Tiny));
    // No round opens with one peer: the test peer joins and waits, it does not train.
    spec.participation.min_peers = 2;
    spec.participation.heartbeat_timeout_seconds = 600;
    spec.stop = StopCondition {
        total_rounds: Some(10),
        total_tokens: None,
    };
    spec
}

pub struct Coordinator {
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Coordinator {
    pub async fn start(dir: &Path, spec: TrainingRunSpec, listener: TcpListener) -> Self {
        let shared = Shared::open(RunConfig::new(RUN, spec).unwrap(), dir).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(shared, listener, async move {
            let _ = rx.await;
        }));
        Self {
            url,
            stop: Some(tx),
            task,
        }
    }

    pub async fn peers(&self) -> Vec<String> {
        let mut c = ExchangeClient::connect(self.url.clone()).await.unwrap();
        let status = c
            .get_status(GetStatusRequest::default())
            .await
            .unwrap()
            .into_inner();
        status.peers.into_iter().map(|p| p.peer_id).collect()
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

pub fn key_file(dir: &Path, seed: u8) -> PathBuf {
    let path = dir.join(format!("key-{seed}"));
    Identity::from_seed([seed; 32]).save(&path).unwrap();
    path
}

/// The child's stderr, line by line, read on a thread.
pub fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    lines_of(child.stderr.take().unwrap())
}

pub fn lines_of(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Joins `id` to the coordinator's run over gRPC, as a peer would.
pub async fn join_as(url: &str, id: &Identity) {
    let unix_millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let key = id.public_key();
    let mut c = ExchangeClient::connect(url.to_owned()).await.unwrap();
    c.join(JoinRequest {
        version: Some(tributary_proto::PROTOCOL_VERSION),
        run_id: RUN.into(),
        public_key: key.to_vec(),
        capabilities: None,
        unix_millis,
        signature: id.sign(&identity::join_message(RUN, &key, unix_millis)),
    })
    .await
    .unwrap();
}
