//! The Gauntlet's persisted state (ratings and standings) and the one step that closes a round:
//! record the round's evaluations, update the ratings, select.

use super::checks::Verdict;
use super::config::GauntletConfig;
use super::rating::Ratings;
use super::selection::{Selection, ValidatorReport, select};
use super::standing::{Evaluation, Standings};
use crate::PeerId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A validator's measurement of one candidate (the validator role computes it).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ValidatorScore {
    /// Relative loss improvement on random data (the published score).
    pub score: f64,
    /// Whether it improved the peer's assigned data more than random data.
    pub own_better: bool,
    /// Steps the peer's reported parameters are behind the validator's, when checked.
    pub steps_behind: Option<f64>,
}

impl ValidatorScore {
    /// A validator's measurement of one candidate: its `score` (our validators send the
    /// held-out improvement), and the relative loss improvements on the peer's assigned batches
    /// (`own`) and on held-out batches (`random`).
    pub fn measured(score: f64, own: f64, random: f64) -> Self {
        Self {
            score,
            own_better: own > random,
            steps_behind: None,
        }
    }
}

/// Ratings and standings of every peer of a run: what the store persists.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Ledger {
    pub ratings: Ratings,
    pub standings: Standings,
}

impl Ledger {
    /// Closes one round: candidates excluded by a cheap check and `missing` members are scored
    /// as missing; scored candidates are recorded with their validator score (a copy-marked
    /// one's positive score × its check factor); the round's scores update the ratings when at
    /// least one validator score arrived. In a degraded round (no scores), only the penalties
    /// are recorded and the ratings stay as they are: selection runs on the cheap checks and
    /// the existing ratings and standings, and says so in `Selection::degraded`.
    pub fn close_round(
        &mut self,
        cfg: &GauntletConfig,
        verdicts: &BTreeMap<PeerId, Verdict>,
        missing: &BTreeSet<PeerId>,
        scores: &BTreeMap<PeerId, ValidatorScore>,
        report: ValidatorReport,
    ) -> Selection {
        let mut evaluations = BTreeMap::new();
        for peer in missing.iter().filter(|p| !verdicts.contains_key(*p)) {
            evaluations.insert(peer.clone(), Evaluation::Missing);
        }
        let mut any_scored = false;
        for (peer, verdict) in verdicts {
            let e = if verdict.exclusion().is_some() {
                Evaluation::FailedCheck
            } else if let Some(s) = scores.get(peer) {
                any_scored = true;
                let factor = verdict.weight_factor(cfg);
                Evaluation::Scored {
                    score: if s.score > 0.0 {
                        s.score * factor
                    } else {
                        s.score
                    },
                    own_better: s.own_better,
                    steps_behind: s.steps_behind,
                }
            } else {
                continue;
            };
            evaluations.insert(peer.clone(), e);
        }
        let round_scores = self.standings.record(cfg, &evaluations);
        if any_scored {
            self.ratings.update(cfg, &round_scores);
        }
        let report = match (report, any_scored) {
            // Scores for candidates that were not accepted do not count as delivered.
            (ValidatorReport::Expected { expected, .. }, false) => ValidatorReport::Expected {
                expected,
                scored: 0,
            },
            (r, _) => r,
        };
        let scored: BTreeMap<PeerId, f64> = scores
            .iter()
            .filter(|(p, _)| verdicts.contains_key(*p))
            .map(|(p, s)| (p.clone(), s.score))
            .collect();
        select(
            cfg,
            verdicts,
            &scored,
            &self.standings,
            &self.ratings,
            report,
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::selection::Unselected;

    /// A new key on probation whose update a validator scores below 0 is not aggregated in
    /// that very round; the peers scored above 0 are.
    #[test]
    fn a_negative_score_leaves_the_update_out_of_its_own_round() {
        let cfg = GauntletConfig::default();
        let peers = ["a", "b", "c"].map(PeerId::new);
        let verdicts: BTreeMap<PeerId, Verdict> = peers
            .iter()
            .map(|p| (p.clone(), Verdict::default()))
            .collect();
        let score = |score| ValidatorScore {
            score,
            own_better: true,
            steps_behind: None,
        };
        let scores = BTreeMap::from([
            (peers[0].clone(), score(0.02)),
            (peers[1].clone(), score(0.01)),
            (peers[2].clone(), score(-0.5)),
        ]);
        let mut ledger = Ledger::default();
        let s = ledger.close_round(
            &cfg,
            &verdicts,
            &BTreeSet::new(),
            &scores,
            ValidatorReport::Expected {
                expected: 3,
                scored: 3,
            },
        );
        let chosen: Vec<&str> = s.selected.iter().map(|s| s.peer.as_str()).collect();
        assert_eq!(chosen, ["a", "b"]);
        assert_eq!(
            s.unselected.get(&peers[2]),
            Some(&Unselected::NegativeScore(-0.5))
        );
        assert!(s.unselected[&peers[2]].is_exclusion());
        assert_eq!(s.degraded, None);
    }
}
