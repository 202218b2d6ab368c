//! `tributary-worker status` against a coordinator in this process: the run, its peers and this
//! peer's standing; `--watch` prints again when something changes; another run is an error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};

use common::{Coordinator, HANG, RUN, join_as, key_file, spec};
use tokio::net::TcpListener;
use tributary_proto::identity::Identity;

fn status(url: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tributary-worker"));
    cmd.args(["status", "--coordinator", url])
        .args(extra)
        .env_remove("TRIBUTARY_RUN_ID")
        .env_remove("TRIBUTARY_KEY")
        .stdin(Stdio::null());
    cmd
}

async fn output(mut cmd: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_run_its_peers_and_this_peers_standing() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let coordinator = Coordinator::start(&dir.path().join("store"), spec(), listener).await;
    let me = Identity::from_seed([11; 32]);
    join_as(&coordinator.url, &me).await;
    let key = key_file(dir.path(), 11);
    let key = key.to_str().unwrap();

    let out = output(status(&coordinator.url, &["--run-id", RUN, "--key", key])).await;
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with(&format!(
            "run {RUN}: Waiting, round 0, 0 of 10 rounds completed"
        )),
        "{text}"
    );
    assert!(text.contains("peers: 1 active"), "{text}");
    assert!(
        text.contains(&format!(
            "this peer {}: a member, 0 updates accepted",
            me.peer_id()
        )),
        "{text}"
    );

    // A key that never joined: not in this run.
    let stranger = key_file(dir.path(), 12);
    let out = output(status(
        &coordinator.url,
        &["--key", stranger.to_str().unwrap()],
    ))
    .await;
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("not in this run"), "{text}");

    // Another run's name: an error that says which run is there.
    let out = output(status(&coordinator.url, &["--run-id", "other"])).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("serves run \"{RUN}\", not \"other\"")),
        "{err}"
    );
    coordinator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_again_when_a_peer_joins() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let coordinator = Coordinator::start(&dir.path().join("store"), spec(), listener).await;
    let mut child = status(&coordinator.url, &["--watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = common::lines_of(child.stdout.take().unwrap());
    let next_run_line = || loop {
        let line = lines.recv_timeout(HANG).expect("no status printed");
        if line.starts_with("peers:") {
            return line;
        }
    };
    let first = tokio::task::block_in_place(next_run_line);
    assert_eq!(first, "peers: 0 active, 0 with rejected updates");
    join_as(&coordinator.url, &Identity::from_seed([13; 32])).await;
    let second = tokio::task::block_in_place(next_run_line);
    assert_eq!(second, "peers: 1 active, 0 with rejected updates");
    child.kill().unwrap();
    child.wait().unwrap();
    coordinator.stop().await;
}
