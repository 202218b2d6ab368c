//! Property tests of the round state machine: random runs of joins, leaves, heartbeats, late,
//! duplicate and out-of-round submissions, ticks, right and wrong aggregate stores, and restarts
//! from a serialized snapshot, checked against the machine's invariants.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use tributary_crds::{ParticipationSpec, StragglerPolicy};
use tributary_operator::coordinator::{
    Coordinator, Decision, Event, Fingerprint, MAX_EXTENSIONS, PeerId, Phase, RESYNC_QUORUM,
    RefuseReason, RejectReason, RoundPolicy, SkipReason,
};

const PEERS: [&str; 6] = ["0a", "1b", "2c", "3d", "4e", "5f"];

/// Which round a submission names, relative to the current one when it is sent.
#[derive(Debug, Clone, Copy)]
enum RoundPick {
    Current,
    Previous,
    Next,
    Far(u64),
}

/// A peer: the i-th current member (any peer when there are none), or any peer.
#[derive(Debug, Clone, Copy)]
enum Who {
    Member(usize),
    Anyone(usize),
}

#[derive(Debug, Clone)]
enum Step {
    Join(usize),
    /// With a fingerprint (versions back from the newest, one of a few digests), or without.
    Heartbeat(Who, Option<(u64, u8)>),
    Leave(Who),
    Submit(Who, RoundPick, u8),
    Tick,
    /// The aggregate of the aggregating round (`true`) or of some other round.
    Stored(bool, u8),
    /// The Gauntlet left out every update of the aggregating round (`true`) or of another.
    NothingSelected(bool),
    /// Serialize the second machine and continue with the deserialized copy.
    Restart,
}

fn policy() -> impl Strategy<Value = RoundPolicy> {
    let straggler = prop_oneof![
        Just(StragglerPolicy::Aggregate),
        Just(StragglerPolicy::Extend),
        Just(StragglerPolicy::Skip),
    ];
    (
        1u32..=3,
        0u32..=2,
        0u32..=2,
        1u32..=4,
        1u32..=3,
        1u32..=12,
        straggler,
        any::<bool>(),
    )
        .prop_map(
            |(min, extra, reserve, deadline, window, heartbeat, straggler, selects)| {
                let mut spec = ParticipationSpec {
                    min_peers: min,
                    max_peers: min + extra,
                    reserve_peers: reserve,
                    round_deadline_seconds: deadline,
                    submission_window_seconds: window,
                    heartbeat_timeout_seconds: heartbeat,
                    straggler_policy: straggler,
                    ..ParticipationSpec::default()
                };
                spec.scoring.enabled = selects;
                RoundPolicy::try_from(spec).unwrap()
            },
        )
}

fn step() -> impl Strategy<Value = (Step, u64)> {
    let peer = 0..PEERS.len();
    let who = prop_oneof![
        4 => peer.clone().prop_map(Who::Member),
        1 => peer.clone().prop_map(Who::Anyone),
    ];
    let round = prop_oneof![
        6 => Just(RoundPick::Current),
        1 => Just(RoundPick::Previous),
        1 => Just(RoundPick::Next),
        1 => (0u64..20).prop_map(RoundPick::Far),
    ];
    let step = prop_oneof![
        3 => peer.prop_map(Step::Join),
        6 => (who.clone(), prop::option::of((0u64..3, 0u8..3))).prop_map(|(w, f)| Step::Heartbeat(w, f)),
        1 => who.clone().prop_map(Step::Leave),
        7 => (who, round, 0u8..4).prop_map(|(p, r, d)| Step::Submit(p, r, d)),
        3 => Just(Step::Tick),
        3 => (prop::bool::weighted(0.8), any::<u8>()).prop_map(|(right, d)| Step::Stored(right, d)),
        1 => prop::bool::weighted(0.8).prop_map(Step::NothingSelected),
        1 => Just(Step::Restart),
    ];
    // Milliseconds that pass before the step; rounds last 2 to 7 seconds.
    let dt = prop_oneof![2 => Just(0u64), 8 => 0u64..1_500, 1 => 1_500u64..8_000];
    (step, dt)
}

/// The round an event refers to when it means "the current one".
fn current_round(c: &Coordinator) -> u64 {
    match c.phase() {
        Phase::Waiting { next_round } => next_round,
        Phase::Open { round, .. } | Phase::Aggregating { round } => round,
        Phase::Finished => unreachable!("these runs have no round limit"),
    }
}

fn event(c: &Coordinator, step: &Step, now_ms: u64) -> Option<Event> {
    let members: Vec<&PeerId> = c.members().collect();
    let peer = |who: &Who| match *who {
        Who::Member(i) if !members.is_empty() => members[i % members.len()].clone(),
        Who::Member(i) | Who::Anyone(i) => PeerId::from(PEERS[i]),
    };
    let current = current_round(c);
    Some(match step {
        Step::Join(i) => Event::Join {
            peer: PeerId::from(PEERS[*i]),
            now_ms,
        },
        Step::Heartbeat(i, f) => Event::Heartbeat {
            peer: peer(i),
            now_ms,
            fingerprint: f.map(|(back, digest)| Fingerprint {
                // Now and then a version no peer can hold yet.
                model_version: (c.model_version() + 1).saturating_sub(back),
                digest: vec![digest],
            }),
        },
        Step::Leave(i) => Event::Leave {
            peer: peer(i),
            now_ms,
        },
        Step::Submit(i, pick, digest) => Event::Submission {
            peer: peer(i),
            round: match pick {
                RoundPick::Current => current,
                RoundPick::Previous => current.saturating_sub(1),
                RoundPick::Next => current + 1,
                RoundPick::Far(r) => *r,
            },
            digest: [*digest; 32],
            now_ms,
        },
        Step::Tick => Event::Tick { now_ms },
        Step::Stored(right, digest) => Event::AggregateStored {
            round: if *right {
                current
            } else {
                current + 1 + u64::from(*digest % 3)
            },
            digest: [*digest; 32],
        },
        Step::NothingSelected(right) => Event::NothingSelected {
            round: if *right { current } else { current + 1 },
        },
        Step::Restart => return None,
    })
}

/// What the decisions so far say about each round.
#[derive(Default)]
struct History {
    opened: BTreeMap<u64, BTreeSet<PeerId>>,
    accepted: BTreeMap<u64, BTreeSet<PeerId>>,
    aggregated: BTreeSet<u64>,
    skipped: BTreeSet<u64>,
    published: Vec<u64>,
    extensions: BTreeMap<u64, u32>,
    /// Version → peer → the digest it last reported there (as recorded by the machine).
    fingerprints: BTreeMap<u64, BTreeMap<PeerId, Vec<u8>>>,
}

impl History {
    fn closed(&self, round: u64) -> bool {
        self.aggregated.contains(&round) || self.skipped.contains(&round)
    }

    fn live(&self) -> Option<u64> {
        let (&last, _) = self.opened.last_key_value()?;
        let done = self.skipped.contains(&last) || self.published.last() == Some(&last);
        (!done).then_some(last)
    }

    fn check(
        &mut self,
        policy: &RoundPolicy,
        members_before: usize,
        event: &Event,
        decisions: &[Decision],
        after: &Coordinator,
    ) -> Result<(), TestCaseError> {
        let reported = match event {
            Event::Heartbeat {
                fingerprint: Some(f),
                ..
            } => Some(f),
            _ => None,
        };
        for decision in decisions {
            match decision {
                Decision::FingerprintRecorded {
                    peer,
                    model_version,
                } => {
                    let f =
                        reported.ok_or_else(|| TestCaseError::fail("recorded without a report"))?;
                    prop_assert!(after.is_member(peer));
                    prop_assert!(*model_version <= after.model_version());
                    prop_assert_eq!(*model_version, f.model_version);
                    self.fingerprints
                        .entry(*model_version)
                        .or_default()
                        .insert(peer.clone(), f.digest.clone());
                }
                Decision::ResyncRequired {
                    peer,
                    model_version,
                } => {
                    let f =
                        reported.ok_or_else(|| TestCaseError::fail("resync without a report"))?;
                    // At least a quorum of other current members agree on another digest.
                    let mut counts: BTreeMap<&Vec<u8>, usize> = BTreeMap::new();
                    for (other, d) in self.fingerprints.get(model_version).into_iter().flatten() {
                        if other != peer && after.is_member(other) {
                            *counts.entry(d).or_default() += 1;
                        }
                    }
                    let best = counts.values().copied().max().unwrap_or(0);
                    let winners: Vec<_> = counts.iter().filter(|(_, n)| **n == best).collect();
                    prop_assert!(best >= RESYNC_QUORUM, "resync without a quorum");
                    prop_assert_eq!(winners.len(), 1, "resync on a tie");
                    prop_assert!(*winners[0].0 != &f.digest, "resync though it agrees");
                }
                Decision::Admitted { peer } => prop_assert!(after.is_member(peer)),
                Decision::Refused { reason, .. } => {
                    prop_assert_eq!(*reason, RefuseReason::RunFull);
                    prop_assert_eq!(members_before, policy.capacity() as usize);
                }
                Decision::PeerExpired { peer } => {
                    prop_assert!(!after.is_member(peer));
                    // The machine forgets a departed member's fingerprints: if it joins again,
                    // its old reports no longer count towards a majority.
                    for at in self.fingerprints.values_mut() {
                        at.remove(peer);
                    }
                }
                Decision::RoundOpened { round, members, .. } => {
                    prop_assert_eq!(self.live(), None, "a round opened while another runs");
                    if let Some((&last, _)) = self.opened.last_key_value() {
                        prop_assert!(*round > last, "round numbers only increase");
                    }
                    prop_assert!(members.len() >= policy.min_peers() as usize);
                    prop_assert!(members.len() <= policy.capacity() as usize);
                    prop_assert!(members.windows(2).all(|w| w[0] < w[1]));
                    self.opened
                        .insert(*round, members.iter().cloned().collect());
                }
                Decision::Accepted { peer, round } => {
                    prop_assert_eq!(self.live(), Some(*round));
                    prop_assert!(!self.closed(*round));
                    prop_assert!(self.opened[round].contains(peer), "accepted a non-member");
                    let accepted = self.accepted.entry(*round).or_default();
                    prop_assert!(accepted.insert(peer.clone()), "accepted twice");
                    prop_assert!(accepted.len() <= policy.accepts() as usize);
                }
                Decision::Rejected {
                    peer,
                    round,
                    reason,
                } => {
                    // Duplicate is judged before the reasons below it, after those above it.
                    let accepted = self.accepted.get(round).is_some_and(|a| a.contains(peer));
                    match reason {
                        RejectReason::Duplicate => prop_assert!(accepted),
                        RejectReason::NotInRound
                        | RejectReason::PastDeadline
                        | RejectReason::RoundClosed => prop_assert!(!accepted),
                        _ => {}
                    }
                }
                Decision::Aggregate { round, peers } => {
                    prop_assert_eq!(self.live(), Some(*round));
                    prop_assert!(!self.closed(*round));
                    prop_assert!(peers.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
                    let peers: BTreeSet<PeerId> = peers.iter().cloned().collect();
                    let accepted = self.accepted.get(round).cloned().unwrap_or_default();
                    prop_assert_eq!(&peers, &accepted, "aggregate = accepted submissions");
                    prop_assert!(!peers.is_empty());
                    if policy.straggler_policy() != StragglerPolicy::Aggregate {
                        prop_assert!(peers.len() >= policy.min_peers() as usize);
                    }
                    self.aggregated.insert(*round);
                }
                Decision::DeadlineExtended { round, deadline_ms } => {
                    prop_assert_eq!(policy.straggler_policy(), StragglerPolicy::Extend);
                    prop_assert_eq!(self.live(), Some(*round));
                    prop_assert!(*deadline_ms > after.clock_ms() || *deadline_ms == u64::MAX);
                    let n = self.extensions.entry(*round).or_default();
                    *n += 1;
                    prop_assert!(*n <= MAX_EXTENSIONS);
                }
                Decision::RoundSkipped { round, reason } => {
                    prop_assert_eq!(self.live(), Some(*round));
                    if *reason == SkipReason::AllExcluded {
                        // Only the round being aggregated, and only in answer to the IO layer.
                        prop_assert!(self.aggregated.contains(round));
                        let answers =
                            matches!(event, Event::NothingSelected { round: r } if r == round);
                        prop_assert!(answers, "all-excluded without the IO layer's event");
                    } else {
                        prop_assert!(!self.closed(*round));
                        let accepted = self.accepted.get(round).map_or(0, BTreeSet::len);
                        prop_assert!(accepted < policy.min_peers() as usize);
                        if policy.straggler_policy() == StragglerPolicy::Aggregate {
                            prop_assert_eq!(accepted, 0);
                        }
                    }
                    self.skipped.insert(*round);
                }
                Decision::Published { round, .. } => {
                    prop_assert!(
                        self.aggregated.contains(round),
                        "published before aggregate"
                    );
                    prop_assert!(!self.published.contains(round), "published twice");
                    prop_assert_eq!(self.live(), Some(*round));
                    self.published.push(*round);
                }
            }
        }
        // The state agrees with the decisions.
        let members: BTreeSet<PeerId> = after.members().cloned().collect();
        prop_assert!(members.len() <= policy.capacity() as usize);
        match after.phase() {
            Phase::Waiting { next_round } => {
                prop_assert_eq!(self.live(), None);
                prop_assert!(members.len() < policy.min_peers() as usize, "stalled");
                let consumed = self.opened.last_key_value().map_or(0, |(&r, _)| r + 1);
                prop_assert_eq!(next_round, consumed);
            }
            Phase::Open { round, deadline_ms } => {
                prop_assert_eq!(self.live(), Some(round));
                prop_assert!(!self.closed(round));
                prop_assert!(deadline_ms > after.clock_ms() || deadline_ms == u64::MAX);
            }
            Phase::Finished => prop_assert!(false, "finished without a round limit"),
            Phase::Aggregating { round } => {
                prop_assert_eq!(self.live(), Some(round));
                prop_assert!(self.aggregated.contains(&round));
            }
        }
        if let Some(Decision::RoundOpened {
            members: opened, ..
        }) = decisions.last()
        {
            let opened: BTreeSet<PeerId> = opened.iter().cloned().collect();
            prop_assert_eq!(opened, members, "a round opens with every member");
        }
        let published: Vec<u64> = after.published().iter().map(|p| p.round).collect();
        prop_assert_eq!(&published, &self.published);
        prop_assert_eq!(after.model_version(), self.published.len() as u64);
        let skipped: BTreeSet<u64> = after.skipped().iter().map(|s| s.round).collect();
        prop_assert_eq!(&skipped, &self.skipped);
        for record in after.published() {
            let peers: BTreeSet<PeerId> = record
                .contributions
                .iter()
                .map(|c| c.peer.clone())
                .collect();
            prop_assert_eq!(Some(&peers), self.accepted.get(&record.round));
        }
        Ok(())
    }
}

fn restart(c: &Coordinator) -> Coordinator {
    let json = serde_json::to_vec(c).unwrap();
    serde_json::from_slice(&json).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn runs_keep_the_invariants_and_restarts_change_nothing(
        policy in policy(),
        steps in prop::collection::vec(step(), 0..=200),
    ) {
        let mut uninterrupted = Coordinator::new(policy.clone());
        let mut restarted = Coordinator::new(policy.clone());
        let mut history = History::default();
        let mut now_ms = 0;
        for (step, dt) in &steps {
            now_ms += dt;
            let Some(event) = event(&uninterrupted, step, now_ms) else {
                restarted = restart(&restarted);
                prop_assert_eq!(&restarted, &uninterrupted);
                continue;
            };
            let members_before = uninterrupted.members().count();
            let event_copy = event.clone();
            let expected = uninterrupted.apply(event.clone());
            prop_assert_eq!(&restarted.apply(event), &expected);
            history.check(&policy, members_before, &event_copy, &expected, &uninterrupted)?;
        }
        prop_assert_eq!(&restarted, &uninterrupted);
    }
}

/// The random runs do reach every outcome; otherwise the properties above prove little.
#[test]
fn random_runs_reach_every_outcome() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let mut seen = BTreeMap::new();
    for _ in 0..256 {
        let policy = policy().new_tree(&mut runner).unwrap().current();
        let steps = prop::collection::vec(step(), 200)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let mut c = Coordinator::new(policy);
        let mut now_ms = 0;
        for (step, dt) in &steps {
            now_ms += dt;
            let Some(event) = event(&c, step, now_ms) else {
                continue;
            };
            for decision in c.apply(event) {
                let kind = match decision {
                    Decision::Rejected { reason, .. } => reason.label(),
                    Decision::RoundSkipped { reason, .. } => reason.label(),
                    Decision::Refused { reason, .. } => reason.label(),
                    Decision::Admitted { .. } => "admitted",
                    Decision::PeerExpired { .. } => "expired",
                    Decision::RoundOpened { .. } => "opened",
                    Decision::Accepted { .. } => "accepted",
                    Decision::Aggregate { .. } => "aggregate",
                    Decision::DeadlineExtended { .. } => "extended",
                    Decision::Published { .. } => "published",
                    Decision::FingerprintRecorded { .. } => "fingerprint",
                    Decision::ResyncRequired { .. } => "resync",
                };
                *seen.entry(kind).or_insert(0u32) += 1;
            }
        }
    }
    let all = [
        "admitted",
        "run-full",
        "expired",
        "opened",
        "accepted",
        "aggregate",
        "extended",
        "published",
        "fingerprint",
        "resync",
        "no-submissions",
        "too-few-submissions",
        "extensions-exhausted",
        "not-a-member",
        "round-not-open",
        "wrong-round",
        "duplicate",
        "not-in-round",
        "past-deadline",
        "round-closed",
    ];
    let missing: Vec<_> = all
        .iter()
        .filter(|kind| !seen.contains_key(*kind))
        .collect();
    eprintln!("{seen:?}");
    assert!(missing.is_empty(), "never reached: {missing:?}");
}
