//! examples/*.yaml parse into the Rust types, pass `validate()`, and pass the generated schema;
//! broken copies of them are caught by the schema.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use serde_json::{Value, json};
use tributary_crds::{Contributor, ModelPreset, TrainingRun};

fn example_run() -> Value {
    common::read_yaml("examples/trainingrun.yaml")
}

fn example_contributor() -> Value {
    common::read_yaml("examples/contributor.yaml")
}

/// `example` with the value at `pointer` (e.g. `/spec/compression/density`) set to `value`.
fn with(mut example: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    example
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("no object at {parent}"))
        .insert(key.to_owned(), value);
    example
}

#[test]
fn trainingrun_example_parses_and_validates() {
    let run: TrainingRun = serde_json::from_value(example_run()).unwrap();
    assert_eq!(run.metadata.name.as_deref(), Some("tiny-demo"));
    assert_eq!(run.spec.model.preset, Some(ModelPreset::Tiny));
    assert_eq!(run.spec.participation.max_peers, 4);
    assert!(run.spec.inner_steps() <= 10, "H must stay small for CPUs");
    let problems = run.spec.validate();
    assert!(problems.is_empty(), "{problems}");
    assert_eq!(run.spec.total_rounds().unwrap(), Some(200));
    assert_eq!(run.spec.tokens_per_peer_round().unwrap(), 5 * 16 * 64);
}

#[test]
fn contributor_example_parses_and_validates() {
    let contributor: Contributor = serde_json::from_value(example_contributor()).unwrap();
    assert_eq!(contributor.spec.training_run, "tiny-demo");
    assert_eq!(contributor.spec.replicas, 2);
    assert_eq!(contributor.spec.pods_wanted(), 2);
    let problems = contributor.spec.validate();
    assert!(problems.is_empty(), "{problems}");
}

#[test]
fn examples_pass_the_generated_schemas() {
    let run = common::validator("TrainingRun");
    assert_eq!(
        common::schema_errors(&run, &example_run()),
        Vec::<String>::new()
    );
    let contrib = common::validator("Contributor");
    assert_eq!(
        common::schema_errors(&contrib, &example_contributor()),
        Vec::<String>::new()
    );
}

#[test]
fn schema_refuses_nonsense_runs() {
    let validator = common::validator("TrainingRun");
    let cases = [
        ("/spec/compression/density", json!(2.0), "maximum"),
        (
            "/spec/compression/density",
            json!(0.0),
            "exclusive minimum 0",
        ),
        ("/spec/compression/density", json!(-0.5), "negative"),
        ("/spec/compression/bits", json!(3), "bits 3"),
        ("/spec/compression/bits", json!("2"), "bits as a string"),
        ("/spec/innerOptimizer/innerSteps", json!(0), "H 0"),
        ("/spec/seed", json!(1u64 << 53), "seed beyond 2^53 - 1"),
        ("/spec/model/preset", json!("huge"), "unknown preset"),
        (
            "/spec/compression/quantizer",
            json!("fancy"),
            "unknown quantizer",
        ),
        (
            "/spec/compression/errorFeedbackDecay",
            json!(1.5),
            "beta above 1",
        ),
        (
            "/spec/compression/aggregation",
            json!("sum"),
            "unknown aggregation",
        ),
        (
            "/spec/outerOptimizer/kind",
            json!("adam"),
            "unknown outer kind",
        ),
        ("/spec/outerOptimizer/lr", json!(0.0), "outer lr 0"),
        (
            "/spec/participation/allowlist",
            json!(["not-a-key"]),
            "bad key",
        ),
        (
            "/spec/participation/stragglerPolicy",
            json!("wait"),
            "bad policy",
        ),
        ("/spec/participation/maxPeers", json!(0), "no peers"),
        (
            "/spec/coordinator/exposure",
            json!("ingress"),
            "bad exposure",
        ),
        ("/spec/coordinator/port", json!(70000), "port"),
        (
            "/spec/checkpoints/everyRounds",
            json!(0),
            "checkpoint every 0",
        ),
        ("/spec/data/batchSize", json!(0), "batch 0"),
        (
            "/spec/data/source/embedded/seed",
            json!(-1),
            "negative seed",
        ),
        ("/spec/innerOptimizer/beta1", json!(1.5), "beta1 above 1"),
    ];
    for (pointer, value, what) in cases {
        let broken = with(example_run(), pointer, value.clone());
        assert!(
            !common::schema_errors(&validator, &broken).is_empty(),
            "{what}: {pointer} = {value} passed the schema"
        );
    }
    let no_model = {
        let mut run = example_run();
        run["spec"].as_object_mut().unwrap().remove("model");
        run
    };
    assert!(!common::schema_errors(&validator, &no_model).is_empty());
    let both_sources = with(
        example_run(),
        "/spec/data/source/shards",
        json!({"claimName": "tokens"}),
    );
    assert!(
        !common::schema_errors(&validator, &both_sources).is_empty(),
        "embedded and shards together passed the schema"
    );
}

#[test]
fn schema_refuses_nonsense_contributors() {
    let validator = common::validator("Contributor");
    let cases = [
        ("/spec/replicas", json!(-1)),
        ("/spec/trainingRun", json!("")),
        ("/spec/external", json!({"publicKey": "ABC"})),
    ];
    for (pointer, value) in cases {
        let broken = with(example_contributor(), pointer, value.clone());
        assert!(
            !common::schema_errors(&validator, &broken).is_empty(),
            "{pointer} = {value} passed the schema"
        );
    }
}

#[test]
fn a_valid_edge_passes_the_schema() {
    let validator = common::validator("TrainingRun");
    let mut run = example_run();
    run["spec"]["compression"] = json!({"density": 1.0, "bits": 8});
    assert_eq!(
        common::schema_errors(&validator, &run),
        Vec::<String>::new()
    );
    let run: TrainingRun = serde_json::from_value(run).unwrap();
    assert_eq!(run.spec.compression.k_per_chunk(), 4096);
}
