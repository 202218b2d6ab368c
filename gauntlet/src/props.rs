//! Property tests of the Gauntlet's state machines over arbitrary sequences of rounds.
#![allow(clippy::unwrap_used)]

use super::checks::{CheckFlag, CheckReason, CopyCandidate, Verdict, copy_flags};
use super::config::GauntletConfig;
use super::ledger::{Ledger, ValidatorScore};
use super::rating::Ratings;
use super::selection::{Degraded, Selection, Unselected, ValidatorReport, select};
use super::standing::{Exclusion, Standings};
use crate::PeerId;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const PEERS: usize = 8;

fn peer(i: usize) -> PeerId {
    PeerId::new(format!("p{i}"))
}

fn score_strategy() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => -0.5f64..0.5,
        1 => any::<f64>(),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(-99.0),
    ]
}

fn reason_strategy() -> impl Strategy<Value = CheckReason> {
    prop_oneof![
        Just(CheckReason::CopyMarked),
        Just(CheckReason::CopyZeroed),
        Just(CheckReason::ReplayOwn),
        Just(CheckReason::ReplayAggregate),
        Just(CheckReason::NegatedReplay),
        Just(CheckReason::NormFloor),
        Just(CheckReason::NormCeiling),
    ]
}

/// What one peer does in one round.
#[derive(Debug, Clone)]
enum Act {
    /// Not a member this round.
    Away,
    /// A member that sent nothing.
    Missing,
    /// A candidate with its cheap-check flags and maybe a validator score.
    Candidate(Vec<CheckReason>, Option<ValidatorScore>),
}

fn validator_score() -> impl Strategy<Value = ValidatorScore> {
    (
        score_strategy(),
        any::<bool>(),
        prop::option::of(prop_oneof![0.0f64..4.0, any::<f64>()]),
    )
        .prop_map(|(score, own_better, steps_behind)| ValidatorScore {
            score,
            own_better,
            steps_behind,
        })
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        1 => Just(Act::Away),
        1 => Just(Act::Missing),
        2 => Just(Act::Candidate(vec![], None)),
        6 => (prop::collection::vec(reason_strategy(), 0..2), prop::option::of(validator_score()))
            .prop_map(|(r, s)| Act::Candidate(r, s)),
    ]
}

#[derive(Debug, Clone)]
struct Round {
    acts: Vec<Act>,
    report: ValidatorReport,
}

fn round() -> impl Strategy<Value = Round> {
    (
        prop::collection::vec(act(), PEERS),
        prop_oneof![
            Just(ValidatorReport::NoValidators),
            (0usize..PEERS, 0usize..PEERS)
                .prop_map(|(expected, scored)| ValidatorReport::Expected { expected, scored }),
        ],
    )
        .prop_map(|(acts, report)| Round { acts, report })
}

fn config() -> impl Strategy<Value = GauntletConfig> {
    // Probation of 3 is the shortest valid one (see `GauntletConfig::validate`).
    (0usize..6, 3u32..6).prop_map(|(max_peers, probation_rounds)| {
        let c = GauntletConfig {
            max_peers,
            probation_rounds,
            ..GauntletConfig::default()
        };
        assert_eq!(c.validate(), Ok(()));
        c
    })
}

type Inputs = (
    BTreeMap<PeerId, Verdict>,
    BTreeSet<PeerId>,
    BTreeMap<PeerId, ValidatorScore>,
);

/// The round's inputs; `order` permutes the insertion order (maps must not care).
fn inputs(r: &Round, order: &[usize]) -> Inputs {
    let (mut verdicts, mut missing, mut scores) =
        (BTreeMap::new(), BTreeSet::new(), BTreeMap::new());
    for &i in order {
        match &r.acts[i] {
            Act::Away => {}
            Act::Missing => {
                missing.insert(peer(i));
            }
            Act::Candidate(reasons, score) => {
                let flags = reasons
                    .iter()
                    .map(|&reason| CheckFlag { reason, value: 0.5 })
                    .collect();
                verdicts.insert(peer(i), Verdict { flags });
                if let Some(s) = score {
                    scores.insert(peer(i), *s);
                }
            }
        }
    }
    (verdicts, missing, scores)
}

fn check_selection(
    cfg: &GauntletConfig,
    ledger: &Ledger,
    verdicts: &BTreeMap<PeerId, Verdict>,
    s: &Selection,
) -> Result<(), TestCaseError> {
    prop_assert!(s.selected.len() <= cfg.max_peers);
    let mut seen = BTreeSet::new();
    for sel in &s.selected {
        prop_assert!(sel.weight.is_finite() && sel.weight > 0.0, "{sel:?}");
        prop_assert!(sel.final_score.is_finite() && sel.final_score >= 0.0);
        prop_assert!(verdicts[&sel.peer].exclusion().is_none());
        prop_assert!(ledger.standings.get(&sel.peer).exclusion(cfg).is_none());
        prop_assert!(!s.unselected.contains_key(&sel.peer));
        seen.insert(sel.peer.clone());
    }
    prop_assert!(s.selected.windows(2).all(|w| w[0].peer < w[1].peer));
    if !s.selected.is_empty() {
        let total: f32 = s.weights().iter().sum();
        prop_assert!((total - 1.0).abs() < 1e-4, "{total}");
    }
    // Every candidate is either selected or has a reason.
    seen.extend(s.unselected.keys().cloned());
    prop_assert_eq!(seen, verdicts.keys().cloned().collect::<BTreeSet<_>>());
    Ok(())
}

fn check_finite(ledger: &Ledger) -> Result<(), TestCaseError> {
    for (p, st) in ledger.standings.iter() {
        prop_assert!(st.indicator_ema.is_finite() && (-1.0..=1.0).contains(&st.indicator_ema));
        prop_assert!(st.sync.is_finite() && (0.0..=1.0).contains(&st.sync));
        prop_assert!(st.last_score.is_none_or(f64::is_finite));
        let r = ledger.ratings.rating(p);
        prop_assert!(r.rating.is_finite() && r.uncertainty.is_finite() && r.uncertainty > 0.0);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Over arbitrary rounds (non-finite scores included) the state stays finite; selection
    /// never exceeds max_peers, never picks an excluded peer, weights are finite and
    /// normalized; and the same rounds in any insertion order give the same state and
    /// selections (ties by peer id, never by arrival).
    #[test]
    fn rounds_stay_finite_bounded_and_order_free(
        cfg in config(),
        rounds in prop::collection::vec(round(), 1..30),
        perm in Just((0..PEERS).collect::<Vec<_>>()).prop_shuffle(),
    ) {
        let identity: Vec<usize> = (0..PEERS).collect();
        let (mut a, mut b) = (Ledger::default(), Ledger::default());
        for r in &rounds {
            let (v, m, s) = inputs(r, &identity);
            let sa = a.close_round(&cfg, &v, &m, &s, r.report);
            check_selection(&cfg, &a, &v, &sa)?;
            check_finite(&a)?;
            let (v2, m2, s2) = inputs(r, &perm);
            let sb = b.close_round(&cfg, &v2, &m2, &s2, r.report);
            prop_assert_eq!(&sa, &sb);
        }
        prop_assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
        // Restored from its serialized form, the ledger continues identically.
        let mut restored: Ledger = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        let (v, m, s) = inputs(&rounds[0], &identity);
        prop_assert_eq!(
            restored.close_round(&cfg, &v, &m, &s, rounds[0].report),
            a.close_round(&cfg, &v, &m, &s, rounds[0].report)
        );
    }

    /// A peer that always passes the checks and scores positively (better on its own data, in
    /// sync) is never excluded, whatever the others do.
    #[test]
    fn honest_peer_is_never_excluded(
        cfg in config(),
        rounds in prop::collection::vec(round(), 1..40),
        honest_scores in prop::collection::vec((1e-6f64..1.0, 0.0f64..2.9), 40),
    ) {
        let mut ledger = Ledger::default();
        for (r, (score, behind)) in rounds.iter().zip(&honest_scores) {
            let mut r = r.clone();
            r.acts[0] = Act::Candidate(vec![], Some(ValidatorScore {
                score: *score,
                own_better: true,
                steps_behind: Some(*behind),
            }));
            let (v, m, s) = inputs(&r, &(0..PEERS).collect::<Vec<_>>());
            let sel = ledger.close_round(&cfg, &v, &m, &s, r.report);
            let why = sel.unselected.get(&peer(0)).copied();
            prop_assert!(why.is_none_or(|u| !u.is_exclusion()), "{why:?}");
            prop_assert_eq!(ledger.standings.get(&peer(0)).exclusion(&cfg), None);
        }
    }

    /// Three negative evaluations in a row exclude a peer from the round's aggregate, with
    /// that reason, whatever came before.
    #[test]
    fn three_negatives_exclude(
        cfg in config(),
        before in prop::collection::vec(round(), 0..10),
        negatives in prop::collection::vec(prop_oneof![
            (-1.0f64..-1e-9).prop_map(|s| Act::Candidate(vec![], Some(ValidatorScore { score: s, own_better: true, steps_behind: Some(0.0) }))),
            Just(Act::Missing),
            reason_strategy().prop_filter("excluding", |r| r.excludes()).prop_map(|r| Act::Candidate(vec![r], None)),
        ], 3),
        others in round(),
    ) {
        let ids: Vec<usize> = (0..PEERS).collect();
        let mut ledger = Ledger::default();
        for r in &before {
            let (v, m, s) = inputs(r, &ids);
            ledger.close_round(&cfg, &v, &m, &s, r.report);
        }
        for n in &negatives {
            let mut r = others.clone();
            r.acts[0] = n.clone();
            let (v, m, s) = inputs(&r, &ids);
            ledger.close_round(&cfg, &v, &m, &s, r.report);
        }
        prop_assert_eq!(ledger.standings.get(&peer(0)).exclusion(&cfg), Some(Exclusion::ConsecutiveNegatives));
        // Its next clean submission, not yet scored, is not aggregated, and says why.
        let mut r = others.clone();
        r.acts[0] = Act::Candidate(vec![], None);
        let (v, m, s) = inputs(&r, &ids);
        let sel = ledger.close_round(&cfg, &v, &m, &s, r.report);
        prop_assert_eq!(
            sel.unselected.get(&peer(0)).copied(),
            Some(Unselected::Standing(Exclusion::ConsecutiveNegatives))
        );
    }

    /// Copy detection flags only later submitters, and does not depend on the input order.
    #[test]
    fn copy_flags_later_submitters_in_any_order(
        seqs in prop::collection::vec(0u64..6, 2..7),
        overlaps in prop::collection::vec(prop_oneof![0.0f64..1.0, Just(f64::NAN), Just(0.4), Just(0.5)], 49),
        perm_seed in any::<u64>(),
    ) {
        let cfg = GauntletConfig::default();
        let n = seqs.len();
        let cands: Vec<CopyCandidate> = seqs.iter().enumerate().map(|(i, &seq)| CopyCandidate { peer: peer(i), seq }).collect();
        let sym = |i: usize, j: usize| overlaps[i.min(j) * 7 + i.max(j)];
        let flags = copy_flags(&cfg, &cands, |i, j| Some(sym(i, j)));
        for (p, f) in &flags {
            let i = cands.iter().position(|c| &c.peer == p).unwrap();
            // Some earlier submitter overlaps it by the flagged amount.
            prop_assert!((0..n).any(|j| j != i
                && (cands[j].seq, &cands[j].peer) < (cands[i].seq, &cands[i].peer)
                && sym(i, j) == f.value));
            prop_assert!(f.value >= cfg.copy_mark);
            prop_assert_eq!(f.reason == CheckReason::CopyZeroed, f.value >= cfg.copy_zero);
        }
        // The earliest submitter is never flagged.
        let first = cands.iter().min_by(|a, b| (a.seq, &a.peer).cmp(&(b.seq, &b.peer))).unwrap();
        prop_assert!(!flags.contains_key(&first.peer));
        // Reversed and rotated input orders give the same flags.
        let mut order: Vec<usize> = (0..n).collect();
        order.rotate_left((perm_seed % n as u64) as usize);
        order.reverse();
        let permuted: Vec<CopyCandidate> = order.iter().map(|&i| cands[i].clone()).collect();
        let flags2 = copy_flags(&cfg, &permuted, |i, j| Some(sym(order[i], order[j])));
        prop_assert_eq!(flags, flags2);
    }
}

/// With equal scores, the smaller peer ids are selected, never the earlier arrivals.
#[test]
fn ties_go_to_the_smaller_peer_id() {
    let cfg = GauntletConfig {
        max_peers: 2,
        ..GauntletConfig::default()
    };
    let verdicts: BTreeMap<PeerId, Verdict> = ["d", "b", "c", "a"]
        .iter()
        .map(|p| (PeerId::new(*p), Verdict::default()))
        .collect();
    let s = select(
        &cfg,
        &verdicts,
        &BTreeMap::new(),
        &Standings::default(),
        &Ratings::default(),
        ValidatorReport::NoValidators,
    );
    let chosen: Vec<&str> = s.selected.iter().map(|s| s.peer.as_str()).collect();
    assert_eq!(chosen, ["a", "b"]);
    assert_eq!(s.weights(), [0.5, 0.5]);
    assert_eq!(s.unselected[&PeerId::new("c")], Unselected::OverCapacity);
    assert_eq!(s.degraded.map(Degraded::label), Some("no-validators"));
}

/// Established peers outrank probationary ones and weigh by final score; a probationary peer
/// fills a free slot at half the established mean.
#[test]
fn established_peers_first_then_probation() {
    let cfg = GauntletConfig {
        max_peers: 3,
        ..GauntletConfig::default()
    };
    let mut ledger = Ledger::default();
    let scored = |s: f64| ValidatorScore {
        score: s,
        own_better: true,
        steps_behind: Some(0.0),
    };
    let all: BTreeMap<PeerId, Verdict> = ["a", "b", "c"]
        .iter()
        .map(|p| (PeerId::new(*p), Verdict::default()))
        .collect();
    for _ in 0..cfg.probation_rounds {
        let scores = BTreeMap::from([
            (PeerId::new("a"), scored(0.3)),
            (PeerId::new("b"), scored(0.2)),
            (PeerId::new("c"), scored(0.1)),
        ]);
        let report = ValidatorReport::Expected {
            expected: 3,
            scored: 3,
        };
        let s = ledger.close_round(&cfg, &all, &BTreeSet::new(), &scores, report);
        assert_eq!(s.degraded, None);
    }
    let mut verdicts = all.clone();
    verdicts.insert(PeerId::new("new"), Verdict::default());
    // Validators absent: existing ratings decide, and the round says so. Two slots: the two
    // best established peers, weighted by final score; the new key is a reserve.
    let report = ValidatorReport::Expected {
        expected: 4,
        scored: 0,
    };
    let cfg2 = GauntletConfig {
        max_peers: 2,
        ..cfg.clone()
    };
    let s = ledger.close_round(&cfg2, &verdicts, &BTreeSet::new(), &BTreeMap::new(), report);
    assert_eq!(s.degraded, Some(Degraded::ValidatorsAbsent));
    let names: Vec<&str> = s.selected.iter().map(|s| s.peer.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    let w = s.weights();
    assert!(w[0] > w[1], "{w:?}");
    assert_eq!(s.unselected[&PeerId::new("new")], Unselected::OverCapacity);
    // Last of three in every round: its conservative rating μ − 3σ is still 0, so it is not
    // aggregated (not an exclusion) ...
    assert_eq!(ledger.ratings.value(&cfg, &PeerId::new("c")), 0.0);
    assert_eq!(s.unselected[&PeerId::new("c")], Unselected::ZeroScore);
    // ... and with a free slot the new key is aggregated, at half the established mean.
    let s = select(
        &cfg,
        &verdicts,
        &BTreeMap::new(),
        &ledger.standings,
        &ledger.ratings,
        report,
    );
    let new = s.selected.iter().find(|s| s.probationary).unwrap();
    assert_eq!(new.peer.as_str(), "new");
    let established: f32 = s
        .selected
        .iter()
        .filter(|s| !s.probationary)
        .map(|s| s.weight)
        .sum();
    assert!((new.weight - 0.5 * established / 2.0).abs() < 1e-6, "{s:?}");
}
