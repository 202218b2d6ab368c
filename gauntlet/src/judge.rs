//! One round of the Gauntlet (docs/security.md): a closed round's accepted updates and its
//! validators' scores in; the selection and weights of its aggregate out, with the state the
//! next rounds need (ratings, standings, sketches of recent updates and aggregates). The
//! coordinator persists the state in its store; the simulator keeps it in memory: both judge
//! rounds with this one function.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tributary_codec::{Contribution, SparseAggregate, similarity};

use crate::PeerId;
use crate::checks::{
    CopyCandidate, NormCandidate, ReplayCandidate, ReplayHistory, Verdict, copy_flags, norm_flags,
    replay_flags, verdicts,
};
use crate::config::GauntletConfig;
use crate::ledger::{Ledger, ValidatorScore};
use crate::selection::{Selection, ValidatorReport};
use crate::sketch::{SketchKey, SketchSpec, UpdateSketch};

/// Rounds back that a replay of a peer's own update, or of an aggregate, is looked for.
pub const REPLAY_ROUNDS: usize = 4;
/// Sampled positions per update sketch (8 bytes each).
const SKETCH_ENTRIES: u64 = 512;

/// What the Gauntlet carries from round to round; the store keeps it with the aggregates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GauntletState {
    /// The run's secret sketch key (never published: peers cannot tell which positions are
    /// sampled).
    key: SketchKey,
    pub ledger: Ledger,
    /// Each peer's last [`REPLAY_ROUNDS`] update sketches, oldest first.
    own: BTreeMap<PeerId, VecDeque<UpdateSketch>>,
    /// The last [`REPLAY_ROUNDS`] aggregates' sketches, oldest first.
    aggregates: VecDeque<UpdateSketch>,
    /// How sketches are taken; set from the first update (every update of a run has the same
    /// layout).
    spec: Option<SketchSpec>,
}

/// One accepted update of the closed round.
pub struct Candidate {
    pub peer: PeerId,
    pub update: Contribution,
    /// When it was accepted (ms): copy detection flags the later of two submitters.
    pub accepted_ms: u64,
}

/// What the Gauntlet made of a round.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub selection: Selection,
    /// The validators' combined score of each scored candidate.
    pub scores: BTreeMap<PeerId, ValidatorScore>,
}

impl GauntletState {
    /// A run's first state; `key` must be secret and random (peers that know it could
    /// choose positions the replay sketches do not sample).
    pub fn new(key: SketchKey) -> Self {
        Self {
            key,
            ledger: Ledger::default(),
            own: BTreeMap::new(),
            aggregates: VecDeque::new(),
            spec: None,
        }
    }

    /// Judges a closed round: the cheap checks over `candidates`, the validators' `scores`
    /// (each candidate's scores from every validator that delivered), penalties for `members`
    /// that sent nothing, the ratings update and the selection. Remembers the candidates'
    /// sketches for later replay checks.
    pub fn judge(
        &mut self,
        cfg: &GauntletConfig,
        candidates: &[Candidate],
        members: &[PeerId],
        scores: &BTreeMap<PeerId, Vec<ValidatorScore>>,
        report: ValidatorReport,
    ) -> Judgement {
        if self.spec.is_none() {
            self.spec = candidates
                .first()
                .map(|c| SketchSpec::for_layout(self.key, &c.update, SKETCH_ENTRIES));
        }
        let sketches: Vec<UpdateSketch> = match &self.spec {
            Some(spec) => candidates.iter().map(|c| spec.sketch(&c.update)).collect(),
            None => Vec::new(),
        };
        let verdicts = self.cheap_checks(cfg, candidates, &sketches);
        let submitted: BTreeSet<&PeerId> = candidates.iter().map(|c| &c.peer).collect();
        let missing: BTreeSet<PeerId> = members
            .iter()
            .filter(|m| !submitted.contains(m))
            .cloned()
            .collect();
        let combined: BTreeMap<PeerId, ValidatorScore> = scores
            .iter()
            .filter(|(p, _)| submitted.contains(p))
            .filter_map(|(p, s)| combine(s).map(|s| (p.clone(), s)))
            .collect();
        let selection = self
            .ledger
            .close_round(cfg, &verdicts, &missing, &combined, report);
        // Only updates that were applied count as earlier updates: one that was left out goes
        // back into its peer's error feedback, so the peer's next update legitimately repeats
        // much of it.
        for (c, sketch) in candidates.iter().zip(sketches) {
            if !selection.selected.iter().any(|s| s.peer == c.peer) {
                continue;
            }
            let own = self.own.entry(c.peer.clone()).or_default();
            own.push_back(sketch);
            while own.len() > REPLAY_ROUNDS {
                own.pop_front();
            }
        }
        Judgement {
            selection,
            scores: combined,
        }
    }

    /// Remembers a published aggregate for the replay checks of later rounds.
    pub fn record_aggregate(&mut self, aggregate: &SparseAggregate) {
        if let Some(spec) = &self.spec {
            self.aggregates.push_back(spec.sketch_aggregate(aggregate));
            while self.aggregates.len() > REPLAY_ROUNDS {
                self.aggregates.pop_front();
            }
        }
    }

    fn cheap_checks(
        &self,
        cfg: &GauntletConfig,
        candidates: &[Candidate],
        sketches: &[UpdateSketch],
    ) -> BTreeMap<PeerId, Verdict> {
        let norms: Vec<NormCandidate> = candidates
            .iter()
            .map(|c| NormCandidate {
                peer: c.peer.clone(),
                norm: c.update.norm(),
            })
            .collect();
        let order: Vec<CopyCandidate> = candidates
            .iter()
            .map(|c| CopyCandidate {
                peer: c.peer.clone(),
                seq: c.accepted_ms,
            })
            .collect();
        let overlap = |i: usize, j: usize| {
            let (a, b) = (candidates.get(i)?, candidates.get(j)?);
            similarity(&a.update, &b.update).ok().map(|s| s.overlap)
        };
        let replay: Vec<ReplayCandidate<'_>> = candidates
            .iter()
            .zip(sketches)
            .map(|(c, sketch)| ReplayCandidate {
                peer: c.peer.clone(),
                sketch,
            })
            .collect();
        let history = ReplayHistory {
            own: self
                .own
                .iter()
                .map(|(p, s)| (p.clone(), s.iter().collect()))
                .collect(),
            aggregates: self.aggregates.iter().collect(),
        };
        let flags = [
            norm_flags(cfg, &norms),
            copy_flags(cfg, &order, overlap),
            replay_flags(cfg, &replay, &history),
        ];
        let sets: Vec<_> = flags.iter().collect();
        verdicts(candidates.iter().map(|c| &c.peer), &sets)
    }
}

/// The candidates one validator evaluates in `round`: all of them when `per_validator` is 0 or
/// covers them, else the `per_validator` whose keyed hash (validator key, round, peer) is
/// smallest: deterministic, different for each validator and round, and unknown to peers in
/// advance only as far as the validator's key is (sampling hides nothing from a peer that
/// cannot predict which round it is checked in, since every round is sampled afresh).
pub fn share(
    round: u64,
    validator_key: &[u8],
    candidates: &[PeerId],
    per_validator: u32,
) -> Vec<PeerId> {
    let n = per_validator as usize;
    if n == 0 || n >= candidates.len() {
        return candidates.to_vec();
    }
    let mut keyed: Vec<([u8; 32], &PeerId)> = candidates
        .iter()
        .map(|p| {
            let mut bytes = validator_key.to_vec();
            bytes.extend_from_slice(&round.to_le_bytes());
            bytes.extend_from_slice(p.as_str().as_bytes());
            (<[u8; 32]>::from(Sha256::digest(&bytes)), p)
        })
        .collect();
    keyed.sort();
    let mut out: Vec<PeerId> = keyed.into_iter().take(n).map(|(_, p)| p.clone()).collect();
    out.sort();
    out
}

/// Several validators' scores of one candidate as one: the median score (robust to one
/// validator's bad measurement), better on its own data when the median says so.
fn combine(scores: &[ValidatorScore]) -> Option<ValidatorScore> {
    let median = |mut v: Vec<f64>| -> Option<f64> {
        v.retain(|x| x.is_finite());
        v.sort_by(f64::total_cmp);
        let n = v.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => v.get(n / 2).copied(),
            _ => Some((v.get(n / 2 - 1)? + v.get(n / 2)?) / 2.0),
        }
    };
    let score = median(scores.iter().map(|s| s.score).collect())?;
    let better = scores.iter().filter(|s| s.own_better).count();
    Some(ValidatorScore {
        score,
        own_better: 2 * better > scores.len(),
        steps_behind: median(scores.iter().filter_map(|s| s.steps_behind).collect()),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::checks::CheckReason;
    use crate::selection::Unselected;
    use tributary_codec::{
        AggregationRule, Aggregator, CodecParams, ErrorFeedback, TensorShape, compress_contribution,
    };

    fn update(seed: u64, scale: f32) -> Contribution {
        let shape = [TensorShape::new(&[64, 64]).unwrap()];
        let mut z = seed;
        let x: Vec<f32> = (0..4096)
            .map(|_| {
                z = z
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                scale * ((z >> 33) as f32 / (1u64 << 31) as f32 - 0.5)
            })
            .collect();
        let mut ef = [ErrorFeedback::zeros(4096)];
        compress_contribution(&mut ef, &[&x], &shape, &CodecParams::default()).unwrap()
    }

    fn candidate(peer: &str, update: Contribution, accepted_ms: u64) -> Candidate {
        Candidate {
            peer: PeerId::new(peer),
            update,
            accepted_ms,
        }
    }

    fn excluded(j: &Judgement, peer: &str) -> Option<&'static str> {
        j.selection
            .unselected
            .get(&PeerId::new(peer))
            .filter(|u| u.is_exclusion())
            .map(|u| u.label())
    }

    /// Without validators: a ×100 update, a copy and a replay of an own earlier update are
    /// excluded by the cheap checks; the honest ones are aggregated at equal weight.
    #[test]
    fn cheap_checks_exclude_scaled_copied_and_replayed_updates() {
        let cfg = GauntletConfig::default();
        let mut state = GauntletState::new(SketchKey { k0: 1, k1: 2 });
        let members: Vec<PeerId> = ["a", "b", "c", "d", "e"].map(PeerId::new).to_vec();
        let first = [
            candidate("a", update(1, 1.0), 1),
            candidate("b", update(2, 1.0), 2),
            candidate("c", update(3, 1.0), 3),
            candidate("d", update(4, 1.0), 4),
        ];
        let j = state.judge(
            &cfg,
            &first,
            &members,
            &BTreeMap::new(),
            ValidatorReport::NoValidators,
        );
        assert_eq!(j.selection.selected.len(), 4, "{:?}", j.selection);
        // "e" sent nothing: a penalty, not a selection entry.
        assert_eq!(
            state.ledger.standings.get(&PeerId::new("e")).last_score,
            Some(cfg.missing_score)
        );
        let second = [
            candidate("a", update(11, 1.0), 1),
            candidate("b", update(12, 100.0), 2),
            candidate("c", update(11, 1.0), 3),
            candidate("d", update(4, 1.0), 4),
            candidate("e", update(15, 1.0), 5),
        ];
        let j = state.judge(
            &cfg,
            &second,
            &members,
            &BTreeMap::new(),
            ValidatorReport::NoValidators,
        );
        assert_eq!(
            excluded(&j, "b"),
            Some(CheckReason::NormCeiling.label()),
            "{j:?}"
        );
        assert_eq!(excluded(&j, "c"), Some(CheckReason::CopyZeroed.label()));
        assert_eq!(excluded(&j, "d"), Some(CheckReason::ReplayOwn.label()));
        assert_eq!(excluded(&j, "a"), None);
        assert_eq!(excluded(&j, "e"), None);
        let chosen: Vec<&str> = j
            .selection
            .selected
            .iter()
            .map(|s| s.peer.as_str())
            .collect();
        assert_eq!(chosen, ["a", "e"]);
        assert_eq!(j.selection.weights(), [0.5, 0.5]);
    }

    /// The negation of the last aggregate is caught as a negated replay.
    #[test]
    fn a_negated_aggregate_is_a_negated_replay() {
        let cfg = GauntletConfig::default();
        let mut state = GauntletState::new(SketchKey { k0: 3, k1: 4 });
        let members: Vec<PeerId> = ["a", "b", "c"].map(PeerId::new).to_vec();
        let ups = [update(1, 1.0), update(2, 1.0), update(3, 1.0)];
        let round: Vec<Candidate> = ups
            .iter()
            .enumerate()
            .map(|(i, u)| candidate(members[i].as_str(), u.clone(), i as u64))
            .collect();
        state.judge(
            &cfg,
            &round,
            &members,
            &BTreeMap::new(),
            ValidatorReport::NoValidators,
        );
        let aggregate = Aggregator::new(AggregationRule::Mean)
            .aggregate_sparse(&ups.iter().collect::<Vec<_>>(), None)
            .unwrap();
        state.record_aggregate(&aggregate);
        // Compress −aggregate like a peer would.
        let dense: Vec<f32> = aggregate.tensors[0].to_dense().iter().map(|v| -v).collect();
        let mut ef = [ErrorFeedback::zeros(4096)];
        let shape = [TensorShape::new(&[64, 64]).unwrap()];
        let flipped =
            compress_contribution(&mut ef, &[&dense], &shape, &CodecParams::default()).unwrap();
        let next = [
            candidate("a", update(21, 1.0), 1),
            candidate("b", update(22, 1.0), 2),
            candidate("c", flipped, 3),
        ];
        let j = state.judge(
            &cfg,
            &next,
            &members,
            &BTreeMap::new(),
            ValidatorReport::NoValidators,
        );
        assert_eq!(
            excluded(&j, "c"),
            Some(CheckReason::NegatedReplay.label()),
            "{j:?}"
        );
        assert_eq!(j.selection.selected.len(), 2);
    }

    /// Validators' scores combine by median; a candidate scored below 0 is left out.
    #[test]
    fn validator_scores_combine_and_a_negative_one_excludes() {
        let cfg = GauntletConfig::default();
        let mut state = GauntletState::new(SketchKey { k0: 5, k1: 6 });
        let members: Vec<PeerId> = ["a", "b", "c"].map(PeerId::new).to_vec();
        let round: Vec<Candidate> = (0..3)
            .map(|i| candidate(members[i].as_str(), update(30 + i as u64, 1.0), i as u64))
            .collect();
        let s = |score, own_better| ValidatorScore {
            score,
            own_better,
            steps_behind: None,
        };
        let scores = BTreeMap::from([
            (
                members[0].clone(),
                vec![s(0.02, true), s(0.03, true), s(-1.0, false)],
            ),
            (members[1].clone(), vec![s(0.01, true)]),
            (members[2].clone(), vec![s(-0.2, false), s(-0.1, true)]),
        ]);
        let j = state.judge(
            &cfg,
            &round,
            &members,
            &scores,
            ValidatorReport::Expected {
                expected: 3,
                scored: 3,
            },
        );
        assert_eq!(j.scores[&members[0]].score, 0.02);
        assert!(j.scores[&members[0]].own_better);
        assert!((j.scores[&members[2]].score + 0.15).abs() < 1e-12);
        assert!(!j.scores[&members[2]].own_better, "a tie is not a majority");
        assert!(matches!(
            j.selection.unselected.get(&members[2]),
            Some(Unselected::NegativeScore(_))
        ));
        assert_eq!(j.selection.selected.len(), 2);
        assert_eq!(j.selection.degraded, None);
    }

    #[test]
    fn shares_are_deterministic_sized_and_differ_between_validators() {
        let peers: Vec<PeerId> = (0..20).map(|i| PeerId::new(format!("p{i:02}"))).collect();
        assert_eq!(share(3, &[1; 32], &peers, 0), peers);
        assert_eq!(share(3, &[1; 32], &peers, 25), peers);
        let a = share(3, &[1; 32], &peers, 5);
        assert_eq!(a.len(), 5);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(a, share(3, &[1; 32], &peers, 5));
        assert_ne!(a, share(3, &[2; 32], &peers, 5));
        assert_ne!(a, share(4, &[1; 32], &peers, 5));
    }

    #[test]
    fn state_round_trips_through_json() {
        let cfg = GauntletConfig::default();
        let mut state = GauntletState::new(SketchKey { k0: 7, k1: 8 });
        let members: Vec<PeerId> = ["a", "b"].map(PeerId::new).to_vec();
        let round = [
            candidate("a", update(1, 1.0), 1),
            candidate("b", update(2, 1.0), 2),
        ];
        state.judge(
            &cfg,
            &round,
            &members,
            &BTreeMap::new(),
            ValidatorReport::NoValidators,
        );
        let json = serde_json::to_vec(&state).unwrap();
        let back: GauntletState = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, state);
    }
}
