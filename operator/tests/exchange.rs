//! The coordinator over real gRPC on loopback: a round from join to published aggregate, a
//! restart from the store, and hostile streams that are refused with a named reason while the
//! round carries on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

use tributary_codec::{Aggregator, DecodeLimits, decode, decode_aggregate};
use tributary_operator::coordinator::RunConfig;
use tributary_operator::coordinator::Shared;
use tributary_proto::identity::{self, Identity};
use tributary_proto::v1alpha1::*;
use tributary_proto::{CHUNK_BYTES, PROTOCOL_VERSION};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_runs_over_grpc_and_a_restart_continues_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path(), spec(2, 2)).await;
    let run = coordinator.shared.run.clone();
    let mut c = coordinator.client().await;
    let (a, b) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
    let mut events = watch(&mut c, 0).await;
    let joined = join(&mut c, &a).await;
    assert_eq!(joined.peer_id, a.peer_id());
    assert_eq!(joined.max_update_bytes, run.plan.tensors().update_bytes());
    join(&mut c, &b).await;
    let round_event::Event::Opened(opened) = next_event(&mut events).await else {
        panic!("round 0 opens once two peers joined");
    };
    assert_eq!(opened.round, 0);
    let mut members = vec![a.peer_id(), b.peer_id()];
    members.sort();
    assert_eq!(opened.members, members);

    let (pa, pb) = (update(&run, 1, 1e-3), update(&run, 2, 2e-3));
    for (id, p) in [(&a, &pa), (&b, &pb)] {
        let r = submit(&mut c, valid(header(id, &run, 0, p), p)).await;
        assert!(r.accepted, "{r:?}");
    }
    let round_event::Event::Published(published) = next_event(&mut events).await else {
        panic!("the complete round publishes");
    };
    assert_eq!(
        (published.round, published.model_version),
        (0, 1),
        "{published:?}"
    );
    assert_eq!(published.peer_ids, members);
    assert_eq!(published.tokens, 2048);

    // The published aggregate is exactly the aggregate of the two accepted updates.
    let blob = fetch_aggregate(&mut c, 0).await;
    assert_eq!(identity::sha256(&blob).to_vec(), published.aggregate_sha256);
    let got = decode_aggregate(&blob, &DecodeLimits::default()).unwrap();
    let limits = run.plan.tensors().update_limits();
    let contributions = [decode(&pa, &limits).unwrap(), decode(&pb, &limits).unwrap()];
    let refs: Vec<_> = contributions.iter().collect();
    let want = Aggregator::new(run.plan.rule())
        .aggregate_sparse(&refs, None)
        .unwrap();
    for (g, w) in got.tensors.iter().zip(&want.tensors) {
        assert_eq!(g.to_dense(), w.to_dense());
    }
    let round_event::Event::Opened(next) = next_event(&mut events).await else {
        panic!("round 1 opens after the publish");
    };
    assert_eq!((next.round, next.model_version), (1, 1));
    // New updates: resending round 0's would be a replay, which the Gauntlet leaves out.
    let (pa, pb) = (update(&run, 21, 1.0), update(&run, 22, 1.0));
    let ra = submit(&mut c, valid(header(&a, &run, 1, &pa), &pa)).await;
    assert!(ra.accepted);
    drop(events);
    coordinator.stop().await;

    // A new coordinator on the same store continues: version 1, round 1 open with a's update
    // already accepted, history replayed to watchers.
    let coordinator = Coordinator::start(dir.path(), spec(2, 2)).await;
    let mut c = coordinator.client().await;
    let status = c
        .get_status(GetStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (status.model_version, status.round, status.phase()),
        (1, 1, RunPhase::Open)
    );
    assert_eq!(status.history.len(), 1);
    let mut events = watch(&mut c, 0).await;
    assert!(
        matches!(next_event(&mut events).await, round_event::Event::Published(p) if p.round == 0)
    );
    assert!(matches!(next_event(&mut events).await, round_event::Event::Opened(o) if o.round == 1));
    let dup = submit(&mut c, valid(header(&a, &run, 1, &pa), &pa)).await;
    assert_eq!(
        dup.reason(),
        RejectReason::Duplicate,
        "the accepted update survived the restart"
    );
    let rb = submit(&mut c, valid(header(&b, &run, 1, &pb), &pb)).await;
    assert!(rb.accepted, "{rb:?}");
    assert!(
        matches!(next_event(&mut events).await, round_event::Event::Published(p) if p.round == 1 && p.model_version == 2)
    );
    coordinator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_streams_are_refused_with_a_reason_and_the_round_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path(), spec(2, 2)).await;
    let run = coordinator.shared.run.clone();
    let mut c = coordinator.client().await;
    let (a, b) = (Identity::from_seed([3; 32]), Identity::from_seed([4; 32]));
    let stranger = Identity::from_seed([5; 32]);
    let mut events = watch(&mut c, 0).await;
    join(&mut c, &a).await;
    join(&mut c, &b).await;
    assert!(matches!(
        next_event(&mut events).await,
        round_event::Event::Opened(_)
    ));
    let p = update(&run, 7, 1e-3);
    let good = || header(&a, &run, 0, &p);

    let mut cases: Vec<(&str, Vec<SubmitUpdateMessage>)> = vec![
        ("header-first", vec![chunk(&p), head(good())]),
        ("length-mismatch", vec![head(good())]),
        (
            "length-mismatch",
            vec![head(good()), chunk(&p[..p.len() / 2])],
        ),
        ("length-mismatch", {
            let mut m = valid(good(), &p);
            m.push(chunk(&[0]));
            m
        }),
        (
            "header-first",
            vec![head(good()), chunk(&p[..10]), head(good())],
        ),
        (
            "chunk-too-large",
            vec![head(good()), chunk(&vec![0; CHUNK_BYTES + 1])],
        ),
    ];
    let mut oversized = good();
    oversized.payload_bytes = u64::MAX;
    cases.push(("wrong-size", vec![head(oversized)]));
    let mut forged = good();
    forged.signature = stranger.sign(b"something else");
    cases.push(("bad-signature", valid(forged, &p)));
    let mut other_run = good();
    other_run.run_id = "another-run".into();
    cases.push(("wrong-run", valid(other_run, &p)));
    cases.push(("unknown-peer", valid(header(&stranger, &run, 0, &p), &p)));
    let mut codec = good();
    codec.codec.as_mut().unwrap().top_k = 32;
    cases.push(("wrong-codec", valid(codec, &p)));
    cases.push(("wrong-round", valid(header(&a, &run, 5, &p), &p)));
    let mut flipped = p.clone();
    *flipped.last_mut().unwrap() ^= 1;
    cases.push(("hash-mismatch", valid(good(), &flipped)));
    let garbage = vec![0xAB; p.len()];
    cases.push((
        "malformed-payload",
        valid(header(&a, &run, 0, &garbage), &garbage),
    ));
    let zeros = update(&run, 8, 0.0);
    cases.push((
        "degenerate-update",
        valid(header(&a, &run, 0, &zeros), &zeros),
    ));
    cases.push(("unsupported-version", {
        let mut h = good();
        h.version = Some(ProtocolVersion { major: 9, minor: 0 });
        valid(h, &p)
    }));
    // A validly signed header whose loss cannot be stored (this once halted the round).
    let mut nan = good();
    nan.inner_loss = f64::NAN;
    cases.push(("bad-header", valid(signed(&a, nan), &p)));
    let mut huge = good();
    huge.tokens = u64::MAX;
    cases.push(("bad-header", valid(signed(&a, huge), &p)));
    // Signed, but trained from a version of θ the round does not train from.
    let mut stale = good();
    stale.model_version = 3;
    cases.push(("stale-model", valid(signed(&a, stale), &p)));
    // An unsigned field changed after signing.
    let mut tampered = good();
    tampered.tokens += 1;
    cases.push(("bad-signature", valid(tampered, &p)));

    for (want, messages) in cases {
        let r = submit(&mut c, messages).await;
        assert!(!r.accepted, "{want}: accepted");
        assert_eq!(r.reason(), wire(want), "{want}: {r:?}");
        assert!(!r.message.is_empty());
    }
    // Nothing of that disturbed the round: both good updates are accepted, the round
    // publishes with exactly them, and a repeat is a duplicate.
    assert!(submit(&mut c, valid(good(), &p)).await.accepted);
    let dup = submit(&mut c, valid(good(), &p)).await;
    assert_eq!(dup.reason(), RejectReason::Duplicate);
    let pb = update(&run, 9, 1e-3);
    assert!(
        submit(&mut c, valid(header(&b, &run, 0, &pb), &pb))
            .await
            .accepted
    );
    let round_event::Event::Published(published) = next_event(&mut events).await else {
        panic!("round 0 publishes");
    };
    assert_eq!(published.contributions, 2);
    let status = c
        .get_status(GetStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let peer_a = status
        .peers
        .iter()
        .find(|x| x.peer_id == a.peer_id())
        .unwrap();
    assert_eq!(peer_a.accepted_updates, 1);
    assert!(peer_a.rejected_updates >= 10, "{peer_a:?}");
    coordinator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_need_a_fresh_signature_for_this_run_and_room() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path(), spec(1, 1)).await;
    let mut c = coordinator.client().await;
    let id = Identity::from_seed([6; 32]);
    let code = |r: Result<tonic::Response<JoinResponse>, tonic::Status>| r.unwrap_err().code();

    let mut forged = join_request(&id, RUN, now_ms());
    forged.signature[0] ^= 1;
    assert_eq!(code(c.join(forged).await), tonic::Code::Unauthenticated);
    let stale = join_request(&id, RUN, now_ms() - 3_600_000);
    assert_eq!(code(c.join(stale).await), tonic::Code::Unauthenticated);
    let elsewhere = join_request(&id, "another-run", now_ms());
    assert_eq!(code(c.join(elsewhere).await), tonic::Code::NotFound);
    let mut short_key = join_request(&id, RUN, now_ms());
    short_key.public_key.truncate(31);
    assert_eq!(code(c.join(short_key).await), tonic::Code::InvalidArgument);

    join(&mut c, &id).await;
    join(&mut c, &id).await; // a retried join is fine
    let other = Identity::from_seed([7; 32]);
    assert_eq!(
        code(c.join(join_request(&other, RUN, now_ms())).await),
        tonic::Code::ResourceExhausted,
        "capacity is maxPeers + reservePeers = 1"
    );
    coordinator.stop().await;
}

#[test]
fn a_data_directory_belongs_to_one_run() {
    let dir = tempfile::tempdir().unwrap();
    drop(Shared::open(RunConfig::new(RUN, spec(1, 2)).unwrap(), dir.path()).unwrap());
    let other = Shared::open(RunConfig::new("other", spec(1, 2)).unwrap(), dir.path());
    let err = other.err().unwrap().to_string();
    assert!(err.contains("holds run"), "{err}");
    // Participation may change between starts: the run resumes with the new policy.
    let resumed = Shared::open(RunConfig::new(RUN, spec(1, 3)).unwrap(), dir.path()).unwrap();
    assert_eq!(resumed.run.spec().participation.max_peers, 3);
    drop(resumed);
    // What shapes training may not: the store refuses, naming the field.
    let mut reseeded = spec(1, 3);
    reseeded.seed = 99;
    let changed = Shared::open(RunConfig::new(RUN, reseeded).unwrap(), dir.path());
    let err = changed.err().unwrap().to_string();
    assert!(
        err.contains("different spec") && err.contains("spec.seed"),
        "{err}"
    );
}

/// Heartbeats go through the state machine: a member whose fingerprint differs from what two
/// other members agree on is told to re-sync, the rule survives a restart of the coordinator,
/// and a fingerprint of a version nobody can hold yet is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_divergent_fingerprint_is_told_to_resync_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path(), spec(3, 3)).await;
    let mut c = coordinator.client().await;
    let peers: Vec<Identity> = (0..3).map(|_| Identity::generate()).collect();
    for id in &peers {
        join(&mut c, id).await;
    }
    let beat = |id: &Identity, version: u64, fp: &[u8]| HeartbeatRequest {
        version: Some(PROTOCOL_VERSION),
        peer_id: id.peer_id(),
        model_version: version,
        parameter_fingerprint: fp.to_vec(),
    };
    let told = |r: tonic::Response<HeartbeatResponse>| r.into_inner().resync_required;
    assert!(!told(
        c.heartbeat(beat(&peers[0], 0, b"good")).await.unwrap()
    ));
    assert!(!told(
        c.heartbeat(beat(&peers[1], 0, b"good")).await.unwrap()
    ));
    assert!(told(c.heartbeat(beat(&peers[2], 0, b"bad")).await.unwrap()));
    // Version 7 is not published: nothing is recorded or judged.
    assert!(!told(
        c.heartbeat(beat(&peers[2], 7, b"bad")).await.unwrap()
    ));
    coordinator.stop().await;

    let coordinator = Coordinator::start(dir.path(), spec(3, 3)).await;
    let mut c = coordinator.client().await;
    assert!(told(c.heartbeat(beat(&peers[2], 0, b"bad")).await.unwrap()));
    assert!(!told(
        c.heartbeat(beat(&peers[2], 0, b"good")).await.unwrap()
    ));
    coordinator.stop().await;
}
