//! What reconciles read: the caches (reflector stores) of every object the controllers watch, so a
//! steady-state reconcile asks the API server nothing; and a record of what the operator applied,
//! so an unchanged child is not applied again on every status poll.
//!
//! The 100-run benchmark (docs/benchmarks.md, "Operator reconcile") is why: reading and
//! re-applying everything on each 5 s poll asked a small API server for hundreds of requests a
//! second and saturated it.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tributary_crds::{Contributor, TrainingRun};
use tributary_proto::v1alpha1::RunStatus;

use super::ReconcileError;

/// A watched kind: its cache, and what this process last applied of each object.
pub struct Owned<K>
where
    K: Resource<DynamicType = ()> + 'static,
{
    store: Store<K>,
    applied: Mutex<HashMap<ObjectRef<K>, Applied>>,
}

/// One apply: the digest of what was sent, and the object's marker in the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Applied {
    digest: [u8; 32],
    marker: Option<String>,
}

/// What changes when someone else changes an object: its generation where the kind has one
/// (Deployment, StatefulSet: status updates do not move it), its resourceVersion otherwise.
fn marker<K: Resource>(object: &K) -> Option<String> {
    let meta = object.meta();
    match meta.generation {
        Some(g) => Some(format!("g{g}")),
        None => meta.resource_version.clone(),
    }
}

impl<K> Owned<K>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug + 'static,
{
    pub fn new(store: Store<K>) -> Self {
        Self {
            store,
            applied: Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self) -> &Store<K> {
        &self.store
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        self.store.get(&ObjectRef::new(name).within(namespace))
    }

    /// Applies `desired` unless the cache shows the object exactly as this process last applied
    /// it (same desired content, nobody changed it since, not being deleted); returns the object.
    ///
    /// The record lives in memory only: a restarted operator applies everything once, which is
    /// what re-asserts every child after a restart or a lost leadership.
    pub async fn apply(&self, api: &Api<K>, desired: &K) -> Result<Arc<K>, ReconcileError> {
        let key = ObjectRef::from_obj(desired);
        let digest = digest(desired)?;
        if let Some(cached) = self.store.get(&key)
            && cached.meta().deletion_timestamp.is_none()
        {
            let unchanged = Applied {
                digest,
                marker: marker(cached.as_ref()),
            };
            if self.records().get(&key) == Some(&unchanged) {
                return Ok(cached);
            }
        }
        let applied = super::apply(api, desired).await?;
        let mut records = self.records();
        records.insert(
            key,
            Applied {
                digest,
                marker: marker(&applied),
            },
        );
        // Forget deleted objects now and then, so the record stays as large as the cache.
        if records.len() > 2 * self.store.len() + 64 {
            let live = &self.store;
            records.retain(|k, _| live.get(k).is_some());
        }
        Ok(Arc::new(applied))
    }

    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<K>, Applied>> {
        // A panic elsewhere while holding the lock leaves a usable map: at worst one re-apply.
        self.applied.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn digest<K: Serialize>(object: &K) -> Result<[u8; 32], ReconcileError> {
    let bytes = serde_json::to_vec(object).map_err(ReconcileError::Json)?;
    Ok(Sha256::digest(&bytes).into())
}

/// Every cache the reconciles read, and the coordinators' last answers.
pub struct Caches {
    pub runs: Store<TrainingRun>,
    pub contributors: Store<Contributor>,
    /// Coordinator pods only (selected by label): where a run's status comes from.
    pub coordinator_pods: Store<Pod>,
    pub config_maps: Owned<ConfigMap>,
    pub pvcs: Owned<PersistentVolumeClaim>,
    pub deployments: Owned<Deployment>,
    pub services: Owned<Service>,
    pub statefulsets: Owned<StatefulSet>,
    pub secrets: Owned<Secret>,
    /// The newest GetStatus answer of each run's coordinator, which Contributors read their
    /// scores from instead of asking the coordinator again.
    statuses: Mutex<HashMap<ObjectRef<TrainingRun>, Arc<RunStatus>>>,
    ready: Readiness,
}

/// Whether every cache has completed its first listing. Flags set by the watch streams, not
/// `Store::wait_until_ready`: that future keeps one waker per store, so two reconciles waiting on
/// it at once can leave one asleep for good.
#[derive(Default)]
pub struct Readiness {
    flags: Vec<Arc<AtomicBool>>,
}

impl Readiness {
    /// A new flag, for one watch stream to raise.
    pub fn flag(&mut self) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        self.flags.push(flag.clone());
        flag
    }

    pub fn all(&self) -> bool {
        self.flags.iter().all(|f| f.load(Ordering::Acquire))
    }
}

impl Caches {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        runs: Store<TrainingRun>,
        contributors: Store<Contributor>,
        coordinator_pods: Store<Pod>,
        config_maps: Store<ConfigMap>,
        pvcs: Store<PersistentVolumeClaim>,
        deployments: Store<Deployment>,
        services: Store<Service>,
        statefulsets: Store<StatefulSet>,
        secrets: Store<Secret>,
        ready: Readiness,
    ) -> Self {
        Self {
            runs,
            contributors,
            coordinator_pods,
            config_maps: Owned::new(config_maps),
            pvcs: Owned::new(pvcs),
            deployments: Owned::new(deployments),
            services: Owned::new(services),
            statefulsets: Owned::new(statefulsets),
            secrets: Owned::new(secrets),
            statuses: Mutex::new(HashMap::new()),
            ready,
        }
    }

    /// Whether every cache holds a complete first listing. Before that, a missing object may
    /// only be not-yet-listed (a Contributor would scale its workers to 0 for a run it has not
    /// seen yet), so reconciles wait for it.
    pub fn ready(&self) -> bool {
        self.ready.all()
    }

    pub fn run(&self, namespace: &str, name: &str) -> Option<Arc<TrainingRun>> {
        self.runs.get(&ObjectRef::new(name).within(namespace))
    }

    pub fn remember_status(&self, namespace: &str, run: &str, status: Option<Arc<RunStatus>>) {
        let key = ObjectRef::new(run).within(namespace);
        let mut statuses = self.statuses.lock().unwrap_or_else(PoisonError::into_inner);
        match status {
            Some(s) => {
                statuses.insert(key, s);
            }
            None => {
                statuses.remove(&key);
            }
        }
        // Deleted runs are never reconciled again: drop their answers here.
        if statuses.len() > self.runs.len() {
            statuses.retain(|k, _| self.runs.get(k).is_some());
        }
    }

    pub fn status(&self, namespace: &str, run: &str) -> Option<Arc<RunStatus>> {
        let key = ObjectRef::new(run).within(namespace);
        self.statuses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned()
    }
}
