//! One test per rule of the round state machine. The property tests are in
//! `operator/tests/coordinator_props.rs`.

use tributary_crds::{ParticipationSpec, StragglerPolicy};

use super::*;

const DEADLINE_MS: u64 = 100_000;
const WINDOW_MS: u64 = 10_000;
const ROUND_MS: u64 = DEADLINE_MS + WINDOW_MS;
const HEARTBEAT_MS: u64 = 30_000;

/// Unjudged rounds (scoring off): the first `max` accepted close a round, which is what most
/// rules here are about; `a_judged_round_takes_every_members_update` covers judged ones.
fn spec(min: u32, max: u32, reserve: u32, straggler: StragglerPolicy) -> ParticipationSpec {
    let mut spec = ParticipationSpec {
        min_peers: min,
        max_peers: max,
        reserve_peers: reserve,
        round_deadline_seconds: 100,
        submission_window_seconds: 10,
        heartbeat_timeout_seconds: 30,
        straggler_policy: straggler,
        ..ParticipationSpec::default()
    };
    spec.scoring.enabled = false;
    spec
}

fn coordinator(min: u32, max: u32, reserve: u32, straggler: StragglerPolicy) -> Coordinator {
    Coordinator::new(RoundPolicy::try_from(spec(min, max, reserve, straggler)).unwrap())
}

fn p(name: &str) -> PeerId {
    PeerId::from(name)
}

fn peers(names: &[&str]) -> Vec<PeerId> {
    names.iter().map(|name| p(name)).collect()
}

fn join(c: &mut Coordinator, name: &str, now_ms: u64) -> Vec<Decision> {
    c.apply(Event::Join {
        peer: p(name),
        now_ms,
    })
}

fn submit(c: &mut Coordinator, name: &str, round: u64, now_ms: u64) -> Vec<Decision> {
    c.apply(Event::Submission {
        peer: p(name),
        round,
        digest: [name.as_bytes()[0]; 32],
        now_ms,
    })
}

fn tick(c: &mut Coordinator, now_ms: u64) -> Vec<Decision> {
    c.apply(Event::Tick { now_ms })
}

fn accepted(name: &str, round: u64) -> Decision {
    Decision::Accepted {
        peer: p(name),
        round,
    }
}

fn rejected(name: &str, round: u64, reason: RejectReason) -> Vec<Decision> {
    vec![Decision::Rejected {
        peer: p(name),
        round,
        reason,
    }]
}

fn opened(round: u64, deadline_ms: u64, members: &[&str]) -> Decision {
    Decision::RoundOpened {
        round,
        deadline_ms,
        members: peers(members),
    }
}

fn aggregate(round: u64, names: &[&str]) -> Decision {
    Decision::Aggregate {
        round,
        peers: peers(names),
    }
}

/// A coordinator with `names` joined at time 0 and round 0 open.
fn running(names: &[&str], straggler: StragglerPolicy) -> Coordinator {
    let mut c = coordinator(names.len() as u32, 8, 0, straggler);
    for name in names {
        join(&mut c, name, 0);
    }
    assert_eq!(
        c.phase(),
        Phase::Open {
            round: 0,
            deadline_ms: ROUND_MS
        }
    );
    c
}

/// Every member heartbeats every 20 s from the machine's clock to `until_ms`; nothing happens.
fn keep_alive(c: &mut Coordinator, until_ms: u64) {
    let mut now_ms = c.clock_ms();
    while now_ms < until_ms {
        now_ms = (now_ms + 20_000).min(until_ms);
        let members: Vec<PeerId> = c.members().cloned().collect();
        for peer in members {
            assert!(
                c.apply(Event::Heartbeat {
                    peer,
                    now_ms,
                    fingerprint: None,
                })
                .is_empty()
            );
        }
    }
}

/// Round 1 open at time 1 with every one of `names`: round 0 opens with the first `min` of
/// them, the rest join during it, and it is published.
fn round_one(
    names: &[&str],
    min: u32,
    max: u32,
    reserve: u32,
    straggler: StragglerPolicy,
) -> Coordinator {
    let mut c = coordinator(min, max, reserve, straggler);
    for name in names {
        join(&mut c, name, 0);
    }
    for name in &names[..min as usize] {
        submit(&mut c, name, 0, 1);
    }
    let stored = Event::AggregateStored {
        round: 0,
        digest: [0; 32],
    };
    assert_eq!(c.apply(stored)[1], opened(1, 1 + ROUND_MS, names));
    c
}

#[test]
fn policy_converts_seconds_to_milliseconds() {
    let policy = RoundPolicy::try_from(spec(2, 5, 3, StragglerPolicy::Extend)).unwrap();
    assert_eq!(policy.round_deadline_ms(), DEADLINE_MS);
    assert_eq!(policy.submission_window_ms(), WINDOW_MS);
    assert_eq!(policy.round_duration_ms(), ROUND_MS);
    assert_eq!(policy.heartbeat_timeout_ms(), HEARTBEAT_MS);
    assert_eq!(policy.capacity(), 8);
    assert_eq!(policy.max_extensions(), MAX_EXTENSIONS);
    assert_eq!(policy.straggler_policy(), StragglerPolicy::Extend);
}

#[test]
fn policy_refuses_specs_that_cannot_run_rounds() {
    for bad in [
        spec(0, 5, 0, StragglerPolicy::Skip),
        spec(3, 2, 0, StragglerPolicy::Skip),
        ParticipationSpec {
            round_deadline_seconds: 0,
            ..ParticipationSpec::default()
        },
        ParticipationSpec {
            submission_window_seconds: 0,
            ..ParticipationSpec::default()
        },
        ParticipationSpec {
            heartbeat_timeout_seconds: 0,
            ..ParticipationSpec::default()
        },
    ] {
        let err = RoundPolicy::try_from(&bad).unwrap_err();
        assert_eq!(err.label(), "invalid-participation");
    }
    assert!(RoundPolicy::try_from(ParticipationSpec::default()).is_ok());
}

#[test]
fn round_opens_when_min_peers_have_joined() {
    let mut c = coordinator(2, 4, 0, StragglerPolicy::Aggregate);
    assert_eq!(
        join(&mut c, "b", 5),
        vec![Decision::Admitted { peer: p("b") }]
    );
    assert_eq!(c.phase(), Phase::Waiting { next_round: 0 });
    assert_eq!(
        join(&mut c, "a", 7),
        vec![
            Decision::Admitted { peer: p("a") },
            opened(0, 7 + ROUND_MS, &["a", "b"])
        ]
    );
}

#[test]
fn a_repeated_join_is_admitted_again_and_changes_nothing_else() {
    let mut c = coordinator(2, 4, 0, StragglerPolicy::Aggregate);
    join(&mut c, "a", 0);
    assert_eq!(
        join(&mut c, "a", 1),
        vec![Decision::Admitted { peer: p("a") }]
    );
    assert_eq!(c.members().count(), 1);
    assert_eq!(c.phase(), Phase::Waiting { next_round: 0 });
}

#[test]
fn a_full_run_refuses_joins() {
    let mut c = coordinator(1, 2, 1, StragglerPolicy::Aggregate);
    for name in ["a", "b", "c"] {
        assert_eq!(
            join(&mut c, name, 0)[0],
            Decision::Admitted { peer: p(name) }
        );
    }
    assert_eq!(
        join(&mut c, "d", 0),
        vec![Decision::Refused {
            peer: p("d"),
            reason: RefuseReason::RunFull
        }]
    );
    assert!(!c.is_member(&p("d")));
    c.apply(Event::Leave {
        peer: p("a"),
        now_ms: 1,
    });
    assert_eq!(
        join(&mut c, "d", 2),
        vec![Decision::Admitted { peer: p("d") }]
    );
}

#[test]
fn silent_peers_expire_and_heartbeats_or_submissions_keep_them() {
    let mut c = coordinator(3, 4, 0, StragglerPolicy::Aggregate);
    for name in ["a", "b", "c"] {
        join(&mut c, name, 0);
    }
    c.apply(Event::Heartbeat {
        peer: p("a"),
        now_ms: 20_000,
        fingerprint: None,
    });
    assert_eq!(submit(&mut c, "b", 0, 25_000), vec![accepted("b", 0)]);
    assert!(
        tick(&mut c, HEARTBEAT_MS).is_empty(),
        "silence of exactly the timeout is allowed"
    );
    assert_eq!(
        tick(&mut c, HEARTBEAT_MS + 1),
        vec![Decision::PeerExpired { peer: p("c") }]
    );
    assert_eq!(
        tick(&mut c, 55_001),
        vec![
            Decision::PeerExpired { peer: p("a") },
            Decision::PeerExpired { peer: p("b") },
            // Nobody is left to submit: the round closes with what it has.
            aggregate(0, &["b"]),
        ]
    );
    assert_eq!(c.members().count(), 0);
}

#[test]
fn a_heartbeat_from_a_stranger_is_ignored() {
    let mut c = coordinator(1, 4, 0, StragglerPolicy::Aggregate);
    let heartbeat = Event::Heartbeat {
        peer: p("x"),
        now_ms: 3,
        fingerprint: None,
    };
    assert!(c.apply(heartbeat).is_empty());
    assert!(!c.is_member(&p("x")));
}

#[test]
fn the_round_closes_early_when_every_round_member_submitted() {
    let mut c = running(&["c", "a", "b"], StragglerPolicy::Aggregate);
    assert_eq!(submit(&mut c, "c", 0, 10), vec![accepted("c", 0)]);
    assert_eq!(submit(&mut c, "a", 0, 11), vec![accepted("a", 0)]);
    assert_eq!(
        submit(&mut c, "b", 0, 12),
        vec![accepted("b", 0), aggregate(0, &["a", "b", "c"])]
    );
    assert_eq!(c.phase(), Phase::Aggregating { round: 0 });
}

#[test]
fn the_round_closes_early_when_the_missing_members_leave() {
    let mut c = running(&["a", "b", "c"], StragglerPolicy::Aggregate);
    submit(&mut c, "a", 0, 10);
    submit(&mut c, "b", 0, 11);
    let leave = Event::Leave {
        peer: p("c"),
        now_ms: 12,
    };
    assert_eq!(c.apply(leave), vec![aggregate(0, &["a", "b"])]);
}

#[test]
fn a_submission_stays_counted_when_its_peer_leaves() {
    let mut c = running(&["a", "b"], StragglerPolicy::Skip);
    submit(&mut c, "a", 0, 10);
    c.apply(Event::Leave {
        peer: p("a"),
        now_ms: 11,
    });
    assert_eq!(
        submit(&mut c, "b", 0, 12),
        vec![accepted("b", 0), aggregate(0, &["a", "b"])]
    );
}

#[test]
fn the_deadline_aggregates_when_min_peers_submitted() {
    let mut c = round_one(&["a", "b", "c"], 2, 8, 0, StragglerPolicy::Skip);
    submit(&mut c, "b", 1, 50);
    submit(&mut c, "a", 1, 60);
    keep_alive(&mut c, ROUND_MS);
    assert!(tick(&mut c, ROUND_MS).is_empty());
    assert_eq!(tick(&mut c, 1 + ROUND_MS), vec![aggregate(1, &["a", "b"])]);
    assert_eq!(
        submit(&mut c, "c", 1, 2 + ROUND_MS),
        rejected("c", 1, RejectReason::PastDeadline)
    );
}

#[test]
fn a_submission_at_the_deadline_is_late_even_before_the_tick() {
    let mut c = running(&["a", "b"], StragglerPolicy::Aggregate);
    submit(&mut c, "a", 0, 5);
    keep_alive(&mut c, ROUND_MS - 1);
    assert_eq!(
        submit(&mut c, "b", 0, ROUND_MS),
        vec![
            Decision::Rejected {
                peer: p("b"),
                round: 0,
                reason: RejectReason::PastDeadline
            },
            aggregate(0, &["a"]),
        ]
    );
}

/// Two members, heartbeating, one submission by the deadline: below minPeers = 2.
fn straggling(straggler: StragglerPolicy) -> Coordinator {
    let mut c = running(&["a", "b"], straggler);
    submit(&mut c, "a", 0, 10);
    keep_alive(&mut c, ROUND_MS - 1);
    c
}

#[test]
fn straggler_policy_aggregate_aggregates_whatever_arrived() {
    let mut c = straggling(StragglerPolicy::Aggregate);
    assert_eq!(tick(&mut c, ROUND_MS), vec![aggregate(0, &["a"])]);
}

#[test]
fn straggler_policy_aggregate_skips_a_round_with_no_submissions() {
    let mut c = running(&["a", "b"], StragglerPolicy::Aggregate);
    keep_alive(&mut c, ROUND_MS - 1);
    assert_eq!(
        tick(&mut c, ROUND_MS),
        vec![
            Decision::RoundSkipped {
                round: 0,
                reason: SkipReason::NoSubmissions
            },
            opened(1, 2 * ROUND_MS, &["a", "b"]),
        ]
    );
}

#[test]
fn straggler_policy_skip_consumes_the_round_number_and_keeps_the_model() {
    let mut c = straggling(StragglerPolicy::Skip);
    assert_eq!(
        tick(&mut c, ROUND_MS),
        vec![
            Decision::RoundSkipped {
                round: 0,
                reason: SkipReason::TooFewSubmissions
            },
            opened(1, 2 * ROUND_MS, &["a", "b"]),
        ]
    );
    assert_eq!(c.model_version(), 0);
    assert_eq!(
        c.skipped(),
        &[SkippedRound {
            round: 0,
            reason: SkipReason::TooFewSubmissions
        }]
    );
    assert_eq!(
        submit(&mut c, "b", 0, ROUND_MS + 1),
        rejected("b", 0, RejectReason::WrongRound)
    );
}

#[test]
fn straggler_policy_extend_extends_three_windows_then_skips() {
    let mut c = straggling(StragglerPolicy::Extend);
    let mut now = ROUND_MS;
    for _ in 0..MAX_EXTENSIONS {
        keep_alive(&mut c, now - 1);
        assert_eq!(
            tick(&mut c, now),
            vec![Decision::DeadlineExtended {
                round: 0,
                deadline_ms: now + WINDOW_MS
            }]
        );
        now += WINDOW_MS;
    }
    keep_alive(&mut c, now - 1);
    assert_eq!(
        tick(&mut c, now),
        vec![
            Decision::RoundSkipped {
                round: 0,
                reason: SkipReason::ExtensionsExhausted
            },
            opened(1, now + ROUND_MS, &["a", "b"]),
        ]
    );
}

#[test]
fn straggler_policy_extend_aggregates_once_the_straggler_arrives() {
    let mut c = straggling(StragglerPolicy::Extend);
    assert_eq!(tick(&mut c, ROUND_MS + 7).len(), 1);
    assert_eq!(
        c.phase(),
        Phase::Open {
            round: 0,
            deadline_ms: ROUND_MS + 7 + WINDOW_MS
        }
    );
    assert_eq!(
        submit(&mut c, "b", 0, ROUND_MS + 8),
        vec![accepted("b", 0), aggregate(0, &["a", "b"])]
    );
}

#[test]
fn straggler_policy_extend_skips_at_once_when_nobody_is_left_to_submit() {
    let mut c = straggling(StragglerPolicy::Extend);
    let leave = Event::Leave {
        peer: p("b"),
        now_ms: 20,
    };
    assert_eq!(
        c.apply(leave),
        vec![Decision::RoundSkipped {
            round: 0,
            reason: SkipReason::TooFewSubmissions
        }]
    );
    assert_eq!(c.phase(), Phase::Waiting { next_round: 1 });
}

#[test]
fn a_duplicate_submission_is_rejected() {
    let mut c = running(&["a", "b"], StragglerPolicy::Aggregate);
    submit(&mut c, "a", 0, 10);
    assert_eq!(
        submit(&mut c, "a", 0, 11),
        rejected("a", 0, RejectReason::Duplicate)
    );
    submit(&mut c, "b", 0, 12);
    assert_eq!(
        submit(&mut c, "b", 0, 13),
        rejected("b", 0, RejectReason::Duplicate)
    );
}

#[test]
fn submissions_for_other_rounds_or_from_strangers_are_rejected() {
    let mut c = coordinator(2, 4, 0, StragglerPolicy::Aggregate);
    join(&mut c, "a", 0);
    assert_eq!(
        submit(&mut c, "a", 0, 1),
        rejected("a", 0, RejectReason::RoundNotOpen)
    );
    join(&mut c, "b", 2);
    assert_eq!(
        submit(&mut c, "a", 1, 3),
        rejected("a", 1, RejectReason::WrongRound)
    );
    assert_eq!(
        submit(&mut c, "x", 0, 4),
        rejected("x", 0, RejectReason::NotAMember)
    );
}

#[test]
fn a_late_joiner_waits_for_the_next_round() {
    let mut c = running(&["a"], StragglerPolicy::Aggregate);
    join(&mut c, "z", 10);
    assert_eq!(
        submit(&mut c, "z", 0, 11),
        rejected("z", 0, RejectReason::NotInRound)
    );
    assert_eq!(
        submit(&mut c, "a", 0, 12),
        vec![accepted("a", 0), aggregate(0, &["a"])]
    );
    join(&mut c, "y", 13);
    let stored = Event::AggregateStored {
        round: 0,
        digest: [9; 32],
    };
    assert_eq!(
        c.apply(stored),
        vec![
            Decision::Published {
                round: 0,
                digest: [9; 32]
            },
            opened(1, 13 + ROUND_MS, &["a", "y", "z"]),
        ]
    );
    assert_eq!(submit(&mut c, "z", 1, 14), vec![accepted("z", 1)]);
}

#[test]
fn a_peer_that_left_and_rejoined_waits_for_the_next_round() {
    let mut c = running(&["a", "b"], StragglerPolicy::Aggregate);
    c.apply(Event::Leave {
        peer: p("b"),
        now_ms: 5,
    });
    join(&mut c, "b", 6);
    assert_eq!(
        submit(&mut c, "b", 0, 7),
        rejected("b", 0, RejectReason::NotInRound)
    );
}

#[test]
fn max_peers_accepted_closes_an_unjudged_round_and_reserves_are_turned_away() {
    let mut c = round_one(&["a", "b", "c", "d"], 2, 2, 2, StragglerPolicy::Aggregate);
    assert_eq!(
        join(&mut c, "e", 2),
        vec![Decision::Refused {
            peer: p("e"),
            reason: RefuseReason::RunFull
        }]
    );
    submit(&mut c, "d", 1, 3);
    assert_eq!(
        submit(&mut c, "a", 1, 4),
        vec![accepted("a", 1), aggregate(1, &["a", "d"])]
    );
    assert_eq!(
        submit(&mut c, "c", 1, 5),
        rejected("c", 1, RejectReason::RoundClosed)
    );
}

/// A judged round takes every member's update (the Gauntlet picks `maxPeers` of them by
/// rating): arriving first wins nothing.
#[test]
fn a_judged_round_takes_every_members_update() {
    let mut spec = spec(2, 2, 2, StragglerPolicy::Aggregate);
    spec.scoring.enabled = true;
    let mut c = Coordinator::new(RoundPolicy::try_from(spec).unwrap());
    for name in ["a", "b", "c", "d"] {
        join(&mut c, name, 0);
    }
    // Round 0 opened for a and b, the first two to join.
    submit(&mut c, "a", 0, 1);
    submit(&mut c, "b", 0, 1);
    c.apply(Event::AggregateStored {
        round: 0,
        digest: [0; 32],
    });
    for (name, t) in [("d", 3), ("a", 4), ("c", 5)] {
        assert_eq!(submit(&mut c, name, 1, t), vec![accepted(name, 1)]);
    }
    assert_eq!(
        submit(&mut c, "b", 1, 6),
        vec![accepted("b", 1), aggregate(1, &["a", "b", "c", "d"])]
    );
}

#[test]
fn a_stale_or_repeated_aggregate_store_is_ignored() {
    let mut c = running(&["a"], StragglerPolicy::Aggregate);
    let stored = |round| Event::AggregateStored {
        round,
        digest: [1; 32],
    };
    assert!(c.apply(stored(0)).is_empty(), "round 0 is still open");
    submit(&mut c, "a", 0, 1);
    assert!(c.apply(stored(1)).is_empty());
    assert_eq!(
        c.apply(stored(0))[0],
        Decision::Published {
            round: 0,
            digest: [1; 32]
        }
    );
    assert!(c.apply(stored(0)).is_empty());
    assert_eq!(c.model_version(), 1);
    assert_eq!(
        c.published(),
        &[PublishedRound {
            round: 0,
            digest: [1; 32],
            contributions: vec![Contribution {
                peer: p("a"),
                digest: [b'a'; 32]
            }]
        }]
    );
}

#[test]
fn after_publishing_the_run_waits_when_too_few_members_remain() {
    let mut c = running(&["a", "b"], StragglerPolicy::Aggregate);
    submit(&mut c, "a", 0, 1);
    submit(&mut c, "b", 0, 2);
    c.apply(Event::Leave {
        peer: p("b"),
        now_ms: 3,
    });
    c.apply(Event::AggregateStored {
        round: 0,
        digest: [0; 32],
    });
    assert_eq!(c.phase(), Phase::Waiting { next_round: 1 });
    assert_eq!(
        join(&mut c, "b", 4)[1],
        opened(1, 4 + ROUND_MS, &["a", "b"])
    );
}

#[test]
fn time_in_the_machine_never_runs_backwards() {
    let mut c = running(&["a", "b"], StragglerPolicy::Aggregate);
    tick(&mut c, 50);
    assert_eq!(c.clock_ms(), 50);
    tick(&mut c, 40);
    assert_eq!(c.clock_ms(), 50);
}

#[test]
fn a_restored_snapshot_decides_like_the_original() {
    let mut c = running(&["a", "b", "c"], StragglerPolicy::Extend);
    submit(&mut c, "a", 0, 1);
    join(&mut c, "d", 2);
    let json = serde_json::to_string(&c).unwrap();
    let mut restored: Coordinator = serde_json::from_str(&json).unwrap();
    assert_eq!(restored, c);
    let events = [
        Event::Tick { now_ms: 1_000 },
        Event::Submission {
            peer: p("b"),
            round: 0,
            digest: [2; 32],
            now_ms: 1_001,
        },
        Event::Leave {
            peer: p("c"),
            now_ms: 1_002,
        },
        Event::Submission {
            peer: p("d"),
            round: 1,
            digest: [3; 32],
            now_ms: 1_003,
        },
        Event::Tick {
            now_ms: 1_004 + ROUND_MS,
        },
    ];
    let mut decided = 0;
    for event in events {
        let decisions = c.apply(event.clone());
        decided += decisions.len();
        assert_eq!(restored.apply(event), decisions);
    }
    assert_eq!(restored, c);
    // Round 0 ends when c leaves, round 1 when everyone falls silent.
    let skipped: Vec<u64> = c.skipped().iter().map(|s| s.round).collect();
    assert_eq!(skipped, [0, 1]);
    assert!(decided >= 6);
}

#[test]
fn labels_are_stable() {
    let labels: Vec<_> = RejectReason::ALL
        .into_iter()
        .map(RejectReason::label)
        .collect();
    assert_eq!(
        labels,
        [
            "not-a-member",
            "round-not-open",
            "wrong-round",
            "duplicate",
            "not-in-round",
            "past-deadline",
            "round-closed"
        ]
    );
    assert_eq!(RefuseReason::RunFull.label(), "run-full");
    assert_eq!(SkipReason::NoSubmissions.label(), "no-submissions");
    assert_eq!(SkipReason::TooFewSubmissions.label(), "too-few-submissions");
    assert_eq!(
        SkipReason::ExtensionsExhausted.label(),
        "extensions-exhausted"
    );
}

#[test]
fn no_round_opens_once_the_round_limit_is_published() {
    let mut c = coordinator(1, 2, 0, StragglerPolicy::Aggregate).with_round_limit(Some(2));
    join(&mut c, "a", 0);
    for round in 0..2 {
        assert!(matches!(c.phase(), Phase::Open { round: r, .. } if r == round));
        submit(&mut c, "a", round, 1);
        let out = c.apply(Event::AggregateStored {
            round,
            digest: [1; 32],
        });
        assert!(out.contains(&Decision::Published {
            round,
            digest: [1; 32]
        }));
    }
    assert_eq!(c.phase(), Phase::Finished);
    assert!(c.finished());
    assert!(join(&mut c, "b", 2).contains(&Decision::Admitted { peer: p("b") }));
    assert_eq!(
        c.phase(),
        Phase::Finished,
        "a join after the end opens nothing"
    );
}

/// Labels (logs, metrics, the store) and wire enums are one mapping: a label is the wire
/// name's suffix in lower case with dashes, and a stored skip label reads back as its reason.
#[test]
fn labels_and_wire_reasons_map_both_ways() {
    let wire_label = |name: &str, prefix: &str| {
        name.strip_prefix(prefix)
            .map(|s| s.to_lowercase().replace('_', "-"))
    };
    for r in RejectReason::ALL {
        assert_eq!(
            wire_label(r.wire().as_str_name(), "REJECT_REASON_").as_deref(),
            Some(r.label())
        );
    }
    for r in SkipReason::ALL {
        assert_eq!(SkipReason::from_label(r.label()), Some(r));
        assert_eq!(SkipReason::from_wire(r.wire()), Some(r));
        assert_eq!(
            wire_label(r.wire().as_str_name(), "SKIP_REASON_").as_deref(),
            Some(r.label())
        );
    }
    assert_eq!(SkipReason::from_label("no-such-reason"), None);
}

fn beat(c: &mut Coordinator, name: &str, version: u64, digest: u8, now_ms: u64) -> Vec<Decision> {
    c.apply(Event::Heartbeat {
        peer: p(name),
        now_ms,
        fingerprint: Some(super::Fingerprint {
            model_version: version,
            digest: vec![digest],
        }),
    })
}

fn resync(out: &[Decision]) -> bool {
    out.iter()
        .any(|d| matches!(d, Decision::ResyncRequired { .. }))
}

#[test]
fn a_member_that_differs_from_a_quorum_of_others_must_resync() {
    let mut c = coordinator(4, 4, 0, StragglerPolicy::Aggregate);
    for name in ["a", "b", "c", "d"] {
        join(&mut c, name, 0);
    }
    assert!(!resync(&beat(&mut c, "a", 0, 1, 10)));
    // One other peer alone cannot tell which of two diverged.
    assert!(!resync(&beat(&mut c, "b", 0, 2, 10)));
    assert!(!resync(&beat(&mut c, "c", 0, 1, 10)));
    // b differs from a and c, who agree.
    assert!(resync(&beat(&mut c, "b", 0, 2, 20)));
    assert!(!resync(&beat(&mut c, "d", 0, 1, 20)));
    // A version above the published one, or a stranger, records nothing.
    assert!(beat(&mut c, "b", 5, 2, 30).is_empty());
    assert!(beat(&mut c, "zz", 0, 9, 30).is_empty());
    // The rule survives a restart from the snapshot.
    let mut restored: Coordinator =
        serde_json::from_slice(&serde_json::to_vec(&c).unwrap()).unwrap();
    assert!(resync(&beat(&mut restored, "b", 0, 2, 40)));
    assert!(!resync(&beat(&mut restored, "b", 0, 1, 40)));
}
