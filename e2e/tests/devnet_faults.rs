//! Multi-process devnet under faults: a peer SIGKILLed mid-round rejoins, a late joiner starts
//! from the run's checkpoint and replays the aggregates since, the coordinator is SIGKILLed and
//! restarted on its store — and every peer ends with bit-identical parameters.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use tributary_e2e::devnet::{Devnet, Proc};

const ROUNDS: u64 = 14;

const MANIFEST: &str = r#"
apiVersion: tributary.dev/v1alpha1
kind: TrainingRun
metadata:
  name: faults
spec:
  model:
    preset: tiny
  data:
    source:
      embedded:
        seed: 3
    sequenceLength: 64
    batchSize: 8
  innerOptimizer:
    lr: 0.006
    warmupSteps: 5
    innerSteps: 3
  outerOptimizer:
    kind: sgd
    lr: 0.85
  compression:
    topK: 64
  participation:
    minPeers: 2
    maxPeers: 4
    reservePeers: 0
    roundDeadlineSeconds: 60
    submissionWindowSeconds: 10
    stragglerPolicy: aggregate
    heartbeatTimeoutSeconds: 10
  stop:
    totalRounds: 14
  seed: 11
  checkpoints:
    everyRounds: 4
    keep: 2
"#;

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn version(net: &Devnet, peer: &str) -> u64 {
    net.applied(peer).unwrap().last().map_or(0, |a| a.version)
}

fn wait_exit(p: &mut Proc, limit: Duration) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(code) = p.exited() {
            return code;
        }
        assert!(start.elapsed() < limit, "{} did not finish", p.name);
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kills_restarts_and_a_late_joiner_end_bit_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let mut net = Devnet::new(tmp.path(), "faults", MANIFEST).unwrap();
    let mut coordinator = net.start_coordinator().unwrap();
    let mut a = net.start_peer("a", &["--checkpoint-writer"]).unwrap();
    let mut b = net.start_peer("b", &[]).unwrap();
    let mut c = net.start_peer("c", &[]).unwrap();
    let limit = Duration::from_secs(180);

    wait_for("3 aggregates", limit, || version(&net, "a") >= 3);
    // Peer b dies mid-run without warning, and comes back with the same key.
    b.kill();
    let b_before = version(&net, "b");
    let mut b = net.start_peer("b", &[]).unwrap();

    // A late joiner, once a checkpoint exists (every 4 aggregates).
    wait_for("6 aggregates", limit, || version(&net, "a") >= 6);
    let mut d = net.start_peer("d", &[]).unwrap();
    wait_for("the late joiner to catch up", limit, || {
        version(&net, "d") >= version(&net, "a").min(8)
    });

    // The coordinator dies mid-run and restarts on its store and address.
    coordinator.kill();
    let killed_at = version(&net, "a");
    let mut coordinator = net.start_coordinator().unwrap();

    for p in [&mut a, &mut b, &mut c, &mut d] {
        assert_eq!(wait_exit(p, limit), 0, "{} failed; see its log", p.name);
    }
    coordinator.kill();

    let reference = net.fingerprints("a").unwrap();
    assert_eq!(
        reference.keys().copied().collect::<Vec<_>>(),
        (1..=ROUNDS).collect::<Vec<_>>()
    );
    for peer in ["b", "c", "d"] {
        // Every line, a restarted peer's replayed versions included.
        let applied = net.applied(peer).unwrap();
        assert_eq!(
            applied.last().map(|x| x.version),
            Some(ROUNDS),
            "{peer} reached the end"
        );
        for x in &applied {
            assert_eq!(
                Some(&x.fingerprint),
                reference.get(&x.version),
                "{peer} diverged from a at version {}",
                x.version
            );
        }
    }
    // b's second life synced and applied every later aggregate.
    let b_lines = net.applied("b").unwrap();
    assert!(b_lines.iter().filter(|x| x.version > b_before).count() as u64 >= ROUNDS - b_before);
    let d_first = net.applied("d").unwrap()[0].version;
    let coordinator_log = std::fs::read_to_string(tmp.path().join("coordinator.log")).unwrap();
    eprintln!(
        "b killed at version {b_before}; d started at version {d_first}; coordinator killed at version {killed_at}"
    );
    assert_eq!(
        coordinator_log.matches("resuming from the store").count(),
        1,
        "the second coordinator resumed from the store"
    );
    assert!(
        d_first > 4,
        "the late joiner replayed from version {d_first}, not from a checkpoint"
    );
    assert!(killed_at < ROUNDS, "the coordinator was killed mid-run");
}
