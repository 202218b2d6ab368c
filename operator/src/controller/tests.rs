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

fn empty_list(kind: &str) -> (StatusCode, Value) {
    (
        StatusCode::OK,
        json!({"kind": kind, "apiVersion": "v1", "metadata": {}, "items": []}),
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

fn context(client: Client) -> Arc<Context> {
    Arc::new(Context::new(
        client,
        Images {
            coordinator: "example/operator:1".into(),
            worker: "example/worker:1".into(),
        },
        Arc::new(NoCoordinator),
        Arc::new(metrics::Metrics::default()),
        "test-replica",
        Duration::from_secs(5),
    ))
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

/// Answers a TrainingRun reconcile's reads; `config_map` is what GET of its ConfigMap returns.
fn run_server(run: Value, config_map: Option<Value>) -> Responder {
    Box::new(
        move |seen| match (seen.method.as_str(), seen.path.as_str()) {
            ("GET", p) if p.ends_with("/configmaps/tiny-demo-run") => match &config_map {
                Some(cm) => (StatusCode::OK, cm.clone()),
                None => not_found(),
            },
            ("GET", p) if p.ends_with("/pods") => empty_list("PodList"),
            ("GET", p) if p.ends_with("/contributors") => empty_list("ContributorList"),
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
    let (client, seen) = mock_client(run_server(run.clone(), None));
    let ctx = context(client);
    let action = training_run::reconcile(training_run(&run), ctx)
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
    assert_eq!(
        calls(&seen),
        vec![
            pair("GET", &format!("{CORE}/configmaps/tiny-demo-run")),
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
            pair("GET", &format!("{CORE}/pods")),
            pair("GET", &format!("{OURS}/contributors")),
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
    let pods = find(&seen, "GET", &format!("{CORE}/pods"));
    assert!(
        pods.query
            .contains("labelSelector=tributary.dev%2Frun%3Dtiny-demo%2Capp.kubernetes.io%2Fcomponent%3Dcoordinator"),
        "{}",
        pods.query
    );

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
        "data": {"run.yaml": children::run_manifest(&old).unwrap()},
    });
    let (client, seen) = mock_client(run_server(run.clone(), Some(cm)));
    training_run::reconcile(training_run(&run), context(client))
        .await
        .unwrap();
    assert_eq!(
        calls(&seen),
        vec![
            pair("GET", &format!("{CORE}/configmaps/tiny-demo-run")),
            pair("GET", &format!("{CORE}/pods")),
            pair("GET", &format!("{OURS}/contributors")),
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
    let (client, seen) = mock_client(run_server(run.clone(), None));
    let action = training_run::reconcile(training_run(&run), context(client))
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
    assert_eq!(
        calls(&seen),
        vec![
            pair("GET", &format!("{CORE}/configmaps/tiny-demo-run")),
            pair("GET", &format!("{OURS}/contributors")),
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

fn contributor_json(replicas: i32) -> Value {
    let yaml = include_str!("../../../examples/contributor.yaml");
    let mut c: Value = serde_yaml::from_str(yaml).unwrap();
    c["metadata"]["namespace"] = json!("ns");
    c["metadata"]["uid"] = json!("contributor-uid-1");
    c["spec"]["replicas"] = json!(replicas);
    c
}

fn contributor_server(
    run: Option<Value>,
    contributor: Value,
    statefulset: Option<Value>,
) -> Responder {
    Box::new(
        move |seen| match (seen.method.as_str(), seen.path.as_str()) {
            ("GET", p) if p.ends_with("/trainingruns/tiny-demo") => match &run {
                Some(r) => (StatusCode::OK, r.clone()),
                None => not_found(),
            },
            ("GET", p) if p.ends_with("/statefulsets/tiny-demo-workers") => match &statefulset {
                Some(s) => (StatusCode::OK, s.clone()),
                None => not_found(),
            },
            ("GET", p) if p.ends_with("/pods") => empty_list("PodList"),
            ("PATCH", p)
                if p.ends_with("/contributors/tiny-demo-workers") || p.ends_with("/status") =>
            {
                let mut full = contributor.clone();
                if let Some(status) = seen.body.get("status") {
                    full["status"] = status.clone();
                }
                (StatusCode::OK, full)
            }
            ("PATCH", _) => echo(seen),
            _ => not_found(),
        },
    )
}

#[tokio::test]
async fn a_contributor_gets_keys_and_a_statefulset_of_its_replicas() {
    let c = contributor_json(2);
    let (client, seen) = mock_client(contributor_server(Some(run_json()), c.clone(), None));
    let contributor: Arc<Contributor> = Arc::new(serde_json::from_value(c).unwrap());
    contributor::reconcile(contributor, context(client))
        .await
        .unwrap();
    assert_eq!(
        calls(&seen),
        vec![
            pair("GET", &format!("{OURS}/trainingruns/tiny-demo")),
            pair("PATCH", &format!("{OURS}/contributors/tiny-demo-workers")),
            pair("GET", &format!("{CORE}/secrets/tiny-demo-workers-keys")),
            pair("PATCH", &format!("{CORE}/secrets/tiny-demo-workers-keys")),
            pair("PATCH", &format!("{APPS}/statefulsets/tiny-demo-workers")),
            pair("GET", &format!("{CORE}/pods")),
            pair(
                "PATCH",
                &format!("{OURS}/contributors/tiny-demo-workers/status")
            ),
        ]
    );
    let seen = seen.lock().unwrap();
    let adopt = &seen[1].body["metadata"]["ownerReferences"][0];
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
    let (client, seen) = mock_client(contributor_server(None, c.clone(), Some(sts)));
    let contributor: Arc<Contributor> = Arc::new(serde_json::from_value(c).unwrap());
    contributor::reconcile(contributor, context(client))
        .await
        .unwrap();
    assert_eq!(
        calls(&seen),
        vec![
            pair("GET", &format!("{OURS}/trainingruns/tiny-demo")),
            pair("GET", &format!("{CORE}/secrets/tiny-demo-workers-keys")),
            pair("PATCH", &format!("{CORE}/secrets/tiny-demo-workers-keys")),
            pair("GET", &format!("{APPS}/statefulsets/tiny-demo-workers")),
            pair("PATCH", &format!("{APPS}/statefulsets/tiny-demo-workers")),
            pair(
                "PATCH",
                &format!("{OURS}/contributors/tiny-demo-workers/status")
            ),
        ]
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen[4].body, json!({"spec": {"replicas": 0}}));
    let status = &seen[5].body["status"];
    assert_eq!(status["conditions"][0]["reason"], "RunNotFound");
}

#[test]
fn backoff_doubles_up_to_five_minutes() {
    assert_eq!(backoff(1), Duration::from_secs(1));
    assert_eq!(backoff(2), Duration::from_secs(2));
    assert_eq!(backoff(5), Duration::from_secs(16));
    assert_eq!(backoff(40), Duration::from_secs(256));
}
