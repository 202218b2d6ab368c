//! The objects the operator owns, built from a TrainingRun or a Contributor. Pure: no API calls,
//! so every field is unit-tested and server-side apply sends exactly what is built here.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, StatefulSet, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, Secret, SecretVolumeSource, SecurityContext, Service,
    ServicePort, ServiceSpec, TCPSocketAction, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use sha2::{Digest, Sha256};
use tributary_crds::{Contributor, Exposure, TrainingRun};

/// Label every object we create carries; owned-object watches select on it.
pub(super) const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "tributary-operator");
pub(super) const RUN_LABEL: &str = "tributary.dev/run";
pub(super) const CONTRIBUTOR_LABEL: &str = "tributary.dev/contributor";
pub(super) const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// Pod annotation holding the SHA-256 of the run's config, so a config change rolls the pod.
pub(super) const CONFIG_HASH: &str = "tributary.dev/config-sha256";

pub(super) const CONFIG_DIR: &str = "/etc/tributary";
pub(super) const RUN_FILE: &str = "run.yaml";
pub(super) const DATA_DIR: &str = "/var/lib/tributary";
pub(super) const KEYS_DIR: &str = "/var/run/tributary/keys";
pub(super) const GPU: &str = "nvidia.com/gpu";
/// The non-root user our images run as; volumes are group-owned by it so the key files
/// (mode 0400) and the coordinator's store are readable and writable without root.
pub(super) const IMAGE_USER: i64 = 65532;

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        ..SeccompProfile::default()
    }
}

/// Every pod we create passes the Pod Security "restricted" profile (checked by the e2e
/// crate's pod_security tests): non-root, the runtime's seccomp profile, ...
fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(IMAGE_USER),
        run_as_group: Some(IMAGE_USER),
        fs_group: Some(IMAGE_USER),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..PodSecurityContext::default()
    }
}

/// ... and, per container, no privilege escalation and no Linux capabilities.
fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..SecurityContext::default()
    }
}

/// The coordinator's resources when its run names none: it is light between rounds; its memory
/// peaks at about two dense f32 copies of the model while it aggregates (docs/benchmarks.md).
pub fn default_coordinator_resources() -> ResourceRequirements {
    let quantity = |q: &str| Quantity(q.to_owned());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), quantity("500m")),
            ("memory".to_owned(), quantity("1Gi")),
        ])),
        limits: Some(BTreeMap::from([("memory".to_owned(), quantity("4Gi"))])),
        ..ResourceRequirements::default()
    }
}

/// Images used when a spec names none.
#[derive(Debug, Clone)]
pub struct Images {
    pub coordinator: String,
    pub worker: String,
}

/// Names of a run's children.
pub(super) fn config_map_name(run: &str) -> String {
    format!("{run}-run")
}
pub(super) fn coordinator_name(run: &str) -> String {
    format!("{run}-coordinator")
}
pub(super) fn keys_secret_name(contributor: &str) -> String {
    format!("{contributor}-keys")
}
/// The StatefulSet of the validators the operator runs for a run (its pods: `<this>-<i>`).
pub(super) fn validators_name(run: &str) -> String {
    format!("{run}-validators")
}
pub(super) fn validator_keys_secret_name(run: &str) -> String {
    format!("{run}-validator-keys")
}

/// In-cluster address of a run's coordinator (`host:port`).
pub(super) fn coordinator_endpoint(run: &TrainingRun) -> String {
    format!(
        "{}.{}.svc:{}",
        coordinator_name(&run.name_any_or_empty()),
        run.namespace_or_default(),
        run.spec.coordinator.port
    )
}

trait NameOrEmpty {
    fn name_any_or_empty(&self) -> String;
    fn namespace_or_default(&self) -> String;
}

impl<K: Resource> NameOrEmpty for K {
    fn name_any_or_empty(&self) -> String {
        self.meta().name.clone().unwrap_or_default()
    }
    fn namespace_or_default(&self) -> String {
        self.meta()
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into())
    }
}

/// The controller owner reference pointing at `owner`.
pub(super) fn owner_ref<K: Resource<DynamicType = ()>>(owner: &K) -> Option<OwnerReference> {
    owner.controller_owner_ref(&())
}

fn label_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn run_labels(run: &str, component: &str) -> BTreeMap<String, String> {
    label_map(&[
        ("app.kubernetes.io/name", "tributary"),
        MANAGED_BY,
        ("app.kubernetes.io/instance", run),
        (RUN_LABEL, run),
        (COMPONENT_LABEL, component),
    ])
}

fn meta(
    name: String,
    namespace: String,
    labels: BTreeMap<String, String>,
    owner: Option<OwnerReference>,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(namespace),
        labels: Some(labels),
        owner_references: owner.map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn value_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

/// Where a run's pods export traces and metrics, when the run names a collector.
fn otlp_env(run: &TrainingRun) -> Option<EnvVar> {
    let endpoint = run.spec.telemetry.otlp_endpoint.as_deref()?;
    Some(value_env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint))
}

/// The pod of every container we run: no API token (nothing in it talks to Kubernetes), the
/// images' non-root user.
fn pod_spec(container: Container, volumes: Vec<Volume>) -> PodSpec {
    PodSpec {
        containers: vec![Container {
            security_context: Some(container_security()),
            ..container
        }],
        automount_service_account_token: Some(false),
        security_context: Some(pod_security()),
        volumes: Some(volumes),
        ..PodSpec::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

/// The manifest the coordinator reads: the run as `kubectl apply` would see it, without status,
/// with the public keys of the validators the operator runs (`validators`, hex) added to
/// `participation.scoring.validators`. The coordinator trusts the validators listed there and
/// hands the spec to every peer and validator, so this file is the one path the keys need: no
/// API access for the coordinator.
pub(super) fn run_manifest(
    run: &TrainingRun,
    validators: &[String],
) -> Result<String, serde_yaml::Error> {
    let mut spec = run.spec.clone();
    let trusted = &mut spec.participation.scoring.validators;
    for key in validators {
        if !trusted.contains(key) {
            trusted.push(key.clone());
        }
    }
    let manifest = serde_json::json!({
        "apiVersion": "tributary.dev/v1alpha1",
        "kind": "TrainingRun",
        "metadata": { "name": run.name_any_or_empty() },
        "spec": spec,
    });
    serde_yaml::to_string(&manifest)
}

pub(super) fn config_map(run: &TrainingRun, manifest: &str) -> ConfigMap {
    let name = run.name_any_or_empty();
    ConfigMap {
        metadata: meta(
            config_map_name(&name),
            run.namespace_or_default(),
            run_labels(&name, "config"),
            owner_ref(run),
        ),
        data: Some(BTreeMap::from([(RUN_FILE.to_owned(), manifest.to_owned())])),
        ..ConfigMap::default()
    }
}

pub(super) fn coordinator_pvc(run: &TrainingRun) -> PersistentVolumeClaim {
    let name = run.name_any_or_empty();
    let storage = &run.spec.coordinator.storage;
    PersistentVolumeClaim {
        metadata: meta(
            coordinator_name(&name),
            run.namespace_or_default(),
            run_labels(&name, "coordinator"),
            owner_ref(run),
        ),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".into(), storage.size.clone())])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

pub(super) fn config_hash(manifest: &str) -> String {
    hex::encode(Sha256::digest(manifest.as_bytes()))
}

pub fn coordinator_deployment(run: &TrainingRun, images: &Images, manifest: &str) -> Deployment {
    let name = run.name_any_or_empty();
    let coordinator = &run.spec.coordinator;
    let labels = run_labels(&name, "coordinator");
    let selector = label_map(&[(RUN_LABEL, &name), (COMPONENT_LABEL, "coordinator")]);
    let mut env = vec![field_env("POD_IP", "status.podIP")];
    env.extend(otlp_env(run));
    env.push(value_env(
        "OTEL_SERVICE_NAME",
        &format!("{}-coordinator", run.spec.telemetry.service_name),
    ));
    let port = i32::from(coordinator.port);
    let container = Container {
        name: "coordinator".into(),
        image: Some(
            coordinator
                .image
                .clone()
                .unwrap_or_else(|| images.coordinator.clone()),
        ),
        command: Some(vec!["tributary-operator".into()]),
        args: Some(vec![
            "coordinator".into(),
            "--run".into(),
            format!("{CONFIG_DIR}/{RUN_FILE}"),
            "--data-dir".into(),
            DATA_DIR.into(),
            "--listen".into(),
            format!("$(POD_IP):{port}"),
        ]),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("grpc".into()),
            container_port: port,
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String("grpc".into()),
                ..TCPSocketAction::default()
            }),
            period_seconds: Some(5),
            ..Probe::default()
        }),
        volume_mounts: Some(vec![
            mount("config", CONFIG_DIR, true),
            mount("data", DATA_DIR, false),
        ]),
        resources: Some(
            coordinator
                .resources
                .clone()
                .unwrap_or_else(default_coordinator_resources),
        ),
        ..Container::default()
    };
    let pod = pod_spec(
        container,
        vec![
            Volume {
                name: "config".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: config_map_name(&name),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            },
            Volume {
                name: "data".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: coordinator_name(&name),
                    ..PersistentVolumeClaimVolumeSource::default()
                }),
                ..Volume::default()
            },
        ],
    );
    Deployment {
        metadata: meta(
            coordinator_name(&name),
            run.namespace_or_default(),
            labels.clone(),
            owner_ref(run),
        ),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            // One writer of the store at a time: the old pod is gone before the new one starts.
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                ..DeploymentStrategy::default()
            }),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH.to_owned(),
                        config_hash(manifest),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

pub(super) fn coordinator_service(run: &TrainingRun) -> Service {
    let name = run.name_any_or_empty();
    let port = i32::from(run.spec.coordinator.port);
    let type_ = match run.spec.coordinator.exposure {
        Exposure::None => "ClusterIP",
        Exposure::NodePort => "NodePort",
        Exposure::LoadBalancer => "LoadBalancer",
    };
    Service {
        metadata: meta(
            coordinator_name(&name),
            run.namespace_or_default(),
            run_labels(&name, "coordinator"),
            owner_ref(run),
        ),
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            selector: Some(label_map(&[
                (RUN_LABEL, &name),
                (COMPONENT_LABEL, "coordinator"),
            ])),
            ports: Some(vec![ServicePort {
                name: Some("grpc".into()),
                port,
                target_port: Some(IntOrString::String("grpc".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Pod names of a Contributor's StatefulSet, in ordinal order.
pub(super) fn pod_names(contributor: &str, replicas: i32) -> Vec<String> {
    (0..replicas.max(0))
        .map(|i| format!("{contributor}-{i}"))
        .collect()
}

/// The Contributor's key Secret holding `keys` (pod name → 64 hex digits of seed).
pub(super) fn keys_secret(contributor: &Contributor, keys: &BTreeMap<String, String>) -> Secret {
    let name = contributor.name_any_or_empty();
    Secret {
        metadata: meta(
            keys_secret_name(&name),
            contributor.namespace_or_default(),
            contributor_labels(contributor),
            owner_ref(contributor),
        ),
        type_: Some("Opaque".into()),
        data: Some(
            keys.iter()
                .map(|(k, v)| (k.clone(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    }
}

fn contributor_labels(contributor: &Contributor) -> BTreeMap<String, String> {
    let name = contributor.name_any_or_empty();
    let mut l = run_labels(&contributor.spec.training_run, "worker");
    l.insert(CONTRIBUTOR_LABEL.into(), name);
    l
}

/// The label selector of a Contributor's pods (its scale subresource reports it).
pub(super) fn contributor_selector(contributor: &str) -> String {
    format!("{CONTRIBUTOR_LABEL}={contributor}")
}

/// The worker StatefulSet of an in-cluster Contributor joining `run`.
pub fn worker_statefulset(
    contributor: &Contributor,
    run: &TrainingRun,
    images: &Images,
    replicas: i32,
) -> StatefulSet {
    let name = contributor.name_any_or_empty();
    let spec = &contributor.spec;
    let template = &run.spec.worker_template;
    let run_name = run.name_any_or_empty();
    let labels = contributor_labels(contributor);
    let keys_secret = spec
        .key_secret_ref
        .as_ref()
        .map(|r| r.name.clone())
        .unwrap_or_else(|| keys_secret_name(&name));
    let resources = with_gpus(
        spec.resources
            .clone()
            .or_else(|| template.resources.clone())
            .unwrap_or_default(),
        spec.gpus_per_worker_or(template.gpus_per_worker),
    );
    let env = pod_env(run);
    let container = Container {
        name: "worker".into(),
        image: Some(
            spec.image
                .clone()
                .or_else(|| template.image.clone())
                .unwrap_or_else(|| images.worker.clone()),
        ),
        image_pull_policy: template.image_pull_policy.map(|p| p.as_str().to_owned()),
        command: Some(vec!["tributary-worker".into()]),
        args: Some(vec![
            "join".into(),
            "--coordinator".into(),
            format!("http://{}", coordinator_endpoint(run)),
            "--run-id".into(),
            run_name.clone(),
            "--key".into(),
            format!("{KEYS_DIR}/$(POD_NAME)"),
            "--data-dir".into(),
            DATA_DIR.into(),
        ]),
        env: Some(env),
        resources: (resources != ResourceRequirements::default()).then_some(resources),
        volume_mounts: Some(vec![
            mount("keys", KEYS_DIR, true),
            mount("data", DATA_DIR, false),
        ]),
        ..Container::default()
    };
    let pod = PodSpec {
        node_selector: Some(if spec.node_selector.is_empty() {
            template.node_selector.clone()
        } else {
            spec.node_selector.clone()
        })
        .filter(|s| !s.is_empty()),
        tolerations: Some(if spec.tolerations.is_empty() {
            template.tolerations.clone()
        } else {
            spec.tolerations.clone()
        })
        .filter(|t| !t.is_empty()),
        ..pod_spec(
            container,
            vec![
                Volume {
                    name: "keys".into(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(keys_secret),
                        default_mode: Some(0o400),
                        ..SecretVolumeSource::default()
                    }),
                    ..Volume::default()
                },
                Volume {
                    name: "data".into(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Volume::default()
                },
            ],
        )
    };
    StatefulSet {
        metadata: meta(
            name.clone(),
            contributor.namespace_or_default(),
            labels.clone(),
            owner_ref(contributor),
        ),
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(name.clone()),
            // Workers are independent peers: start and stop them all at once.
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(label_map(&[(CONTRIBUTOR_LABEL, &name)])),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

/// The Secret of the validators the operator runs for `run`, holding `keys` (pod name → 64 hex
/// digits of seed). Owned by the run: deleting it deletes the keys.
pub(super) fn validator_keys_secret(run: &TrainingRun, keys: &BTreeMap<String, String>) -> Secret {
    let name = run.name_any_or_empty();
    Secret {
        metadata: meta(
            validator_keys_secret_name(&name),
            run.namespace_or_default(),
            run_labels(&name, "validator"),
            owner_ref(run),
        ),
        type_: Some("Opaque".into()),
        data: Some(
            keys.iter()
                .map(|(k, v)| (k.clone(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    }
}

/// `resources` with `gpus` GPUs requested and limited (none added for 0).
fn with_gpus(mut resources: ResourceRequirements, gpus: u32) -> ResourceRequirements {
    if gpus > 0 {
        let gpu = Quantity(gpus.to_string());
        resources
            .limits
            .get_or_insert_with(BTreeMap::new)
            .insert(GPU.into(), gpu.clone());
        resources
            .requests
            .get_or_insert_with(BTreeMap::new)
            .insert(GPU.into(), gpu);
    }
    resources
}

/// The environment of a run's worker and validator pods: the pod's name (which key is its
/// own), the worker template's variables, then the OTLP exporter's.
fn pod_env(run: &TrainingRun) -> Vec<EnvVar> {
    let mut env = vec![field_env("POD_NAME", "metadata.name")];
    env.extend(run.spec.worker_template.env.iter().cloned());
    env.extend(otlp_env(run));
    env
}

/// The validators the operator runs for `run`: `tributary-worker validate` against the run's
/// coordinator Service, each pod with its own key (`<keys>/<pod name>`). A StatefulSet, as the
/// Contributors' workers are, for the same reason: its pods have stable names, so each pod
/// finds its key in the Secret by its name, and keeps it across restarts. Validators evaluate
/// the model as workers train it, so they take the worker template's image, resources, GPUs and
/// placement.
pub fn validator_statefulset(run: &TrainingRun, images: &Images, replicas: i32) -> StatefulSet {
    let run_name = run.name_any_or_empty();
    let name = validators_name(&run_name);
    let template = &run.spec.worker_template;
    let labels = run_labels(&run_name, "validator");
    let resources = with_gpus(
        template.resources.clone().unwrap_or_default(),
        template.gpus_per_worker,
    );
    let env = pod_env(run);
    let container = Container {
        name: "validator".into(),
        image: Some(
            template
                .image
                .clone()
                .unwrap_or_else(|| images.worker.clone()),
        ),
        image_pull_policy: template.image_pull_policy.map(|p| p.as_str().to_owned()),
        command: Some(vec!["tributary-worker".into()]),
        args: Some(vec![
            "validate".into(),
            "--coordinator".into(),
            format!("http://{}", coordinator_endpoint(run)),
            "--run-id".into(),
            run_name.clone(),
            "--key".into(),
            format!("{KEYS_DIR}/$(POD_NAME)"),
        ]),
        env: Some(env),
        resources: (resources != ResourceRequirements::default()).then_some(resources),
        volume_mounts: Some(vec![mount("keys", KEYS_DIR, true)]),
        ..Container::default()
    };
    let pod = PodSpec {
        node_selector: Some(template.node_selector.clone()).filter(|s| !s.is_empty()),
        tolerations: Some(template.tolerations.clone()).filter(|t| !t.is_empty()),
        ..pod_spec(
            container,
            vec![Volume {
                name: "keys".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(validator_keys_secret_name(&run_name)),
                    default_mode: Some(0o400),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            }],
        )
    };
    StatefulSet {
        metadata: meta(
            name.clone(),
            run.namespace_or_default(),
            labels.clone(),
            owner_ref(run),
        ),
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(name),
            // Validators are independent of each other: start and stop them all at once.
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(label_map(&[
                    (RUN_LABEL, &run_name),
                    (COMPONENT_LABEL, "validator"),
                ])),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}
