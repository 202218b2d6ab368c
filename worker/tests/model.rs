//! The LLaMA model on CPU: shapes, causality, grouped-query attention, and that it learns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tch::{Device, Kind, Tensor};
use tributary_crds::{InnerOptimizer, ModelConfig, ModelPreset};
use tributary_data::synthetic::{Language, LanguageConfig};
use tributary_data::{StreamId, TokenSource};
use tributary_worker::model::{Llama, Model};
use tributary_worker::train::InnerLoop;

fn tiny() -> ModelConfig {
    ModelPreset::Tiny.config()
}

fn tokens(seed: i64, b: i64, t: i64, vocab: i64) -> Tensor {
    tch::manual_seed(seed);
    Tensor::randint(vocab, [b, t], (Kind::Int64, Device::Cpu))
}

#[test]
fn forward_has_the_right_shape_and_parameter_count() {
    let cfg = tiny();
    let m = Llama::new(cfg, 1, Device::Cpu).unwrap();
    assert_eq!(m.params().numel() as u64, cfg.parameter_count());
    let logits = m.forward(&tokens(0, 3, 17, i64::from(cfg.vocab)));
    assert_eq!(logits.size(), vec![3, 17, i64::from(cfg.vocab)]);
    assert_eq!(logits.kind(), Kind::Float);
}

#[test]
fn future_tokens_do_not_change_past_logits() {
    let cfg = tiny();
    let m = Llama::new(cfg, 2, Device::Cpu).unwrap();
    let a = tokens(1, 2, 32, i64::from(cfg.vocab));
    let b = a.copy();
    // Change only the last 8 positions.
    let _ = b.narrow(1, 24, 8).fill_(5);
    let (la, lb) = (m.forward(&a), m.forward(&b));
    let past = (la.narrow(1, 0, 24) - lb.narrow(1, 0, 24))
        .abs()
        .max()
        .double_value(&[]);
    let future = (la.narrow(1, 24, 8) - lb.narrow(1, 24, 8))
        .abs()
        .max()
        .double_value(&[]);
    assert!(past < 1e-6, "past logits moved by {past}");
    assert!(
        future > 1e-4,
        "future logits did not move ({future}): the test is vacuous"
    );
}

#[test]
fn grouped_query_attention_equals_full_attention_with_repeated_heads() {
    let gqa_cfg = ModelConfig {
        kv_heads: 2,
        ..tiny()
    };
    let mha_cfg = ModelConfig {
        kv_heads: 4,
        ..tiny()
    };
    let gqa = Llama::new(gqa_cfg, 3, Device::Cpu).unwrap();
    let mut mha = Llama::new(mha_cfg, 4, Device::Cpu).unwrap();
    let hd = tiny().head_dim() as usize;
    let d = tiny().hidden as usize;
    let src = gqa.params().to_vecs().unwrap();
    let mut dst = mha.params().to_vecs().unwrap();
    for (i, spec) in gqa.params().specs().iter().enumerate() {
        let is_kv = spec.name.ends_with("k_proj.weight") || spec.name.ends_with("v_proj.weight");
        dst[i] = if is_kv {
            // Key/value head j serves query heads 2j and 2j+1: repeat each head's rows.
            let mut rows = Vec::new();
            for head in 0..2 {
                let block = &src[i][head * hd * d..(head + 1) * hd * d];
                rows.extend_from_slice(block);
                rows.extend_from_slice(block);
            }
            rows
        } else {
            src[i].clone()
        };
    }
    mha.params_mut().load(&dst).unwrap();
    let x = tokens(5, 2, 20, i64::from(tiny().vocab));
    let diff = (gqa.forward(&x) - mha.forward(&x))
        .abs()
        .max()
        .double_value(&[]);
    assert!(diff < 1e-5, "GQA and repeated-head MHA differ by {diff}");
}

#[test]
fn loss_decreases_on_the_embedded_language() {
    tch::set_num_threads(1);
    let cfg = tiny();
    let lang = Language::new(LanguageConfig::calibrated(9, cfg.vocab)).unwrap();
    let model = Llama::new(cfg, 9, Device::Cpu).unwrap();
    let schedule = InnerOptimizer {
        lr: 3e-3,
        warmup_steps: 10,
        ..InnerOptimizer::default()
    };
    let mut inner = InnerLoop::new(Box::new(model), schedule, 120, 1);
    let eval = lang.batch(StreamId::held_out(9, 0), 32, 64).unwrap();
    let before = inner.evaluate(&eval).unwrap();
    for step in 0..120 {
        let b = lang
            .batch(
                StreamId {
                    seed: 9,
                    peer: 0,
                    round: 0,
                    step,
                },
                16,
                64,
            )
            .unwrap();
        // Two micro-batches: accumulation must give the same kind of progress.
        inner.step(&b, 2).unwrap();
    }
    let after = inner.evaluate(&eval).unwrap();
    assert!(
        before > (cfg.vocab as f64).ln() - 0.1,
        "starts near uniform: {before}"
    );
    assert!(after < before - 1.5, "loss {before:.3} -> {after:.3}");
}

#[test]
fn gradient_accumulation_matches_one_big_batch() {
    tch::set_num_threads(1);
    let cfg = tiny();
    let lang = Language::new(LanguageConfig::calibrated(4, cfg.vocab)).unwrap();
    let b = lang
        .batch(
            StreamId {
                seed: 4,
                peer: 0,
                round: 0,
                step: 0,
            },
            8,
            32,
        )
        .unwrap();
    let run = |micro| {
        let model = Llama::new(cfg, 4, Device::Cpu).unwrap();
        let mut inner = InnerLoop::new(Box::new(model), InnerOptimizer::default(), 10, 1);
        let loss = inner.step(&b, micro).unwrap();
        (loss, inner.model.params().to_vecs().unwrap())
    };
    let (l1, p1) = run(1);
    let (l4, p4) = run(4);
    assert!((l1 - l4).abs() < 1e-5, "{l1} vs {l4}");
    let max = p1
        .iter()
        .flatten()
        .zip(p4.iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max < 1e-6, "parameters differ by {max}");
}

/// The noise-corrected step (docs/training.md): however the batch is split into micro-batches
/// it is the same step, and against plain AdamW's first step (±lr everywhere) it is at least as
/// long in every coordinate and at most √N longer, longer where the two halves disagree.
#[test]
fn noise_corrected_step_lengthens_noisy_coordinates_up_to_sqrt_n() {
    let cfg = tiny();
    let lang = Language::new(LanguageConfig::calibrated(4, cfg.vocab)).unwrap();
    let batch = |sequences| {
        lang.batch(
            StreamId {
                seed: 4,
                peer: 0,
                round: 0,
                step: 0,
            },
            sequences,
            32,
        )
        .unwrap()
    };
    let lr = 1e-2;
    let run = |sequences, micro, peers| {
        let model = Llama::new(cfg, 4, Device::Cpu).unwrap();
        let before = model.params().to_vecs().unwrap();
        let schedule = InnerOptimizer {
            lr,
            warmup_steps: 0,
            weight_decay: 0.0,
            grad_clip: 0.0,
            second_moment_peers: Some(peers),
            ..InnerOptimizer::default()
        };
        let mut inner = InnerLoop::new(Box::new(model), schedule, 10, 1);
        inner.step(&batch(sequences), micro).unwrap();
        let after = inner.model.params().to_vecs().unwrap();
        before
            .iter()
            .flatten()
            .zip(after.iter().flatten())
            .map(|(b, a)| f64::from(a - b).abs())
            .collect::<Vec<f64>>()
    };
    let plain = run(8, 1, 1);
    let corrected = run(8, 1, 4);
    let split = run(8, 4, 4);
    // Equal up to summation order, which moves only the few coordinates whose gradient or
    // whose halves' difference almost cancels.
    let moved = corrected
        .iter()
        .zip(&split)
        .filter(|(a, b)| (*a - *b).abs() > 1e-4 * lr)
        .count();
    assert!(
        moved * 1000 < corrected.len(),
        "micro-batching changed {moved} coordinates"
    );
    let mut longer = 0;
    for (p, c) in plain.iter().zip(&corrected) {
        if *p < 0.5 * lr {
            continue; // a gradient of exactly zero (padding rows of the embedding)
        }
        assert!(
            *c >= p * 0.999 && *c <= p * 2.001,
            "plain {p}, corrected {c}"
        );
        longer += usize::from(*c > p * 1.1);
    }
    assert!(
        longer > plain.len() / 10,
        "only {longer} coordinates lengthened"
    );
    // An odd batch splits 1:2 and still steps.
    assert!(run(3, 1, 4).iter().any(|d| *d > 0.5 * lr));
}
