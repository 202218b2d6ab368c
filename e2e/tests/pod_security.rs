#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Every pod the operator creates passes the Pod Security "restricted" profile: the coordinator
//! Deployment, the worker StatefulSet and the validator StatefulSet as `children` builds them, for the examples and for the
//! variants that change the pod (GPUs, the run's own resources, a user's key Secret, an image).
//! The chart's own Deployment is checked in chart.rs.

use serde_json::{Value, json};
use tributary_crds::{Contributor, TrainingRun};
use tributary_e2e::cluster::repo_root;
use tributary_e2e::pod_security::{pod_spec, restricted_violations};
use tributary_operator::controller::children::{self, Images};

fn example(file: &str) -> Value {
    let text = std::fs::read_to_string(repo_root().join("examples").join(file)).unwrap();
    let mut object: Value = serde_yaml::from_str(&text).unwrap();
    object["metadata"]["namespace"] = json!("ns");
    object["metadata"]["uid"] = json!(format!("{file}-uid"));
    object
}

fn images() -> Images {
    Images {
        coordinator: "example/operator:1".into(),
        worker: "example/worker:1".into(),
    }
}

fn assert_restricted(object: &Value) {
    let spec = pod_spec(object).unwrap_or_else(|| panic!("no pod in {}", object["kind"]));
    assert!(spec["containers"].as_array().is_some_and(|c| !c.is_empty()));
    let violations = restricted_violations(spec);
    assert!(
        violations.is_empty(),
        "{} {} breaks the restricted profile: {violations:#?}",
        object["kind"],
        object["metadata"]["name"]
    );
}

fn runs() -> Vec<TrainingRun> {
    let plain = example("trainingrun.yaml");
    let mut gpu = plain.clone();
    gpu["spec"]["workerTemplate"]["gpusPerWorker"] = json!(2);
    gpu["spec"]["coordinator"]["image"] = json!("registry.example/op:2");
    gpu["spec"]["coordinator"]["resources"] = json!({"limits": {"memory": "16Gi"}});
    gpu["spec"]["coordinator"]["exposure"] = json!("loadBalancer");
    [plain, gpu]
        .into_iter()
        .map(|r| serde_json::from_value(r).unwrap())
        .collect()
}

fn contributors() -> Vec<Contributor> {
    let plain = example("contributor.yaml");
    let mut own_keys = plain.clone();
    own_keys["spec"]["keySecretRef"] = json!({"name": "team-keys"});
    own_keys["spec"]["image"] = json!("registry.example/worker:custom");
    own_keys["spec"]["gpusPerWorker"] = json!(1);
    [plain, own_keys]
        .into_iter()
        .map(|c| serde_json::from_value(c).unwrap())
        .collect()
}

#[test]
fn coordinator_pods_pass_the_restricted_profile() {
    for run in runs() {
        let deployment = children::coordinator_deployment(&run, &images(), "manifest");
        assert_restricted(&serde_json::to_value(deployment).unwrap());
    }
}

#[test]
fn worker_pods_pass_the_restricted_profile() {
    for run in runs() {
        for contributor in contributors() {
            let sts = children::worker_statefulset(&contributor, &run, &images(), 3);
            assert_restricted(&serde_json::to_value(sts).unwrap());
        }
    }
}

#[test]
fn validator_pods_pass_the_restricted_profile() {
    for run in runs() {
        let sts = children::validator_statefulset(&run, &images(), 2);
        assert_restricted(&serde_json::to_value(sts).unwrap());
    }
}
