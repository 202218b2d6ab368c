//! Judged rounds in the simulator: what the coordinator and a validator do with a round's
//! updates, in one process and with the same code: the Gauntlet's round
//! ([`tributary_gauntlet::judge`]: cheap checks, ratings, standings, selection), the validator's
//! measurement ([`crate::train::RoundScorer`]) of its deterministic share of the candidates,
//! and the weighted aggregate of the selected updates. It also keeps the outcome of every peer
//! for the report.

use std::collections::BTreeMap;

use anyhow::Result;
use tributary_codec::{AggregationRule, Aggregator, Contribution, SparseAggregate};
use tributary_crds::ScoringSpec;
use tributary_data::TokenSource;
use tributary_gauntlet::PeerId;
use tributary_gauntlet::config::GauntletConfig;
use tributary_gauntlet::judge::{Candidate, GauntletState, share};
use tributary_gauntlet::ledger::ValidatorScore;
use tributary_gauntlet::selection::{Selection, ValidatorReport};
use tributary_gauntlet::sketch::SketchKey;

use super::config::SimGauntlet;
use super::report::PeerOutcome;
use crate::train::{InnerLoop, RoundData, RoundScorer, median_norm};

/// The simulated validator's key (it only seeds which candidates it samples each round).
const VALIDATOR_KEY: [u8; 32] = [0x5a; 32];

/// The Gauntlet of one simulated run.
pub(super) struct Judge {
    cfg: GauntletConfig,
    state: GauntletState,
    /// The validator's model (θ and each candidate are loaded into it in turn).
    validator: InnerLoop,
    scored_per_round: u32,
    lr_scale: f64,
    rule: AggregationRule,
    ids: Vec<PeerId>,
    outcomes: Vec<PeerOutcome>,
}

/// One round's inputs: the candidates in submission order (slot order) and θ they trained from.
pub(super) struct RoundInput<'a> {
    pub round: u64,
    pub theta: &'a [Vec<f32>],
    pub updates: &'a [Contribution],
    pub data: RoundData,
    /// The round's outer learning rate.
    pub outer_lr: f64,
}

/// What the aggregate of a judged round is made of.
pub(super) struct Judged {
    /// `None` when every update was left out (the round is skipped).
    pub aggregate: Option<SparseAggregate>,
    /// Per slot: whether its update is in the aggregate.
    pub selected: Vec<bool>,
}

impl Judge {
    /// `roles` names each slot ("honest" or a hostile kind); the run's Gauntlet settings are the
    /// defaults of a TrainingRun's `participation`, with every slot eligible for aggregation.
    pub(super) fn new(
        settings: &SimGauntlet,
        roles: &[String],
        validator: InnerLoop,
        rule: AggregationRule,
        seed: u64,
    ) -> Self {
        let cfg = GauntletConfig {
            max_peers: roles.len(),
            ..GauntletConfig::default()
        };
        let ids: Vec<PeerId> = (0..roles.len())
            .map(|p| PeerId::new(format!("p{p:02}")))
            .collect();
        let outcomes = ids
            .iter()
            .zip(roles)
            .map(|(id, role)| PeerOutcome::new(id.as_str(), role))
            .collect();
        Self {
            cfg,
            // Any fixed key: no simulated peer reads it, and the run stays reproducible.
            state: GauntletState::new(SketchKey {
                k0: seed,
                k1: !seed,
            }),
            validator,
            scored_per_round: settings.scored_per_round,
            lr_scale: ScoringSpec::default().eval_lr_scale,
            rule,
            ids,
            outcomes,
        }
    }

    /// Judges one round and aggregates its selected updates, weighted.
    pub(super) fn round(
        &mut self,
        input: &RoundInput<'_>,
        source: &dyn TokenSource,
    ) -> Result<Judged> {
        let candidates: Vec<Candidate> = input
            .updates
            .iter()
            .zip(&self.ids)
            .enumerate()
            .map(|(slot, (u, id))| Candidate {
                peer: id.clone(),
                update: u.clone(),
                accepted_ms: slot as u64,
            })
            .collect();
        let sample = share(
            input.round,
            &VALIDATOR_KEY,
            &self.ids[..input.updates.len()],
            self.scored_per_round,
        );
        let scores = self.score(input, &sample, source)?;
        let report = ValidatorReport::Expected {
            expected: sample.len(),
            scored: scores.len(),
        };
        let judgement = self
            .state
            .judge(&self.cfg, &candidates, &self.ids, &scores, report);
        let weight: BTreeMap<&PeerId, f32> = judgement
            .selection
            .selected
            .iter()
            .map(|s| (&s.peer, s.weight))
            .collect();
        let selected: Vec<bool> = self.ids.iter().map(|id| weight.contains_key(id)).collect();
        self.record(input.round, &judgement.selection);
        if judgement.selection.selected.is_empty() {
            return Ok(Judged {
                aggregate: None,
                selected,
            });
        }
        let (chosen, weights): (Vec<&Contribution>, Vec<f32>) = input
            .updates
            .iter()
            .zip(&self.ids)
            .filter_map(|(u, id)| weight.get(id).map(|w| (u, *w)))
            .unzip();
        let aggregate = Aggregator::new(self.rule).aggregate_sparse(&chosen, Some(&weights))?;
        self.state.record_aggregate(&aggregate);
        Ok(Judged {
            aggregate: Some(aggregate),
            selected,
        })
    }

    /// The validator's scores of its share of the round (one measurement per candidate).
    fn score(
        &mut self,
        input: &RoundInput<'_>,
        sample: &[PeerId],
        source: &dyn TokenSource,
    ) -> Result<BTreeMap<PeerId, Vec<ValidatorScore>>> {
        let slots: Vec<usize> = sample
            .iter()
            .filter_map(|id| self.ids.iter().position(|i| i == id))
            .collect();
        let median = median_norm(slots.iter().map(|&s| &input.updates[s]));
        let scorer = RoundScorer::new(
            &mut self.validator,
            input.theta,
            source,
            input.data,
            input.round,
            self.lr_scale * input.outer_lr,
            median,
        )?;
        let mut scores = BTreeMap::new();
        for slot in slots {
            let s = scorer.score(
                &mut self.validator,
                input.theta,
                source,
                &input.updates[slot],
                slot as u32,
            )?;
            scores.insert(
                self.ids[slot].clone(),
                vec![ValidatorScore::measured(s.random, s.own, s.random)],
            );
        }
        Ok(scores)
    }

    fn record(&mut self, round: u64, selection: &Selection) {
        for s in &selection.selected {
            if let Some(o) = self.outcome(&s.peer) {
                o.selected(round, f64::from(s.weight));
            }
        }
        for (peer, why) in &selection.unselected {
            if let Some(o) = self.outcome(peer) {
                o.left_out(round, why.label(), why.is_exclusion());
            }
        }
    }

    fn outcome(&mut self, peer: &PeerId) -> Option<&mut PeerOutcome> {
        let slot = self.ids.iter().position(|i| i == peer)?;
        self.outcomes.get_mut(slot)
    }

    /// Every peer's outcome so far, in slot order.
    pub(super) fn outcomes(&self) -> &[PeerOutcome] {
        &self.outcomes
    }
}
