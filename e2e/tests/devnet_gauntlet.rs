//! The Gauntlet end to end: a devnet of real processes with a validator; honest peers are
//! scored positively, better on their own data than on data nobody trained on, and every one of
//! their updates is aggregated.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use tributary_e2e::devnet::{Devnet, Proc};
use tributary_proto::identity::Identity;

const ROUNDS: u64 = 8;

fn manifest(validator: &Identity, peers: u32) -> String {
    format!(
        r#"
apiVersion: tributary.dev/v1alpha1
kind: TrainingRun
metadata:
  name: gauntlet
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
    innerSteps: 4
  outerOptimizer:
    kind: sgd
    lr: 0.85
  compression:
    topK: 64
  participation:
    minPeers: {peers}
    maxPeers: {peers}
    reservePeers: 0
    roundDeadlineSeconds: 120
    submissionWindowSeconds: 30
    stragglerPolicy: aggregate
    heartbeatTimeoutSeconds: 30
    scoring:
      validators: ["{key}"]
      validatorWindowSeconds: 60
  stop:
    totalRounds: {ROUNDS}
  seed: 11
"#,
        key = hex::encode(validator.public_key())
    )
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The validator's log lines "candidate scored" as (peer, score, own improvement).
fn scored(net: &Devnet, name: &str) -> Vec<(String, f64, f64)> {
    let log = std::fs::read_to_string(net.dir.join(format!("{name}.log"))).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains("candidate scored"))
        .filter_map(|l| {
            let field = |key: &str| {
                let rest = l.split(&format!("{key}=")).nth(1)?;
                Some(rest.split_whitespace().next()?.to_owned())
            };
            Some((
                field("peer")?,
                field("score")?.parse().ok()?,
                field("own")?.parse().ok()?,
            ))
        })
        .collect()
}

#[test]
fn honest_peers_are_scored_positively_and_always_aggregated() {
    let dir = tempfile::tempdir().unwrap();
    let validator = Identity::from_seed([42; 32]);
    let key = dir.path().join("validator.key");
    validator.save(&key).unwrap();
    let peers = 3;
    let mut net = Devnet::new(dir.path(), "gauntlet", &manifest(&validator, peers)).unwrap();
    let _coordinator = net.start_coordinator().unwrap();
    let _validator = net.start_validator("validator", &key).unwrap();
    let names: Vec<String> = (0..peers).map(|i| format!("peer-{i}")).collect();
    let _procs: Vec<Proc> = names
        .iter()
        .map(|n| net.start_peer(n, &[]).unwrap())
        .collect();
    wait_for("the run to finish", Duration::from_secs(600), || {
        names.iter().all(|n| {
            net.applied(n)
                .unwrap()
                .last()
                .is_some_and(|a| a.version >= ROUNDS)
        })
    });
    let scores = scored(&net, "validator");
    assert_eq!(
        scores.len() as u64,
        u64::from(peers) * ROUNDS,
        "every update of every round is scored: {scores:?}"
    );
    let positive = scores.iter().filter(|s| s.1 > 0.0).count();
    let own_better = scores.iter().filter(|s| s.2 > s.1).count();
    assert_eq!(positive, scores.len(), "{scores:?}");
    // Own data better than unseen data: a clear majority, not every time (a 2-bit top-k update
    // carries mostly what every peer's data shares; docs/security.md, "Validators").
    assert!(
        3 * own_better >= 2 * scores.len(),
        "{own_better}: {scores:?}"
    );
    for n in &names {
        let log = std::fs::read_to_string(net.dir.join(n).join("peer.jsonl")).unwrap();
        let excluded: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("\"included\":false"))
            .collect();
        assert!(excluded.is_empty(), "{n} was left out: {excluded:?}");
    }
}
