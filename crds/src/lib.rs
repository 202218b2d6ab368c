//! TrainingRun and Contributor custom resources (group tributary.dev, version v1alpha1).
//!
//! This crate is the one source of a run's configuration: the operator reads these types from the
//! API server, the coordinator hands the [`TrainingRunSpec`] to every worker at Join, and the
//! `crdgen` binary writes the CRD YAML under `charts/tributary/crds/`. Every `Default` is the
//! published SparseLoCo / Covenant-72B setting (see docs/crds.md for sources).
//!
//! Cross-field rules live in `validate()` methods, not in the schema: the dev cluster runs
//! Kubernetes 1.20, which has no CEL validation rules.

mod compression;
mod contributor;
mod data;
mod error;
mod model;
mod optimizer;
mod participation;
mod plan;
pub mod schema;
mod training_run;
mod validation;
mod workload;

pub use compression::{
    Aggregation, CompressionSpec, DEFAULT_TOP_K, OneDimensional, QuantBits, Quantizer,
};
pub use contributor::{
    Contributor, ContributorSpec, ContributorStatus, ExternalPeer, PeerScore, SecretRef,
};
pub use data::{DataSource, DataSpec, EmbeddedData, ShardData, TokenDtype};
pub use error::{Error, Result};
pub use model::{ModelConfig, ModelPreset, ModelSpec, ParamSpec};
pub use optimizer::{InnerOptimizer, OuterKind, OuterLrStep, OuterOptimizer};
pub use participation::{
    MAX_VALIDATOR_REPLICAS, PUBLIC_KEY_PATTERN, ParticipationMode, ParticipationSpec, ScoringSpec,
    StragglerPolicy,
};
pub use plan::{DataSchedule, RunPlan, TensorPlan, codec_params};
pub use training_run::{
    RunPhase, StopCondition, TrainingRun, TrainingRunSpec, TrainingRunStatus, condition,
    is_public_key,
};
pub use validation::{Problem, Problems};
pub use workload::{
    CheckpointSpec, CoordinatorSpec, Exposure, PullPolicy, StorageSpec, TelemetrySpec,
    WorkerTemplate,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// API group of both resources.
pub const GROUP: &str = "tributary.dev";
/// Largest seed a spec may carry: 2^53 − 1, the largest integer every JSON client (kubectl
/// included) reads exactly; the API server itself stores at most int64.
pub const MAX_SEED: u64 = (1 << 53) - 1;
/// API version of both resources.
pub const VERSION: &str = "v1alpha1";

/// The TrainingRun CRD as installed (derived, then [`schema::finalize`]d).
pub fn training_run_crd() -> Result<CustomResourceDefinition> {
    schema::finalize(TrainingRun::crd())
}

/// The Contributor CRD as installed.
pub fn contributor_crd() -> Result<CustomResourceDefinition> {
    schema::finalize(Contributor::crd())
}

/// Every CRD of this crate with the file name it is committed under in `charts/tributary/crds/`
/// (`<plural>.<group>.yaml`) and its YAML.
pub fn generated_files() -> Result<Vec<(String, String)>> {
    [training_run_crd()?, contributor_crd()?]
        .iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            Ok((format!("{name}.yaml"), schema::to_yaml(crd)?))
        })
        .collect()
}
