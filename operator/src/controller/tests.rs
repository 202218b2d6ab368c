//! Reconcile against a mock API server (tower-test): each test asserts the exact requests a
//! reconcile makes, in order, and what it writes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tributary_crds::{Contributor, TrainingRun};
use tributary_proto::v1alpha1::RunStatus;

use k8s_openapi::api::apps::v1::Deployment;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use serde::de::DeserializeOwned;

use tributary_proto::identity::Identity;

use super::*;

/// One request the mock API server saw.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: String,
    body: Value,
}

/// Answers a request: status and JSON body.
type Responder = Box<dyn Fn(&Seen) -> (StatusCode, Value) + Send + Sync>;

/// A client whose API server records every request and answers with `respond`.
fn mock_client(respond: Responder) -> (Client, Arc<Mutex<Vec<Seen>>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap();
            let seen = Seen {
                method: parts.method.to_string(),
                path: parts.uri.path().to_owned(),
                query: parts.uri.query().unwrap_or_default().to_owned(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            let (status, reply) = respond(&seen);
            log.lock().unwrap().push(seen);
            send.send_response(
                Response::builder()
                    .status(status)
                    .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                    .unwrap(),
            );
        }
    });
    (Client::new(service, "default"), seen)
}

fn not_found() -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
    )
}

/// A probe that never reaches a coordinator (none is Ready in these tests anyway).
struct NoCoordinator;

impl StatusProbe for NoCoordinator {
    fn status(
        &self,
        url: String,
    ) -> futures::future::BoxFuture<'static, Result<RunStatus, String>> {
        Box::pin(async move { Err(format!("no coordinator at {url}")) })
    }
}

/// What the controller's watches would have cached: each list is its kind's complete first
/// listing.
#[derive(Default)]
struct Cached {
    runs: Vec<Value>,
    contributors: Vec<Value>,
    config_maps: Vec<Value>,
    deployments: Vec<Value>,
    statefulsets: Vec<Value>,
    secrets: Vec<Value>,
}

fn filled<K>(objects: &[Value]) -> (Store<K>, reflector::store::Writer<K>)
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + 'static,
{
    let (store, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Init);
    for o in objects {
        let object: K = serde_json::from_value(o.clone()).unwrap();
        writer.apply_watcher_event(&watcher::Event::InitApply(object));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    (store, writer)
}

fn context(client: Client, cached: &Cached) -> Arc<Context> {
    context_with(client, cached).0
}

/// The context, and the writer of its Deployment cache (to change what the cache shows).
fn context_with(
    client: Client,
    cached: &Cached,
) -> (Arc<Context>, reflector::store::Writer<Deployment>) {
    let (deployments, writer) = filled(&cached.deployments);
    let caches = Caches::new(
        filled(&cached.runs).0,
        filled(&cached.contributors).0,
        filled(&[]).0,
        filled(&cached.config_maps).0,
        filled(&[]).0,
        deployments,
        filled(&[]).0,
        filled(&cached.statefulsets).0,
        filled(&cached.secrets).0,
        cache::Readiness::default(),
    );
    let parts = Parts {
        images: Images {
            coordinator: "example/operator:1".into(),
            worker: "example/worker:1".into(),
        },
        probe: Arc::new(NoCoordinator),
        metrics: Arc::new(metrics::Metrics::default()),
        identity: "test-replica".into(),
        poll: Duration::from_secs(5),
    };
    (Arc::new(Context::new(client, caches, parts)), writer)
}

fn run_json() -> Value {
    let yaml = include_str!("../../../examples/trainingrun.yaml");
    let mut run: Value = serde_yaml::from_str(yaml).unwrap();
    run["metadata"]["namespace"] = json!("ns");
    run["metadata"]["uid"] = json!("run-uid-1");
    run["metadata"]["generation"] = json!(2);
    run
}

fn training_run(run: &Value) -> Arc<TrainingRun> {
    Arc::new(serde_json::from_value(run.clone()).unwrap())
}

/// What a server-side apply answers: the object it was sent.
fn echo(seen: &Seen) -> (StatusCode, Value) {
    (StatusCode::OK, seen.body.clone())
}

fn calls(seen: &Arc<Mutex<Vec<Seen>>>) -> Vec<(String, String)> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|s| (s.method.clone(), s.path.clone()))
        .collect()
}

fn find<'a>(seen: &'a [Seen], method: &str, path: &str) -> &'a Seen {
    seen.iter()
        .find(|s| s.method == method && s.path == path)
        .unwrap_or_else(|| panic!("no {method} {path}"))
}

fn pair(method: &str, path: &str) -> (String, String) {
    (method.to_owned(), path.to_owned())
}

const CORE: &str = "/api/v1/namespaces/ns";
const APPS: &str = "/apis/apps/v1/namespaces/ns";
const OURS: &str = "/apis/tributary.dev/v1alpha1/namespaces/ns";

/// Answers a TrainingRun reconcile's writes.
fn run_server(run: Value) -> Responder {
    Box::new(
        move |seen| match (seen.method.as_str(), seen.path.as_str()) {
            ("PATCH", p) if p.ends_with("/trainingruns/tiny-demo/status") => {
                let mut full = run.clone();
                full["status"] = seen.body["status"].clone();
                (StatusCode::OK, full)
            }
            ("PATCH" | "POST", _) => echo(seen),
            _ => not_found(),
        },
    )
}

#[tokio::test]
async fn a_new_run_gets_its_coordinator_by_server_side_apply_then_a_pending_status() {
    let run = run_json();
    let (client, seen) = mock_client(run_server(run.clone()));
    let ctx = context(client, &Cached::default());
    let action = training_run::reconcile(training_run(&run), ctx)
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
    assert_eq!(
        calls(&seen),
        vec![
            pair("PATCH", &format!("{CORE}/configmaps/tiny-demo-run")),
            pair(
                "PATCH",
                &format!("{CORE}/persistentvolumeclaims/tiny-demo-coordinator")
            ),
            pair(
                "PATCH",
                &format!("{APPS}/deployments/tiny-demo-coordinator")
            ),
            pair("PATCH", &format!("{CORE}/services/tiny-demo-coordinator")),
            pair("PATCH", &format!("{OURS}/trainingruns/tiny-demo/status")),
            pair("POST", "/apis/events.k8s.io/v1/namespaces/ns/events"),
        ]
    );
    let seen = seen.lock().unwrap();
    for s in seen.iter().filter(|s| s.method == "PATCH") {
        assert!(
            s.query.contains("fieldManager=tributary-operator") && s.query.contains("force=true"),
            "every write is a forced apply by our one field manager: {} {}",
            s.path,
            s.query
        );
        if !s.path.ends_with("/status") {
            let owner = &s.body["metadata"]["ownerReferences"][0];
            assert_eq!(owner["uid"], "run-uid-1", "{} is owned by the run", s.path);
            assert_eq!(owner["controller"], true);
            assert_eq!(
                s.body["metadata"]["labels"]["app.kubernetes.io/managed-by"],
                "tributary-operator"
            );
        }
    }
    let cm = find(&seen, "PATCH", &format!("{CORE}/configmaps/tiny-demo-run"));
    let manifest: TrainingRun =
        serde_yaml::from_str(cm.body["data"]["run.yaml"].as_str().unwrap()).unwrap();
    assert_eq!(
        manifest.spec,
        training_run(&run).spec,
        "the coordinator gets the spec as is"
    );

    let deployment = find(
        &seen,
        "PATCH",
        &format!("{APPS}/deployments/tiny-demo-coordinator"),
    );
    let container = &deployment.body["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "example/operator:1");
    assert_eq!(
        container["args"],
        json!([
            "coordinator",
            "--run",
            "/etc/tributary/run.yaml",
            "--data-dir",
            "/var/lib/tributary",
            "--listen",
            "$(POD_IP):50051"
        ])
    );
    assert_eq!(deployment.body["spec"]["strategy"]["type"], "Recreate");
    // The run names no resources: the operator's default bounds the coordinator.
    assert_eq!(
        container["resources"],
        json!({"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "4Gi"}})
    );
    let pvc = find(
        &seen,
        "PATCH",
        &format!("{CORE}/persistentvolumeclaims/tiny-demo-coordinator"),
    );
    assert_eq!(pvc.body["spec"]["resources"]["requests"]["storage"], "1Gi");
    let service = find(
        &seen,
        "PATCH",
        &format!("{CORE}/services/tiny-demo-coordinator"),
    );
    assert_eq!(service.body["spec"]["type"], "ClusterIP");
    assert_eq!(service.body["spec"]["ports"][0]["port"], 50051);

    let status = &find(
        &seen,
        "PATCH",
        &format!("{OURS}/trainingruns/tiny-demo/status"),
    )
    .body;
    assert_eq!(status["kind"], "TrainingRun");
    assert_eq!(status["status"]["phase"], "Pending");
    assert_eq!(status["status"]["observedGeneration"], 2);
    assert_eq!(
        status["status"]["coordinatorEndpoint"],
        "tiny-demo-coordinator.ns.svc:50051"
    );
    let event = find(&seen, "POST", "/apis/events.k8s.io/v1/namespaces/ns/events");
    assert_eq!(event.body["reason"], "Pending");
    assert_eq!(event.body["regarding"]["name"], "tiny-demo");
}

#[tokio::test]
async fn a_frozen_field_change_is_refused_and_the_coordinator_is_left_alone() {
    let run = run_json();
    // The coordinator runs the spec with another seed.
    let mut old: TrainingRun = serde_json::from_value(run.clone()).unwrap();
    old.spec.seed = 1;
    let cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "tiny-demo-run", "namespace": "ns"},
        "data": {"run.yaml": children::run_manifest(&old, &[]).unwrap()},
    });
    let (client, seen) = mock_client(run_server(run.clone()));
    let cached = Cached {
        config_maps: vec![cm],
        ..Cached::default()
    };
    training_run::reconcile(training_run(&run), context(client, &cached))
        .await
        .unwrap();
    assert_eq!(
        calls(&seen),
        vec![
            pair("PATCH", &format!("{OURS}/trainingruns/tiny-demo/status")),
            pair("POST", "/apis/events.k8s.io/v1/namespaces/ns/events"),
            pair("POST", "/apis/events.k8s.io/v1/namespaces/ns/events"),
        ],
        "no child is written while a change is refused"
    );
    let seen = seen.lock().unwrap();
    let status = &find(
        &seen,
        "PATCH",
        &format!("{OURS}/trainingruns/tiny-demo/status"),
    )
    .body;
    let conditions = status["status"]["conditions"].as_array().unwrap();
    let valid = conditions
        .iter()
        .find(|c| c["type"] == "SpecValid")
        .unwrap();
    assert_eq!(valid["status"], "False");
    assert_eq!(valid["reason"], "FrozenFieldChanged");
    assert!(valid["message"].as_str().unwrap().contains("spec.seed"));
    let refused = seen
        .iter()
        .filter(|s| s.method == "POST")
        .find(|s| s.body["reason"] == "SpecRefused")
        .expect("a SpecRefused event");
    assert_eq!(refused.body["type"], "Warning");
}

#[tokio::test]
async fn an_invalid_run_fails_with_the_reason_and_creates_nothing() {
    let mut run = run_json();
    run["spec"]["stop"] = json!({});
    let (client, seen) = mock_client(run_server(run.clone()));
    let action = training_run::reconcile(training_run(&run), context(client, &Cached::default()))
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
    assert_eq!(
        calls(&seen),
        vec![
            pair("PATCH", &format!("{OURS}/trainingruns/tiny-demo/status")),
            pair("POST", "/apis/events.k8s.io/v1/namespaces/ns/events"),
            pair("POST", "/apis/events.k8s.io/v1/namespaces/ns/events"),
        ]
    );
    let seen = seen.lock().unwrap();
    let status = &find(
        &seen,
        "PATCH",
        &format!("{OURS}/trainingruns/tiny-demo/status"),
    )
    .body;
    assert_eq!(status["status"]["phase"], "Failed");
    let message = status["status"]["conditions"][0]["message"]
        .as_str()
        .unwrap();
    assert!(message.contains("spec.stop"), "{message}");
}

#[test]
fn a_run_s_coordinator_resources_replace_the_default() {
    let mut run = run_json();
    let wanted = json!({"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "16Gi"}});
    run["spec"]["coordinator"]["resources"] = wanted.clone();
    let images = Images {
        coordinator: "example/operator:1".into(),
        worker: "example/worker:1".into(),
    };
    let deployment = children::coordinator_deployment(&training_run(&run), &images, "manifest");
    let deployment = serde_json::to_value(deployment).unwrap();
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["resources"],
        wanted
    );
}

fn contributor_json(replicas: i32) -> Value {
    let yaml = include_str!("../../../examples/contributor.yaml");
    let mut c: Value = serde_yaml::from_str(yaml).unwrap();
    c["metadata"]["namespace"] = json!("ns");
    c["metadata"]["uid"] = json!("contributor-uid-1");
    c["spec"]["replicas"] = json!(replicas);
    c
}

/// Answers a Contributor reconcile's writes (its key Secret is not found by a live read).
fn contributor_server(contributor: Value) -> Responder {
    Box::new(
        move |seen| match (seen.method.as_str(), seen.path.as_str()) {
            ("PATCH", p)
                if p.ends_with("/contributors/tiny-demo-workers") || p.ends_with("/status") =>
            {
                let mut full = contributor.clone();
                if let Some(status) = seen.body.get("status") {
                    full["status"] = status.clone();
                }
                (StatusCode::OK, full)
            }
            ("PATCH" | "POST", _) => echo(seen),
            _ => not_found(),
        },
    )
}

#[tokio::test]
async fn a_contributor_gets_keys_and_a_statefulset_of_its_replicas() {
    let c = contributor_json(2);
    let (client, seen) = mock_client(contributor_server(c.clone()));
    let contributor: Arc<Contributor> = Arc::new(serde_json::from_value(c).unwrap());
    let cached = Cached {
        runs: vec![run_json()],
        ..Cached::default()
    };
    contributor::reconcile(contributor, context(client, &cached))
        .await
        .unwrap();
    assert_eq!(
        calls(&seen),
        vec![
            pair("PATCH", &format!("{OURS}/contributors/tiny-demo-workers")),
            pair("GET", &format!("{CORE}/secrets/tiny-demo-workers-keys")),
            pair("PATCH", &format!("{CORE}/secrets/tiny-demo-workers-keys")),
            pair("PATCH", &format!("{APPS}/statefulsets/tiny-demo-workers")),
            pair(
                "PATCH",
                &format!("{OURS}/contributors/tiny-demo-workers/status")
            ),
        ]
    );
    let seen = seen.lock().unwrap();
    let adopt = &seen[0].body["metadata"]["ownerReferences"][0];
    assert_eq!(
        (adopt["uid"].as_str(), adopt["controller"].as_bool()),
        (Some("run-uid-1"), Some(false))
    );
    let secret = find(
        &seen,
        "PATCH",
        &format!("{CORE}/secrets/tiny-demo-workers-keys"),
    );
    let data = secret.body["data"].as_object().unwrap();
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        vec!["tiny-demo-workers-0", "tiny-demo-workers-1"]
    );
    let sts = find(
        &seen,
        "PATCH",
        &format!("{APPS}/statefulsets/tiny-demo-workers"),
    );
    assert_eq!(sts.body["spec"]["replicas"], 2);
    assert_eq!(sts.body["spec"]["podManagementPolicy"], "Parallel");
    let pod = &sts.body["spec"]["template"]["spec"];
    let args = pod["containers"][0]["args"].as_array().unwrap();
    assert!(args.contains(&json!("http://tiny-demo-coordinator.ns.svc:50051")));
    assert!(args.contains(&json!("/var/run/tributary/keys/$(POD_NAME)")));
    assert_eq!(pod["containers"][0]["image"], "example/worker:1");
    // gpusPerWorker 0 in the example: no GPU request.
    assert!(
        pod["containers"][0]["resources"]["limits"]
            .get("nvidia.com/gpu")
            .is_none()
    );
    assert_eq!(
        pod["volumes"][0]["secret"]["secretName"],
        "tiny-demo-workers-keys"
    );
    let status = &find(
        &seen,
        "PATCH",
        &format!("{OURS}/contributors/tiny-demo-workers/status"),
    )
    .body;
    assert_eq!(status["status"]["peerIds"].as_array().unwrap().len(), 2);
    assert_eq!(
        status["status"]["selector"],
        "tributary.dev/contributor=tiny-demo-workers"
    );
    assert_eq!(status["status"]["conditions"][0]["reason"], "Scaling");
}

#[tokio::test]
async fn workers_of_a_missing_run_are_scaled_to_zero() {
    let c = contributor_json(3);
    let sts = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "tiny-demo-workers", "namespace": "ns"},
        "spec": {"replicas": 3, "selector": {}, "template": {}, "serviceName": "x"},
    });
    let (client, seen) = mock_client(contributor_server(c.clone()));
    let contributor: Arc<Contributor> = Arc::new(serde_json::from_value(c).unwrap());
    let cached = Cached {
        statefulsets: vec![sts],
        ..Cached::default()
    };
    contributor::reconcile(contributor, context(client, &cached))
        .await
        .unwrap();
    assert_eq!(
        calls(&seen),
        vec![
            pair("GET", &format!("{CORE}/secrets/tiny-demo-workers-keys")),
            pair("PATCH", &format!("{CORE}/secrets/tiny-demo-workers-keys")),
            pair("PATCH", &format!("{APPS}/statefulsets/tiny-demo-workers")),
            pair(
                "PATCH",
                &format!("{OURS}/contributors/tiny-demo-workers/status")
            ),
            pair("POST", "/apis/events.k8s.io/v1/namespaces/ns/events"),
        ]
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen[2].body, json!({"spec": {"replicas": 0}}));
    let status = &seen[3].body["status"];
    assert_eq!(status["conditions"][0]["reason"], "RunNotFound");
    let event = &seen[4].body;
    assert_eq!(
        (&event["reason"], &event["type"]),
        (&json!("RunNotFound"), &json!("Warning"))
    );
    assert_eq!(event["regarding"]["kind"], "Contributor");
}

/// A Contributor naming its own key Secret `team-keys`, which the API server holds with
/// `labels`; returns the requests its reconcile made.
async fn reconcile_with_own_secret(labels: Value) -> Vec<Seen> {
    let mut c = contributor_json(2);
    c["spec"]["keySecretRef"] = json!({"name": "team-keys"});
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "team-keys", "namespace": "ns", "labels": labels},
        "data": {},
    });
    let inner = contributor_server(c.clone());
    let (client, seen) = mock_client(Box::new(move |seen| {
        if seen.method == "GET" && seen.path == format!("{CORE}/secrets/team-keys") {
            (StatusCode::OK, secret.clone())
        } else {
            inner(seen)
        }
    }));
    let contributor: Arc<Contributor> = Arc::new(serde_json::from_value(c).unwrap());
    let cached = Cached {
        runs: vec![run_json()],
        ..Cached::default()
    };
    contributor::reconcile(contributor, context(client, &cached))
        .await
        .unwrap();
    seen.lock().unwrap().clone()
}

#[tokio::test]
async fn a_contributor_naming_a_secret_not_labelled_for_it_gets_no_workers_and_a_reason() {
    for labels in [
        json!({}),
        json!({"tributary.dev/peer-keys": "someone-else"}),
    ] {
        let seen = reconcile_with_own_secret(labels).await;
        let calls: Vec<_> = seen
            .iter()
            .map(|s| (s.method.clone(), s.path.clone()))
            .collect();
        assert_eq!(
            calls,
            vec![
                pair("PATCH", &format!("{OURS}/contributors/tiny-demo-workers")),
                pair("GET", &format!("{CORE}/secrets/team-keys")),
                pair(
                    "PATCH",
                    &format!("{OURS}/contributors/tiny-demo-workers/status")
                ),
                // The Ready condition's change, as an Event.
                pair("POST", "/apis/events.k8s.io/v1/namespaces/ns/events"),
            ],
            "no StatefulSet, and the Secret is never written"
        );
        let status = &seen[2].body["status"];
        let ready = &status["conditions"][0];
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["reason"], "KeySecretNotAllowed");
        let message = ready["message"].as_str().unwrap();
        assert!(
            message.contains("team-keys")
                && message.contains("tributary.dev/peer-keys: \"tiny-demo-workers\""),
            "{message}"
        );
        assert!(
            status["peerIds"].as_array().is_none_or(Vec::is_empty),
            "no peer ids from a refused Secret: {status}"
        );
    }
}

#[tokio::test]
async fn a_contributor_naming_a_secret_labelled_for_it_mounts_it() {
    let seen =
        reconcile_with_own_secret(json!({"tributary.dev/peer-keys": "tiny-demo-workers"})).await;
    let sts = find(
        &seen,
        "PATCH",
        &format!("{APPS}/statefulsets/tiny-demo-workers"),
    );
    assert_eq!(
        sts.body["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"],
        "team-keys"
    );
    assert!(
        !seen
            .iter()
            .any(|s| s.method == "PATCH" && s.path.contains("/secrets/")),
        "the user's Secret is never written"
    );
}

#[tokio::test]
async fn a_contributor_naming_a_missing_secret_gets_no_workers_and_a_reason() {
    let mut c = contributor_json(1);
    c["spec"]["keySecretRef"] = json!({"name": "team-keys"});
    let (client, seen) = mock_client(contributor_server(c.clone()));
    let contributor: Arc<Contributor> = Arc::new(serde_json::from_value(c).unwrap());
    let cached = Cached {
        runs: vec![run_json()],
        ..Cached::default()
    };
    contributor::reconcile(contributor, context(client, &cached))
        .await
        .unwrap();
    let seen = seen.lock().unwrap();
    assert!(!seen.iter().any(|s| s.path.contains("/statefulsets/")));
    let patched = find(
        &seen,
        "PATCH",
        &format!("{OURS}/contributors/tiny-demo-workers/status"),
    );
    assert_eq!(
        patched.body["status"]["conditions"][0]["reason"],
        "KeySecretNotFound"
    );
}

fn with_validators(replicas: u32) -> Value {
    let mut run = run_json();
    run["spec"]["participation"]["scoring"]["validatorReplicas"] = json!(replicas);
    run
}

fn running_manifest(seen: &[Seen]) -> TrainingRun {
    let cm = find(seen, "PATCH", &format!("{CORE}/configmaps/tiny-demo-run"));
    serde_yaml::from_str(cm.body["data"]["run.yaml"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn validator_replicas_get_keys_a_statefulset_and_the_coordinator_s_trust() {
    let run = with_validators(2);
    let (client, seen) = mock_client(run_server(run.clone()));
    let ctx = context(client, &Cached::default());
    training_run::reconcile(training_run(&run), ctx)
        .await
        .unwrap();
    let keys_path = format!("{CORE}/secrets/tiny-demo-validator-keys");
    let set_path = format!("{APPS}/statefulsets/tiny-demo-validators");
    assert_eq!(
        calls(&seen)[..4],
        [
            // Not cached: read live before minting, so no key is ever replaced.
            pair("GET", &keys_path),
            pair("PATCH", &keys_path),
            pair("PATCH", &set_path),
            pair("PATCH", &format!("{CORE}/configmaps/tiny-demo-run")),
        ]
    );
    let seen = seen.lock().unwrap();
    let secret = find(&seen, "PATCH", &keys_path);
    assert!(secret.query.contains("fieldManager=tributary-operator"));
    assert_eq!(
        secret.body["metadata"]["ownerReferences"][0]["uid"],
        "run-uid-1"
    );
    assert_eq!(
        secret.body["metadata"]["labels"]["app.kubernetes.io/component"],
        "validator"
    );
    assert_eq!(
        secret.body["metadata"]["labels"]["tributary.dev/run"],
        "tiny-demo"
    );
    let typed: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(secret.body.clone()).unwrap();
    let data = typed.data.unwrap();
    let pods: Vec<&String> = data.keys().collect();
    assert_eq!(pods, ["tiny-demo-validators-0", "tiny-demo-validators-1"]);
    // Each pod's key, as the coordinator must trust it.
    let public: Vec<String> = data
        .values()
        .map(|v| {
            let id = Identity::from_hex(std::str::from_utf8(&v.0).unwrap()).unwrap();
            hex::encode(id.public_key())
        })
        .collect();
    assert_ne!(public[0], public[1]);
    let manifest = running_manifest(&seen);
    assert_eq!(manifest.spec.participation.scoring.validators, public);
    let mut rest = manifest.spec.clone();
    rest.participation.scoring.validators.clear();
    assert_eq!(
        rest,
        training_run(&run).spec,
        "nothing else of the spec changes"
    );

    let set = find(&seen, "PATCH", &set_path);
    assert_eq!(
        set.body["metadata"]["ownerReferences"][0]["uid"],
        "run-uid-1"
    );
    assert_eq!(set.body["spec"]["replicas"], 2);
    let pod = &set.body["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"][0]["secret"]["secretName"],
        "tiny-demo-validator-keys"
    );
    assert_eq!(pod["automountServiceAccountToken"], false);
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "example/worker:1");
    assert_eq!(
        container["args"],
        json!([
            "validate",
            "--coordinator",
            "http://tiny-demo-coordinator.ns.svc:50051",
            "--run-id",
            "tiny-demo",
            "--key",
            "/var/run/tributary/keys/$(POD_NAME)",
        ])
    );
    // The worker template's resources: validators run the model as workers do.
    assert_eq!(
        container["resources"],
        json!({"requests": {"cpu": "1", "memory": "1Gi"}})
    );
    let events: Vec<&Value> = seen
        .iter()
        .filter(|s| s.method == "POST")
        .map(|s| &s.body["reason"])
        .collect();
    assert!(events.contains(&&json!("ValidatorKeys")), "{events:?}");
}

#[tokio::test]
async fn validators_scaled_down_lose_their_keys_trust_and_pods() {
    let three = training_run(&with_validators(3));
    let keys: std::collections::BTreeMap<String, String> = (0..3)
        .map(|i| {
            (
                format!("tiny-demo-validators-{i}"),
                Identity::from_seed([i as u8 + 1; 32]).to_hex(),
            )
        })
        .collect();
    let cached = || Cached {
        secrets: vec![as_json(&children::validator_keys_secret(&three, &keys))],
        statefulsets: vec![as_json(&children::validator_statefulset(
            &three,
            &Images {
                coordinator: "example/operator:1".into(),
                worker: "example/worker:1".into(),
            },
            3,
        ))],
        ..Cached::default()
    };
    let keys_path = format!("{CORE}/secrets/tiny-demo-validator-keys");
    let set_path = format!("{APPS}/statefulsets/tiny-demo-validators");

    // 3 → 1: the cache covers pod 0, nothing is read; pods 1 and 2 lose their keys and trust.
    let run = with_validators(1);
    let (client, seen) = mock_client(run_server(run.clone()));
    training_run::reconcile(training_run(&run), context(client, &cached()))
        .await
        .unwrap();
    assert_eq!(
        calls(&seen)[..2],
        [pair("PATCH", &keys_path), pair("PATCH", &set_path)]
    );
    {
        let seen = seen.lock().unwrap();
        let secret = find(&seen, "PATCH", &keys_path);
        assert_eq!(
            secret.body["data"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["tiny-demo-validators-0"]
        );
        assert_eq!(find(&seen, "PATCH", &set_path).body["spec"]["replicas"], 1);
        assert_eq!(
            running_manifest(&seen)
                .spec
                .participation
                .scoring
                .validators,
            [hex::encode(Identity::from_seed([1; 32]).public_key())]
        );
    }

    // → 0: no pods, no keys (the operator has no right to delete; the run's deletion removes
    // both); the coordinator trusts only the listed validators.
    let mut run = with_validators(0);
    let listed = "ab".repeat(32);
    run["spec"]["participation"]["scoring"]["validators"] = json!([listed]);
    let (client, seen) = mock_client(run_server(run.clone()));
    training_run::reconcile(training_run(&run), context(client, &cached()))
        .await
        .unwrap();
    assert_eq!(
        calls(&seen)[..3],
        [
            pair("PATCH", &keys_path),
            pair("PATCH", &set_path),
            pair("PATCH", &format!("{CORE}/configmaps/tiny-demo-run")),
        ]
    );
    let seen = seen.lock().unwrap();
    assert_eq!(find(&seen, "PATCH", &keys_path).body["data"], json!({}));
    assert_eq!(find(&seen, "PATCH", &set_path).body["spec"]["replicas"], 0);
    assert_eq!(
        running_manifest(&seen)
            .spec
            .participation
            .scoring
            .validators,
        [listed]
    );
    assert!(
        seen.iter()
            .any(|s| s.method == "POST" && s.body["reason"] == "ValidatorsRemoved"),
        "an event says so"
    );
}

#[tokio::test]
async fn a_run_without_validators_writes_none() {
    let run = with_validators(0);
    let (client, seen) = mock_client(run_server(run.clone()));
    training_run::reconcile(training_run(&run), context(client, &Cached::default()))
        .await
        .unwrap();
    let calls = calls(&seen);
    assert!(
        !calls
            .iter()
            .any(|(_, p)| p.contains("/secrets") || p.contains("/statefulsets")),
        "{calls:?}"
    );
}

#[tokio::test]
async fn a_foreign_secret_under_the_validator_keys_name_is_never_used() {
    let run = with_validators(1);
    let keys_path = format!("{CORE}/secrets/tiny-demo-validator-keys");
    let writes = run_server(run.clone());
    let path = keys_path.clone();
    let (client, seen) = mock_client(Box::new(move |s| {
        if s.method == "GET" && s.path == path {
            // Someone's database password, named like our Secret.
            (
                StatusCode::OK,
                json!({"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": "tiny-demo-validator-keys", "namespace": "ns"},
                       "data": {"password": "aHVudGVyMg=="}}),
            )
        } else {
            writes(s)
        }
    }));
    training_run::reconcile(training_run(&run), context(client, &Cached::default()))
        .await
        .unwrap();
    let calls = calls(&seen);
    assert!(!calls.contains(&pair("PATCH", &keys_path)), "{calls:?}");
    assert!(
        !calls.iter().any(|(_, p)| p.contains("statefulsets")),
        "{calls:?}"
    );
    {
        let seen = seen.lock().unwrap();
        let trusted = running_manifest(&seen)
            .spec
            .participation
            .scoring
            .validators;
        assert!(trusted.is_empty(), "{trusted:?}");
        let refused = seen
            .iter()
            .find(|s| s.method == "POST" && s.body["reason"] == "ValidatorKeysRefused")
            .expect("a ValidatorKeysRefused event");
        assert_eq!(refused.body["type"], "Warning");
    }

    // Validators that ran before the Secret was replaced are stopped.
    let images = Images {
        coordinator: "example/operator:1".into(),
        worker: "example/worker:1".into(),
    };
    let running = children::validator_statefulset(&training_run(&run), &images, 1);
    let cached = Cached {
        statefulsets: vec![as_json(&running)],
        ..Cached::default()
    };
    seen_foreign_secret_with(&run, &keys_path, cached).await;
}

async fn seen_foreign_secret_with(run: &Value, keys_path: &str, cached: Cached) {
    let writes = run_server(run.clone());
    let path = keys_path.to_owned();
    let (client, seen) = mock_client(Box::new(move |s| {
        if s.method == "GET" && s.path == path {
            (
                StatusCode::OK,
                json!({"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": "tiny-demo-validator-keys", "namespace": "ns"}}),
            )
        } else {
            writes(s)
        }
    }));
    training_run::reconcile(training_run(run), context(client, &cached))
        .await
        .unwrap();
    let seen = seen.lock().unwrap();
    assert!(
        !seen
            .iter()
            .any(|s| s.method == "PATCH" && s.path == keys_path)
    );
    let set = find(
        &seen,
        "PATCH",
        &format!("{APPS}/statefulsets/tiny-demo-validators"),
    );
    assert_eq!(set.body["spec"]["replicas"], 0);
}

#[test]
fn validators_take_the_worker_template_s_image_gpus_and_placement() {
    let mut run = with_validators(2);
    let template = &mut run["spec"]["workerTemplate"];
    template["gpusPerWorker"] = json!(1);
    template["image"] = json!("registry.example/worker:cu13");
    template["nodeSelector"] = json!({"pool": "gpu"});
    template["env"] = json!([{"name": "TRIBUTARY_THREADS", "value": "4"}]);
    run["spec"]["telemetry"]["otlpEndpoint"] = json!("http://collector:4317");
    let images = Images {
        coordinator: "example/operator:1".into(),
        worker: "example/worker:1".into(),
    };
    let set = as_json(&children::validator_statefulset(
        &training_run(&run),
        &images,
        2,
    ));
    assert_eq!(set["metadata"]["name"], "tiny-demo-validators");
    assert_eq!(set["spec"]["podManagementPolicy"], "Parallel");
    assert_eq!(
        set["spec"]["selector"]["matchLabels"],
        json!({"tributary.dev/run": "tiny-demo", "app.kubernetes.io/component": "validator"})
    );
    let pod = &set["spec"]["template"]["spec"];
    assert_eq!(pod["nodeSelector"], json!({"pool": "gpu"}));
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "registry.example/worker:cu13");
    assert_eq!(container["resources"]["limits"]["nvidia.com/gpu"], "1");
    assert_eq!(container["resources"]["requests"]["nvidia.com/gpu"], "1");
    assert_eq!(container["resources"]["requests"]["cpu"], "1");
    let env: Vec<&Value> = container["env"].as_array().unwrap().iter().collect();
    assert_eq!(env[0]["name"], "POD_NAME");
    assert_eq!(
        env[0]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert!(
        env.iter()
            .any(|e| e["name"] == "TRIBUTARY_THREADS" && e["value"] == "4")
    );
    assert!(
        env.iter()
            .any(|e| e["name"] == "OTEL_EXPORTER_OTLP_ENDPOINT")
    );
    assert_eq!(
        container["volumeMounts"],
        json!([{"name": "keys", "mountPath": "/var/run/tributary/keys", "readOnly": true}])
    );
    assert_eq!(pod["volumes"][0]["secret"]["defaultMode"], 0o400);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
}

fn as_json<T: Serialize>(object: &T) -> Value {
    serde_json::to_value(object).unwrap()
}

#[tokio::test]
async fn unchanged_children_are_applied_once_and_again_only_when_someone_else_changes_them() {
    let run = run_json();
    let typed = training_run(&run);
    let manifest = children::run_manifest(&typed, &[]).unwrap();
    let images = Images {
        coordinator: "example/operator:1".into(),
        worker: "example/worker:1".into(),
    };
    // The cluster already holds exactly what the operator wants (a restarted operator).
    let deployment = children::coordinator_deployment(&typed, &images, &manifest);
    let cached = Cached {
        config_maps: vec![as_json(&children::config_map(&typed, &manifest))],
        deployments: vec![as_json(&deployment)],
        ..Cached::default()
    };
    let (client, seen) = mock_client(run_server(run.clone()));
    let (ctx, mut deployments) = context_with(client, &cached);
    let children_written = |seen: &Arc<Mutex<Vec<Seen>>>| {
        calls(seen)
            .into_iter()
            .filter(|(m, p)| m == "PATCH" && !p.ends_with("/status") && !p.contains("/events"))
            .count()
    };

    // A fresh process has no record of its applies: it re-asserts every child once.
    training_run::reconcile(typed.clone(), ctx.clone())
        .await
        .unwrap();
    assert_eq!(children_written(&seen), 4);

    // The PVC and Service are not in the cache (not listed yet): they are applied again; the
    // ConfigMap and Deployment, cached as applied, are not.
    seen.lock().unwrap().clear();
    training_run::reconcile(typed.clone(), ctx.clone())
        .await
        .unwrap();
    assert_eq!(
        calls(&seen)
            .into_iter()
            .filter(|(m, p)| m == "PATCH" && !p.ends_with("/status") && !p.contains("/events"))
            .map(|(_, p)| p)
            .collect::<Vec<_>>(),
        vec![
            format!("{CORE}/persistentvolumeclaims/tiny-demo-coordinator"),
            format!("{CORE}/services/tiny-demo-coordinator"),
        ]
    );

    // Someone edits the Deployment's spec (its generation moves): it is applied again.
    let mut edited = deployment.clone();
    edited.metadata.generation = Some(7);
    deployments.apply_watcher_event(&watcher::Event::Apply(edited));
    seen.lock().unwrap().clear();
    training_run::reconcile(typed, ctx).await.unwrap();
    assert!(
        calls(&seen).contains(&pair(
            "PATCH",
            &format!("{APPS}/deployments/tiny-demo-coordinator")
        )),
        "{:?}",
        calls(&seen)
    );
    assert!(!calls(&seen).contains(&pair("PATCH", &format!("{CORE}/configmaps/tiny-demo-run"))));
}

#[tokio::test]
async fn a_contributor_reads_its_keys_and_scores_from_the_caches() {
    let mut c = contributor_json(2);
    c["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "tributary.dev/v1alpha1", "kind": "TrainingRun", "name": "tiny-demo",
        "uid": "run-uid-1", "controller": false, "blockOwnerDeletion": false,
    }]);
    let typed: Contributor = serde_json::from_value(c.clone()).unwrap();
    let identities = [Identity::generate(), Identity::generate()];
    let keys = children::pod_names("tiny-demo-workers", 2)
        .into_iter()
        .zip(&identities)
        .map(|(pod, id)| (pod, id.to_hex()))
        .collect();
    let secret = as_json(&children::keys_secret(&typed, &keys));
    let cached = Cached {
        runs: vec![run_json()],
        secrets: vec![secret],
        ..Cached::default()
    };
    let (client, seen) = mock_client(contributor_server(c.clone()));
    let ctx = context(client, &cached);
    let scored = identities[1].peer_id();
    ctx.caches.remember_status(
        "ns",
        "tiny-demo",
        Some(Arc::new(RunStatus {
            peers: vec![tributary_proto::v1alpha1::PeerStatus {
                peer_id: scored.clone(),
                active: true,
                last_round_submitted: 3,
                score: 0.5,
                ..Default::default()
            }],
            ..Default::default()
        })),
    );
    contributor::reconcile(Arc::new(typed), ctx).await.unwrap();
    assert_eq!(
        calls(&seen),
        vec![
            pair("PATCH", &format!("{APPS}/statefulsets/tiny-demo-workers")),
            pair(
                "PATCH",
                &format!("{OURS}/contributors/tiny-demo-workers/status")
            ),
        ],
        "keys and scores come from the caches"
    );
    let seen = seen.lock().unwrap();
    let status = &seen[1].body["status"];
    assert_eq!(
        status["peerIds"],
        json!([identities[0].peer_id(), identities[1].peer_id()])
    );
    assert_eq!(
        status["scores"],
        json!([{"peerId": scored, "score": 0.5, "round": 3, "excluded": false, "aggregated": false}])
    );
}

#[tokio::test]
async fn nothing_is_done_before_every_cache_has_listed() {
    let (client, seen) = mock_client(contributor_server(contributor_json(2)));
    let mut ready = cache::Readiness::default();
    let pods_listed = ready.flag();
    let caches = Caches::new(
        filled(&[run_json()]).0,
        filled(&[]).0,
        filled(&[]).0,
        filled(&[]).0,
        filled(&[]).0,
        filled(&[]).0,
        filled(&[]).0,
        filled(&[]).0,
        filled(&[]).0,
        ready,
    );
    let (ctx, _) = context_with(client, &Cached::default());
    let ctx = Arc::new(Context::new(
        ctx.client.clone(),
        caches,
        Parts {
            images: ctx.images.clone(),
            probe: Arc::new(NoCoordinator),
            metrics: ctx.metrics.clone(),
            identity: "test-replica".into(),
            poll: ctx.poll,
        },
    ));
    let contributor: Arc<Contributor> =
        Arc::new(serde_json::from_value(contributor_json(2)).unwrap());
    let action = contributor::reconcile(contributor.clone(), ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(1)));
    assert!(calls(&seen).is_empty(), "{:?}", calls(&seen));
    pods_listed.store(true, std::sync::atomic::Ordering::Release);
    contributor::reconcile(contributor, ctx).await.unwrap();
    assert!(!calls(&seen).is_empty());
}

#[test]
fn backoff_doubles_up_to_five_minutes() {
    assert_eq!(backoff(1), Duration::from_secs(1));
    assert_eq!(backoff(2), Duration::from_secs(2));
    assert_eq!(backoff(5), Duration::from_secs(16));
    assert_eq!(backoff(40), Duration::from_secs(256));
}
