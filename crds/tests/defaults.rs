//! An almost empty spec gets the published defaults, in Rust and from the API server's schema
//! defaults alike; specs survive serde round trips.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use serde_json::{Value, json};
use tributary_crds::*;

fn minimal() -> Value {
    json!({"model": {"preset": "tiny"}, "stop": {"totalRounds": 10}})
}

#[test]
fn almost_empty_spec_gets_the_published_defaults() {
    let spec: TrainingRunSpec = serde_json::from_value(minimal()).unwrap();
    assert!(spec.validate().is_empty(), "{}", spec.validate());

    let inner = &spec.inner_optimizer;
    assert_eq!(inner.inner_steps, 30, "H, production");
    assert_eq!(inner.lr, 1.17e-4, "inner lr, production 72B");
    assert_eq!((inner.beta1, inner.beta2, inner.eps), (0.9, 0.95, 1e-8));
    assert_eq!(
        (inner.weight_decay, inner.grad_clip, inner.min_lr_ratio),
        (0.1, 1.0, 0.1)
    );

    let outer = &spec.outer_optimizer;
    assert_eq!(outer.kind, OuterKind::Sgd);
    assert_eq!((outer.base_lr(), outer.momentum()), (1.0, 0.0));

    let c = &spec.compression;
    assert_eq!((c.chunk_side, c.k_per_chunk()), (64, 64));
    assert_eq!(c.effective_density(), 0.015625);
    assert_eq!(c.bits, QuantBits::Two);
    assert_eq!(c.quantizer, Quantizer::Production);
    assert_eq!(c.error_feedback_decay, 0.95);
    assert!(
        c.error_feedback_lookahead,
        "ours, measured in docs/benchmarks.md"
    );
    assert_eq!(c.one_dimensional, OneDimensional::Dense);
    assert_eq!(c.aggregation, Aggregation::MedianClipMean);

    let p = &spec.participation;
    assert_eq!(p.mode, ParticipationMode::Open);
    assert_eq!((p.max_peers, p.reserve_peers), (20, 10));
    assert_eq!(p.submission_window_seconds, 70);
    let s = &p.scoring;
    assert!(s.enabled);
    assert_eq!(
        (s.ema_alpha, s.warmup_rounds, s.zero_below),
        (0.05, 10, 0.1)
    );
    assert_eq!((s.copy_overlap_threshold, s.eval_lr_scale), (0.4, 0.2));

    assert_eq!(spec.data.batch_size, 192);
    assert_eq!(spec.sequence_length().unwrap(), 64, "the model's context");
    assert!(matches!(spec.data.source, DataSource::Embedded(_)));
    assert_eq!(spec.checkpoints.every_rounds, 10);
    assert_eq!(spec.worker_template.gpus_per_worker, 1);
    assert_eq!(spec.coordinator.exposure, Exposure::None);

    assert_eq!(
        spec,
        TrainingRunSpec {
            stop: StopCondition {
                total_rounds: Some(10),
                total_tokens: None
            },
            ..TrainingRunSpec::new(ModelSpec::preset(ModelPreset::Tiny))
        }
    );
}

#[test]
fn schema_defaults_equal_the_rust_defaults() {
    // What the API server stores for an almost empty spec must mean the same as serde's defaults.
    let schema = common::openapi_schema("TrainingRun");
    let mut object = json!({"apiVersion": "tributary.dev/v1alpha1", "kind": "TrainingRun",
                            "metadata": {"name": "x"}, "spec": minimal()});
    common::apply_defaults(&schema, &mut object);
    let defaulted = &object["spec"];
    assert_eq!(defaulted["innerOptimizer"]["innerSteps"], 30);
    assert_eq!(defaulted["compression"]["bits"], 2);
    assert_eq!(defaulted["data"]["source"], json!({"embedded": {}}));
    let from_server: TrainingRunSpec = serde_json::from_value(defaulted.clone()).unwrap();
    let from_serde: TrainingRunSpec = serde_json::from_value(minimal()).unwrap();
    assert_eq!(from_server, from_serde);
    // And every default the server fills in is visible: a full serialization adds nothing.
    let reserialized = serde_json::to_value(&from_serde).unwrap();
    assert_eq!(
        &reserialized, defaulted,
        "schema defaults and serialized defaults differ"
    );

    let schema = common::openapi_schema("Contributor");
    let mut object = json!({"spec": {"trainingRun": "r"}});
    common::apply_defaults(&schema, &mut object);
    assert_eq!(object["spec"]["replicas"], 1);
}

#[test]
fn every_schema_default_passes_its_own_schema() {
    // The API server refuses a CRD whose defaults do not validate.
    fn walk(schema: &Value, path: &str, bad: &mut Vec<String>) {
        if let Some(default) = schema.get("default") {
            let mut sub = schema.clone();
            sub.as_object_mut().unwrap().remove("default");
            let validator = jsonschema::draft4::new(&common::to_draft4(&sub)).unwrap();
            if !validator.is_valid(default) {
                bad.push(format!("{path}: {default}"));
            }
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (name, sub) in props {
                walk(sub, &format!("{path}.{name}"), bad);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(items, &format!("{path}[]"), bad);
        }
    }
    for kind in ["TrainingRun", "Contributor"] {
        let mut bad = Vec::new();
        walk(&common::openapi_schema(kind), kind, &mut bad);
        assert!(bad.is_empty(), "defaults that fail their schema: {bad:?}");
    }
}

#[test]
fn training_run_round_trips_through_yaml_and_json() {
    let run: TrainingRun = serde_yaml::from_value(
        serde_yaml::to_value(common::read_yaml("examples/trainingrun.yaml")).unwrap(),
    )
    .unwrap();
    let yaml = serde_yaml::to_string(&run).unwrap();
    assert!(
        yaml.contains("embedded:") && !yaml.contains('!'),
        "no YAML tags:\n{yaml}"
    );
    let again: TrainingRun = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(again.spec, run.spec);
    let json = serde_json::to_string(&run.spec).unwrap();
    assert_eq!(
        serde_json::from_str::<TrainingRunSpec>(&json).unwrap(),
        run.spec
    );
}

#[test]
fn status_round_trips_with_standard_conditions() {
    let status: TrainingRunStatus = serde_json::from_value(json!({
        "phase": "Running", "round": 12, "loss": 3.25, "tokens": 491520,
        "activePeers": 4, "rejectedPeers": 1, "coordinatorEndpoint": "tiny-demo-coordinator:50051",
        "observedGeneration": 2,
        "conditions": [{"type": "SpecValid", "status": "True", "reason": "Valid", "message": "",
                        "lastTransitionTime": "2026-11-27T08:00:00Z", "observedGeneration": 2}]
    }))
    .unwrap();
    assert_eq!(status.phase, Some(RunPhase::Running));
    assert_eq!(status.conditions[0].type_, condition::SPEC_VALID);
    let back: TrainingRunStatus =
        serde_json::from_value(serde_json::to_value(&status).unwrap()).unwrap();
    assert_eq!(back, status);
    let validator = common::validator("TrainingRun");
    let object = json!({"apiVersion": "tributary.dev/v1alpha1", "kind": "TrainingRun",
        "metadata": {"name": "x"}, "spec": minimal(), "status": serde_json::to_value(&status).unwrap()});
    assert_eq!(
        common::schema_errors(&validator, &object),
        Vec::<String>::new()
    );
}

#[test]
fn quant_bits_are_integers_on_the_wire() {
    assert_eq!(serde_json::to_value(QuantBits::Four).unwrap(), json!(4));
    assert_eq!(
        serde_json::from_value::<QuantBits>(json!(8)).unwrap(),
        QuantBits::Eight
    );
    let err = serde_json::from_value::<QuantBits>(json!(3))
        .unwrap_err()
        .to_string();
    assert!(err.contains("bits must be 2, 4 or 8"), "{err}");
}

#[test]
fn derived_values() {
    let c = CompressionSpec {
        density: Some(0.03125),
        ..CompressionSpec::default()
    };
    assert_eq!(c.k_per_chunk(), 128, "the paper's 3.125%");

    let outer = OuterOptimizer {
        lr_schedule: vec![
            OuterLrStep {
                from_round: 100,
                lr: 0.7,
            },
            OuterLrStep {
                from_round: 200,
                lr: 0.4,
            },
        ],
        ..OuterOptimizer::default()
    };
    assert_eq!(outer.lr_at(0), 1.0);
    assert_eq!(outer.lr_at(150), 0.7);
    assert_eq!(outer.lr_at(10_000), 0.4);
    let nesterov = OuterOptimizer {
        kind: OuterKind::Nesterov,
        ..OuterOptimizer::default()
    };
    assert_eq!(
        (nesterov.base_lr(), nesterov.momentum()),
        (0.6, 0.9),
        "DiLoCo baseline"
    );

    let inner = InnerOptimizer {
        lr: 1.0,
        warmup_steps: 10,
        ..InnerOptimizer::default()
    };
    assert_eq!(inner.lr_at(0, 110), 0.1);
    assert_eq!(inner.lr_at(9, 110), 1.0);
    assert!(
        (inner.lr_at(60, 110) - 0.55).abs() < 1e-12,
        "cosine midpoint"
    );
    assert!((inner.lr_at(110, 110) - 0.1).abs() < 1e-12);
    assert!((inner.lr_at(500, 110) - 0.1).abs() < 1e-12);

    let mut spec: TrainingRunSpec = serde_json::from_value(minimal()).unwrap();
    spec.stop = StopCondition {
        total_rounds: None,
        total_tokens: Some(1_000_000_000),
    };
    // tiny: 30 × 192 × 64 tokens per peer-round, 20 peers.
    assert_eq!(spec.tokens_per_peer_round().unwrap(), 368_640);
    assert_eq!(spec.total_rounds().unwrap(), Some(136));
    assert_eq!(spec.data_seed(), 0);

    let part = ParticipationSpec {
        mode: ParticipationMode::Allowlist,
        allowlist: vec!["ab".repeat(32)],
        ..ParticipationSpec::default()
    };
    assert!(part.admits(&"ab".repeat(32)));
    assert!(!part.admits(&"cd".repeat(32)));
}
