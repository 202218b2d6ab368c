//! What the operator runs for a TrainingRun: the coordinator, the workers, checkpoints, telemetry.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A PersistentVolumeClaim the operator creates.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Requested capacity, e.g. `10Gi`.
    pub size: Quantity,
    /// StorageClass of the claim; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl StorageSpec {
    fn of(size: &str) -> Self {
        Self {
            size: Quantity(size.to_owned()),
            storage_class_name: None,
        }
    }
}

/// Checkpoints: written by a designated worker, served to late joiners.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct CheckpointSpec {
    /// Write a checkpoint every this many rounds (published: 10).
    #[schemars(range(min = 1))]
    pub every_rounds: u32,
    /// Newest checkpoints kept; older ones are deleted (ours).
    #[schemars(range(min = 1))]
    pub keep: u32,
}

impl Default for CheckpointSpec {
    fn default() -> Self {
        Self {
            every_rounds: 10,
            keep: 3,
        }
    }
}

/// The per-run coordinator the operator starts.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct CoordinatorSpec {
    /// Container image; defaults to the operator's own image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// How peers outside the cluster reach the coordinator.
    pub exposure: Exposure,
    /// gRPC port.
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// The coordinator's volume: its store of rounds, aggregates and checkpoints (ours: 10Gi;
    /// a 72B model's checkpoints need far more).
    pub storage: StorageSpec,
    /// CPU and memory requests and limits of the coordinator container; unset: the operator's
    /// default (requests 500m CPU and 1Gi, limit 4Gi of memory). Its peak memory grows with the
    /// model (about two dense f32 copies while it aggregates): raise the limit for large models.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for CoordinatorSpec {
    fn default() -> Self {
        Self {
            image: None,
            exposure: Exposure::None,
            port: 50051,
            storage: StorageSpec::of("10Gi"),
            resources: None,
        }
    }
}

/// Service type in front of the coordinator.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Exposure {
    /// ClusterIP only: in-cluster peers.
    #[default]
    None,
    /// A NodePort Service.
    NodePort,
    /// A LoadBalancer Service.
    LoadBalancer,
}

/// Pod settings of the run's in-cluster workers; a Contributor may override them.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkerTemplate {
    /// Worker container image; defaults to the one matching the operator's version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Image pull policy of the worker container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// `nvidia.com/gpu` requested by each worker; 0 trains on CPU.
    pub gpus_per_worker: u32,
    /// CPU and memory requests and limits of the worker container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node labels the worker pods must match.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the worker pods.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Extra environment variables of the worker container.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
}

impl Default for WorkerTemplate {
    fn default() -> Self {
        Self {
            image: None,
            image_pull_policy: None,
            gpus_per_worker: 1,
            resources: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            env: Vec::new(),
        }
    }
}

/// Kubernetes image pull policy.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Always pull.
    Always,
    /// Pull when the node lacks the image.
    IfNotPresent,
    /// Never pull.
    Never,
}

impl PullPolicy {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// OpenTelemetry export of traces and metrics.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct TelemetrySpec {
    /// OTLP endpoint (e.g. `http://otel-collector:4317`); unset: the standard OTEL_* environment
    /// variables decide, and without them nothing is exported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported telemetry.
    #[schemars(length(min = 1))]
    pub service_name: String,
    /// Seconds between metric exports.
    #[schemars(range(min = 1))]
    pub metrics_interval_seconds: u32,
}

impl Default for TelemetrySpec {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "tributary".to_owned(),
            metrics_interval_seconds: 15,
        }
    }
}
