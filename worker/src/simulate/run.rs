//! The simulation loop of each strategy.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use tch::Device;
use tributary_codec::{
    AggregationRule, Aggregator, Contribution, ErrorFeedback, decode, encode, production_wire_bytes,
};
use tributary_crds::TensorPlan;
use tributary_data::synthetic::Language;
use tributary_data::{Batch, StreamId, TokenSource};

use super::config::{HostileKind, SimConfig, Strategy, WireFormat};
use super::judged::{Judge, RoundInput};
use super::report::{Point, RunReport};
use crate::model::{self, fingerprint};
use crate::peer::hostile::{Hostile, seed_of};
use crate::provenance::Machine;
use crate::train::{
    InnerLoop, OuterStep, RoundData, compress_round, local_round, restore_unsent, round_start,
};

/// Runs `cfg` to its token budget, calling `on_point` at each evaluation.
pub fn simulate(cfg: &SimConfig, on_point: impl FnMut(&Point)) -> Result<RunReport> {
    simulate_until(cfg, usize::MAX, on_point)
}

/// The first `points` evaluations of `cfg` (the one at step 0 included): the same run as
/// `simulate`'s, stopped early, so its points equal the first ones of the whole run.
pub fn simulate_prefix(cfg: &SimConfig, points: usize) -> Result<RunReport> {
    simulate_until(cfg, points.max(1), |_| {})
}

fn simulate_until(
    cfg: &SimConfig,
    max_points: usize,
    mut on_point: impl FnMut(&Point),
) -> Result<RunReport> {
    if cfg.peers == 0 || cfg.batch == 0 || cfg.seq_len == 0 || cfg.inner_steps == 0 {
        bail!("peers, batch, sequence length and inner steps must all be positive");
    }
    if cfg.seq_len > cfg.model.context {
        bail!(
            "sequence length {} exceeds the model's context {}",
            cfg.seq_len,
            cfg.model.context
        );
    }
    cfg.check_hostile()?;
    tch::set_num_threads(cfg.threads.max(1) as i32);
    let started = Instant::now();
    let language = Language::new(cfg.language).context("building the embedded language")?;
    let eval = language.batch(
        StreamId::held_out(cfg.seed, 0),
        cfg.eval_sequences as usize,
        cfg.seq_len as usize,
    )?;
    let floor = language.floor_nats(&eval)?;
    let mut sim = Sim::new(cfg, &language, eval)?;
    let steps = cfg.steps();
    let every = steps.div_ceil(u64::from(cfg.evals.max(1))).max(1);
    let mut points = vec![sim.point(0, 0.0, floor)?];
    on_point(&points[0]);
    let mut step = 0;
    while step < steps && points.len() < max_points {
        let span = match cfg.strategy {
            Strategy::Ddp => 1,
            _ => u64::from(cfg.inner_steps).min(steps - step),
        };
        let train_loss = sim.advance(step, span)?;
        let before = step;
        step += span;
        if step / every != before / every || step == steps {
            let p = sim.point(step, train_loss, floor)?;
            on_point(&p);
            points.push(p);
        }
    }
    let last = points.last().cloned().unwrap_or_default();
    Ok(RunReport {
        config: cfg.clone(),
        floor,
        final_eval_loss: last.eval_loss,
        excess: last.eval_loss - floor,
        bytes_per_peer: sim.bytes_per_peer,
        parameters: sim.numel as u64,
        wall_seconds: started.elapsed().as_secs_f64(),
        fingerprint: sim.fingerprint()?,
        points,
        machine: Some(Machine::current(cfg.threads)),
        peers: sim
            .judge
            .as_ref()
            .map(|j| j.outcomes().to_vec())
            .unwrap_or_default(),
        rounds_skipped: sim.rounds_skipped,
    })
}

struct Sim<'a> {
    cfg: &'a SimConfig,
    language: &'a Language,
    eval: Batch,
    /// One loop for ddp; one per peer otherwise (the honest ones, then the hostile ones).
    peers: Vec<InnerLoop>,
    /// The hostile peers, in the slots after the honest ones.
    hostile: Vec<Hostile>,
    judge: Option<Judge>,
    /// Global parameters (diloco, sparseloco).
    theta: Vec<Vec<f32>>,
    outer: OuterStep,
    efs: Vec<Vec<ErrorFeedback>>,
    /// Each peer's honest compressed update of the round; its buffers are reused every round.
    sent: Vec<Contribution>,
    plan: TensorPlan,
    numel: usize,
    bytes_per_peer: u64,
    round: u64,
    rounds_skipped: u64,
}

impl<'a> Sim<'a> {
    fn new(cfg: &'a SimConfig, language: &'a Language, eval: Batch) -> Result<Self> {
        // DDP's one replica steps on every peer's batch: nothing is averaged after it.
        let slots = cfg.peers as usize + cfg.hostile.len();
        let (replicas, aggregated) = match cfg.strategy {
            Strategy::Ddp => (1, 1),
            _ => (slots, cfg.peers),
        };
        let plan = TensorPlan::new(cfg.model, cfg.codec)?;
        let inner_loop = || {
            model::build(&plan, cfg.train_seed(), Device::Cpu)
                .map(|m| InnerLoop::new(m, cfg.inner.clone(), cfg.steps(), aggregated))
        };
        let peers = (0..replicas)
            .map(|_| inner_loop())
            .collect::<Result<Vec<_>>>()?;
        let theta = peers[0].model.params().to_vecs()?;
        let sizes: Vec<usize> = theta.iter().map(Vec::len).collect();
        let efs = (0..slots)
            .map(|_| sizes.iter().map(|n| ErrorFeedback::zeros(*n)).collect())
            .collect();
        let hostile = cfg
            .hostile
            .iter()
            .enumerate()
            .map(|(i, kind)| {
                let slot = cfg.peers as usize + i;
                let key = [cfg.train_seed().to_le_bytes(), (slot as u64).to_le_bytes()].concat();
                Hostile::in_process(*kind, seed_of(&key))
            })
            .collect();
        let rule = if cfg.paper_mean {
            AggregationRule::Mean
        } else {
            AggregationRule::MedianClipMean
        };
        let judge = match &cfg.gauntlet {
            Some(g) => Some(Judge::new(
                g,
                &cfg.roles(),
                inner_loop()?,
                rule,
                cfg.train_seed(),
            )),
            None => None,
        };
        Ok(Self {
            cfg,
            language,
            eval,
            peers,
            hostile,
            judge,
            outer: OuterStep::new(cfg.outer_optimizer(), &sizes),
            theta,
            efs,
            sent: vec![Contribution::default(); slots],
            plan,
            numel: sizes.iter().sum(),
            bytes_per_peer: 0,
            round: 0,
            rounds_skipped: 0,
        })
    }

    fn batch(&self, peer: u32, round: u64, step: u32) -> Result<Batch> {
        let id = StreamId {
            seed: self.cfg.train_seed(),
            peer,
            round,
            step,
        };
        Ok(self
            .language
            .batch(id, self.cfg.batch as usize, self.cfg.seq_len as usize)?)
    }

    /// Advances `span` inner steps from `step`; returns the mean training loss.
    fn advance(&mut self, step: u64, span: u64) -> Result<f64> {
        match self.cfg.strategy {
            Strategy::Ddp => self.ddp_step(step),
            Strategy::Diloco | Strategy::Sparseloco => self.round(span),
        }
    }

    fn ddp_step(&mut self, step: u64) -> Result<f64> {
        // The mean gradient over all peers' batches is the gradient of their union.
        let mut all = Batch {
            tokens: Vec::new(),
            sequences: 0,
            len: self.cfg.seq_len as usize,
        };
        for p in 0..self.cfg.peers {
            let b = self.batch(p, step, 0)?;
            all.tokens.extend_from_slice(&b.tokens);
            all.sequences += b.sequences;
        }
        let loss = self.peers[0].step(&all, 1)?;
        // Each peer sends its dense f32 gradient every step.
        self.bytes_per_peer += 4 * self.numel as u64;
        Ok(loss)
    }

    fn round(&mut self, span: u64) -> Result<f64> {
        let mut deltas = Vec::with_capacity(self.peers.len());
        let mut loss = 0.0;
        let lookahead = (self.cfg.lookahead && self.cfg.strategy == Strategy::Sparseloco)
            .then(|| self.outer.lr_at(self.round) as f32);
        let (cfg, language, round) = (self.cfg, self.language, self.round);
        let honest = cfg.peers as usize;
        for (p, peer) in self.peers.iter_mut().enumerate() {
            let hostile = p.checked_sub(honest).and_then(|h| self.hostile.get(h));
            if hostile.is_some_and(|h| !h.trains()) {
                deltas.push(None);
                continue;
            }
            let data_seed = hostile.map_or(cfg.train_seed(), |h| h.data_seed(cfg.train_seed()));
            let start = round_start(&self.theta, &self.efs[p], lookahead);
            let trained = local_round(peer, &start, span as u32, 1, |step| {
                let id = StreamId {
                    seed: data_seed,
                    peer: p as u32,
                    round,
                    step,
                };
                Ok(language.batch(id, cfg.batch as usize, cfg.seq_len as usize)?)
            })?;
            // The training loss is the honest peers' (a hostile run's curve compares with the
            // honest-only run's).
            if p < honest {
                for l in &trained.losses {
                    loss += l;
                }
            }
            deltas.push(Some(trained.delta));
        }
        let aggregate = match self.cfg.strategy {
            Strategy::Sparseloco => self.sparse_aggregate(&deltas, span)?,
            _ => {
                self.bytes_per_peer += 4 * self.numel as u64;
                let dense: Vec<Vec<Vec<f32>>> = deltas.into_iter().flatten().collect();
                Some(mean(&dense))
            }
        };
        match aggregate {
            Some(aggregate) => {
                for h in &mut self.hostile {
                    h.observe_dense(&aggregate);
                }
                self.outer.apply(&mut self.theta, &aggregate, self.round)?;
            }
            None => self.rounds_skipped += 1,
        }
        self.round += 1;
        Ok(loss / (span as f64 * honest as f64))
    }

    /// Compresses each peer's pseudo-gradient through its error feedback (a hostile peer then
    /// swaps in its lie), sends it through the wire format, and aggregates what the receiver
    /// decodes: every update, or what the Gauntlet selects, weighted. `None`: the Gauntlet
    /// left every update out.
    fn sparse_aggregate(
        &mut self,
        deltas: &[Option<Vec<Vec<f32>>>],
        span: u64,
    ) -> Result<Option<Vec<Vec<f32>>>> {
        let honest = self.cfg.peers as usize;
        let mut received = Vec::with_capacity(deltas.len());
        let mut payloads: Vec<Vec<u8>> = Vec::with_capacity(deltas.len());
        let mut sent = 0u64;
        let limits = self.plan.update_limits();
        for (p, delta) in deltas.iter().enumerate() {
            let hostile = p.checked_sub(honest).and_then(|h| self.hostile.get_mut(h));
            let c = &mut self.sent[p];
            let mut payload = match (delta, &hostile) {
                (Some(delta), _) => {
                    compress_round(&mut self.efs[p], delta, &self.plan, c)?;
                    encode(c)?
                }
                (None, Some(h)) => encode(&h.lazy_update(&self.plan, self.round)?)?,
                (None, None) => bail!("peer {p} has no update"),
            };
            if p < honest {
                sent += match self.cfg.wire {
                    WireFormat::Tributary => payload.len() as u64,
                    WireFormat::Production => production_wire_bytes(c),
                };
            }
            if let Some(h) = hostile {
                payload = h.disguise(&self.plan, c, self.round, payload)?;
                if h.kind() == HostileKind::Copy {
                    payload = self.colluder_payload(p, &payloads).unwrap_or(payload);
                }
            }
            received.push(decode(&payload, &limits)?);
            payloads.push(payload);
        }
        // Peers' payloads differ in size by a few bytes: count their mean.
        self.bytes_per_peer += sent.div_ceil(honest as u64);
        let Some(judge) = &mut self.judge else {
            let refs: Vec<_> = received.iter().collect();
            let rule = if self.cfg.paper_mean {
                AggregationRule::Mean
            } else {
                AggregationRule::MedianClipMean
            };
            return Ok(Some(Aggregator::new(rule).aggregate(&refs, None)?));
        };
        let input = RoundInput {
            round: self.round,
            theta: &self.theta,
            updates: &received,
            data: RoundData {
                seed: self.cfg.train_seed(),
                inner_steps: span as u32,
                sequences: self.cfg.batch as usize,
                seq_len: self.cfg.seq_len as usize,
            },
            outer_lr: self.outer.lr_at(self.round),
        };
        let judged = judge.round(&input, self.language)?;
        // An update left out reaches no one: its peer still owes all of it.
        for (p, selected) in judged.selected.iter().enumerate() {
            if !selected && deltas.get(p).is_some_and(Option::is_some) {
                restore_unsent(&mut self.efs[p], &self.sent[p]);
            }
        }
        Ok(judged
            .aggregate
            .map(|a| a.tensors.iter().map(|t| t.to_dense()).collect()))
    }

    /// The payload of the nearest `colluder-origin` slot before `slot` (a `copy` peer's).
    fn colluder_payload(&self, slot: usize, payloads: &[Vec<u8>]) -> Option<Vec<u8>> {
        let honest = self.cfg.peers as usize;
        (honest..slot)
            .rev()
            .find(|&p| {
                self.hostile
                    .get(p - honest)
                    .is_some_and(|h| h.kind() == HostileKind::ColluderOrigin)
            })
            .and_then(|p| payloads.get(p).cloned())
    }

    fn point(&mut self, step: u64, train_loss: f64, floor: f64) -> Result<Point> {
        let eval_loss = match self.cfg.strategy {
            Strategy::Ddp => self.peers[0].evaluate(&self.eval)?,
            _ => {
                // Peer 0 reloads θ at the start of its next round anyway.
                self.peers[0].model.params_mut().load(&self.theta)?;
                self.peers[0].evaluate(&self.eval)?
            }
        };
        Ok(Point {
            tokens: step * self.cfg.tokens_per_step(),
            step,
            bytes_per_peer: self.bytes_per_peer,
            train_loss,
            eval_loss,
            excess: eval_loss - floor,
        })
    }

    fn fingerprint(&self) -> Result<String> {
        let specs = self.plan.layout();
        Ok(match self.cfg.strategy {
            Strategy::Ddp => fingerprint(specs, &self.peers[0].model.params().to_vecs()?),
            _ => fingerprint(specs, &self.theta),
        })
    }
}

fn mean(deltas: &[Vec<Vec<f32>>]) -> Vec<Vec<f32>> {
    let n = deltas.len() as f32;
    let mut out = deltas[0].clone();
    for d in &deltas[1..] {
        for (o, t) in out.iter_mut().zip(d) {
            for (o, t) in o.iter_mut().zip(t) {
                *o += t;
            }
        }
    }
    for o in &mut out {
        for x in o.iter_mut() {
            *x /= n;
        }
    }
    out
}
