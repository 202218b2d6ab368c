//! Validation cost: what scoring one candidate update costs a validator (the update applied
//! alone, losses on its 8 assigned and 32 held-out batches: train::score), against the round
//! it is scored in (H = 30 inner steps of a peer, timed over a few steps), for a preset on CPU
//! or CUDA. Prints seconds per candidate, its share of a round, and how many candidates one
//! validator covers per round.
//!
//!   cargo bench -p tributary-worker --bench validation                # tiny and small, CPU
//!   TRIBUTARY_BENCH_PRESETS=1b TRIBUTARY_BENCH_DEVICE=cuda \
//!     TRIBUTARY_BENCH_BATCH=8 TRIBUTARY_BENCH_SEQ=2048 cargo bench ...  # a GPU

use std::time::Instant;

use tch::Device;
use tributary_codec::{CodecParams, Contribution, ErrorFeedback, compress_contribution};
use tributary_crds::{InnerOptimizer, ModelPreset, ScoringSpec, TensorPlan};
use tributary_data::synthetic::{Language, LanguageConfig};
use tributary_data::{StreamId, TokenSource};
use tributary_worker::model;
use tributary_worker::train::{InnerLoop, RoundData, RoundScorer, median_norm, pseudo_gradient};

fn env<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let presets = std::env::var("TRIBUTARY_BENCH_PRESETS").unwrap_or_else(|_| "tiny,small".into());
    let device = match std::env::var("TRIBUTARY_BENCH_DEVICE").as_deref() {
        Ok("cuda") => Device::Cuda(0),
        _ => Device::Cpu,
    };
    // The published round: H = 30 inner steps (SPARSELOCO.md, "Defaults").
    let h: u32 = env("TRIBUTARY_BENCH_H", 30);
    let candidates: usize = env("TRIBUTARY_BENCH_CANDIDATES", 2);
    // Inner steps timed (the round's time is H × one step's).
    let timed: u32 = env("TRIBUTARY_BENCH_STEPS", 3);
    println!(
        "device {device:?}, libtorch threads {}, rounds of H = {h} inner steps",
        tch::get_num_threads()
    );
    println!(
        "| preset | parameters | batch × seq | inner step s | round s (H steps) | round setup s | s per candidate | share of a round per candidate | candidates per validator per round |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for name in presets.split(',') {
        let preset = ModelPreset::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| anyhow::anyhow!("unknown preset {name}"))?;
        let cfg = preset.config();
        let batch: usize = env("TRIBUTARY_BENCH_BATCH", 16);
        let seq: usize = env("TRIBUTARY_BENCH_SEQ", cfg.context as usize).min(cfg.context as usize);
        let lang = Language::new(LanguageConfig::calibrated(1, cfg.vocab))?;
        let plan = TensorPlan::new(cfg, CodecParams::default())?;
        let loop_of = || -> anyhow::Result<InnerLoop> {
            Ok(InnerLoop::new(
                model::build(&plan, 1, device)?,
                InnerOptimizer {
                    warmup_steps: 1,
                    ..Default::default()
                },
                1000,
                1,
            ))
        };
        let mut peer = loop_of()?;
        let theta = peer.model.params().to_vecs()?;
        let n = plan.numel();
        let batch_of = |peer_slot: u32, step: u32| {
            lang.batch(
                StreamId {
                    seed: 1,
                    peer: peer_slot,
                    round: 0,
                    step,
                },
                batch,
                seq,
            )
        };
        // Candidates: each slot's pseudo-gradient after one step (their content does not change
        // the cost), compressed as peers send them.
        peer.step(&batch_of(0, 0)?, 1)?; // warm-up: allocator, kernels
        let t0 = Instant::now();
        for step in 1..=timed {
            peer.step(&batch_of(0, step)?, 1)?;
        }
        sync(device);
        let step_s = t0.elapsed().as_secs_f64() / f64::from(timed.max(1));
        let mut updates: Vec<Contribution> = Vec::with_capacity(candidates);
        for slot in 0..candidates as u32 {
            if slot > 0 {
                peer.model.params_mut().load(&theta)?;
                peer.step(&batch_of(slot, 0)?, 1)?;
            }
            let delta = pseudo_gradient(&theta, &peer.model.params().to_vecs()?);
            let mut efs: Vec<ErrorFeedback> = delta
                .iter()
                .map(|d| ErrorFeedback::zeros(d.len()))
                .collect();
            let slices: Vec<&[f32]> = delta.iter().map(Vec::as_slice).collect();
            updates.push(compress_contribution(
                &mut efs,
                &slices,
                plan.shapes(),
                plan.codec(),
            )?);
        }
        let mut validator = loop_of()?;
        let data = RoundData {
            seed: 1,
            inner_steps: h,
            sequences: batch,
            seq_len: seq,
        };
        let t1 = Instant::now();
        let scorer = RoundScorer::new(
            &mut validator,
            &theta,
            &lang,
            data,
            0,
            ScoringSpec::default().eval_lr_scale,
            median_norm(&updates),
        )?;
        sync(device);
        let setup_s = t1.elapsed().as_secs_f64();
        let t2 = Instant::now();
        for (slot, u) in updates.iter().enumerate() {
            std::hint::black_box(scorer.score(&mut validator, &theta, &lang, u, slot as u32)?);
        }
        sync(device);
        let per_candidate = t2.elapsed().as_secs_f64() / candidates as f64;
        let round_s = f64::from(h) * step_s;
        println!(
            "| {name} | {n} | {batch} × {seq} | {step_s:.3} | {round_s:.2} | {setup_s:.2} | {per_candidate:.3} | {:.1}% | {} |",
            100.0 * per_candidate / round_s,
            ((round_s - setup_s) / per_candidate).floor().max(0.0),
        );
    }
    Ok(())
}

fn sync(device: Device) {
    if device.is_cuda() {
        tch::Cuda::synchronize(0);
    }
}
