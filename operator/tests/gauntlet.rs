//! The Gauntlet over real gRPC: validators list, fetch and score a closed round's candidates;
//! the scores decide selection and weights; ratings survive a coordinator restart; strangers
//! and bad scores are refused with a reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

use tonic::Code;
use tonic::transport::Channel;
use tributary_proto::PROTOCOL_VERSION;
use tributary_proto::identity::{self, Identity};
use tributary_proto::v1alpha1::exchange_client::ExchangeClient;
use tributary_proto::v1alpha1::*;

/// Three members; `max_peers` of them aggregated per round.
fn judged_spec(validator: &Identity, max_peers: u32) -> tributary_crds::TrainingRunSpec {
    let mut spec = spec(max_peers, max_peers);
    spec.participation.reserve_peers = 3 - max_peers;
    let scoring = &mut spec.participation.scoring;
    scoring.validators = vec![hex::encode(validator.public_key())];
    scoring.validator_window_seconds = 60;
    // One scored round ends probation, so the second round ranks by rating.
    scoring.warmup_rounds = 1;
    scoring.ema_alpha = 0.5;
    spec
}

fn list(v: &Identity, round: u64, unix_millis: u64) -> ListCandidatesRequest {
    let key = v.public_key();
    ListCandidatesRequest {
        version: Some(PROTOCOL_VERSION),
        run_id: RUN.into(),
        validator_public_key: key.to_vec(),
        round,
        wait_millis: 20_000,
        unix_millis,
        signature: v.sign(&identity::candidates_message(
            RUN,
            round,
            &key,
            "",
            unix_millis,
        )),
    }
}

async fn candidate(
    c: &mut ExchangeClient<Channel>,
    v: &Identity,
    round: u64,
    peer: &str,
) -> Vec<u8> {
    let key = v.public_key();
    let t = now_ms();
    let mut s = c
        .get_candidate(GetCandidateRequest {
            version: Some(PROTOCOL_VERSION),
            run_id: RUN.into(),
            validator_public_key: key.to_vec(),
            round,
            peer_id: peer.into(),
            unix_millis: t,
            signature: v.sign(&identity::candidates_message(RUN, round, &key, peer, t)),
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

fn score(peer: &Identity, score: f64, own: f64) -> PeerScore {
    PeerScore {
        peer_id: peer.peer_id(),
        score,
        loss_improvement_own: own,
        loss_improvement_random: score,
    }
}

fn scores(v: &Identity, round: u64, scores: Vec<PeerScore>) -> SubmitScoresRequest {
    let key = v.public_key();
    let t = now_ms();
    SubmitScoresRequest {
        version: Some(PROTOCOL_VERSION),
        round,
        signature: v.sign(&identity::scores_message(RUN, round, &key, t, &scores)),
        scores,
        run_id: RUN.into(),
        validator_public_key: key.to_vec(),
        unix_millis: t,
    }
}

async fn status(c: &mut ExchangeClient<Channel>) -> RunStatus {
    c.get_status(GetStatusRequest::default())
        .await
        .unwrap()
        .into_inner()
}

fn peer_status<'a>(s: &'a RunStatus, id: &Identity) -> &'a PeerStatus {
    s.peers.iter().find(|p| p.peer_id == id.peer_id()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validator_scores_decide_selection_weights_and_ratings_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let validator = Identity::from_seed([9; 32]);
    let stranger = Identity::from_seed([8; 32]);
    let coordinator = Coordinator::start(dir.path(), judged_spec(&validator, 3)).await;
    let run = coordinator.shared.run.clone();
    let mut c = coordinator.client().await;
    let peers: Vec<Identity> = (1..=3).map(|i| Identity::from_seed([i; 32])).collect();
    for p in &peers {
        join(&mut c, p).await;
    }
    let mut events = watch(&mut c, 0).await;
    let round_event::Event::Opened(opened) = next_event(&mut events).await else {
        panic!("round 0 opens");
    };
    let payloads: Vec<Vec<u8>> = (0..3).map(|i| update(&run, 100 + i, 1.0)).collect();
    for (p, payload) in peers.iter().zip(&payloads) {
        let r = submit(&mut c, valid(header(p, &run, 0, payload), payload)).await;
        assert!(r.accepted, "{r:?}");
    }

    // Only the run's validators may see candidates, with a fresh signature of their own.
    let denied = c.list_candidates(list(&stranger, 0, now_ms())).await;
    assert_eq!(denied.unwrap_err().code(), Code::PermissionDenied);
    let mut forged = list(&validator, 0, now_ms());
    forged.round = 1;
    assert_eq!(
        c.list_candidates(forged).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let old = list(&validator, 0, now_ms() - 10 * 60 * 1000);
    assert_eq!(
        c.list_candidates(old).await.unwrap_err().code(),
        Code::Unauthenticated
    );

    // The closed round's candidates, with each peer's slot (its place among the members).
    let listed = c
        .list_candidates(list(&validator, 0, now_ms()))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.ready);
    assert_eq!((listed.model_version, listed.members), (0, 3));
    let mut want: Vec<(String, u32)> = opened
        .members
        .iter()
        .enumerate()
        .map(|(i, m)| (m.clone(), i as u32))
        .collect();
    want.sort();
    let got: Vec<(String, u32)> = listed
        .candidates
        .iter()
        .map(|c| (c.peer_id.clone(), c.slot))
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        candidate(&mut c, &validator, 0, &peers[1].peer_id()).await,
        payloads[1]
    );

    // Bad scores are refused with a reason; good ones once.
    let refused = |r: SubmitScoresResponse| (r.accepted, r.reason());
    let nan = scores(&validator, 0, vec![score(&peers[0], f64::NAN, 0.1)]);
    assert_eq!(
        refused(c.submit_scores(nan).await.unwrap().into_inner()),
        (false, ScoresRejectReason::NotFinite)
    );
    let unknown = scores(&validator, 0, vec![score(&stranger, 0.1, 0.2)]);
    assert_eq!(
        refused(c.submit_scores(unknown).await.unwrap().into_inner()),
        (false, ScoresRejectReason::NotACandidate)
    );
    let mut tampered = scores(&validator, 0, vec![score(&peers[0], 0.1, 0.2)]);
    tampered.scores[0].score = 0.9;
    assert_eq!(
        c.submit_scores(tampered).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let first = vec![
        score(&peers[0], 0.05, 0.10),
        score(&peers[1], 0.01, 0.02),
        score(&peers[2], -0.2, -0.1),
    ];
    let ok = c
        .submit_scores(scores(&validator, 0, first.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(ok.accepted, "{ok:?}");

    // The negatively scored update is left out; the others are aggregated, weighted by the
    // ratings this round's scores gave them (a one-round warm-up: established already).
    let round_event::Event::Published(published) = next_event(&mut events).await else {
        panic!("round 0 is published");
    };
    let mut selected = vec![peers[0].peer_id(), peers[1].peer_id()];
    selected.sort();
    assert_eq!(published.peer_ids, selected);
    let again = c
        .submit_scores(scores(&validator, 0, first))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        refused(again),
        (false, ScoresRejectReason::RoundNotScoring),
        "the round is over"
    );
    let s = status(&mut c).await;
    let summary = &s.history[0];
    assert_eq!(summary.degraded, "");
    let fate = |id: &Identity| {
        summary
            .selection
            .iter()
            .find(|x| x.peer_id == id.peer_id())
            .cloned()
            .unwrap()
    };
    assert_eq!(fate(&peers[2]).excluded, "negative-score");
    assert_eq!(fate(&peers[2]).weight, 0.0);
    assert!(fate(&peers[0]).weight > fate(&peers[1]).weight);
    assert!((fate(&peers[0]).weight + fate(&peers[1]).weight - 1.0).abs() < 1e-6);
    assert_eq!(fate(&peers[0]).score, Some(0.05));
    assert!(peer_status(&s, &peers[0]).selected);
    assert!(!peer_status(&s, &peers[2]).selected);
    assert_eq!(peer_status(&s, &peers[2]).last_score, Some(-0.2));
    let ratings: Vec<f64> = peers.iter().map(|p| peer_status(&s, p).score).collect();
    assert!(
        ratings[0] > ratings[1] && ratings[1] >= ratings[2],
        "ratings follow the scores: {ratings:?}"
    );
    let before: Vec<(f64, Option<f64>, f64)> = peers
        .iter()
        .map(|p| {
            let ps = peer_status(&s, p);
            (ps.score, ps.last_score, ps.indicator)
        })
        .collect();
    drop(events);
    coordinator.stop().await;

    // A restarted coordinator (now aggregating two of the three) has the same ratings and
    // standings ...
    let coordinator = Coordinator::start(dir.path(), judged_spec(&validator, 2)).await;
    let mut c = coordinator.client().await;
    let s = status(&mut c).await;
    let after: Vec<(f64, Option<f64>, f64)> = peers
        .iter()
        .map(|p| {
            let ps = peer_status(&s, p);
            (ps.score, ps.last_score, ps.indicator)
        })
        .collect();
    assert_eq!(after, before);

    // ... and ranks by them: with room for two, the lowest-rated peer is not aggregated even
    // though it submits first, and the weights follow the ratings.
    let mut events = watch(&mut c, 1).await;
    assert!(matches!(next_event(&mut events).await, round_event::Event::Opened(o) if o.round == 1));
    for (i, p) in peers.iter().enumerate().rev() {
        let payload = update(&run, 200 + i as u64, 1.0);
        let r = submit(&mut c, valid(header(p, &run, 1, &payload), &payload)).await;
        assert!(r.accepted, "{r:?}");
    }
    let listed = c
        .list_candidates(list(&validator, 1, now_ms()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.candidates.len(), 3);
    let equal: Vec<PeerScore> = peers.iter().map(|p| score(p, 0.02, 0.04)).collect();
    assert!(
        c.submit_scores(scores(&validator, 1, equal))
            .await
            .unwrap()
            .into_inner()
            .accepted
    );
    let round_event::Event::Published(published) = next_event(&mut events).await else {
        panic!("round 1 is published");
    };
    assert_eq!(published.peer_ids, selected, "selection by rating");
    let s = status(&mut c).await;
    let summary = s.history.iter().find(|h| h.round == 1).unwrap();
    let weight = |id: &Identity| {
        summary
            .selection
            .iter()
            .find(|x| x.peer_id == id.peer_id())
            .unwrap()
            .weight
    };
    assert!(
        weight(&peers[0]) > weight(&peers[1]),
        "{:?}",
        summary.selection
    );
    assert!((weight(&peers[0]) + weight(&peers[1]) - 1.0).abs() < 1e-6);
    coordinator.stop().await;
}

/// Without validators every round says it ran on the cheap checks alone, and still leaves
/// out a ×100 update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_validators_rounds_are_degraded_and_cheap_checks_still_apply() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path(), spec(3, 3)).await;
    let run = coordinator.shared.run.clone();
    let mut c = coordinator.client().await;
    let peers: Vec<Identity> = (1..=3).map(|i| Identity::from_seed([i; 32])).collect();
    for p in &peers {
        join(&mut c, p).await;
    }
    let mut events = watch(&mut c, 0).await;
    assert!(matches!(
        next_event(&mut events).await,
        round_event::Event::Opened(_)
    ));
    for (i, p) in peers.iter().enumerate() {
        let scale = if i == 2 { 100.0 } else { 1.0 };
        let payload = update(&run, 300 + i as u64, scale);
        assert!(
            submit(&mut c, valid(header(p, &run, 0, &payload), &payload))
                .await
                .accepted
        );
    }
    let round_event::Event::Published(published) = next_event(&mut events).await else {
        panic!("round 0 is published");
    };
    assert!(!published.peer_ids.contains(&peers[2].peer_id()));
    assert_eq!(published.peer_ids.len(), 2);
    let s = status(&mut c).await;
    assert_eq!(s.history[0].degraded, "no-validators");
    let scaled = s.history[0]
        .selection
        .iter()
        .find(|x| x.peer_id == peers[2].peer_id())
        .unwrap();
    assert_eq!(scaled.excluded, "norm-ceiling");
    coordinator.stop().await;
}
