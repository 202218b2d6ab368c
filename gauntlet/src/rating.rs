//! Per-peer ratings across rounds: Weng–Lin (the Bayesian model behind OpenSkill) from the
//! `skillratings` crate, one "game" per round in which every evaluated peer is ranked by its
//! score.
//!
//! The published run used OpenSkill's Plackett–Luce model (β 7, τ 0.1). `skillratings`
//! implements Weng–Lin's Bradley–Terry full-pairing update (`weng_lin_multi_team`), the sibling
//! model of the same paper; we use it with the published β, and add τ the way OpenSkill does
//! (σ² += τ² before every update, so ratings never freeze).

use super::config::GauntletConfig;
use crate::PeerId;
use serde::{Deserialize, Serialize};
use skillratings::MultiTeamOutcome;
use skillratings::weng_lin::{WengLinConfig, WengLinRating, weng_lin_multi_team};
use std::collections::BTreeMap;

/// Every rated peer's Weng–Lin rating (μ, σ). Peers never rated have the default (25, 25/3).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Ratings {
    peers: BTreeMap<PeerId, Rating>,
}

/// A stored rating, its floats persisted exactly.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Rating {
    #[serde(with = "super::exact")]
    mu: f64,
    #[serde(with = "super::exact")]
    sigma: f64,
}

impl Ratings {
    /// The peer's rating (the default when never rated).
    pub fn rating(&self, peer: &PeerId) -> WengLinRating {
        self.peers
            .get(peer)
            .map_or_else(WengLinRating::new, |r| WengLinRating {
                rating: r.mu,
                uncertainty: r.sigma,
            })
    }

    /// The value that enters the final score: max(0, μ − z·σ), finite (0 for a new key).
    pub fn value(&self, cfg: &GauntletConfig, peer: &PeerId) -> f64 {
        let r = self.rating(peer);
        let v = r.rating - cfg.rating_z * r.uncertainty;
        if v.is_finite() { v.max(0.0) } else { 0.0 }
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// One round: the peers in `scores` are ranked by score (higher is better, equal scores
    /// tie) and updated together. Non-finite scores are left out; fewer than two peers change
    /// nothing. A result that is not finite keeps the peer's previous rating.
    pub fn update(&mut self, cfg: &GauntletConfig, scores: &BTreeMap<PeerId, f64>) {
        let players: Vec<(&PeerId, f64)> = scores
            .iter()
            .filter(|(_, s)| s.is_finite())
            .map(|(p, s)| (p, *s))
            .collect();
        if players.len() < 2 {
            return;
        }
        let tau_sq = if cfg.rating_tau.is_finite() {
            cfg.rating_tau * cfg.rating_tau
        } else {
            0.0
        };
        let before: Vec<[WengLinRating; 1]> = players
            .iter()
            .map(|(p, _)| {
                let r = self.rating(p);
                [WengLinRating {
                    rating: r.rating,
                    uncertainty: (r.uncertainty * r.uncertainty + tau_sq).sqrt(),
                }]
            })
            .collect();
        // Rank = 1 + the number of strictly better scores (ties share a rank).
        let teams: Vec<(&[WengLinRating], MultiTeamOutcome)> = players
            .iter()
            .zip(&before)
            .map(|((_, s), r)| {
                let better = players.iter().filter(|(_, o)| o > s).count();
                (&r[..], MultiTeamOutcome::new(better + 1))
            })
            .collect();
        let config = WengLinConfig {
            beta: if cfg.rating_beta.is_finite() && cfg.rating_beta > 0.0 {
                cfg.rating_beta
            } else {
                WengLinConfig::new().beta
            },
            ..WengLinConfig::new()
        };
        let after = weng_lin_multi_team(&teams, &config);
        for ((peer, _), new) in players.iter().zip(after) {
            if let Some(r) = new.first()
                && r.rating.is_finite()
                && r.uncertainty.is_finite()
                && r.uncertainty > 0.0
            {
                let stored = Rating {
                    mu: r.rating,
                    sigma: r.uncertainty,
                };
                self.peers.insert((*peer).clone(), stored);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn scores(xs: &[(&str, f64)]) -> BTreeMap<PeerId, f64> {
        xs.iter().map(|(p, s)| (PeerId::new(*p), *s)).collect()
    }

    #[test]
    fn better_scores_rate_higher() {
        let cfg = GauntletConfig::default();
        let mut r = Ratings::default();
        for _ in 0..10 {
            r.update(
                &cfg,
                &scores(&[("good", 0.02), ("mid", 0.01), ("bad", -0.01)]),
            );
        }
        let (g, m, b) = (
            r.rating(&PeerId::new("good")),
            r.rating(&PeerId::new("mid")),
            r.rating(&PeerId::new("bad")),
        );
        assert!(
            g.rating > m.rating && m.rating > b.rating,
            "{g:?} {m:?} {b:?}"
        );
        assert!(g.uncertainty < 25.0 / 3.0);
        assert!(r.value(&cfg, &PeerId::new("good")) > 0.0);
        assert_eq!(r.value(&cfg, &PeerId::new("never-seen")), 0.0);
    }

    #[test]
    fn a_restored_state_gives_the_same_next_result() {
        let cfg = GauntletConfig::default();
        let mut r = Ratings::default();
        r.update(&cfg, &scores(&[("a", 0.3), ("b", 0.1), ("c", 0.1)]));
        r.update(&cfg, &scores(&[("a", -1.0), ("c", 0.5), ("d", 0.0)]));
        let json = serde_json::to_string(&r).unwrap();
        let mut restored: Ratings = serde_json::from_str(&json).unwrap();
        assert_eq!(restored, r);
        let next = scores(&[("a", 0.2), ("b", 0.4), ("d", -0.2)]);
        r.update(&cfg, &next);
        restored.update(&cfg, &next);
        assert_eq!(restored, r);
        assert_eq!(r.len(), 4);
    }

    #[test]
    fn ties_are_symmetric_and_lone_peers_unchanged() {
        let cfg = GauntletConfig::default();
        let mut r = Ratings::default();
        r.update(&cfg, &scores(&[("a", 0.1), ("b", 0.1)]));
        assert_eq!(r.rating(&PeerId::new("a")), r.rating(&PeerId::new("b")));
        let mut alone = Ratings::default();
        alone.update(&cfg, &scores(&[("a", 0.1), ("b", f64::NAN)]));
        assert!(alone.is_empty());
    }
}
