//! The Kubernetes controller: reconciles TrainingRuns (their coordinators) and Contributors
//! (their workers), level-triggered and idempotent, with server-side apply under one field
//! manager. Only the replica holding the leader Lease acts.

pub mod children;
mod contributor;
pub mod keys;
mod leader;
pub mod metrics;
pub mod probe;
pub mod status;
mod training_run;

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{info, warn};
use tributary_crds::{Contributor, TrainingRun};

pub use children::Images;
pub use probe::{GrpcProbe, StatusProbe};

/// The one field manager of everything the operator writes.
pub const MANAGER: &str = "tributary-operator";

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("rendering the run manifest: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("object has no namespace")]
    NotNamespaced,
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub images: Images,
    pub probe: Arc<dyn StatusProbe>,
    pub metrics: Arc<metrics::Metrics>,
    pub recorder: Recorder,
    /// How often a live run's status is refreshed.
    pub poll: Duration,
    /// Consecutive failures per object, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        images: Images,
        probe: Arc<dyn StatusProbe>,
        metrics: Arc<metrics::Metrics>,
        identity: &str,
        poll: Duration,
    ) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: Some(identity.to_owned()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            images,
            probe,
            metrics,
            poll,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Records a reconcile's outcome; returns how many times in a row this object failed.
    fn outcome(&self, key: String, ok: bool) -> u32 {
        let Ok(mut failures) = self.failures.lock() else {
            return 1;
        };
        if ok {
            failures.remove(&key);
            0
        } else {
            let n = failures.entry(key).or_insert(0);
            *n += 1;
            *n
        }
    }
}

/// Backoff after `failures` consecutive errors: 1 s doubling, at most 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(8)).min(Duration::from_secs(300))
}

/// Server-side apply of an object we own, forcing our field manager's ownership.
pub async fn apply<K>(api: &Api<K>, object: &K) -> Result<K, kube::Error>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
}

/// Server-side apply of a custom resource's status subresource.
pub async fn apply_status<K, S>(
    api: &Api<K>,
    name: &str,
    kind: &str,
    status: &S,
) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + Debug,
    S: Serialize,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": kind,
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
}

/// How the controller runs.
pub struct Settings {
    pub namespace: Option<String>,
    pub identity: String,
    pub leader_election: Option<leader::LeaseSettings>,
    pub images: Images,
    pub metrics_addr: SocketAddr,
    pub poll: Duration,
}

pub use leader::LeaseSettings;

/// Runs the controller until it is signalled or loses its leadership.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API (KUBECONFIG or in-cluster)")?;
    let metrics = Arc::new(metrics::Metrics::default());
    let server = tokio::spawn(metrics::serve(settings.metrics_addr, metrics.clone()));
    let mut leadership = match &settings.leader_election {
        Some(lease) => Some(leader::acquire(client.clone(), &settings.identity, lease).await?),
        None => None,
    };
    metrics.leader.set(1);
    info!(identity = %settings.identity, "acting as the leader");
    let ctx = Arc::new(Context::new(
        client.clone(),
        settings.images.clone(),
        Arc::new(GrpcProbe),
        metrics,
        &settings.identity,
        settings.poll,
    ));
    let controllers = run_controllers(client, settings.namespace.as_deref(), ctx);
    let outcome = tokio::select! {
        () = controllers => Ok(()),
        lost = async {
            match leadership.as_mut() {
                Some(l) => l.lost().await,
                None => std::future::pending().await,
            }
        } => {
            // Another replica may act now: stop at once, never act alongside it.
            anyhow::bail!("lost the leader lease ({lost}); exiting so a fresh start can campaign again")
        }
        served = server => match served {
            Ok(Err(e)) => Err(e),
            Ok(Ok(())) => Ok(()),
            Err(e) => Err(anyhow::anyhow!("metrics server: {e}")),
        },
    };
    if let Some(l) = leadership {
        l.release().await;
    }
    outcome
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs both controllers (TrainingRuns and Contributors) with `client` and `ctx`, watching
/// `namespace` (all namespaces when `None`), until a termination signal; no leader election and
/// no metrics server (see [`run`]). Embedders (benchmarks, tests) drop the future to stop them.
pub async fn run_controllers(client: Client, namespace: Option<&str>, ctx: Arc<Context>) {
    // Owned objects carry our label: watch only those, not every ConfigMap of the cluster.
    let owned = watcher::Config::default().labels(&format!(
        "{}={}",
        children::MANAGED_BY.0,
        children::MANAGED_BY.1
    ));
    let runs = Controller::new(
        api::<TrainingRun>(&client, namespace),
        watcher::Config::default(),
    )
    .owns(api::<ConfigMap>(&client, namespace), owned.clone())
    .owns(
        api::<PersistentVolumeClaim>(&client, namespace),
        owned.clone(),
    )
    .owns(api::<Deployment>(&client, namespace), owned.clone())
    .owns(api::<Service>(&client, namespace), owned.clone())
    .shutdown_on_signal()
    .run(
        |run, ctx| timed(training_run::CONTROLLER, run, ctx, training_run::reconcile),
        error_policy::<TrainingRun>,
        ctx.clone(),
    )
    .for_each(|result| async move { log_result(training_run::CONTROLLER, result) });
    let contributors = Controller::new(
        api::<Contributor>(&client, namespace),
        watcher::Config::default(),
    )
    .owns(api::<StatefulSet>(&client, namespace), owned.clone())
    .owns(api::<Secret>(&client, namespace), owned)
    .shutdown_on_signal()
    .run(
        |c, ctx| timed(contributor::CONTROLLER, c, ctx, contributor::reconcile),
        error_policy::<Contributor>,
        ctx,
    )
    .for_each(|result| async move { log_result(contributor::CONTROLLER, result) });
    futures::join!(runs, contributors);
}

fn object_key<K: Resource<DynamicType = ()>>(object: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        object.namespace().unwrap_or_default(),
        object.name_any()
    )
}

async fn timed<K, F, Fut>(
    controller: &'static str,
    object: Arc<K>,
    ctx: Arc<Context>,
    reconcile: F,
) -> Result<Action, ReconcileError>
where
    K: Resource<DynamicType = ()>,
    F: FnOnce(Arc<K>, Arc<Context>) -> Fut,
    Fut: Future<Output = Result<Action, ReconcileError>>,
{
    let start = Instant::now();
    let key = object_key(object.as_ref());
    let result = reconcile(object, ctx.clone()).await;
    ctx.metrics
        .reconciled(controller, result.is_ok(), start.elapsed());
    if result.is_ok() {
        ctx.outcome(key, true);
    }
    result
}

fn error_policy<K: Resource<DynamicType = ()>>(
    object: Arc<K>,
    error: &ReconcileError,
    ctx: Arc<Context>,
) -> Action {
    let key = object_key(object.as_ref());
    let failures = ctx.outcome(key.clone(), false);
    let wait = backoff(failures);
    warn!(object = %key, failures, "reconcile failed: {error}; retrying in {} s", wait.as_secs());
    Action::requeue(wait)
}

fn log_result<T: Debug, E: std::fmt::Display>(controller: &str, result: Result<T, E>) {
    match result {
        Ok(object) => tracing::debug!(controller, ?object, "reconciled"),
        Err(e) => tracing::debug!(controller, "controller: {e}"),
    }
}

#[cfg(test)]
mod tests;
