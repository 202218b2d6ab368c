//! Cross-field rules: each broken one yields a readable problem naming the field.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use tributary_crds::{ContributorSpec, Error, TrainingRunSpec};

fn spec(extra: serde_json::Value) -> TrainingRunSpec {
    let mut base = json!({"model": {"preset": "tiny"}, "stop": {"totalRounds": 10}});
    for (key, value) in extra.as_object().unwrap() {
        base[key] = value.clone();
    }
    serde_json::from_value(base).unwrap()
}

fn problems(spec: &TrainingRunSpec) -> Vec<String> {
    spec.validate().iter().map(ToString::to_string).collect()
}

#[test]
fn a_sound_spec_has_no_problems() {
    assert_eq!(problems(&spec(json!({}))), Vec::<String>::new());
    assert!(spec(json!({})).check().is_ok());
}

#[test]
fn top_k_and_density_are_exclusive() {
    let s = spec(json!({"compression": {"topK": 32, "density": 0.01}}));
    assert_eq!(
        problems(&s),
        ["spec.compression: set topK or density, not both"]
    );
}

#[test]
fn top_k_must_fit_the_chunk() {
    let s = spec(json!({"compression": {"topK": 100, "chunkSide": 8}}));
    assert_eq!(
        problems(&s),
        ["spec.compression.topK: 100 exceeds the 64 elements of a 8×8 chunk"]
    );
}

#[test]
fn model_problems_are_reported() {
    let s = spec(json!({"model": {"hidden": 64}}));
    assert_eq!(
        problems(&s),
        [
            "spec.model: no preset, so these fields are required: layers, heads, intermediate, vocab, context"
        ]
    );
    let s = spec(json!({"model": {"preset": "tiny", "kvHeads": 3}}));
    assert_eq!(
        problems(&s),
        ["spec.model: kvHeads (3) must divide heads (4)"]
    );
}

#[test]
fn data_rules() {
    let s =
        spec(json!({"data": {"sequenceLength": 4096, "batchSize": 10, "gradientAccumulation": 4}}));
    assert_eq!(
        problems(&s),
        [
            "spec.data.sequenceLength: 4096 exceeds the model's context of 64",
            "spec.data.gradientAccumulation: batchSize 10 is not a multiple of gradientAccumulation 4",
        ]
    );
    let s = spec(json!({"model": {"preset": "covenant-72b"}, "data": {"source": {"shards": {}}}}));
    assert_eq!(
        problems(&s),
        [
            "spec.data.source.shards: set claimName (a PersistentVolumeClaim) or path, or both",
            "spec.data.source.shards.dtype: u16 token ids cannot index a vocabulary of 262144",
        ]
    );
    let s = spec(json!({"data": {"source": {"shards": {"claimName": "tokens", "dtype": "u32"}}}}));
    assert_eq!(problems(&s), Vec::<String>::new());
}

#[test]
fn optimizer_rules() {
    let s = spec(json!({
        "innerOptimizer": {"beta2": 1.0, "warmupSteps": 100, "decaySteps": 50},
        "outerOptimizer": {"kind": "sgd", "momentum": 0.9,
                           "lrSchedule": [{"fromRound": 200, "lr": 0.4}, {"fromRound": 100, "lr": 0.7}]}
    }));
    assert_eq!(
        problems(&s),
        [
            "spec.innerOptimizer.beta2: 1 must be below 1",
            "spec.innerOptimizer.decaySteps: 50 must exceed warmupSteps (100)",
            "spec.outerOptimizer.momentum: plain sgd has no momentum: set kind nesterov or drop momentum",
            "spec.outerOptimizer.lrSchedule: fromRound must strictly increase, got [200, 100]",
        ]
    );
    let s = spec(json!({"outerOptimizer": {"kind": "nesterov", "momentum": 0.9}}));
    assert_eq!(problems(&s), Vec::<String>::new());
}

#[test]
fn participation_rules() {
    let key = "0f".repeat(32);
    let s = spec(json!({"participation": {"mode": "allowlist", "minPeers": 5, "maxPeers": 4}}));
    assert_eq!(
        problems(&s),
        [
            "spec.participation.minPeers: minPeers 5 exceeds maxPeers 4",
            "spec.participation.allowlist: mode allowlist admits nobody: list at least one public key",
        ]
    );
    let s = spec(json!({"participation": {"allowlist": [key]}}));
    assert_eq!(
        problems(&s),
        [
            "spec.participation.allowlist: has no effect in mode open: set mode allowlist or drop the list"
        ]
    );
    let s = spec(json!({"participation": {"mode": "allowlist", "allowlist": [key, "ABC"]}}));
    assert_eq!(
        problems(&s),
        [
            "spec.participation.allowlist[1]: \"ABC\" is not 64 lowercase hex digits (^[0-9a-f]{64}$)"
        ]
    );
}

#[test]
fn validator_replicas_need_scoring_and_stay_within_the_limit() {
    let scoring = |v: serde_json::Value| spec(json!({"participation": {"scoring": v}}));
    assert_eq!(
        TrainingRunSpec::new(spec(json!({})).model)
            .participation
            .scoring
            .validator_replicas,
        0
    );
    assert!(problems(&scoring(json!({"validatorReplicas": 2}))).is_empty());
    assert!(problems(&scoring(json!({"validatorReplicas": 16}))).is_empty());
    assert_eq!(
        problems(&scoring(json!({"validatorReplicas": 17}))),
        ["spec.participation.scoring.validatorReplicas: 17 exceeds the most the operator runs, 16"]
    );
    assert_eq!(
        problems(&scoring(json!({"enabled": false, "validatorReplicas": 1}))),
        [
            "spec.participation.scoring.validatorReplicas: validators only score a run whose scoring is enabled: set enabled or 0"
        ]
    );
    assert!(problems(&scoring(json!({"enabled": false, "validatorReplicas": 0}))).is_empty());
}

#[test]
fn a_run_needs_a_limit() {
    let s: TrainingRunSpec = serde_json::from_value(json!({"model": {"preset": "tiny"}})).unwrap();
    assert_eq!(
        problems(&s),
        ["spec.stop: set totalRounds or totalTokens (or both): a run needs a limit"]
    );
}

#[test]
fn problems_accumulate_into_one_error() {
    let s = spec(json!({"compression": {"topK": 32, "density": 0.01}, "stop": {}}));
    let err = s.check().unwrap_err();
    assert_eq!(err.metric_label(), "invalid_spec");
    let Error::Invalid(found) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(found.len(), 2);
    assert_eq!(
        err.to_string(),
        "spec.compression: set topK or density, not both; \
         spec.stop: set totalRounds or totalTokens (or both): a run needs a limit"
    );
}

#[test]
fn contributor_rules() {
    let ok = ContributorSpec::in_cluster("tiny-demo", 2);
    assert!(ok.validate().is_empty());
    let external: ContributorSpec = serde_json::from_value(json!({
        "trainingRun": "tiny-demo",
        "image": "worker:dev",
        "external": {"publicKey": "Z".repeat(64)}
    }))
    .unwrap();
    let found: Vec<String> = external
        .validate()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        found,
        [
            format!(
                "spec.external.publicKey: \"{}\" is not 64 lowercase hex digits",
                "Z".repeat(64)
            ),
            "spec.image: an external peer runs no pods: drop this field or external".to_owned(),
        ]
    );
    assert_eq!(external.pods_wanted(), 0);
    assert_eq!(external.replicas, 1, "serde default, as the schema default");
}
