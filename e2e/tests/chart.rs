#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The Helm chart lints strictly, renders with the documented values, runs the operator with
//! exactly the contract's flags and grants it exactly the contract's permissions.
//!
//! helm: found or installed by `tributary_e2e::cluster::helm`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Output};

use serde::Deserialize;
use serde_json::{Value, json};
use tributary_e2e::cluster::{helm, repo_root};
use tributary_e2e::pod_security::{pod_spec, restricted_violations};

const RELEASE: &str = "tributary";
const RELEASE_NAMESPACE: &str = "tributary-system";
const OVERRIDES: &str = "replicaCount=2,watchNamespace=team-a,otlpEndpoint=http://otel:4317";

fn run_helm(args: &[&str]) -> Output {
    Command::new(helm().unwrap())
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap()
}

/// `helm template` of the chart as release `tributary` in `tributary-system`, `--set` each of
/// `sets`; the raw output, or helm's error message.
fn template(sets: &[&str], extra: &[&str]) -> Result<String, String> {
    let mut args = vec![
        "template",
        RELEASE,
        "charts/tributary",
        "--namespace",
        RELEASE_NAMESPACE,
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    args.extend(extra);
    let out = run_helm(&args);
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The rendered objects of `helm template` with `sets`.
fn render(sets: &[&str]) -> Vec<Value> {
    let yaml = template(sets, &[]).unwrap_or_else(|err| panic!("helm template {sets:?}: {err}"));
    serde_yaml::Deserializer::from_str(&yaml)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|doc| !doc.is_null())
        .collect()
}

fn all_of<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|doc| doc["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = all_of(docs, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, got {}", found.len());
    found[0]
}

fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    all_of(docs, kind)
        .into_iter()
        .find(|doc| doc["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} named {name}"))
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

fn operator_container(docs: &[Value]) -> &Value {
    let containers = &one(docs, "Deployment")["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers.as_array().unwrap().len(), 1);
    &containers[0]
}

fn args(docs: &[Value]) -> Vec<&str> {
    strings(&operator_container(docs)["args"])
}

/// (apiGroup, resource, verb) for every grant of a Role or ClusterRole; a rule may name nothing
/// else (no resourceNames, no nonResourceURLs).
fn grants(role: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        let keys: BTreeSet<&str> = rule
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, BTreeSet::from(["apiGroups", "resources", "verbs"]));
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    out.insert((group.to_owned(), resource.to_owned(), verb.to_owned()));
                }
            }
        }
    }
    out
}

fn expand(table: &[(&str, &[&str], &[&str])]) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for (group, resources, verbs) in table {
        for resource in *resources {
            for verb in *verbs {
                out.insert((
                    (*group).to_owned(),
                    (*resource).to_owned(),
                    (*verb).to_owned(),
                ));
            }
        }
    }
    out
}

/// The operator writes by server-side apply and never deletes: the garbage collector removes a
/// run's objects through their owner references.
const READ_WRITE: &[&str] = &["get", "list", "watch", "create", "patch", "update"];

/// The operator contract's least-privilege rules for the objects it reconciles and creates.
fn contract_workload_grants() -> BTreeSet<(String, String, String)> {
    expand(&[
        (
            "tributary.dev",
            &["trainingruns", "contributors"],
            &["get", "list", "watch", "patch", "update"],
        ),
        (
            "tributary.dev",
            &["trainingruns/status", "contributors/status"],
            &["get", "patch", "update"],
        ),
        (
            "tributary.dev",
            &["trainingruns/finalizers", "contributors/finalizers"],
            &["update"],
        ),
        ("apps", &["deployments", "statefulsets"], READ_WRITE),
        (
            "",
            &[
                "services",
                "configmaps",
                "persistentvolumeclaims",
                "secrets",
            ],
            READ_WRITE,
        ),
        ("", &["pods"], &["get", "list", "watch"]),
        ("events.k8s.io", &["events"], &["create", "patch"]),
        ("", &["events"], &["create", "patch"]),
    ])
}

fn contract_lease_grants() -> BTreeSet<(String, String, String)> {
    expand(&[(
        "coordination.k8s.io",
        &["leases"],
        &["get", "create", "update", "patch"],
    )])
}

fn assert_no_wildcards(docs: &[Value]) {
    for doc in docs {
        if doc["kind"] == "Role" || doc["kind"] == "ClusterRole" {
            for rule in doc["rules"].as_array().unwrap() {
                for field in ["apiGroups", "resources", "verbs"] {
                    assert!(
                        !strings(&rule[field]).contains(&"*"),
                        "wildcard {field} in {}",
                        doc["metadata"]["name"]
                    );
                }
            }
        }
    }
}

/// The args of the contract's `tributary-operator controller` with the chart's defaults.
fn default_args() -> Vec<&'static str> {
    vec![
        "controller",
        "--identity",
        "$(POD_NAME)",
        "--leader-election-namespace",
        "$(POD_NAMESPACE)",
        "--lease-name",
        "tributary-operator",
        "--lease-duration-seconds",
        "15",
        "--coordinator-image",
        "ghcr.io/tributary-dev/tributary-operator:0.1.0",
        "--worker-image",
        "ghcr.io/tributary-dev/tributary-worker:0.1.0",
        "--metrics-addr",
        "$(POD_IP):9090",
        "--namespace",
        RELEASE_NAMESPACE,
    ]
}

const LEADER_ELECTION_FLAGS: [&str; 3] = [
    "--leader-election-namespace",
    "--lease-name",
    "--lease-duration-seconds",
];

#[test]
fn chart_lints_strictly_with_defaults_and_overrides() {
    for sets in [
        &[][..],
        &[OVERRIDES][..],
        &["clusterWide=true"][..],
        &[NETWORK_POLICY][..],
    ] {
        let mut args = vec!["lint", "--strict", "charts/tributary"];
        for set in sets {
            args.extend(["--set", set]);
        }
        let out = run_helm(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("0 chart(s) failed"),
            "helm lint --strict {sets:?}:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn defaults_run_one_controller_with_the_contract_flags() {
    let docs = render(&[]);
    let deployment = one(&docs, "Deployment");
    assert_eq!(deployment["metadata"]["namespace"], RELEASE_NAMESPACE);
    assert_eq!(deployment["spec"]["replicas"], 1);
    let pod = &deployment["spec"]["template"]["spec"];
    let container = operator_container(&docs);
    assert_eq!(
        container["image"],
        "ghcr.io/tributary-dev/tributary-operator:0.1.0"
    );
    assert_eq!(container["command"], json!(["tributary-operator"]));
    assert_eq!(args(&docs), default_args());

    let env: BTreeMap<&str, &Value> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|var| {
            (
                var["name"].as_str().unwrap(),
                &var["valueFrom"]["fieldRef"]["fieldPath"],
            )
        })
        .collect();
    assert_eq!(
        env,
        BTreeMap::from([
            ("POD_NAME", &json!("metadata.name")),
            ("POD_NAMESPACE", &json!("metadata.namespace")),
            ("POD_IP", &json!("status.podIP")),
        ]),
        "no OTEL_EXPORTER_OTLP_ENDPOINT unless otlpEndpoint is set"
    );

    assert_eq!(
        container["ports"],
        json!([{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}])
    );
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(
            container[probe]["httpGet"],
            json!({"path": "/healthz", "port": "metrics"}),
            "{probe}"
        );
    }

    // Non-root, read-only, no capabilities.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );

    // The pod runs as the chart's ServiceAccount, which the bindings name.
    let account = one(&docs, "ServiceAccount");
    assert_eq!(account["metadata"]["name"], RELEASE);
    assert_eq!(pod["serviceAccountName"], RELEASE);
    let bindings = all_of(&docs, "RoleBinding");
    assert_eq!(bindings.len(), 2, "the workload's and the lease's");
    for binding in bindings {
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": RELEASE, "namespace": RELEASE_NAMESPACE}])
        );
    }
}

#[test]
fn overrides_run_two_replicas_on_one_namespace_with_otlp() {
    let docs = render(&[OVERRIDES]);
    assert_eq!(one(&docs, "Deployment")["spec"]["replicas"], 2);
    let mut expected = default_args();
    *expected.last_mut().unwrap() = "team-a";
    assert_eq!(args(&docs), expected);
    let env = operator_container(&docs)["env"].as_array().unwrap();
    assert!(
        env.contains(&json!({"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel:4317"})),
        "{env:?}"
    );

    // Watching one namespace: the workload rules are a Role there, nothing cluster-wide.
    assert!(all_of(&docs, "ClusterRole").is_empty());
    assert!(all_of(&docs, "ClusterRoleBinding").is_empty());
    let role = named(&docs, "Role", RELEASE);
    assert_eq!(role["metadata"]["namespace"], "team-a");
    assert_eq!(grants(role), contract_workload_grants());
    let binding = named(&docs, "RoleBinding", RELEASE);
    assert_eq!(binding["metadata"]["namespace"], "team-a");
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": RELEASE})
    );
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": RELEASE, "namespace": RELEASE_NAMESPACE}])
    );
    // The lease stays in the release namespace.
    let lease_role = named(&docs, "Role", "tributary-leader-election");
    assert_eq!(lease_role["metadata"]["namespace"], RELEASE_NAMESPACE);
    assert_no_wildcards(&docs);
}

#[test]
fn leader_election_flags_and_lease_role_exist_only_when_enabled() {
    let off = render(&["leaderElection.enabled=false"]);
    let off_args = args(&off);
    for flag in LEADER_ELECTION_FLAGS {
        assert!(!off_args.contains(&flag), "{flag} in {off_args:?}");
    }
    assert_eq!(&off_args[..3], ["controller", "--identity", "$(POD_NAME)"]);
    // Only the workload's Role and binding remain: no lease permissions.
    for kind in ["Role", "RoleBinding"] {
        let names: Vec<&Value> = all_of(&off, kind)
            .iter()
            .map(|r| &r["metadata"]["name"])
            .collect();
        assert_eq!(names, vec![RELEASE], "{kind}");
    }

    let on = render(&["leaderElection.leaseDurationSeconds=30"]);
    let on_args = args(&on);
    for flag in LEADER_ELECTION_FLAGS {
        assert!(on_args.contains(&flag), "{flag} missing from {on_args:?}");
    }
    let after = |flag: &str| on_args[on_args.iter().position(|a| *a == flag).unwrap() + 1];
    assert_eq!(after("--leader-election-namespace"), "$(POD_NAMESPACE)");
    assert_eq!(after("--lease-name"), "tributary-operator");
    assert_eq!(after("--lease-duration-seconds"), "30");
}

#[test]
fn several_replicas_without_leader_election_are_refused() {
    let err = template(&["replicaCount=2,leaderElection.enabled=false"], &[]).unwrap_err();
    assert!(
        err.contains("replicaCount > 1 needs leaderElection.enabled=true"),
        "{err}"
    );
}

#[test]
fn rbac_by_default_is_a_role_in_the_release_namespace_and_nothing_cluster_wide() {
    let docs = render(&[]);
    assert!(all_of(&docs, "ClusterRole").is_empty());
    assert!(all_of(&docs, "ClusterRoleBinding").is_empty());
    let role = named(&docs, "Role", RELEASE);
    assert_eq!(role["metadata"]["namespace"], RELEASE_NAMESPACE);
    assert_eq!(grants(role), contract_workload_grants());
    let binding = named(&docs, "RoleBinding", RELEASE);
    assert_eq!(binding["metadata"]["namespace"], RELEASE_NAMESPACE);
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": RELEASE})
    );
    // ... and the operator is told to watch exactly that namespace.
    let args = args(&docs);
    assert_eq!(&args[args.len() - 2..], ["--namespace", RELEASE_NAMESPACE]);

    let lease_role = named(&docs, "Role", "tributary-leader-election");
    assert_eq!(lease_role["metadata"]["namespace"], RELEASE_NAMESPACE);
    assert_eq!(grants(lease_role), contract_lease_grants());
    let lease_binding = named(&docs, "RoleBinding", "tributary-leader-election");
    assert_eq!(lease_binding["metadata"]["namespace"], RELEASE_NAMESPACE);
    assert_eq!(
        lease_binding["roleRef"]["name"],
        lease_role["metadata"]["name"]
    );
    // Secrets, in particular, are granted nowhere but in the watched namespace.
    for doc in &docs {
        if doc["kind"] == "ClusterRole" {
            panic!("a ClusterRole in the default install: {doc}");
        }
    }
    assert_no_wildcards(&docs);
}

#[test]
fn cluster_wide_watching_is_opt_in_and_uses_cluster_roles() {
    let docs = render(&["clusterWide=true"]);
    let cluster_role = one(&docs, "ClusterRole");
    assert_eq!(cluster_role["metadata"]["name"], RELEASE);
    assert!(cluster_role["metadata"].get("namespace").is_none());
    assert_eq!(grants(cluster_role), contract_workload_grants());
    let binding = one(&docs, "ClusterRoleBinding");
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": RELEASE})
    );
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": RELEASE, "namespace": RELEASE_NAMESPACE}])
    );
    // Only the lease stays namespaced; the operator watches every namespace (no --namespace).
    assert_eq!(
        all_of(&docs, "Role")
            .iter()
            .map(|r| &r["metadata"]["name"])
            .collect::<Vec<_>>(),
        vec!["tributary-leader-election"]
    );
    let args = args(&docs);
    assert!(!args.contains(&"--namespace"), "{args:?}");
    assert_no_wildcards(&docs);

    for (sets, message) in [
        (
            "clusterWide=true,watchNamespace=team-a",
            "clusterWide=true watches every namespace: leave watchNamespace empty",
        ),
        (
            "clusterWide=true,networkPolicy.enabled=true",
            "networkPolicy.enabled needs one watched namespace",
        ),
    ] {
        let err = template(&[sets], &[]).unwrap_err();
        assert!(err.contains(message), "--set {sets}: {err}");
    }
}

#[test]
fn the_operator_pod_passes_the_restricted_profile() {
    for sets in [&[][..], &[OVERRIDES][..], &["clusterWide=true"][..]] {
        let docs = render(sets);
        let deployment = one(&docs, "Deployment");
        let violations = restricted_violations(pod_spec(deployment).unwrap());
        assert!(violations.is_empty(), "--set {sets:?}: {violations:#?}");
    }
    // The check is live: a values override that breaks the profile is caught.
    let docs = render(&["securityContext.allowPrivilegeEscalation=true"]);
    let violations = restricted_violations(pod_spec(one(&docs, "Deployment")).unwrap());
    assert_eq!(
        violations,
        vec!["container operator allowPrivilegeEscalation is not false"]
    );
}

const NETWORK_POLICY: &str = "networkPolicy.enabled=true,watchNamespace=team-a,networkPolicy.coordinatorFrom[0].ipBlock.cidr=0.0.0.0/0,networkPolicy.workerEgress[0].to[0].ipBlock.cidr=10.9.0.0/16";

#[test]
fn network_policies_are_off_by_default() {
    assert!(all_of(&render(&[]), "NetworkPolicy").is_empty());
    assert!(all_of(&render(&[OVERRIDES]), "NetworkPolicy").is_empty());
}

#[test]
fn network_policies_confine_coordinators_workers_and_validators_when_enabled() {
    let docs = render(&[NETWORK_POLICY]);
    assert_eq!(all_of(&docs, "NetworkPolicy").len(), 3);
    let operator_pods = json!({
        "app.kubernetes.io/name": "tributary",
        "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/component": "operator",
    });
    let ours = |component: &str| {
        json!({"matchLabels": {
            "app.kubernetes.io/managed-by": "tributary-operator",
            "app.kubernetes.io/component": component,
        }})
    };
    let grpc = json!([{"port": "grpc", "protocol": "TCP"}]);

    let coordinators = named(&docs, "NetworkPolicy", "tributary-coordinators");
    assert_eq!(coordinators["metadata"]["namespace"], "team-a");
    let spec = &coordinators["spec"];
    assert_eq!(spec["podSelector"], ours("coordinator"));
    assert_eq!(spec["policyTypes"], json!(["Ingress"]));
    assert_eq!(
        spec["ingress"],
        json!([{
            "ports": grpc,
            "from": [
                {"podSelector": ours("worker")},
                {"podSelector": ours("validator")},
                {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": RELEASE_NAMESPACE}},
                    "podSelector": {"matchLabels": operator_pods},
                },
                {"ipBlock": {"cidr": "0.0.0.0/0"}},
            ],
        }])
    );
    // The operator's own pods carry the labels the coordinators admit.
    let pod_labels = &one(&docs, "Deployment")["spec"]["template"]["metadata"]["labels"];
    for (key, value) in operator_pods.as_object().unwrap() {
        assert_eq!(&pod_labels[key], value, "operator pod label {key}");
    }

    // Workers and the operator's validators alike: nothing reaches them; they reach only the
    // coordinators, DNS and workerEgress.
    for (policy, component) in [
        ("tributary-workers", "worker"),
        ("tributary-validators", "validator"),
    ] {
        let confined = named(&docs, "NetworkPolicy", policy);
        assert_eq!(confined["metadata"]["namespace"], "team-a");
        let spec = &confined["spec"];
        assert_eq!(spec["podSelector"], ours(component));
        // Ingress listed with no rules: nothing reaches these pods.
        assert_eq!(spec["policyTypes"], json!(["Ingress", "Egress"]));
        assert!(spec.get("ingress").is_none());
        assert_eq!(
            spec["egress"],
            json!([
                {"ports": grpc, "to": [{"podSelector": ours("coordinator")}]},
                {
                    "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
                    "to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                },
                {"to": [{"ipBlock": {"cidr": "10.9.0.0/16"}}]},
            ])
        );
    }

    // Without a watchNamespace the policies go to the release namespace, with the operator.
    let docs = render(&["networkPolicy.enabled=true"]);
    for policy in all_of(&docs, "NetworkPolicy") {
        assert_eq!(policy["metadata"]["namespace"], RELEASE_NAMESPACE);
    }
}

#[test]
fn metrics_service_selects_only_the_operator_pods() {
    let docs = render(&[]);
    let service = one(&docs, "Service");
    assert_eq!(service["spec"]["type"], "ClusterIP");
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}])
    );
    let annotations = &service["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "9090");
    assert_eq!(annotations["prometheus.io/path"], "/metrics");

    // Coordinator and worker pods share app.kubernetes.io/name: tributary; the component
    // keeps them out of the operator's selector.
    let selector = &service["spec"]["selector"];
    assert_eq!(selector["app.kubernetes.io/component"], "operator");
    let deployment = one(&docs, "Deployment");
    assert_eq!(&deployment["spec"]["selector"]["matchLabels"], selector);
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (key, value) in selector.as_object().unwrap() {
        assert_eq!(&pod_labels[key], value, "pod label {key}");
    }
    for doc in &docs {
        let labels = &doc["metadata"]["labels"];
        assert_eq!(
            labels["app.kubernetes.io/name"], "tributary",
            "{}",
            doc["kind"]
        );
        assert_eq!(
            labels["app.kubernetes.io/instance"], RELEASE,
            "{}",
            doc["kind"]
        );
        assert_eq!(
            labels["app.kubernetes.io/managed-by"], "Helm",
            "{}",
            doc["kind"]
        );
    }
}

#[test]
fn image_values_reach_the_pod_and_the_controller_flags() {
    let docs = render(&[
        "image.operator.repository=registry.example/op,image.operator.tag=v2,image.worker.tag=cu13",
    ]);
    assert_eq!(operator_container(&docs)["image"], "registry.example/op:v2");
    let args = args(&docs);
    let after = |flag: &str| args[args.iter().position(|a| *a == flag).unwrap() + 1];
    // The coordinator runs from the operator image.
    assert_eq!(after("--coordinator-image"), "registry.example/op:v2");
    assert_eq!(
        after("--worker-image"),
        "ghcr.io/tributary-dev/tributary-worker:cu13"
    );
}

#[test]
fn included_crds_are_byte_identical_to_the_committed_files() {
    let crd_dir = repo_root().join("charts/tributary/crds");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&crd_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");

    let with_crds = template(&[], &["--include-crds"]).unwrap();
    for file in &files {
        let name = file.file_name().unwrap().to_str().unwrap();
        let committed = std::fs::read_to_string(file).unwrap();
        // helm prints each file of crds/ verbatim after a `# Source:` line.
        let block = format!("---\n# Source: tributary/crds/{name}\n{committed}\n");
        assert!(
            with_crds.contains(&block),
            "helm template --include-crds does not carry {name} byte for byte"
        );
    }
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&with_crds)
        .map(|doc| Value::deserialize(doc).unwrap())
        .collect();
    let crds: BTreeSet<&str> = all_of(&docs, "CustomResourceDefinition")
        .iter()
        .map(|crd| crd["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        crds,
        BTreeSet::from(["contributors.tributary.dev", "trainingruns.tributary.dev"])
    );

    let without = render(&[]);
    assert!(all_of(&without, "CustomResourceDefinition").is_empty());
}

#[test]
fn values_schema_rejects_wrong_values_with_a_readable_message() {
    for (set, message) in [
        (
            "replicaCount=abc",
            "replicaCount: Invalid type. Expected: integer, given: string",
        ),
        (
            "leaderElection.enabled=maybe",
            "leaderElection.enabled: Invalid type. Expected: boolean, given: string",
        ),
        (
            "metrics.port=0",
            "metrics.port: Must be greater than or equal to 1",
        ),
        (
            "watchNamespace=Team_A",
            "watchNamespace: Does not match pattern",
        ),
        (
            "clusterWide=maybe",
            "clusterWide: Invalid type. Expected: boolean, given: string",
        ),
        (
            "networkPolicy.enabled=yes",
            "networkPolicy.enabled: Invalid type. Expected: boolean, given: string",
        ),
        (
            "networkPolicy.coordinatorFrom=0.0.0.0/0",
            "networkPolicy.coordinatorFrom: Invalid type. Expected: array, given: string",
        ),
        (
            "otlpEndpoint=otel:4317",
            "otlpEndpoint: Does not match pattern",
        ),
        (
            "replicaCont=2",
            "Additional property replicaCont is not allowed",
        ),
        (
            "image.worker.pullPolicy=Always",
            "image.worker: Additional property pullPolicy is not allowed",
        ),
    ] {
        let Err(err) = template(&[set], &[]) else {
            panic!("--set {set} was accepted");
        };
        assert!(
            err.contains("values don't meet the specifications of the schema")
                && err.contains(message),
            "--set {set}: {err}"
        );
    }
}

/// The chart's notes print only commands of the operator guide (which the cluster test runs),
/// with the guide's release and namespaces (it watches `team-a`): the CRD upgrade among them is
/// server-side.
#[test]
fn notes_print_the_operator_guides_commands() {
    let notes =
        std::fs::read_to_string(repo_root().join("charts/tributary/templates/NOTES.txt")).unwrap();
    let guide = std::fs::read_to_string(repo_root().join("docs/operator-guide.md")).unwrap();
    let commands: Vec<String> = notes
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("kubectl "))
        .map(|l| {
            l.replace("{{ $ns }}", " -n team-a")
                .replace("{{ .Release.Namespace }}", RELEASE_NAMESPACE)
                .replace("{{ .Release.Name }}", RELEASE)
        })
        .collect();
    assert!(commands.len() >= 6, "{commands:#?}");
    for command in &commands {
        assert!(
            !command.contains("{{"),
            "unexpected template action: {command}"
        );
        assert!(
            guide.lines().any(|l| l.trim() == command),
            "NOTES.txt prints a command the operator guide does not show: {command}"
        );
    }
    assert!(
        commands.contains(
            &"kubectl apply --server-side --force-conflicts -f charts/tributary/crds/".to_owned()
        ),
        "{commands:#?}"
    );
}
