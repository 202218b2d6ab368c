//! One pod's worker: makes its volumes, runs init containers in order and then the containers,
//! reports status as they change, and on a stop request finishes the deletion.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::container::{ContainerRun, PodRuntime, Restart, Slot};
use super::env::PodFacts;
use super::ips::IpLease;
use super::node::{Node, StopRequest, StopSignal, delete_now};
use super::status::{ContainerView, PodView, RunState};
use super::volumes::VolumeMaker;

const FIELD_MANAGER: &str = "process-kubelet";
const API_TIMEOUT: Duration = Duration::from_secs(10);
const VOLUME_RETRY: Duration = Duration::from_secs(1);
const VOLUME_TIMEOUT: Duration = Duration::from_secs(30);

/// Patches pods/status with the pod's view whenever it changed.
struct StatusReporter {
    api: Api<Pod>,
    name: String,
    view: PodView,
    last: Option<serde_json::Value>,
}

impl StatusReporter {
    fn apply(&mut self, slot: Slot, update: ContainerView) {
        let list = match slot {
            Slot::Init(i) => self.view.init.get_mut(i),
            Slot::Main(i) => self.view.containers.get_mut(i),
        };
        if let Some(view) = list {
            *view = update;
        }
    }

    async fn report(&mut self) {
        let patch = self.view.patch(Timestamp::now());
        if self.last.as_ref() == Some(&patch) {
            return;
        }
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let merge = Patch::Merge(&patch);
        let call = self.api.patch_status(&self.name, &params, &merge);
        match tokio::time::timeout(API_TIMEOUT, call).await {
            Ok(Ok(_)) => self.last = Some(patch),
            Ok(Err(kube::Error::Api(e))) if e.code == 404 => {}
            Ok(Err(e)) => tracing::warn!(pod = %self.name, "patching status: {e}"),
            Err(_) => tracing::warn!(pod = %self.name, "patching status timed out"),
        }
    }
}

fn views(containers: &[Container]) -> Vec<ContainerView> {
    containers
        .iter()
        .map(|c| ContainerView::new(&c.name, c.image.as_deref().unwrap_or_default()))
        .collect()
}

/// Runs the pod until it is deleted (or the kubelet stops), then releases its IP.
pub async fn run(node: Arc<Node>, pod: Pod, ip: IpLease, mut stop: StopSignal) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let init = spec.init_containers.clone().unwrap_or_default();
    let pod_ip = ip.ip().to_string();
    let dir = node.pod_dir(&ns, &name);
    // A new pod (uid) starts with fresh volumes; logs accumulate.
    let _ = std::fs::remove_dir_all(dir.join("volumes"));
    let _ = std::fs::remove_dir_all(dir.join("serviceaccount"));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        tracing::error!(%ns, %name, "creating {}: {e}", dir.display());
    }
    let mut reporter = StatusReporter {
        api: Api::namespaced(node.client.clone(), &ns),
        name: name.clone(),
        view: PodView::new(&pod_ip, views(&init), views(&spec.containers)),
        last: None,
    };
    reporter.report().await;

    let maker = VolumeMaker {
        client: &node.client,
        root: &node.root,
        pod_dir: &dir,
        api_server: node.api_server.as_deref(),
    };
    let volumes = loop {
        let made = tokio::time::timeout(VOLUME_TIMEOUT, maker.make(&pod))
            .await
            .unwrap_or_else(|_| Err(format!("making volumes took over {VOLUME_TIMEOUT:?}")));
        match made {
            Ok(volumes) => break Some(volumes),
            Err(message) => {
                let waiting = RunState::waiting("CreateContainerConfigError", Some(message));
                for c in reporter
                    .view
                    .init
                    .iter_mut()
                    .chain(&mut reporter.view.containers)
                {
                    c.state = waiting.clone();
                }
                reporter.report().await;
                if stop_within(&mut stop, VOLUME_RETRY).await {
                    break None;
                }
            }
        }
    };
    if let Some(volumes) = volumes {
        let runtime = Arc::new(PodRuntime {
            uid: uid.clone(),
            facts: PodFacts::new(&pod, &pod_ip),
            volumes,
            dir,
        });
        let restart = Restart::from_policy(spec.restart_policy.as_deref());
        // Init containers run to success one after another; Always means OnFailure for them.
        let init_restart = if restart == Restart::Never {
            Restart::Never
        } else {
            Restart::OnFailure
        };
        let run = |slot: Slot, container: &Container, restart: Restart| ContainerRun {
            node: node.clone(),
            pod: runtime.clone(),
            container: container.clone(),
            slot,
            restart,
            updates: mpsc::unbounded_channel().0,
            stop: stop.clone(),
        };
        let mut initialized = true;
        for (i, container) in init.iter().enumerate() {
            let done = supervise(
                &mut reporter,
                vec![run(Slot::Init(i), container, init_restart)],
            )
            .await;
            if done.iter().any(|c| c.exit_code() != Some(0)) {
                initialized = false;
                break;
            }
        }
        if initialized {
            let runs = spec
                .containers
                .iter()
                .enumerate()
                .map(|(i, c)| run(Slot::Main(i), c, restart))
                .collect();
            supervise(&mut reporter, runs).await;
        }
    }

    let request = wait_for_stop(&mut stop).await;
    if request.delete {
        delete_now(&node.client, &ns, &name, &uid).await;
    }
    node.forget(&uid);
    drop(ip);
}

/// Runs containers concurrently, reporting every change, until none will run again.
async fn supervise(reporter: &mut StatusReporter, runs: Vec<ContainerRun>) -> Vec<ContainerView> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut tasks = JoinSet::new();
    for mut run in runs {
        run.updates = tx.clone();
        tasks.spawn(run.run());
    }
    drop(tx);
    let mut finals = Vec::new();
    loop {
        tokio::select! {
            update = rx.recv() => {
                let Some((slot, view)) = update else { break };
                reporter.apply(slot, view);
                // Coalesce what is already queued into one patch.
                while let Ok((slot, view)) = rx.try_recv() {
                    reporter.apply(slot, view);
                }
                reporter.report().await;
            }
            Some(joined) = tasks.join_next() => {
                match joined {
                    Ok(view) => finals.push(view),
                    Err(e) => tracing::error!("a container supervisor failed: {e}"),
                }
            }
        }
    }
    // All senders are gone: every supervisor has returned and its last update was applied.
    while let Some(joined) = tasks.join_next().await {
        if let Ok(view) = joined {
            finals.push(view);
        }
    }
    reporter.report().await;
    finals
}

/// Sleeps `d`; true if a stop was requested meanwhile.
async fn stop_within(stop: &mut StopSignal, d: Duration) -> bool {
    tokio::time::timeout(d, wait_for_stop(stop)).await.is_ok()
}

async fn wait_for_stop(stop: &mut StopSignal) -> StopRequest {
    loop {
        if let Some(request) = *stop.borrow_and_update() {
            return request;
        }
        if stop.changed().await.is_err() {
            return StopRequest {
                deadline: Instant::now(),
                delete: false,
            };
        }
    }
}
