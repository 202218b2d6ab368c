//! Per-peer standing across rounds: the moving average of the own-vs-random indicator, the
//! sync score, probation of new keys and the published penalties, each exclusion with a typed
//! reason.

use super::config::GauntletConfig;
use crate::PeerId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// What one round says about one peer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Evaluation {
    /// A validator scored its update: `score` is the relative loss improvement on random data,
    /// `own_better` whether it improved its assigned data more than random data, and
    /// `steps_behind` the sync check (None when not measured this round).
    Scored {
        score: f64,
        own_better: bool,
        steps_behind: Option<f64>,
    },
    /// A member of the round sent no update (published penalty: score −99).
    Missing,
    /// Its update was excluded by a cheap check (copy, replay, norm): scored as missing.
    FailedCheck,
}

/// Why a peer is left out of aggregation by its standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Exclusion {
    /// `consecutive_negatives` negative evaluations in a row (published 3).
    ConsecutiveNegatives,
    /// After probation, the indicator's moving average is below `indicator_floor`.
    LowMovingAverage,
    /// The last sync check found it `sync_max_steps` or more behind (sync score 0).
    OutOfSync,
}

impl Exclusion {
    pub fn label(self) -> &'static str {
        match self {
            Self::ConsecutiveNegatives => "consecutive-negatives",
            Self::LowMovingAverage => "low-moving-average",
            Self::OutOfSync => "out-of-sync",
        }
    }
}

/// One peer's standing. A new key starts with a moving average of 0, in sync, on probation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standing {
    /// Rounds a validator scored it (probation counts these, so idling does not end it).
    pub scored_rounds: u32,
    /// Exponential moving average of the ±1 own-vs-random indicator, in [−1, 1].
    #[serde(with = "super::exact")]
    pub indicator_ema: f64,
    /// Whether each of the last `negative_window` evaluations was negative, oldest first.
    pub recent_negative: VecDeque<bool>,
    pub consecutive_negative: u32,
    /// Sync score of the last sync check, in [0, 1].
    #[serde(with = "super::exact")]
    pub sync: f64,
    /// The round score it was last ranked with (finite).
    #[serde(with = "super::exact::option")]
    pub last_score: Option<f64>,
}

impl Default for Standing {
    fn default() -> Self {
        Self {
            scored_rounds: 0,
            indicator_ema: 0.0,
            recent_negative: VecDeque::new(),
            consecutive_negative: 0,
            sync: 1.0,
            last_score: None,
        }
    }
}

impl Standing {
    /// Folds in one round's evaluation; returns the score to rank it with this round (finite),
    /// or None for a validator score that is not finite (ignored: a broken measurement must
    /// not punish the peer).
    pub fn record(&mut self, cfg: &GauntletConfig, evaluation: Evaluation) -> Option<f64> {
        let clamp = if cfg.score_clamp.is_finite() {
            cfg.score_clamp.abs()
        } else {
            99.0
        };
        let penalty = finite_or(cfg.missing_score, -99.0).clamp(-clamp, clamp);
        let (score, indicator) = match evaluation {
            Evaluation::Scored {
                score,
                own_better,
                steps_behind,
            } => {
                if !score.is_finite() {
                    return None;
                }
                if let Some(x) = steps_behind {
                    self.sync = cfg.sync_score(x);
                }
                self.scored_rounds = self.scored_rounds.saturating_add(1);
                (
                    score.clamp(-clamp, clamp),
                    if own_better { 1.0 } else { -1.0 },
                )
            }
            Evaluation::Missing | Evaluation::FailedCheck => (penalty, -1.0),
        };
        let alpha = finite_or(cfg.indicator_alpha, 0.05).clamp(0.0, 1.0);
        self.indicator_ema =
            finite_or((1.0 - alpha) * self.indicator_ema + alpha * indicator, 0.0).clamp(-1.0, 1.0);
        let negative = score < 0.0;
        self.recent_negative.push_back(negative);
        while self.recent_negative.len() > cfg.negative_window.max(1) {
            self.recent_negative.pop_front();
        }
        self.consecutive_negative = if negative {
            self.consecutive_negative.saturating_add(1)
        } else {
            0
        };
        self.last_score = Some(score);
        Some(score)
    }

    /// On probation: fewer than `probation_rounds` scored rounds.
    pub fn probationary(&self, cfg: &GauntletConfig) -> bool {
        self.scored_rounds < cfg.probation_rounds
    }

    /// Why it is left out of aggregation, if it is (the first reason in this order:
    /// consecutive negatives, out of sync, low moving average after probation).
    pub fn exclusion(&self, cfg: &GauntletConfig) -> Option<Exclusion> {
        if self.consecutive_negative >= cfg.consecutive_negatives.max(1) {
            Some(Exclusion::ConsecutiveNegatives)
        } else if self.sync <= 0.0 {
            Some(Exclusion::OutOfSync)
        } else if !self.probationary(cfg) && self.indicator_ema < cfg.indicator_floor {
            Some(Exclusion::LowMovingAverage)
        } else {
            None
        }
    }

    /// The standing's factor of the final score: max(0, moving average) × sync, × the
    /// `negative_factor` when more than half of the recent evaluations were negative. In
    /// [0, 1], finite.
    pub fn factor(&self, cfg: &GauntletConfig) -> f64 {
        let negatives = self.recent_negative.iter().filter(|n| **n).count();
        let penalty = if 2 * negatives > self.recent_negative.len() {
            finite_or(cfg.negative_factor, 0.25).clamp(0.0, 1.0)
        } else {
            1.0
        };
        finite_or(self.indicator_ema.max(0.0) * self.sync * penalty, 0.0).clamp(0.0, 1.0)
    }
}

/// Every known peer's standing.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Standings {
    peers: BTreeMap<PeerId, Standing>,
}

impl Standings {
    /// The peer's standing (a new key's when unknown).
    pub fn get(&self, peer: &PeerId) -> Standing {
        self.peers.get(peer).cloned().unwrap_or_default()
    }

    /// Folds in one round's evaluations; returns the finite scores to rank the round with.
    pub fn record(
        &mut self,
        cfg: &GauntletConfig,
        evaluations: &BTreeMap<PeerId, Evaluation>,
    ) -> BTreeMap<PeerId, f64> {
        let mut scores = BTreeMap::new();
        for (peer, e) in evaluations {
            let standing = self.peers.entry(peer.clone()).or_default();
            if let Some(s) = standing.record(cfg, *e) {
                scores.insert(peer.clone(), s);
            }
        }
        scores
    }

    pub fn iter(&self) -> impl Iterator<Item = (&PeerId, &Standing)> {
        self.peers.iter()
    }
}

fn finite_or(x: f64, fallback: f64) -> f64 {
    if x.is_finite() { x } else { fallback }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored(score: f64, own_better: bool) -> Evaluation {
        Evaluation::Scored {
            score,
            own_better,
            steps_behind: Some(0.0),
        }
    }

    #[test]
    fn three_negatives_in_a_row_exclude_and_a_positive_lifts_it() {
        let cfg = GauntletConfig::default();
        let mut s = Standing::default();
        s.record(&cfg, scored(-0.1, false));
        s.record(&cfg, Evaluation::Missing);
        assert_eq!(s.exclusion(&cfg), None);
        s.record(&cfg, Evaluation::FailedCheck);
        assert_eq!(s.exclusion(&cfg), Some(Exclusion::ConsecutiveNegatives));
        assert_eq!(s.last_score, Some(-99.0));
        s.record(&cfg, scored(0.1, true));
        assert_eq!(s.exclusion(&cfg), None);
        // 3 of the last 4 negative: more than half, score cut to a quarter.
        assert_eq!(s.factor(&cfg), 0.25 * s.indicator_ema.max(0.0));
    }

    #[test]
    fn probation_then_moving_average_floor() {
        let cfg = GauntletConfig::default();
        let mut s = Standing::default();
        for _ in 0..cfg.probation_rounds {
            // Positive scores, but never better on its own data: a lazy or off-data peer.
            assert!(s.probationary(&cfg));
            assert_eq!(s.exclusion(&cfg), None);
            s.record(&cfg, scored(0.1, false));
        }
        assert!(!s.probationary(&cfg));
        assert_eq!(s.exclusion(&cfg), Some(Exclusion::LowMovingAverage));
        // An honest peer clears the floor after its warm-up: 1 − 0.95^10 ≈ 0.40.
        let mut h = Standing::default();
        for _ in 0..cfg.probation_rounds {
            h.record(&cfg, scored(0.1, true));
        }
        assert_eq!(h.exclusion(&cfg), None);
        assert!((h.indicator_ema - (1.0 - 0.95f64.powi(10))).abs() < 1e-12);
    }

    #[test]
    fn sync_and_non_finite_scores() {
        let cfg = GauntletConfig::default();
        let mut s = Standing::default();
        assert_eq!(
            s.record(
                &cfg,
                Evaluation::Scored {
                    score: f64::NAN,
                    own_better: true,
                    steps_behind: Some(0.0)
                }
            ),
            None
        );
        assert_eq!(s, Standing::default());
        s.record(
            &cfg,
            Evaluation::Scored {
                score: 1e300,
                own_better: true,
                steps_behind: Some(5.0),
            },
        );
        assert_eq!(s.last_score, Some(99.0));
        assert_eq!(s.exclusion(&cfg), Some(Exclusion::OutOfSync));
        assert_eq!(s.factor(&cfg), 0.0);
    }
}
