//! What one simulated run does.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use tributary_codec::{CodecParams, QuantMode};
use tributary_crds::{InnerOptimizer, ModelConfig, OuterLrStep, OuterOptimizer};
use tributary_data::synthetic::LanguageConfig;

pub use crate::peer::hostile::HostileKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Gradients averaged every step (one model, the peers' batches together).
    Ddp,
    /// Dense pseudo-gradients averaged every H steps, Nesterov outer step.
    Diloco,
    /// Compressed pseudo-gradients with error feedback every H steps, SGD outer step.
    Sparseloco,
}

/// How a sparse contribution's bytes are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum WireFormat {
    /// Ours: Elias–Fano positions, packed codes (the encoded length).
    Tributary,
    /// The production run's: 12-bit positions, one byte per code.
    Production,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimConfig {
    /// Label of the run in reports.
    pub name: String,
    pub strategy: Strategy,
    pub peers: u32,
    /// Tokens processed by all peers together.
    pub tokens: u64,
    /// Sequences per peer per inner step.
    pub batch: u32,
    pub seq_len: u32,
    /// Inner steps per round (diloco, sparseloco).
    pub inner_steps: u32,
    /// The language, the held-out tokens and (replicate 0) the initialisation and data order.
    pub seed: u64,
    /// Replicate ≥ 1 draws another initialisation and training-data order for the same `seed`,
    /// so the same run can be repeated on the same language and held-out tokens.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replicate: u32,
    pub model: ModelConfig,
    pub language: LanguageConfig,
    pub inner: InnerOptimizer,
    pub outer: OuterOptimizer,
    #[serde(with = "codec_params_serde")]
    pub codec: CodecParams,
    pub wire: WireFormat,
    /// Per-coordinate mean over all peers ((1/R)·Σ, the paper) instead of over the peers that
    /// selected it after median-norm clipping (production).
    #[serde(default)]
    pub paper_mean: bool,
    /// SparseLoCo peers start their inner steps from θ − α·e, where their unsent updates lead
    /// (docs/training.md, "Error-feedback lookahead"); off in configurations that predate it.
    #[serde(default)]
    pub lookahead: bool,
    /// Late in the run the outer learning rate drops once (production lowered 1.0 to 0.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outer_lr_drop: Option<OuterLrDrop>,
    /// Held-out sequences for evaluation.
    pub eval_sequences: u32,
    /// Evaluations over the run (evenly spaced in tokens).
    pub evals: u32,
    /// libtorch intra-op threads.
    pub threads: u32,
    /// Hostile peers beside the honest `peers`, in the slots after theirs (their tokens are not
    /// counted in `tokens`): what each sends instead of its honest update (docs/security.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostile: Vec<HostileKind>,
    /// Judge every round with the Gauntlet (sparseloco only); without it every update is
    /// aggregated, as before the Gauntlet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gauntlet: Option<SimGauntlet>,
}

/// The Gauntlet of a simulated run: the coordinator's checks, ratings and selection with a
/// TrainingRun's default `participation.scoring`, and one validator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimGauntlet {
    /// Candidates the validator scores per round: 0 all of them, n a deterministic sample of n
    /// (`candidatesPerValidator`).
    pub scored_per_round: u32,
}

fn is_zero(x: &u32) -> bool {
    *x == 0
}

impl SimConfig {
    /// Seed of the initialisation and of the training batches: `seed` itself for replicate 0
    /// (so earlier reports reproduce), a distinct stream for every other replicate.
    pub fn train_seed(&self) -> u64 {
        match self.replicate {
            0 => self.seed,
            r => self
                .seed
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .wrapping_add(u64::from(r).rotate_left(32)),
        }
    }

    /// Inner steps each peer takes (every strategy takes the same number at equal tokens).
    pub fn steps(&self) -> u64 {
        let per_step = u64::from(self.peers) * u64::from(self.batch) * u64::from(self.seq_len);
        self.tokens.div_ceil(per_step.max(1))
    }

    pub fn tokens_per_step(&self) -> u64 {
        u64::from(self.peers) * u64::from(self.batch) * u64::from(self.seq_len)
    }

    /// Rounds in the run (the last may be shorter).
    pub fn rounds(&self) -> u64 {
        self.steps().div_ceil(u64::from(self.inner_steps.max(1)))
    }

    /// Fails on hostile peers or a Gauntlet the run cannot have.
    pub fn check_hostile(&self) -> Result<()> {
        if (!self.hostile.is_empty() || self.gauntlet.is_some())
            && self.strategy != Strategy::Sparseloco
        {
            bail!("hostile peers and the Gauntlet need the sparseloco strategy");
        }
        for (i, kind) in self.hostile.iter().enumerate() {
            match kind {
                HostileKind::Stale => bail!(
                    "hostile kind stale is refused on receipt by the coordinator's check of the signed model version, which the simulator does not have; the devnet test covers it"
                ),
                HostileKind::Copy if !self.hostile[..i].contains(&HostileKind::ColluderOrigin) => {
                    bail!("hostile kind copy needs a colluder-origin before it in the list")
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Every slot's role: "honest" for the `peers` honest ones, then each hostile kind.
    pub fn roles(&self) -> Vec<String> {
        let honest = (0..self.peers).map(|_| super::report::HONEST.to_owned());
        honest
            .chain(self.hostile.iter().map(|k| k.name().to_owned()))
            .collect()
    }

    /// The outer optimizer of the run, with `outer_lr_drop` as its schedule.
    pub fn outer_optimizer(&self) -> OuterOptimizer {
        let mut outer = self.outer.clone();
        if let Some(drop) = self.outer_lr_drop {
            outer.lr_schedule = vec![drop.step(outer.base_lr(), self.rounds())];
        }
        outer
    }
}

/// One drop of the outer learning rate to `ratio` × its base, from the first round at or after
/// the fraction `at` of the run's rounds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OuterLrDrop {
    pub at: f64,
    pub ratio: f64,
}

impl OuterLrDrop {
    pub fn step(&self, lr: f64, rounds: u64) -> OuterLrStep {
        OuterLrStep {
            from_round: (self.at * rounds as f64).ceil() as u64,
            lr: lr * self.ratio,
        }
    }
}

/// The codec parameters as plain fields (CodecParams itself is not serde).
mod codec_params_serde {
    use super::*;
    use serde::{Deserializer, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Plain {
        chunk_side: u16,
        k_per_chunk: u16,
        bits: u8,
        balanced: bool,
        beta: f32,
        sparse_one_d: bool,
    }

    pub(super) fn serialize<S: Serializer>(p: &CodecParams, s: S) -> Result<S::Ok, S::Error> {
        Plain {
            chunk_side: p.chunk_side,
            k_per_chunk: p.k_per_chunk,
            bits: p.bits,
            balanced: p.mode == QuantMode::Balanced,
            beta: p.beta,
            sparse_one_d: p.one_d == tributary_codec::OneDPolicy::Sparse,
        }
        .serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<CodecParams, D::Error> {
        let p = Plain::deserialize(d)?;
        Ok(CodecParams {
            chunk_side: p.chunk_side,
            k_per_chunk: p.k_per_chunk,
            bits: p.bits,
            mode: if p.balanced {
                QuantMode::Balanced
            } else {
                QuantMode::Production
            },
            beta: p.beta,
            one_d: if p.sparse_one_d {
                tributary_codec::OneDPolicy::Sparse
            } else {
                tributary_codec::OneDPolicy::Dense
            },
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::simulate::{CompareOptions, base};

    fn sparse() -> SimConfig {
        let opts = CompareOptions {
            out_dir: std::path::PathBuf::new(),
            tokens: 1_000_000,
            seeds: vec![1],
            jobs: 1,
            peers: 3,
            evals: 2,
            eval_sequences: 16,
            replicates: 1,
            hostile: Vec::new(),
            scored_per_round: 0,
            resume: false,
        };
        base(&opts, 1)
    }

    #[test]
    fn hostile_mixes_the_simulator_cannot_run_are_refused_with_the_reason() {
        let mut cfg = sparse();
        cfg.hostile = vec![HostileKind::Noise, HostileKind::SignFlip];
        cfg.check_hostile().unwrap();
        assert_eq!(
            cfg.roles(),
            ["honest", "honest", "honest", "noise", "sign-flip"]
        );
        cfg.hostile = vec![HostileKind::Stale];
        let e = cfg.check_hostile().unwrap_err().to_string();
        assert!(e.contains("signed model version"), "{e}");
        cfg.hostile = vec![HostileKind::Copy, HostileKind::ColluderOrigin];
        let e = cfg.check_hostile().unwrap_err().to_string();
        assert!(e.contains("colluder-origin before it"), "{e}");
        cfg.hostile = vec![HostileKind::ColluderOrigin, HostileKind::Copy];
        cfg.check_hostile().unwrap();
        cfg.strategy = Strategy::Diloco;
        assert!(cfg.check_hostile().is_err());
        cfg.hostile.clear();
        cfg.check_hostile().unwrap();
        cfg.gauntlet = Some(SimGauntlet {
            scored_per_round: 0,
        });
        assert!(
            cfg.check_hostile().is_err(),
            "the Gauntlet judges sparse updates only"
        );
    }

    /// Configurations name hostile kinds as the command line does; configurations without
    /// them (every committed strategy comparison) serialize as before.
    #[test]
    fn hostile_kinds_serialize_by_their_command_line_names() {
        let mut cfg = sparse();
        let plain = serde_json::to_value(&cfg).unwrap();
        assert!(plain.get("hostile").is_none() && plain.get("gauntlet").is_none());
        cfg.hostile = vec![HostileKind::SignFlip, HostileKind::FreeRider];
        cfg.gauntlet = Some(SimGauntlet {
            scored_per_round: 4,
        });
        let json = serde_json::to_value(&cfg).unwrap();
        assert_eq!(
            json["hostile"],
            serde_json::json!(["sign-flip", "free-rider"])
        );
        assert_eq!(json["gauntlet"]["scored_per_round"], 4);
        let back: SimConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back.hostile, cfg.hostile);
        assert_eq!(back.gauntlet, cfg.gauntlet);
    }

    #[test]
    fn the_outer_lr_drops_once_at_its_fraction_of_the_rounds() {
        let drop = OuterLrDrop {
            at: 0.75,
            ratio: 0.4,
        };
        // 205 rounds: 0.75 × 205 = 153.75, so round 154 is the first at the lower rate.
        let step = drop.step(0.85, 205);
        assert_eq!(step.from_round, 154);
        assert!((step.lr - 0.34).abs() < 1e-12);
        let outer = OuterOptimizer {
            lr: Some(0.85),
            lr_schedule: vec![step],
            ..OuterOptimizer::default()
        };
        assert_eq!(outer.lr_at(153), 0.85);
        assert!((outer.lr_at(154) - 0.34).abs() < 1e-12);
        assert!((outer.lr_at(204) - 0.34).abs() < 1e-12);
    }
}
