//! Which candidates a round aggregates, and with what weights: by final score, never by
//! arrival order.
//!
//! Eligible: no excluding cheap-check flag and no standing exclusion. Established peers (past
//! probation) come first, ranked by final score = rating value × standing factor × check
//! factor; a final score of 0 is not selected. Probationary peers fill the slots left, ranked
//! the same way. Ties go to the smaller peer id. At most `max_peers` are selected.
//!
//! Weights, in the form `Aggregator::aggregate` takes (one f32 per selected contribution,
//! finite, ≥ 0, here normalized to sum 1): an established peer's raw weight is its final
//! score; a probationary peer's is `probation_share` × the mean raw weight of the established
//! peers selected (× 1 when there are none, so a run of new keys aggregates them equally),
//! × its check factor; each raw weight is divided by their sum.

use super::checks::{CheckFlag, Verdict};
use super::config::GauntletConfig;
use super::rating::Ratings;
use super::standing::{Exclusion, Standings};
use crate::PeerId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the validators delivered this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ValidatorReport {
    /// The run has no validators.
    NoValidators,
    /// `expected` candidates were to be scored (all, or the round's sample); `scored` were by
    /// the validator deadline.
    Expected { expected: usize, scored: usize },
}

/// Why a round ran on cheap checks and existing ratings alone (fully or partly): status says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Degraded {
    NoValidators,
    /// No score arrived by the deadline.
    ValidatorsAbsent,
    /// Some scores arrived; the unscored candidates ran on existing ratings.
    ValidatorsLate {
        scored: usize,
        expected: usize,
    },
}

impl Degraded {
    pub fn label(self) -> &'static str {
        match self {
            Self::NoValidators => "no-validators",
            Self::ValidatorsAbsent => "validators-absent",
            Self::ValidatorsLate { .. } => "validators-late",
        }
    }

    /// None when every expected score arrived.
    pub fn of(report: ValidatorReport) -> Option<Self> {
        match report {
            ValidatorReport::NoValidators => Some(Self::NoValidators),
            ValidatorReport::Expected { expected: 0, .. } => None,
            ValidatorReport::Expected { scored: 0, .. } => Some(Self::ValidatorsAbsent),
            ValidatorReport::Expected { expected, scored } if scored < expected => {
                Some(Self::ValidatorsLate { scored, expected })
            }
            ValidatorReport::Expected { .. } => None,
        }
    }
}

/// A selected candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selected {
    pub peer: PeerId,
    /// Its aggregation weight (normalized, > 0, finite).
    pub weight: f32,
    /// Its final score (0 for a probationary peer whose rating is still 0).
    pub final_score: f64,
    pub probationary: bool,
}

/// Why a candidate is not aggregated this round.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Unselected {
    Check(CheckFlag),
    Standing(Exclusion),
    /// A validator scored its update clearly below 0 this round (under −`negative_margin` × the
    /// round's median score): whatever its standing, this update makes the model worse and is
    /// left out (ours; the published rule only lowers the rating).
    NegativeScore(f64),
    /// Eligible, but its final score (or weight) is 0.
    ZeroScore,
    /// Eligible, but `max_peers` better-ranked candidates were selected (a reserve).
    OverCapacity,
}

impl Unselected {
    pub fn label(self) -> &'static str {
        match self {
            Self::Check(f) => f.reason.label(),
            Self::Standing(e) => e.label(),
            Self::NegativeScore(_) => "negative-score",
            Self::ZeroScore => "zero-score",
            Self::OverCapacity => "over-capacity",
        }
    }

    /// An exclusion (a check or the standing), as opposed to not making the cut.
    pub fn is_exclusion(self) -> bool {
        matches!(
            self,
            Self::Check(_) | Self::Standing(_) | Self::NegativeScore(_)
        )
    }
}

/// A round's selection.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Selection {
    /// Sorted by peer id (the order to pass contributions and weights to the aggregator).
    pub selected: Vec<Selected>,
    pub unselected: BTreeMap<PeerId, Unselected>,
    pub degraded: Option<Degraded>,
}

impl Selection {
    /// The weights, in `selected`'s order.
    pub fn weights(&self) -> Vec<f32> {
        self.selected.iter().map(|s| s.weight).collect()
    }
}

struct Ranked {
    peer: PeerId,
    probationary: bool,
    final_score: f64,
    check_factor: f64,
}

/// Selects among `verdicts` (every accepted candidate of the round with its cheap-check
/// verdict), from the standings and ratings as they are now; `scored` holds this round's
/// validator scores (a candidate scored below 0 is left out).
pub fn select(
    cfg: &GauntletConfig,
    verdicts: &BTreeMap<PeerId, Verdict>,
    scored: &BTreeMap<PeerId, f64>,
    standings: &Standings,
    ratings: &Ratings,
    report: ValidatorReport,
) -> Selection {
    let mut out = Selection {
        degraded: Degraded::of(report),
        ..Selection::default()
    };
    // A score below 0 leaves its update out of this round only when it is clearly below: under
    // −`negative_margin` × the round's median score (of the candidates that passed the checks),
    // or below 0 when that median is not positive. A single update's measured effect is small
    // against batch noise, so an honest update now and then scores a little below 0; its
    // standing (consecutive negatives) and rating take care of repeated ones.
    let mut passed: Vec<f64> = verdicts
        .iter()
        .filter(|(_, v)| v.exclusion().is_none())
        .filter_map(|(p, _)| scored.get(p).copied())
        .filter(|s| s.is_finite())
        .collect();
    passed.sort_by(f64::total_cmp);
    // The upper median: with few candidates and one bad one, the lower median can be that one.
    let median = passed.get(passed.len() / 2).copied();
    let margin = if cfg.negative_margin.is_finite() {
        cfg.negative_margin.max(0.0)
    } else {
        0.0
    };
    let clearly_negative = |s: f64| match median {
        Some(m) if m > 0.0 => s < -margin * m,
        _ => s < 0.0,
    };
    let mut ranked = Vec::new();
    for (peer, verdict) in verdicts {
        if let Some(flag) = verdict.exclusion() {
            out.unselected.insert(peer.clone(), Unselected::Check(flag));
            continue;
        }
        if let Some(score) = scored.get(peer).copied().filter(|s| clearly_negative(*s)) {
            out.unselected
                .insert(peer.clone(), Unselected::NegativeScore(score));
            continue;
        }
        let standing = standings.get(peer);
        if let Some(e) = standing.exclusion(cfg) {
            out.unselected.insert(peer.clone(), Unselected::Standing(e));
            continue;
        }
        let check_factor = verdict.weight_factor(cfg);
        let final_score =
            finite_or_zero(ratings.value(cfg, peer) * standing.factor(cfg) * check_factor);
        let probationary = standing.probationary(cfg);
        if (!probationary && final_score <= 0.0)
            || (probationary && !(cfg.probation_share > 0.0 && check_factor > 0.0))
        {
            out.unselected.insert(peer.clone(), Unselected::ZeroScore);
            continue;
        }
        ranked.push(Ranked {
            peer: peer.clone(),
            probationary,
            final_score,
            check_factor,
        });
    }
    ranked.sort_by(|a, b| {
        a.probationary
            .cmp(&b.probationary)
            .then(b.final_score.total_cmp(&a.final_score))
            .then(a.peer.cmp(&b.peer))
    });
    let cut = ranked.len().min(cfg.max_peers);
    for r in ranked.drain(cut..) {
        out.unselected.insert(r.peer, Unselected::OverCapacity);
    }
    let established: Vec<f64> = ranked
        .iter()
        .filter(|r| !r.probationary)
        .map(|r| r.final_score)
        .collect();
    let mean = if established.is_empty() {
        1.0
    } else {
        established.iter().sum::<f64>() / established.len() as f64
    };
    let share = if cfg.probation_share.is_finite() {
        cfg.probation_share.max(0.0)
    } else {
        0.0
    };
    let raw: Vec<f64> = ranked
        .iter()
        .map(|r| {
            finite_or_zero(if r.probationary {
                share * mean * r.check_factor
            } else {
                r.final_score
            })
        })
        .collect();
    let total: f64 = raw.iter().sum();
    for (r, w) in ranked.into_iter().zip(raw) {
        let weight = if total > 0.0 && total.is_finite() {
            (w / total) as f32
        } else {
            0.0
        };
        if weight > 0.0 && weight.is_finite() {
            out.selected.push(Selected {
                peer: r.peer,
                weight,
                final_score: r.final_score,
                probationary: r.probationary,
            });
        } else {
            out.unselected.insert(r.peer, Unselected::ZeroScore);
        }
    }
    out.selected.sort_by(|a, b| a.peer.cmp(&b.peer));
    out
}

fn finite_or_zero(x: f64) -> f64 {
    if x.is_finite() { x.max(0.0) } else { 0.0 }
}
