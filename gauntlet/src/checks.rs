//! The coordinator's cheap checks over one round's accepted candidates, before any validator
//! work: copying across peers of the round, replays of earlier updates or aggregates, and the
//! norm floor and ceiling. Each finding is a [`CheckFlag`] with a typed [`CheckReason`].

use super::config::GauntletConfig;
use super::sketch::UpdateSketch;
use crate::PeerId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Why a cheap check flagged a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum CheckReason {
    /// Overlaps an earlier submitter of the round by ≥ `copy_mark`: weight × `copy_mark_factor`.
    CopyMarked,
    /// Overlaps an earlier submitter by ≥ `copy_zero`: excluded.
    CopyZeroed,
    /// Repeats one of the same peer's earlier updates.
    ReplayOwn,
    /// Repeats an earlier aggregate.
    ReplayAggregate,
    /// Repeats an earlier update or aggregate with its signs flipped.
    NegatedReplay,
    /// Norm below `norm_floor` × the round's median (free rider).
    NormFloor,
    /// Norm above `norm_ceiling` × the round's median (scaled), or not finite.
    NormCeiling,
}

impl CheckReason {
    /// Short stable label, for metrics and status.
    pub fn label(self) -> &'static str {
        match self {
            Self::CopyMarked => "copy-marked",
            Self::CopyZeroed => "copy",
            Self::ReplayOwn => "replay-own",
            Self::ReplayAggregate => "replay-aggregate",
            Self::NegatedReplay => "negated-replay",
            Self::NormFloor => "norm-floor",
            Self::NormCeiling => "norm-ceiling",
        }
    }

    /// Whether the candidate is left out of this round's aggregate (otherwise down-weighted).
    pub fn excludes(self) -> bool {
        !matches!(self, Self::CopyMarked)
    }
}

/// One finding: the reason and the measured value that crossed its threshold (an overlap,
/// a share of positions, or a norm ratio to the median).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CheckFlag {
    pub reason: CheckReason,
    pub value: f64,
}

/// The cheap checks' verdict on one candidate.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Verdict {
    /// Sorted by reason.
    pub flags: Vec<CheckFlag>,
}

impl Verdict {
    /// The first excluding flag, if any.
    pub fn exclusion(&self) -> Option<CheckFlag> {
        self.flags.iter().copied().find(|f| f.reason.excludes())
    }

    /// The factor its weight is multiplied by: 0 when excluded, `copy_mark_factor` when
    /// marked as a copier, else 1.
    pub fn weight_factor(&self, cfg: &GauntletConfig) -> f64 {
        if self.exclusion().is_some() {
            0.0
        } else if self
            .flags
            .iter()
            .any(|f| f.reason == CheckReason::CopyMarked)
        {
            cfg.copy_mark_factor.clamp(0.0, 1.0)
        } else {
            1.0
        }
    }
}

/// A candidate for copy detection: who, and its position in the round's submission order.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyCandidate {
    pub peer: PeerId,
    /// The coordinator's acceptance sequence number in the round; ties go to the peer id.
    pub seq: u64,
}

/// Copy detection (published): for every pair whose overlap (`overlap(i, j)`, the codec's
/// size-weighted top-k position overlap, or a sketch estimate of it) is ≥ `copy_mark`, the
/// *later* submitter is marked; ≥ `copy_zero` it is zeroed. A peer later in several pairs gets
/// its largest overlap. `None` (not comparable) flags nothing.
pub fn copy_flags(
    cfg: &GauntletConfig,
    candidates: &[CopyCandidate],
    overlap: impl Fn(usize, usize) -> Option<f64>,
) -> BTreeMap<PeerId, CheckFlag> {
    let mut worst: BTreeMap<PeerId, f64> = BTreeMap::new();
    for i in 0..candidates.len() {
        for j in i + 1..candidates.len() {
            let (Some(a), Some(b)) = (candidates.get(i), candidates.get(j)) else {
                continue;
            };
            let Some(o) = overlap(i, j).filter(|o| o.is_finite()) else {
                continue;
            };
            let later = if (a.seq, &a.peer) < (b.seq, &b.peer) {
                b
            } else {
                a
            };
            if o >= cfg.copy_mark && a.peer != b.peer {
                let w = worst.entry(later.peer.clone()).or_insert(o);
                *w = w.max(o);
            }
        }
    }
    worst
        .into_iter()
        .map(|(peer, o)| {
            let reason = if o >= cfg.copy_zero {
                CheckReason::CopyZeroed
            } else {
                CheckReason::CopyMarked
            };
            (peer, CheckFlag { reason, value: o })
        })
        .collect()
}

/// A candidate for replay detection: its sketch.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayCandidate<'a> {
    pub peer: PeerId,
    pub sketch: &'a UpdateSketch,
}

/// What the store keeps for replay detection: sketches of each peer's recent updates and of
/// recent aggregates (how many is the store's choice; a few rounds cover the published
/// "replay of an old round").
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplayHistory<'a> {
    pub own: BTreeMap<PeerId, Vec<&'a UpdateSketch>>,
    pub aggregates: Vec<&'a UpdateSketch>,
}

/// Replay detection: the share of a candidate's sampled positions that an earlier update of
/// the same peer (or an earlier aggregate) carries with the same sign is ≥ `replay_agreeing`
/// (a replay), or with the opposite sign ≥ `replay_opposing` (a negated replay). An empty
/// sketch, or one not comparable with a reference (other key or rate), flags nothing.
pub fn replay_flags(
    cfg: &GauntletConfig,
    candidates: &[ReplayCandidate<'_>],
    history: &ReplayHistory<'_>,
) -> BTreeMap<PeerId, CheckFlag> {
    let mut out = BTreeMap::new();
    for c in candidates {
        let own = history.own.get(&c.peer).into_iter().flatten();
        let refs = own.map(|s| (CheckReason::ReplayOwn, *s)).chain(
            history
                .aggregates
                .iter()
                .map(|s| (CheckReason::ReplayAggregate, *s)),
        );
        let mut found: Option<CheckFlag> = None;
        for (reason, reference) in refs {
            let Ok(m) = c.sketch.compare(reference) else {
                continue;
            };
            if m.sampled == 0 {
                continue;
            }
            let flag = if m.agreeing >= cfg.replay_agreeing {
                CheckFlag {
                    reason,
                    value: m.agreeing,
                }
            } else if m.opposing >= cfg.replay_opposing {
                CheckFlag {
                    reason: CheckReason::NegatedReplay,
                    value: m.opposing,
                }
            } else {
                continue;
            };
            // Keep the strongest evidence; the first reference wins ties.
            if found.is_none_or(|f| flag.value > f.value) {
                found = Some(flag);
            }
        }
        if let Some(f) = found {
            out.insert(c.peer.clone(), f);
        }
    }
    out
}

/// A candidate for the norm checks: the L2 norm of its dequantized values.
#[derive(Debug, Clone, PartialEq)]
pub struct NormCandidate {
    pub peer: PeerId,
    pub norm: f64,
}

/// Norm floor and ceiling relative to the round's (lower) median of finite norms; needs
/// `norm_min_candidates` finite norms and a positive median, else flags only non-finite norms.
pub fn norm_flags(
    cfg: &GauntletConfig,
    candidates: &[NormCandidate],
) -> BTreeMap<PeerId, CheckFlag> {
    let mut finite: Vec<f64> = candidates
        .iter()
        .map(|c| c.norm)
        .filter(|n| n.is_finite() && *n >= 0.0)
        .collect();
    finite.sort_by(f64::total_cmp);
    let median = finite.get(finite.len().saturating_sub(1) / 2).copied();
    let usable = finite.len() >= cfg.norm_min_candidates.max(1);
    let mut out = BTreeMap::new();
    for c in candidates {
        let flag = if !c.norm.is_finite() || c.norm < 0.0 {
            Some(CheckFlag {
                reason: CheckReason::NormCeiling,
                value: f64::MAX,
            })
        } else {
            match median {
                Some(m) if usable && m > 0.0 => {
                    let ratio = c.norm / m;
                    if ratio < cfg.norm_floor {
                        Some(CheckFlag {
                            reason: CheckReason::NormFloor,
                            value: ratio,
                        })
                    } else if ratio > cfg.norm_ceiling {
                        Some(CheckFlag {
                            reason: CheckReason::NormCeiling,
                            value: ratio,
                        })
                    } else {
                        None
                    }
                }
                _ => None,
            }
        };
        if let Some(f) = flag {
            out.insert(c.peer.clone(), f);
        }
    }
    out
}

/// Every candidate's verdict from the three checks' flags (candidates without a flag get an
/// empty verdict).
pub fn verdicts<'p>(
    peers: impl IntoIterator<Item = &'p PeerId>,
    flag_sets: &[&BTreeMap<PeerId, CheckFlag>],
) -> BTreeMap<PeerId, Verdict> {
    peers
        .into_iter()
        .map(|p| {
            let mut flags: Vec<CheckFlag> =
                flag_sets.iter().filter_map(|s| s.get(p)).copied().collect();
            flags.sort_by(|a, b| a.reason.cmp(&b.reason).then(a.value.total_cmp(&b.value)));
            (p.clone(), Verdict { flags })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::sketch::{SketchKey, SketchSpec};
    use tributary_codec::{
        CodecParams, Contribution, ErrorFeedback, TensorShape, compress_contribution, similarity,
    };

    fn peer(s: &str) -> PeerId {
        PeerId::new(s)
    }

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

    /// The published rule on real contributions: an exact copy is zeroed, the later submitter
    /// is the one flagged whatever the input order, an independent peer is not.
    #[test]
    fn copy_marks_the_later_submitter() {
        let cfg = GauntletConfig::default();
        let (a, b) = (update(1, 1.0), update(2, 1.0));
        let copy = a.clone();
        let ups = [&copy, &a, &b];
        let cands = vec![
            CopyCandidate {
                peer: peer("copier"),
                seq: 7,
            },
            CopyCandidate {
                peer: peer("origin"),
                seq: 3,
            },
            CopyCandidate {
                peer: peer("honest"),
                seq: 5,
            },
        ];
        let overlap = |i: usize, j: usize| similarity(ups[i], ups[j]).ok().map(|s| s.overlap);
        let flags = copy_flags(&cfg, &cands, overlap);
        assert_eq!(flags.len(), 1, "{flags:?}");
        assert_eq!(flags[&peer("copier")].reason, CheckReason::CopyZeroed);
        assert_eq!(flags[&peer("copier")].value, 1.0);
        // Between the thresholds: marked, weight halved.
        let half = |_: usize, _: usize| Some(0.45);
        let flags = copy_flags(&cfg, &cands[..2], half);
        assert_eq!(flags[&peer("copier")].reason, CheckReason::CopyMarked);
        let v = verdicts([&peer("copier")], &[&flags]);
        assert_eq!(v[&peer("copier")].weight_factor(&cfg), 0.5);
        assert_eq!(v[&peer("copier")].exclusion(), None);
    }

    #[test]
    fn replays_of_own_updates_and_aggregates_are_flagged() {
        let cfg = GauntletConfig::default();
        let old = update(1, 1.0);
        let spec = SketchSpec::for_layout(SketchKey { k0: 1, k1: 2 }, &old, 512);
        let (s_old, s_agg) = (spec.sketch(&old), spec.sketch(&update(9, 1.0)));
        let (s_replay, s_scaled) = (spec.sketch(&old), spec.sketch(&update(1, 4.0)));
        let s_neg = spec.sketch(&update(9, -1.0));
        let s_fresh = spec.sketch(&update(3, 1.0));
        let history = ReplayHistory {
            own: BTreeMap::from([(peer("r"), vec![&s_old])]),
            aggregates: vec![&s_agg],
        };
        let cands = [
            ReplayCandidate {
                peer: peer("r"),
                sketch: &s_replay,
            },
            ReplayCandidate {
                peer: peer("s"),
                sketch: &s_scaled,
            },
            ReplayCandidate {
                peer: peer("n"),
                sketch: &s_neg,
            },
            ReplayCandidate {
                peer: peer("f"),
                sketch: &s_fresh,
            },
        ];
        let flags = replay_flags(&cfg, &cands, &history);
        assert_eq!(flags[&peer("r")].reason, CheckReason::ReplayOwn);
        // Another peer's old update is not "its own": only the aggregate history applies.
        assert!(!flags.contains_key(&peer("s")), "{flags:?}");
        assert_eq!(flags[&peer("n")].reason, CheckReason::NegatedReplay);
        assert!(!flags.contains_key(&peer("f")), "{flags:?}");
        let replay_agg = ReplayCandidate {
            peer: peer("x"),
            sketch: &s_agg,
        };
        let flags = replay_flags(&cfg, &[replay_agg], &history);
        assert_eq!(flags[&peer("x")].reason, CheckReason::ReplayAggregate);
    }

    #[test]
    fn norms_outside_the_band_are_flagged() {
        let cfg = GauntletConfig::default();
        let c = |p: &str, norm: f64| NormCandidate {
            peer: peer(p),
            norm,
        };
        let cands = [
            c("a", 1.0),
            c("b", 1.2),
            c("c", 0.9),
            c("tiny", 0.01),
            c("big", 100.0),
            c("nan", f64::NAN),
        ];
        let flags = norm_flags(&cfg, &cands);
        assert_eq!(flags.len(), 3, "{flags:?}");
        assert_eq!(flags[&peer("tiny")].reason, CheckReason::NormFloor);
        assert_eq!(flags[&peer("big")].reason, CheckReason::NormCeiling);
        assert_eq!(flags[&peer("nan")].reason, CheckReason::NormCeiling);
        // Too few candidates for a meaningful median: only non-finite norms are flagged.
        assert!(norm_flags(&cfg, &cands[3..5]).is_empty());
        let labels: Vec<&str> = flags.values().map(|f| f.reason.label()).collect();
        assert_eq!(labels, ["norm-ceiling", "norm-ceiling", "norm-floor"]);
    }
}
