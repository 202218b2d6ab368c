//! Every Gauntlet threshold in one place, with the published value or our defended default.

use serde::{Deserialize, Serialize};
use tributary_crds::ParticipationSpec;

/// Thresholds of the cheap checks, the ratings, the standing and the selection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GauntletConfig {
    /// Copy detection: size-weighted top-k position overlap at which the later submitter of a
    /// pair is marked (published 0.40) ...
    pub copy_mark: f64,
    /// ... and the factor its weight is multiplied by (published 0.5) ...
    pub copy_mark_factor: f64,
    /// ... and the overlap from which it is zeroed (published 0.50).
    pub copy_zero: f64,
    /// Replay: share of an update's (sampled) positions that an earlier update of the same
    /// peer, or an earlier aggregate, carries with the same sign. A literal or rescaled replay
    /// scores ≈ 1; honest error feedback rarely reselects what it just sent. Ours: 0.8.
    pub replay_agreeing: f64,
    /// Negated replay: the same with opposite signs (sign-flipped aggregate). Ours: 0.8.
    pub replay_opposing: f64,
    /// Norm floor: an update whose norm is below this × the round's median is a free rider.
    /// Ours: 0.1 (an order of magnitude; honest peers run the same lr and H).
    pub norm_floor: f64,
    /// Norm ceiling: above this × the median it is rejected (the ×100 scaled attack; median
    /// clipping would bound it anyway, but it is flagged and counted). Ours: 10.
    pub norm_ceiling: f64,
    /// The norm checks need this many candidates for the median to mean something.
    pub norm_min_candidates: usize,
    /// A validator score under −this × the round's median score leaves its update out of the
    /// round (ours: 0.5; a sign-flipped honest update scores about −1 × the median, honest
    /// updates on the devnet now and then a little below 0).
    pub negative_margin: f64,
    /// Weng–Lin skill-class width β (published 7).
    pub rating_beta: f64,
    /// Dynamics τ: added to σ before every update so ratings keep moving (published 0.1).
    pub rating_tau: f64,
    /// A rating's value is max(0, μ − z·σ) (OpenSkill's ordinal, z = 3: a new key is worth 0).
    pub rating_z: f64,
    /// The score a member gets for a missing update, or an update a cheap check excluded
    /// (published −99 for missing).
    pub missing_score: f64,
    /// Validator scores are clamped to ±this before they are used.
    pub score_clamp: f64,
    /// Moving-average rate of the own-vs-random indicator (published 0.05).
    pub indicator_alpha: f64,
    /// After probation, a moving average below this excludes the peer (published 0.1).
    pub indicator_floor: f64,
    /// Scored rounds a new key spends on probation (published warm-up: 10).
    pub probation_rounds: u32,
    /// A probationary peer's weight: this × the mean weight of the established peers selected
    /// (× 1 when none is established). Ours: 0.5.
    pub probation_share: f64,
    /// Window of recent evaluations (published 8) ...
    pub negative_window: usize,
    /// ... in which more than half negative multiplies the score by this (published 0.25).
    pub negative_factor: f64,
    /// Consecutive negative evaluations that exclude the peer (published 3).
    pub consecutive_negatives: u32,
    /// Steps behind at which the sync score reaches 0 (published 3), and its exponent (2.5).
    pub sync_max_steps: f64,
    pub sync_exponent: f64,
    /// Peers aggregated per round (published 20; the run's `maxPeers`).
    pub max_peers: usize,
}

impl Default for GauntletConfig {
    fn default() -> Self {
        Self {
            copy_mark: 0.40,
            copy_mark_factor: 0.5,
            copy_zero: 0.50,
            replay_agreeing: 0.8,
            replay_opposing: 0.8,
            norm_floor: 0.1,
            norm_ceiling: 10.0,
            norm_min_candidates: 3,
            negative_margin: 0.5,
            rating_beta: 7.0,
            rating_tau: 0.1,
            rating_z: 3.0,
            missing_score: -99.0,
            score_clamp: 99.0,
            indicator_alpha: 0.05,
            indicator_floor: 0.1,
            probation_rounds: 10,
            probation_share: 0.5,
            negative_window: 8,
            negative_factor: 0.25,
            consecutive_negatives: 3,
            sync_max_steps: 3.0,
            sync_exponent: 2.5,
            max_peers: 20,
        }
    }
}

impl GauntletConfig {
    /// The run's settings (`participation.maxPeers` and `participation.scoring`); the rest
    /// keep their defaults. The zeroing overlap stays 0.5, or the marking one if higher.
    pub fn from_participation(p: &ParticipationSpec) -> Self {
        let d = Self::default();
        let s = &p.scoring;
        Self {
            indicator_alpha: s.ema_alpha,
            probation_rounds: s.warmup_rounds,
            indicator_floor: s.zero_below,
            copy_mark: s.copy_overlap_threshold,
            copy_zero: d.copy_zero.max(s.copy_overlap_threshold),
            max_peers: p.max_peers as usize,
            ..d
        }
    }
}

/// A setting out of its range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("gauntlet setting {field}: {why}")]
pub struct ConfigError {
    pub field: &'static str,
    pub why: &'static str,
}

impl GauntletConfig {
    /// Every setting finite and in range, and the warm-up long enough for a peer that is
    /// always better on its own data to clear the moving-average floor when probation ends
    /// (1 − (1 − α)^probation ≥ floor; published: 1 − 0.95^10 ≈ 0.40 ≥ 0.1).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field, why| Err(ConfigError { field, why });
        let unit = |x: f64| (0.0..=1.0).contains(&x);
        let f = [
            ("copyMark", self.copy_mark),
            ("copyMarkFactor", self.copy_mark_factor),
            ("copyZero", self.copy_zero),
            ("replayAgreeing", self.replay_agreeing),
            ("replayOpposing", self.replay_opposing),
            ("indicatorAlpha", self.indicator_alpha),
            ("negativeFactor", self.negative_factor),
        ];
        if let Some((field, _)) = f.iter().find(|(_, x)| !unit(*x)) {
            return err(field, "must lie in [0, 1]");
        }
        if !(-1.0..=1.0).contains(&self.indicator_floor) {
            return err("indicatorFloor", "must lie in [-1, 1]");
        }
        if self.copy_mark > self.copy_zero {
            return err("copyMark", "must not exceed copyZero");
        }
        if self.replay_agreeing <= 0.0 || self.replay_opposing <= 0.0 {
            return err("replayAgreeing", "replay thresholds must be above 0");
        }
        if !(self.norm_floor.is_finite() && self.norm_ceiling.is_finite())
            || self.norm_floor < 0.0
            || self.norm_floor >= 1.0
            || self.norm_ceiling <= 1.0
        {
            return err("normFloor", "need 0 ≤ floor < 1 < ceiling, finite");
        }
        if !(self.negative_margin.is_finite() && self.negative_margin >= 0.0) {
            return err("negativeMargin", "must be finite and ≥ 0");
        }
        if !(self.rating_beta.is_finite() && self.rating_beta > 0.0) {
            return err("ratingBeta", "must be finite and above 0");
        }
        if !(self.rating_tau.is_finite() && self.rating_tau >= 0.0) {
            return err("ratingTau", "must be finite and ≥ 0");
        }
        if !(self.rating_z.is_finite() && self.rating_z >= 0.0) {
            return err("ratingZ", "must be finite and ≥ 0");
        }
        if !(self.missing_score.is_finite() && self.missing_score < 0.0) {
            return err("missingScore", "must be finite and negative");
        }
        if !(self.score_clamp.is_finite() && self.score_clamp >= self.missing_score.abs()) {
            return err("scoreClamp", "must be finite and ≥ |missingScore|");
        }
        if !(self.probation_share.is_finite() && self.probation_share >= 0.0) {
            return err("probationShare", "must be finite and ≥ 0");
        }
        if self.indicator_alpha <= 0.0 {
            return err("indicatorAlpha", "must be above 0");
        }
        let reached = 1.0 - (1.0 - self.indicator_alpha).powf(f64::from(self.probation_rounds));
        if reached < self.indicator_floor {
            return err(
                "probationRounds",
                "too short for an honest peer's moving average to reach the floor",
            );
        }
        if self.negative_window == 0 || self.consecutive_negatives == 0 {
            return err("negativeWindow", "windows must be at least 1");
        }
        let positive = |x: f64| x.is_finite() && x > 0.0;
        if !(positive(self.sync_max_steps) && positive(self.sync_exponent)) {
            return err(
                "syncMaxSteps",
                "sync steps and exponent must be finite and above 0",
            );
        }
        Ok(())
    }

    /// The published sync score: max(0, (1 − min(x, max)/max))^exponent for a peer `x` steps
    /// behind; a negative x counts as in sync, a non-finite one as out of sync.
    pub fn sync_score(&self, steps_behind: f64) -> f64 {
        if !steps_behind.is_finite() || self.sync_max_steps <= 0.0 {
            return 0.0;
        }
        let x = steps_behind.clamp(0.0, self.sync_max_steps);
        let s = (1.0 - x / self.sync_max_steps)
            .max(0.0)
            .powf(self.sync_exponent);
        if s.is_finite() {
            s.clamp(0.0, 1.0)
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults_are_valid_and_short_probation_is_not() {
        let c = GauntletConfig::default();
        assert_eq!(c.validate(), Ok(()));
        let short = GauntletConfig {
            probation_rounds: 2,
            ..c.clone()
        };
        assert_eq!(short.validate().unwrap_err().field, "probationRounds");
        let three = GauntletConfig {
            probation_rounds: 3,
            ..c.clone()
        };
        assert_eq!(three.validate(), Ok(()));
        let nan = GauntletConfig {
            copy_mark: f64::NAN,
            ..c.clone()
        };
        assert_eq!(nan.validate().unwrap_err().field, "copyMark");
        let inverted = GauntletConfig {
            copy_mark: 0.6,
            ..c
        };
        assert_eq!(inverted.validate().unwrap_err().field, "copyMark");
    }

    #[test]
    fn the_run_spec_sets_its_fields() {
        let mut p = ParticipationSpec::default();
        assert_eq!(
            GauntletConfig::from_participation(&p),
            GauntletConfig::default()
        );
        p.max_peers = 7;
        p.scoring.ema_alpha = 0.1;
        p.scoring.warmup_rounds = 4;
        p.scoring.zero_below = 0.2;
        p.scoring.copy_overlap_threshold = 0.6;
        let c = GauntletConfig::from_participation(&p);
        assert_eq!(
            (
                c.max_peers,
                c.indicator_alpha,
                c.probation_rounds,
                c.indicator_floor
            ),
            (7, 0.1, 4, 0.2)
        );
        assert_eq!((c.copy_mark, c.copy_zero), (0.6, 0.6));
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn sync_score_is_the_published_curve() {
        let c = GauntletConfig::default();
        assert_eq!(c.sync_score(0.0), 1.0);
        assert_eq!(c.sync_score(3.0), 0.0);
        assert_eq!(c.sync_score(7.0), 0.0);
        assert_eq!(c.sync_score(-1.0), 1.0);
        assert_eq!(c.sync_score(f64::NAN), 0.0);
        let one = (2.0f64 / 3.0).powf(2.5);
        assert!((c.sync_score(1.0) - one).abs() < 1e-12);
    }
}
