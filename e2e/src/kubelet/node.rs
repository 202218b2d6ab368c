//! The kubelet's shared state: the node's identity and settings, and the pods it runs (by uid)
//! with their stop requests and process ids.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Preconditions};
use kube::{Api, Client};
use rustix::process::Signal;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{ips, pod, process};

/// The longest a pod's processes get between SIGTERM and SIGKILL, whatever its grace period.
pub const MAX_GRACE: Duration = Duration::from_secs(30);
/// How long processes of a pod that vanished from the API server get before SIGKILL.
const GONE_GRACE: Duration = Duration::from_secs(2);
const API_TIMEOUT: Duration = Duration::from_secs(10);

/// Why and by when a pod's processes must stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopRequest {
    /// SIGKILL at this instant if still running.
    pub deadline: Instant,
    /// Delete the pod (grace 0) once its processes are gone; false when it is already gone.
    pub delete: bool,
}

pub type StopSignal = watch::Receiver<Option<StopRequest>>;

/// Which pods bound to the node this kubelet runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespaces {
    All,
    /// Only pods in these namespaces (so that kubelets of parallel tests can share a node).
    Only(Vec<String>),
}

impl Namespaces {
    pub fn contains(&self, ns: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(list) => list.iter().any(|n| n == ns),
        }
    }
}

pub struct PodHandle {
    pub namespace: String,
    pub name: String,
    stop: watch::Sender<Option<StopRequest>>,
    /// Container name → pid (= process group id) of its running process.
    pub pids: BTreeMap<String, u32>,
    task: Option<JoinHandle<()>>,
}

#[derive(Default)]
pub struct Registry {
    pub pods: HashMap<String, PodHandle>,
    /// Set when the kubelet is dropped: no process may start after.
    shut_down: bool,
}

pub struct Node {
    pub client: Client,
    pub name: String,
    pub root: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
    /// The API server URL written into ServiceAccount kubeconfigs.
    pub api_server: Option<String>,
    pub namespaces: Namespaces,
    pub ip_lock_dir: PathBuf,
    registry: Mutex<Registry>,
}

impl Node {
    pub fn new(
        client: Client,
        name: &str,
        root: &Path,
        bin_dirs: Vec<PathBuf>,
        api_server: Option<String>,
        namespaces: Namespaces,
    ) -> Self {
        Self {
            client,
            name: name.to_owned(),
            root: root.to_owned(),
            bin_dirs,
            api_server,
            namespaces,
            ip_lock_dir: ips::default_lock_dir(),
            registry: Mutex::new(Registry::default()),
        }
    }

    pub fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn pod_dir(&self, ns: &str, pod: &str) -> PathBuf {
        self.root.join(format!("{ns}_{pod}"))
    }

    /// Records a started process; false (and the process group killed) after shutdown.
    pub fn register_pid(&self, uid: &str, container: &str, pid: u32) -> bool {
        let mut registry = self.registry();
        if registry.shut_down {
            process::signal_group(pid, Signal::KILL);
            return false;
        }
        if let Some(handle) = registry.pods.get_mut(uid) {
            handle.pids.insert(container.to_owned(), pid);
        }
        true
    }

    pub fn unregister_pid(&self, uid: &str, container: &str) {
        if let Some(handle) = self.registry().pods.get_mut(uid) {
            handle.pids.remove(container);
        }
    }

    /// A pod's worker is done: the pod is gone from the API server (or the kubelet stops).
    pub fn forget(&self, uid: &str) {
        self.registry().pods.remove(uid);
    }

    /// A pod (or a change to one) seen by the watcher.
    pub fn observe(self: &Arc<Self>, pod: Pod) {
        let (Some(uid), Some(ns), Some(name)) = (
            pod.metadata.uid.clone(),
            pod.metadata.namespace.clone(),
            pod.metadata.name.clone(),
        ) else {
            return;
        };
        if !self.namespaces.contains(&ns) {
            return;
        }
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let mut registry = self.registry();
        if registry.shut_down {
            return;
        }
        if let Some(handle) = registry.pods.get(&uid) {
            if deleting {
                let deadline = stop_deadline(&pod);
                handle.stop.send_if_modified(|stop| match stop {
                    None => {
                        *stop = Some(StopRequest {
                            deadline,
                            delete: true,
                        });
                        true
                    }
                    Some(_) => false,
                });
            }
            return;
        }
        if deleting {
            // Never ran here (or ran before this kubelet started): finalize the deletion.
            let client = self.client.clone();
            tokio::spawn(async move { delete_now(&client, &ns, &name, &uid).await });
            return;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            return;
        }
        let lease = match ips::lease(&self.ip_lock_dir) {
            Ok(lease) => lease,
            Err(e) => {
                tracing::error!(%ns, %name, "no pod IP: {e:#}");
                return;
            }
        };
        let (stop_tx, stop_rx) = watch::channel(None);
        let task = tokio::spawn(pod::run(self.clone(), pod, lease, stop_rx));
        registry.pods.insert(
            uid,
            PodHandle {
                namespace: ns,
                name,
                stop: stop_tx,
                pids: BTreeMap::new(),
                task: Some(task),
            },
        );
    }

    /// A pod deleted from the API server (or missing from a re-list).
    pub fn gone(&self, uid: &str) {
        if let Some(handle) = self.registry().pods.get(uid) {
            handle.stop.send_modify(|stop| {
                *stop = Some(match *stop {
                    Some(request) => StopRequest {
                        delete: false,
                        ..request
                    },
                    None => StopRequest {
                        deadline: Instant::now() + GONE_GRACE,
                        delete: false,
                    },
                });
            });
        }
    }

    /// After a re-list: pods the kubelet runs that the list no longer has are gone.
    pub fn gone_unless_listed(&self, listed: &HashSet<String>) {
        let missing: Vec<String> = self
            .registry()
            .pods
            .keys()
            .filter(|uid| !listed.contains(*uid))
            .cloned()
            .collect();
        for uid in missing {
            self.gone(&uid);
        }
    }

    /// SIGKILLs every process and stops every pod worker; nothing starts after this.
    pub fn shut_down(&self) {
        let mut registry = self.registry();
        registry.shut_down = true;
        for handle in registry.pods.values_mut() {
            for pid in handle.pids.values() {
                process::signal_group(*pid, Signal::KILL);
            }
            if let Some(task) = handle.task.take() {
                task.abort();
            }
        }
    }
}

/// When to SIGKILL a pod being deleted: at its deletionTimestamp (delete time + grace), at
/// most MAX_GRACE from now.
fn stop_deadline(pod: &Pod) -> Instant {
    let grace = pod
        .metadata
        .deletion_grace_period_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(MAX_GRACE, Duration::from_secs);
    let until_timestamp = pod
        .metadata
        .deletion_timestamp
        .as_ref()
        .and_then(|t| Duration::try_from(t.0.duration_since(Timestamp::now())).ok())
        .unwrap_or(Duration::ZERO);
    Instant::now() + grace.min(until_timestamp).min(MAX_GRACE)
}

/// Deletes the pod with grace 0 (only this uid); bounded, retried a few times.
pub async fn delete_now(client: &Client, ns: &str, name: &str, uid: &str) {
    let api = Api::<Pod>::namespaced(client.clone(), ns);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    for _ in 0..3 {
        match tokio::time::timeout(API_TIMEOUT, api.delete(name, &params)).await {
            Ok(Ok(_)) => return,
            // Gone already, or another pod of that name: nothing left to delete.
            Ok(Err(kube::Error::Api(e))) if e.code == 404 || e.code == 409 => return,
            Ok(Err(e)) => tracing::warn!(%ns, %name, "deleting the pod: {e}"),
            Err(_) => tracing::warn!(%ns, %name, "deleting the pod timed out"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
