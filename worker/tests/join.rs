//! `tributary-worker join` against a coordinator in this process: what the user must fix ends
//! the command at once with one line saying what to do; an outage is retried until the
//! coordinator is back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;

use common::{Coordinator, HANG, RUN, key_file, spec, stderr_lines};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status, Streaming};
use tributary_crds::ParticipationMode;
use tributary_proto::identity::Identity;
use tributary_proto::v1alpha1::exchange_server::{Exchange, ExchangeServer};
use tributary_proto::v1alpha1::*;

fn join(url: &str, run: &str, key: &Path, data: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tributary-worker"));
    cmd.args(["join", "--coordinator", url, "--run-id", run])
        .arg("--key")
        .arg(key)
        .arg("--data-dir")
        .arg(data)
        .env("RUST_LOG", "info")
        .env_remove("TRIBUTARY_CREATE_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// Runs the command to its end (killing it if it hangs) and returns its stderr's lines.
async fn failing(mut cmd: Command) -> Vec<String> {
    tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().unwrap();
        let lines = stderr_lines(&mut child);
        let mut out = Vec::new();
        let status = loop {
            match lines.recv_timeout(HANG) {
                Ok(line) => out.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break child.wait().unwrap(),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    child.kill().unwrap();
                    panic!("join did not end: {out:#?}");
                }
            }
        };
        assert!(!status.success(), "join succeeded: {out:#?}");
        out
    })
    .await
    .unwrap()
}

/// The error line, which must be the only one that starts with `error:`.
fn error_line(lines: &[String]) -> &str {
    let errors: Vec<&String> = lines.iter().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{lines:#?}");
    // The join was never retried.
    assert!(!lines.iter().any(|l| l.contains("retrying")), "{lines:#?}");
    errors[0]
}

#[tokio::test]
async fn a_malformed_coordinator_address_is_an_error_not_a_retry() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), 1);
    let lines = failing(join("localhost:7400", RUN, &key, dir.path())).await;
    let line = error_line(&lines);
    assert!(line.contains("malformed coordinator address"), "{line}");
    assert!(line.contains("http://HOST:PORT"), "{line}");
}

#[tokio::test]
async fn a_missing_key_file_is_an_error_unless_asked_to_create_one() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("mistyped.key");
    let lines = failing(join("http://127.0.0.1:9", RUN, &key, dir.path())).await;
    let line = error_line(&lines);
    assert!(line.contains("no key file at"), "{line}");
    assert!(line.contains("--create-key"), "{line}");
    assert!(!key.exists(), "the key was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_run_ends_join_with_what_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let coordinator = Coordinator::start(&dir.path().join("store"), spec(), listener).await;
    let key = key_file(dir.path(), 2);
    let lines = failing(join(&coordinator.url, "no-such-run", &key, dir.path())).await;
    let line = error_line(&lines);
    assert!(line.contains("unknown run"), "{line}");
    assert!(line.contains("not \"no-such-run\""), "{line}");
    assert!(line.contains("check --run-id"), "{line}");
    coordinator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_join_ends_join_and_names_the_allowlist() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec();
    spec.participation.mode = ParticipationMode::Allowlist;
    spec.participation.allowlist = vec![hex_key(&Identity::from_seed([9; 32]))];
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let coordinator = Coordinator::start(&dir.path().join("store"), spec, listener).await;
    let key = key_file(dir.path(), 3);
    let lines = failing(join(&coordinator.url, RUN, &key, dir.path())).await;
    let line = error_line(&lines);
    assert!(line.contains("join refused"), "{line}");
    assert!(line.contains("allowlist"), "{line}");
    assert!(coordinator.peers().await.is_empty());
    coordinator.stop().await;
}

fn hex_key(id: &Identity) -> String {
    id.public_key().iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_version_mismatch_ends_join() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ExchangeServer::new(OtherMajor))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async move {
                    let _ = rx.await;
                },
            ),
    );
    let key = key_file(dir.path(), 4);
    let lines = failing(join(&url, RUN, &key, dir.path())).await;
    let line = error_line(&lines);
    assert!(line.contains("protocol version mismatch"), "{line}");
    assert!(line.contains("speaks 2.x"), "{line}");
    let _ = tx.send(());
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_retried_until_the_coordinator_is_back() {
    let dir = tempfile::tempdir().unwrap();
    // An address nobody listens on yet; the coordinator takes it later.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let key = key_file(dir.path(), 5);
    let peer = Identity::from_seed([5; 32]).peer_id();
    let mut child = join(
        &format!("http://{addr}"),
        RUN,
        &key,
        &dir.path().join("peer"),
    )
    .spawn()
    .unwrap();
    let lines = stderr_lines(&mut child);
    let wait_for = |what: &str| {
        let mut seen = Vec::new();
        loop {
            let line = lines
                .recv_timeout(HANG)
                .unwrap_or_else(|e| panic!("no {what:?} line ({e}): {seen:#?}"));
            if line.contains(what) {
                return line;
            }
            assert!(!line.starts_with("error:"), "{line}");
            seen.push(line);
        }
    };
    let start = tokio::task::block_in_place(|| wait_for("peer "));
    assert!(
        start.contains(&peer),
        "the peer id is printed at start: {start}"
    );
    let retry = tokio::task::block_in_place(|| wait_for("retrying in"));
    assert!(retry.contains("attempt 1"), "{retry}");
    tokio::task::block_in_place(|| wait_for("attempt 2"));

    let listener = TcpListener::bind(addr).await.unwrap();
    let coordinator = Coordinator::start(&dir.path().join("store"), spec(), listener).await;
    let joined = tokio::task::block_in_place(|| wait_for("joined"));
    assert!(joined.contains(&peer), "{joined}");
    assert_eq!(coordinator.peers().await, vec![peer]);
    child.kill().unwrap();
    child.wait().unwrap();
    coordinator.stop().await;
}

/// A coordinator of a later protocol major: refuses every call as the real one does.
struct OtherMajor;

fn other_major() -> Status {
    Status::failed_precondition(
        "unsupported protocol version Some(ProtocolVersion { major: 1, minor: 0 }); this coordinator speaks 2.x",
    )
}

type Blobs = tokio_stream::Empty<Result<BlobChunk, Status>>;

#[tonic::async_trait]
impl Exchange for OtherMajor {
    type WatchRoundsStream = tokio_stream::Empty<Result<RoundEvent, Status>>;
    type GetAggregateStream = Blobs;
    type GetCheckpointStream = Blobs;
    type GetCandidateStream = Blobs;

    async fn join(&self, _: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        Err(other_major())
    }
    async fn heartbeat(
        &self,
        _: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        Err(other_major())
    }
    async fn watch_rounds(
        &self,
        _: Request<WatchRoundsRequest>,
    ) -> Result<Response<Self::WatchRoundsStream>, Status> {
        Err(other_major())
    }
    async fn submit_update(
        &self,
        _: Request<Streaming<SubmitUpdateMessage>>,
    ) -> Result<Response<SubmitUpdateResponse>, Status> {
        Err(other_major())
    }
    async fn get_aggregate(
        &self,
        _: Request<GetAggregateRequest>,
    ) -> Result<Response<Blobs>, Status> {
        Err(other_major())
    }
    async fn list_checkpoints(
        &self,
        _: Request<ListCheckpointsRequest>,
    ) -> Result<Response<ListCheckpointsResponse>, Status> {
        Err(other_major())
    }
    async fn get_checkpoint(
        &self,
        _: Request<GetCheckpointRequest>,
    ) -> Result<Response<Blobs>, Status> {
        Err(other_major())
    }
    async fn put_checkpoint(
        &self,
        _: Request<Streaming<PutCheckpointMessage>>,
    ) -> Result<Response<PutCheckpointResponse>, Status> {
        Err(other_major())
    }
    async fn list_candidates(
        &self,
        _: Request<ListCandidatesRequest>,
    ) -> Result<Response<ListCandidatesResponse>, Status> {
        Err(other_major())
    }
    async fn get_candidate(
        &self,
        _: Request<GetCandidateRequest>,
    ) -> Result<Response<Self::GetCandidateStream>, Status> {
        Err(other_major())
    }
    async fn submit_scores(
        &self,
        _: Request<SubmitScoresRequest>,
    ) -> Result<Response<SubmitScoresResponse>, Status> {
        Err(other_major())
    }
    async fn get_status(
        &self,
        _: Request<GetStatusRequest>,
    ) -> Result<Response<RunStatus>, Status> {
        Err(other_major())
    }
}
