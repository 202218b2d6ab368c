//! A test-side "process kubelet" for a cluster whose nodes are fake: it watches the Pods the
//! scheduler binds to a node and runs each container as a local process, with its own loopback
//! IP, its volumes as local directories, Service hosts in its args and env rewritten to a Ready
//! pod's IP and port, and status reported through pods/status, so Deployments, StatefulSets and
//! Services behave as on a real node. See the "Dev cluster" section of the operator contract.
//!
//! - `plan`, `env`, `expand`, `mounts`, `service_refs`: pod spec → process plan (pure);
//! - `volumes`, `dns`: what a plan needs from the API server;
//! - `container`, `process`, `pod`, `status`: supervision and status reporting;
//! - `node`, `watch`, `ips`: the node's pods, the watch that feeds it, pod IPs.

mod container;
mod dns;
mod env;
mod expand;
mod ips;
mod mounts;
mod node;
mod plan;
mod pod;
mod process;
mod service_refs;
mod status;
mod volumes;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use kube::Client;
use rustix::process::Signal;
use tokio::task::JoinHandle;

pub use node::Namespaces;
use node::Node;

/// Runs the Pods bound to one node as local processes until dropped; dropping it SIGKILLs
/// every process it started and stops its watch.
pub struct ProcessKubelet {
    node: Arc<Node>,
    watcher: JoinHandle<()>,
}

impl ProcessKubelet {
    /// Starts running the Pods of every namespace that are bound to `node`. Logs and volumes go
    /// under `root`; `command[0]` is looked up in `bin_dirs` (the workspace's target/<profile>/)
    /// before PATH.
    pub async fn start(
        client: Client,
        node: &str,
        root: &Path,
        bin_dirs: Vec<PathBuf>,
    ) -> Result<Self> {
        Self::start_with(client, node, root, bin_dirs, Namespaces::All).await
    }

    /// As [`ProcessKubelet::start`], for the Pods in `namespaces` only: kubelets of tests that
    /// run in parallel can share the node when each runs its own namespaces.
    pub async fn start_with(
        client: Client,
        node: &str,
        root: &Path,
        bin_dirs: Vec<PathBuf>,
        namespaces: Namespaces,
    ) -> Result<Self> {
        std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        let api_server = match api_server_url() {
            Ok(url) => Some(url),
            Err(e) => {
                tracing::warn!("pods that mount a ServiceAccount token will not start: {e:#}");
                None
            }
        };
        let node = Arc::new(Node::new(
            client, node, root, bin_dirs, api_server, namespaces,
        ));
        let watcher = tokio::spawn(watch::run(node.clone()));
        Ok(Self { node, watcher })
    }

    /// SIGKILLs the pod's processes, as a crash would; they restart per its restartPolicy.
    pub fn kill(&self, ns: &str, pod: &str) -> Result<()> {
        let pids: Vec<u32> = self
            .node
            .registry()
            .pods
            .values()
            .filter(|h| h.namespace == ns && h.name == pod)
            .flat_map(|h| h.pids.values().copied())
            .collect();
        if pids.is_empty() {
            bail!("pod {ns}/{pod} has no running process");
        }
        for pid in pids {
            process::signal_group(pid, Signal::KILL);
        }
        Ok(())
    }

    /// (namespace, pod, pid) of every running container process.
    pub fn pods_running(&self) -> Vec<(String, String, u32)> {
        let registry = self.node.registry();
        let mut running: Vec<(String, String, u32)> = registry
            .pods
            .values()
            .flat_map(|h| {
                h.pids
                    .values()
                    .map(|pid| (h.namespace.clone(), h.name.clone(), *pid))
            })
            .collect();
        running.sort();
        running
    }

    /// Where a container's stdout and stderr go (appended across restarts).
    pub fn log_path(&self, ns: &str, pod: &str, container: &str) -> PathBuf {
        self.node.pod_dir(ns, pod).join(format!("{container}.log"))
    }

    /// The directory this kubelet keeps logs, volumes and claims in.
    pub fn root(&self) -> &Path {
        &self.node.root
    }
}

impl Drop for ProcessKubelet {
    fn drop(&mut self) {
        self.watcher.abort();
        self.node.shut_down();
    }
}

/// The API server URL of the current context of the kubeconfig in KUBECONFIG (or the default
/// path): the one this kubelet's own client most likely uses.
fn api_server_url() -> Result<String> {
    let config = kube::config::Kubeconfig::read().context("reading the kubeconfig")?;
    let context_name = config
        .current_context
        .as_deref()
        .context("no current-context")?;
    let context = config
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_ref())
        .context("the current context is not defined")?;
    let cluster = config
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .and_then(|c| c.cluster.as_ref())
        .context("the current context's cluster is not defined")?;
    cluster.server.clone().context("the cluster has no server")
}
