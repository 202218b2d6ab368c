//! The Contributor custom resource: a scalable set of in-cluster workers for one TrainingRun, or
//! the record of one external peer.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::training_run::is_public_key;
use crate::validation::Problems;

/// Workers contributing to one TrainingRun: `replicas` in-cluster pods (scale with
/// `kubectl scale contributor NAME --replicas N`), or, with `external`, a record of a peer that
/// runs elsewhere.
// Several printer columns share a type: not a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[kube(
    group = "tributary.dev",
    version = "v1alpha1",
    kind = "Contributor",
    doc = "A Contributor is a set of workers that train for one TrainingRun: `replicas` worker \
           pods in this cluster, each with its own peer key (scale with `kubectl scale \
           contributor NAME --replicas N`), or, with `external`, the record of a peer that \
           runs elsewhere. Status: ready workers, their peer ids and scores, and the Ready \
           condition.",
    plural = "contributors",
    singular = "contributor",
    shortname = "contrib",
    category = "tributary",
    namespaced,
    status = "ContributorStatus",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Run", type_ = "string", json_path = ".spec.trainingRun"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ContributorSpec {
    /// Name of the TrainingRun (same namespace) these workers join.
    #[schemars(length(min = 1, max = 253))]
    pub training_run: String,
    /// In-cluster worker pods; ignored (no pods) when `external` is set.
    #[serde(default = "one")]
    #[schemars(range(min = 0))]
    pub replicas: i32,
    /// `nvidia.com/gpu` per worker; defaults to the run's `workerTemplate.gpusPerWorker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus_per_worker: Option<u32>,
    /// Worker image; defaults to the run's `workerTemplate.image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Container resources; default to the run's `workerTemplate.resources`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node labels the pods must match (added to the run's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the pods (added to the run's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Secret with the workers' ed25519 signing keys (one entry per pod name); the operator
    /// creates one when unset. A named Secret is used only when it carries the label
    /// `tributary.dev/peer-keys: <this Contributor's name>` (or the operator minted it for this
    /// Contributor); otherwise the Contributor runs no pods and its Ready condition says why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_secret_ref: Option<SecretRef>,
    /// A peer outside the cluster: no pods are created, the record names its key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalPeer>,
}

fn one() -> i32 {
    1
}

/// A Secret in the Contributor's namespace.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A peer that runs outside the cluster and joins the coordinator directly.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExternalPeer {
    /// The peer's ed25519 public key, 64 lowercase hex digits.
    #[schemars(regex(pattern = "^[0-9a-f]{64}$"))]
    pub public_key: String,
    /// Who runs it, for people reading the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl ContributorSpec {
    /// In-cluster workers for `training_run`.
    pub fn in_cluster(training_run: impl Into<String>, replicas: i32) -> Self {
        Self {
            training_run: training_run.into(),
            replicas,
            gpus_per_worker: None,
            image: None,
            resources: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            key_secret_ref: None,
            external: None,
        }
    }

    /// Pods the operator should run: 0 for an external peer, else `replicas`.
    pub fn pods_wanted(&self) -> i32 {
        if self.external.is_some() {
            0
        } else {
            self.replicas.max(0)
        }
    }

    /// GPUs per worker, given the run's template default.
    pub fn gpus_per_worker_or(&self, run_default: u32) -> u32 {
        self.gpus_per_worker.unwrap_or(run_default)
    }

    /// `Ok(())` when [`validate`](Self::validate) finds nothing.
    pub fn check(&self) -> Result<()> {
        self.validate().into_result()
    }

    /// Cross-field rules the schema cannot express.
    pub fn validate(&self) -> Problems {
        let mut p = Problems::default();
        p.check(self.training_run.is_empty(), "spec.trainingRun", || {
            "name the TrainingRun to join".into()
        });
        p.check(self.replicas < 0, "spec.replicas", || {
            format!("{} must not be negative", self.replicas)
        });
        if let Some(external) = &self.external {
            p.check(
                !is_public_key(&external.public_key),
                "spec.external.publicKey",
                || format!("{:?} is not 64 lowercase hex digits", external.public_key),
            );
            let pod_fields = [
                ("gpusPerWorker", self.gpus_per_worker.is_some()),
                ("image", self.image.is_some()),
                ("resources", self.resources.is_some()),
                ("nodeSelector", !self.node_selector.is_empty()),
                ("tolerations", !self.tolerations.is_empty()),
                ("keySecretRef", self.key_secret_ref.is_some()),
            ];
            for (field, set) in pod_fields {
                p.check(set, &format!("spec.{field}"), || {
                    "an external peer runs no pods: drop this field or external".into()
                });
            }
        }
        p
    }
}

/// What the operator observes of a Contributor's workers.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContributorStatus {
    /// Worker pods that exist.
    #[serde(default)]
    pub replicas: i32,
    /// Worker pods that are ready (joined the run).
    #[serde(default)]
    pub ready_replicas: i32,
    /// Peer ids the coordinator gave these workers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peer_ids: Vec<String>,
    /// Latest score of each peer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scores: Vec<PeerScore>,
    /// Standard conditions, one per type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Label selector of the worker pods, for the scale subresource (`kubectl scale`, HPA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
}

/// One peer's standing.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PeerScore {
    /// The peer's id in the run.
    pub peer_id: String,
    /// Its rating: the Weng–Lin conservative estimate μ − 3σ, at least 0 (0 for a new key).
    pub score: f64,
    /// The last round it submitted an update for.
    pub round: u64,
    /// Whether the peer is currently excluded from aggregation (by its standing, or it is no
    /// longer a member).
    #[serde(default)]
    pub excluded: bool,
    /// Why its standing excludes it: consecutive-negatives, low-moving-average, out-of-sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Its last round score (validator score, or the penalty of a missing or excluded update).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_score: Option<f64>,
    /// Its update was in the last published aggregate.
    #[serde(default)]
    pub aggregated: bool,
}
