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

use super::config::{SimConfig, Strategy, WireFormat};
use super::report::{Point, RunReport};
use crate::model::{self, fingerprint};
use crate::provenance::Machine;
use crate::train::{InnerLoop, OuterStep, compress_round, local_round, round_start};

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
    })
}

struct Sim<'a> {
    cfg: &'a SimConfig,
    language: &'a Language,
    eval: Batch,
    /// One loop for ddp; one per peer otherwise.
    peers: Vec<InnerLoop>,
    /// Global parameters (diloco, sparseloco).
    theta: Vec<Vec<f32>>,
    outer: OuterStep,
    efs: Vec<Vec<ErrorFeedback>>,
    /// The contribution being sent; its buffers are reused by every peer and round.
    sent: Contribution,
    plan: TensorPlan,
    numel: usize,
    bytes_per_peer: u64,
    round: u64,
}

impl<'a> Sim<'a> {
    fn new(cfg: &'a SimConfig, language: &'a Language, eval: Batch) -> Result<Self> {
        // DDP's one replica steps on every peer's batch: nothing is averaged after it.
        let (replicas, aggregated) = match cfg.strategy {
            Strategy::Ddp => (1, 1),
            _ => (cfg.peers as usize, cfg.peers),
        };
        let plan = TensorPlan::new(cfg.model, cfg.codec)?;
        let peers = (0..replicas)
            .map(|_| {
                model::build(&plan, cfg.train_seed(), Device::Cpu)
                    .map(|m| InnerLoop::new(m, cfg.inner.clone(), cfg.steps(), aggregated))
            })
            .collect::<Result<Vec<_>>>()?;
        let theta = peers[0].model.params().to_vecs()?;
        let sizes: Vec<usize> = theta.iter().map(Vec::len).collect();
        let efs = (0..cfg.peers)
            .map(|_| sizes.iter().map(|n| ErrorFeedback::zeros(*n)).collect())
            .collect();
        Ok(Self {
            cfg,
            language,
            eval,
            peers,
            outer: OuterStep::new(cfg.outer_optimizer(), &sizes),
            theta,
            efs,
            sent: Contribution::default(),
            plan,
            numel: sizes.iter().sum(),
            bytes_per_peer: 0,
            round: 0,
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
        for (p, peer) in self.peers.iter_mut().enumerate() {
            let start = round_start(&self.theta, &self.efs[p], lookahead);
            let trained = local_round(peer, &start, span as u32, 1, |step| {
                let id = StreamId {
                    seed: cfg.train_seed(),
                    peer: p as u32,
                    round,
                    step,
                };
                Ok(language.batch(id, cfg.batch as usize, cfg.seq_len as usize)?)
            })?;
            for l in &trained.losses {
                loss += l;
            }
            deltas.push(trained.delta);
        }
        let aggregate = match self.cfg.strategy {
            Strategy::Sparseloco => self.sparse_aggregate(&deltas)?,
            _ => {
                self.bytes_per_peer += 4 * self.numel as u64;
                mean(&deltas)
            }
        };
        self.outer.apply(&mut self.theta, &aggregate, self.round)?;
        self.round += 1;
        Ok(loss / (span as f64 * self.peers.len() as f64))
    }

    /// Compresses each peer's pseudo-gradient through its error feedback, sends it through the
    /// wire format, and aggregates what the receiver decodes.
    fn sparse_aggregate(&mut self, deltas: &[Vec<Vec<f32>>]) -> Result<Vec<Vec<f32>>> {
        let mut received = Vec::with_capacity(deltas.len());
        let mut sent = 0u64;
        let limits = self.plan.update_limits();
        for (p, delta) in deltas.iter().enumerate() {
            let c = &mut self.sent;
            compress_round(&mut self.efs[p], delta, &self.plan, c)?;
            let bytes = encode(c)?;
            sent += match self.cfg.wire {
                WireFormat::Tributary => bytes.len() as u64,
                WireFormat::Production => production_wire_bytes(c),
            };
            received.push(decode(&bytes, &limits)?);
        }
        // Peers' payloads differ in size by a few bytes: count their mean.
        self.bytes_per_peer += sent.div_ceil(deltas.len() as u64);
        let refs: Vec<_> = received.iter().collect();
        let rule = if self.cfg.paper_mean {
            AggregationRule::Mean
        } else {
            AggregationRule::MedianClipMean
        };
        Ok(Aggregator::new(rule).aggregate(&refs, None)?)
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
