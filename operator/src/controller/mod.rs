//! The Kubernetes controller: reconciles TrainingRuns (their coordinators and validators) and
//! Contributors (their workers), level-triggered and idempotent, with server-side apply under one
//! field manager. Only the replica holding the leader Lease acts.

mod cache;
pub mod children;
mod contributor;
mod contributor_status;
mod keys;
mod leader;
pub mod metrics;
mod probe;
mod status;
mod training_run;
mod validators;

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{info, warn};
use tributary_crds::{Contributor, TrainingRun};

pub use cache::Caches;
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
    #[error("hashing a child object: {0}")]
    Json(serde_json::Error),
    #[error("object has no namespace")]
    NotNamespaced,
}

/// How soon a reconcile that found the caches still listing runs again.
const CACHES_WAIT: Duration = Duration::from_secs(1);

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub caches: Caches,
    pub images: Images,
    pub probe: Arc<dyn StatusProbe>,
    pub metrics: Arc<metrics::Metrics>,
    pub recorder: Recorder,
    /// How often a live run's status is refreshed.
    pub poll: Duration,
    /// Consecutive failures per object, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
}

/// What a [`Context`] is made of besides its client and caches.
pub struct Parts {
    pub images: Images,
    pub probe: Arc<dyn StatusProbe>,
    pub metrics: Arc<metrics::Metrics>,
    /// This replica's name, on the Events it records.
    pub identity: String,
    pub poll: Duration,
}

impl Context {
    pub fn new(client: Client, caches: Caches, parts: Parts) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: Some(parts.identity),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            caches,
            images: parts.images,
            probe: parts.probe,
            metrics: parts.metrics,
            poll: parts.poll,
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

/// The operator's API client (KUBECONFIG or in-cluster).
pub async fn client() -> anyhow::Result<Client> {
    let mut config = kube::Config::infer()
        .await
        .context("finding the Kubernetes API (KUBECONFIG or in-cluster)")?;
    // The client's own retries of 429/503/504 go on for minutes and hide an overloaded API
    // server; a failed reconcile backs off per object instead (`error_policy`), and watches
    // back off on their own.
    config.default_retry = false;
    Client::try_from(config).context("connecting to the Kubernetes API")
}

/// Runs the controller until it is signalled or loses its leadership.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let client = client().await?;
    let metrics = Arc::new(metrics::Metrics::default());
    let server = tokio::spawn(metrics::serve(settings.metrics_addr, metrics.clone()));
    let mut leadership = match &settings.leader_election {
        Some(lease) => Some(leader::acquire(client.clone(), &settings.identity, lease).await?),
        None => None,
    };
    metrics.leader.set(1);
    info!(identity = %settings.identity, "acting as the leader");
    let parts = Parts {
        images: settings.images.clone(),
        probe: Arc::new(GrpcProbe),
        metrics,
        identity: settings.identity.clone(),
        poll: settings.poll,
    };
    let controllers = run_controllers(client, settings.namespace.as_deref(), parts);
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

/// A watch of `K` that fills a cache as the controller consumes it, and raises `ready` once its
/// first listing is complete.
fn cached<K>(
    client: &Client,
    namespace: Option<&str>,
    config: watcher::Config,
    ready: Arc<AtomicBool>,
) -> (
    Store<K>,
    impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
)
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream = watcher(api::<K>(client, namespace), config)
        .default_backoff()
        .reflect(writer)
        .inspect(move |event| {
            if matches!(event, Ok(watcher::Event::InitDone)) {
                ready.store(true, Ordering::Release);
            }
        });
    (store, stream)
}

/// Runs both controllers (TrainingRuns and Contributors) with `client`, watching `namespace`
/// (all namespaces when `None`), until a termination signal; no leader election and no metrics
/// server (see [`run`]). Embedders (benchmarks, tests) drop the future to stop them.
pub async fn run_controllers(client: Client, namespace: Option<&str>, parts: Parts) {
    // Owned objects carry our label: watch only those, not every ConfigMap of the cluster.
    let managed = format!("{}={}", children::MANAGED_BY.0, children::MANAGED_BY.1);
    let owned = watcher::Config::default().labels(&managed);
    let all = watcher::Config::default();
    let mut ready = cache::Readiness::default();
    let (runs, run_events) = cached::<TrainingRun>(&client, namespace, all.clone(), ready.flag());
    let (contributors, contributor_events) =
        cached::<Contributor>(&client, namespace, all, ready.flag());
    let (config_maps, config_map_events) =
        cached::<ConfigMap>(&client, namespace, owned.clone(), ready.flag());
    let (pvcs, pvc_events) =
        cached::<PersistentVolumeClaim>(&client, namespace, owned.clone(), ready.flag());
    let (deployments, deployment_events) =
        cached::<Deployment>(&client, namespace, owned.clone(), ready.flag());
    let (services, service_events) =
        cached::<Service>(&client, namespace, owned.clone(), ready.flag());
    let (statefulsets, statefulset_events) =
        cached::<StatefulSet>(&client, namespace, owned.clone(), ready.flag());
    let (secrets, secret_events) = cached::<Secret>(&client, namespace, owned, ready.flag());
    let coordinators = watcher::Config::default().labels(&format!(
        "{managed},{}=coordinator",
        children::COMPONENT_LABEL
    ));
    let (pods, pod_events) = cached::<Pod>(&client, namespace, coordinators, ready.flag());

    let runs_controller = Controller::for_stream(run_events.applied_objects(), runs.clone())
        .owns_stream(config_map_events.touched_objects())
        .owns_stream(pvc_events.touched_objects())
        .owns_stream(deployment_events.touched_objects())
        .owns_stream(service_events.touched_objects())
        // A coordinator pod turning Ready (or going away) changes the run's status at once.
        .watches_stream(pod_events.touched_objects(), |pod: Pod| {
            let run = pod.labels().get(children::RUN_LABEL)?.clone();
            Some(ObjectRef::<TrainingRun>::new(&run).within(&pod.namespace()?))
        });
    let contributors_controller =
        Controller::for_stream(contributor_events.applied_objects(), contributors.clone())
            .owns_stream(statefulset_events.touched_objects())
            .owns_stream(secret_events.touched_objects());
    // A run that appears, finishes or moves on concerns its Contributors (their workers, their
    // scores) now, not at their next periodic pass.
    let by_run = contributors.clone();
    let contributors_controller = contributors_controller.watches(
        api::<TrainingRun>(&client, namespace),
        watcher::Config::default(),
        move |run: TrainingRun| {
            let (ns, name) = (run.namespace(), run.name_any());
            by_run
                .state()
                .iter()
                .filter(|c| c.namespace() == ns && c.spec.training_run == name)
                .map(|c| ObjectRef::from_obj(c.as_ref()))
                .collect::<Vec<_>>()
        },
    );
    let caches = Caches::new(
        runs,
        contributors,
        pods,
        config_maps,
        pvcs,
        deployments,
        services,
        statefulsets,
        secrets,
        ready,
    );
    let ctx = Arc::new(Context::new(client, caches, parts));
    let runs = runs_controller
        .shutdown_on_signal()
        .run(
            |run, ctx| timed(training_run::CONTROLLER, run, ctx, training_run::reconcile),
            error_policy::<TrainingRun>,
            ctx.clone(),
        )
        .for_each(|result| async move { log_result(training_run::CONTROLLER, result) });
    let contributors = contributors_controller
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
