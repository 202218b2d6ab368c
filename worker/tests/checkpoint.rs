//! Checkpoints: exact round trip, corruption caught, and resuming continues identically.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tch::Device;
use tributary_codec::{
    AggregationRule, Aggregator, CodecParams, ErrorFeedback, compress_contribution,
};
use tributary_crds::{InnerOptimizer, ModelPreset, OuterKind, OuterOptimizer, TensorPlan};
use tributary_data::synthetic::{Language, LanguageConfig};
use tributary_data::{StreamId, TokenSource};
use tributary_worker::checkpoint::Checkpoint;
use tributary_worker::model::{self, fingerprint};
use tributary_worker::train::{InnerLoop, OuterStep, pseudo_gradient};

struct State {
    theta: Vec<Vec<f32>>,
    outer: OuterStep,
    ef: Vec<ErrorFeedback>,
}

fn nesterov() -> OuterOptimizer {
    OuterOptimizer {
        kind: OuterKind::Nesterov,
        lr: Some(0.7),
        momentum: Some(0.9),
        lr_schedule: vec![],
    }
}

/// One SparseLoCo round of a single peer: 3 inner steps, compress, aggregate, outer step.
fn round(state: &mut State, r: u64) {
    let cfg = ModelPreset::Tiny.config();
    let lang = Language::new(LanguageConfig::calibrated(1, cfg.vocab)).unwrap();
    let plan = TensorPlan::new(cfg, CodecParams::default()).unwrap();
    let mut model = model::build(&plan, 1, Device::Cpu).unwrap();
    model.params_mut().load(&state.theta).unwrap();
    let mut inner = InnerLoop::new(
        model,
        InnerOptimizer {
            lr: 3e-3,
            warmup_steps: 1,
            ..Default::default()
        },
        100,
        1,
    );
    for step in 0..3 {
        inner
            .step(
                &lang
                    .batch(
                        StreamId {
                            seed: 1,
                            peer: 0,
                            round: r,
                            step,
                        },
                        4,
                        32,
                    )
                    .unwrap(),
                1,
            )
            .unwrap();
    }
    let local = inner.model.params().to_vecs().unwrap();
    let delta = pseudo_gradient(&state.theta, &local);
    let slices: Vec<&[f32]> = delta.iter().map(Vec::as_slice).collect();
    let c = compress_contribution(&mut state.ef, &slices, plan.shapes(), plan.codec()).unwrap();
    let agg = Aggregator::new(AggregationRule::MedianClipMean)
        .aggregate(&[&c], None)
        .unwrap();
    state.outer.apply(&mut state.theta, &agg, r).unwrap();
}

fn fresh() -> (State, Vec<tributary_worker::model::ParamSpec>) {
    let plan = TensorPlan::new(ModelPreset::Tiny.config(), CodecParams::default()).unwrap();
    let m = model::build(&plan, 1, Device::Cpu).unwrap();
    let theta = m.params().to_vecs().unwrap();
    let sizes: Vec<usize> = theta.iter().map(Vec::len).collect();
    let state = State {
        outer: OuterStep::new(nesterov(), &sizes),
        ef: sizes.iter().map(|n| ErrorFeedback::zeros(*n)).collect(),
        theta,
    };
    (state, m.params().specs().to_vec())
}

fn snapshot(state: &State, specs: &[tributary_worker::model::ParamSpec], r: u64) -> Checkpoint {
    Checkpoint {
        round: r,
        model: ModelPreset::Tiny.config(),
        specs: specs.to_vec(),
        params: state.theta.clone(),
        outer_momentum: state.outer.momentum().to_vec(),
    }
}

#[test]
fn resume_from_a_checkpoint_continues_bit_identically() {
    tch::set_num_threads(1);
    let (mut state, specs) = fresh();
    round(&mut state, 0);
    round(&mut state, 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("round-2.safetensors");
    let hash = snapshot(&state, &specs, 2).save(&path).unwrap();
    // Error feedback is the peer's own: it keeps it across a restart, the checkpoint does not.
    let own_ef: Vec<Vec<f32>> = state.ef.iter().map(|e| e.as_slice().to_vec()).collect();
    round(&mut state, 2);
    round(&mut state, 3);
    let uninterrupted = fingerprint(&specs, &state.theta);

    let ck = Checkpoint::load(&path).unwrap();
    assert_eq!(ck.content_hash().unwrap(), hash);
    assert_eq!(ck.round, 2);
    let (mut resumed, _) = fresh();
    resumed.theta = ck.params;
    resumed.outer.set_momentum(ck.outer_momentum).unwrap();
    resumed.ef = own_ef.into_iter().map(ErrorFeedback::from_vec).collect();
    round(&mut resumed, 2);
    round(&mut resumed, 3);
    assert_eq!(fingerprint(&specs, &resumed.theta), uninterrupted);
}

#[test]
fn round_trip_is_exact_and_corruption_is_rejected() {
    let (mut state, specs) = fresh();
    round(&mut state, 0);
    let ck = snapshot(&state, &specs, 1);
    let bytes = ck.to_bytes().unwrap();
    assert_eq!(Checkpoint::from_bytes(&bytes).unwrap(), ck);

    for cut in [0, 7, bytes.len() / 2, bytes.len() - 1] {
        let err = Checkpoint::from_bytes(&bytes[..cut]).unwrap_err();
        assert!(!format!("{err:#}").is_empty());
    }
    // A flipped bit in the tensor data: the file still parses, the hash catches it.
    let mut flipped = bytes.clone();
    let n = flipped.len();
    flipped[n - 100] ^= 0x10;
    let err = format!("{:#}", Checkpoint::from_bytes(&flipped).unwrap_err());
    assert!(err.contains("content hash mismatch"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    let err = format!("{:#}", Checkpoint::load(&path).unwrap_err());
    assert!(err.contains("bad.safetensors"), "{err}");
}
