//! Inner-step throughput (tokens/s) of a preset on CPU or CUDA, and on CUDA the model-FLOPs
//! utilisation and the share of a round that compressing the pseudo-gradient takes.
//!
//!   cargo bench -p tributary-worker --bench inner_step                 # tiny and small, CPU
//!   TRIBUTARY_BENCH_PRESETS=1b TRIBUTARY_BENCH_DEVICE=cuda \
//!     TRIBUTARY_BENCH_BATCH=8 TRIBUTARY_BENCH_SEQ=2048 cargo bench ...  # scripts/gpu-bench.sh
//!   TRIBUTARY_BENCH_SECOND_MOMENT_PEERS=4 cargo bench ...  # the noise-corrected AdamW step

use std::time::Instant;

use tch::Device;
use tributary_codec::{CodecParams, ErrorFeedback, compress_contribution};
use tributary_crds::TensorPlan;
use tributary_crds::{InnerOptimizer, ModelPreset};
use tributary_data::synthetic::{Language, LanguageConfig};
use tributary_data::{StreamId, TokenSource};
use tributary_worker::model;
use tributary_worker::train::InnerLoop;

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
    // Dense bf16 peak of one H100/H200 SXM, for model-FLOPs utilisation.
    let peak_flops: f64 = env("TRIBUTARY_BENCH_PEAK_TFLOPS", 989.0) * 1e12;
    let threads = tch::get_num_threads();
    // 1: plain AdamW; more: each step keeps its first half's gradient (docs/training.md).
    let second_moment_peers: u32 = env("TRIBUTARY_BENCH_SECOND_MOMENT_PEERS", 1);
    println!(
        "device {device:?}, libtorch threads {threads}, second-moment peers {second_moment_peers}"
    );
    println!(
        "| preset | parameters | batch × seq | step ms | tokens/s | MFU | compress ms | compress share of a 30-step round |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for name in presets.split(',') {
        let preset = ModelPreset::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| anyhow::anyhow!("unknown preset {name}"))?;
        let cfg = preset.config();
        let batch: usize = env("TRIBUTARY_BENCH_BATCH", 16);
        let seq: usize = env("TRIBUTARY_BENCH_SEQ", cfg.context as usize).min(cfg.context as usize);
        let steps: u32 = env("TRIBUTARY_BENCH_STEPS", 10);
        let lang = Language::new(LanguageConfig::calibrated(1, cfg.vocab))?;
        let plan = TensorPlan::new(cfg, CodecParams::default())?;
        let model = model::build(&plan, 1, device)?;
        let n = model.params().numel();
        let mut inner = InnerLoop::new(
            model,
            InnerOptimizer {
                warmup_steps: 1,
                ..Default::default()
            },
            1000,
            second_moment_peers,
        );
        let batch_of = |step| {
            lang.batch(
                StreamId {
                    seed: 1,
                    peer: 0,
                    round: 0,
                    step,
                },
                batch,
                seq,
            )
        };
        inner.step(&batch_of(0)?, 1)?; // warm-up: allocator, kernels
        let t0 = Instant::now();
        for step in 1..=steps {
            inner.step(&batch_of(step)?, 1)?;
        }
        if device.is_cuda() {
            tch::Cuda::synchronize(0);
        }
        let step_s = t0.elapsed().as_secs_f64() / f64::from(steps);
        let tps = (batch * seq) as f64 / step_s;
        let mfu = 6.0 * n as f64 * tps / peak_flops;

        // Compress the pseudo-gradient of one round (host buffers, all cores).
        let params = inner.model.params().to_vecs()?;
        let mut efs: Vec<ErrorFeedback> = params
            .iter()
            .map(|p| ErrorFeedback::zeros(p.len()))
            .collect();
        let slices: Vec<&[f32]> = params.iter().map(Vec::as_slice).collect();
        let t1 = Instant::now();
        let c = compress_contribution(&mut efs, &slices, plan.shapes(), plan.codec())?;
        let compress_s = t1.elapsed().as_secs_f64();
        std::hint::black_box(c);
        println!(
            "| {name} | {n} | {batch} × {seq} | {:.1} | {tps:.0} | {} | {:.1} | {:.2}% |",
            step_s * 1e3,
            if device.is_cuda() {
                format!("{:.1}%", mfu * 100.0)
            } else {
                "–".into()
            },
            compress_s * 1e3,
            100.0 * compress_s / (30.0 * step_s + compress_s),
        );
    }
    Ok(())
}
