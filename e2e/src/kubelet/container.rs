//! One container's life as a local process: plan, start, report Ready after a short uptime,
//! restart per restartPolicy with backoff, and stop (SIGTERM, grace, SIGKILL) on request.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use rustix::process::Signal;
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::dns;
use super::env::{EnvSources, PodFacts, container_env, referenced_objects};
use super::node::{MAX_GRACE, Node, StopRequest, StopSignal};
use super::plan::{ProcessPlan, plan};
use super::process::{exit_code, resolve_program, signal_group, spawn};
use super::service_refs::Endpoint;
use super::status::{ContainerView, RunState};
use super::volumes::{PodVolumes, as_text, config_map_bytes, secret_bytes};

/// A process up this long counts as Ready (there are no probes).
const READY_AFTER: Duration = Duration::from_millis(200);
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(8);
/// A run this long resets the backoff.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);
/// How long a start waits for the Services its args name to have a Ready pod.
const SERVICE_WAIT: Duration = Duration::from_secs(60);
const CONFIG_RETRY: Duration = Duration::from_secs(1);
const API_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    Always,
    OnFailure,
    Never,
}

impl Restart {
    pub fn from_policy(policy: Option<&str>) -> Self {
        match policy {
            Some("Never") => Self::Never,
            Some("OnFailure") => Self::OnFailure,
            _ => Self::Always,
        }
    }

    fn again(self, exit_code: i32) -> bool {
        match self {
            Self::Always => true,
            Self::OnFailure => exit_code != 0,
            Self::Never => false,
        }
    }
}

/// Which status list a container's view belongs to, and where in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Init(usize),
    Main(usize),
}

/// What every container of a pod shares.
pub struct PodRuntime {
    pub uid: String,
    pub facts: PodFacts,
    pub volumes: PodVolumes,
    pub dir: PathBuf,
}

pub struct ContainerRun {
    pub node: Arc<Node>,
    pub pod: Arc<PodRuntime>,
    pub container: Container,
    pub slot: Slot,
    pub restart: Restart,
    pub updates: mpsc::UnboundedSender<(Slot, ContainerView)>,
    pub stop: StopSignal,
}

struct Exit {
    code: i32,
    signal: Option<i32>,
    reason: &'static str,
    message: Option<String>,
}

enum NotStarted {
    Stopped,
    /// Worth retrying (a ConfigMap or Secret key that may appear).
    Config(String),
    /// Reported as a failed start (exit code 128), then handled like any exit.
    Start(String),
}

impl ContainerRun {
    /// Runs until the container will not run again; returns its final view.
    pub async fn run(mut self) -> ContainerView {
        let image = self.container.image.clone().unwrap_or_default();
        let mut view = ContainerView::new(&self.container.name, &image);
        let mut backoff = BACKOFF_START;
        loop {
            self.report(&view);
            if self.stop_requested().is_some() {
                return self.finish(view);
            }
            let mut started = Instant::now();
            let exit = match self.prepare().await {
                Err(NotStarted::Stopped) => return self.finish(view),
                Err(NotStarted::Config(message)) => {
                    view.state = RunState::waiting("CreateContainerConfigError", Some(message));
                    self.report(&view);
                    if self.stops_within(CONFIG_RETRY).await {
                        return self.finish(view);
                    }
                    continue;
                }
                Err(NotStarted::Start(message)) => Exit {
                    code: 128,
                    signal: None,
                    reason: "StartError",
                    message: Some(message),
                },
                Ok((plan, program)) => {
                    // Backoff resets after a long run, not after a long wait for a Service.
                    started = Instant::now();
                    self.execute(&plan, &program, &mut view).await
                }
            };
            let started_at = match view.state {
                RunState::Running { started_at } => Some(started_at),
                _ => None,
            };
            view.ready = false;
            view.state = RunState::Terminated {
                exit_code: exit.code,
                signal: exit.signal,
                reason: exit.reason.to_owned(),
                message: exit.message,
                started_at,
                finished_at: Timestamp::now(),
            };
            if self.stop_requested().is_some() || !self.restart.again(exit.code) {
                return self.finish(view);
            }
            self.report(&view);
            if started.elapsed() >= BACKOFF_RESET_AFTER {
                backoff = BACKOFF_START;
            }
            view.last_terminated = Some(view.state.clone());
            view.state = RunState::waiting(
                "CrashLoopBackOff",
                Some(format!("back-off {backoff:?} restarting failed container")),
            );
            self.report(&view);
            if self.stops_within(backoff).await {
                return self.finish(view);
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
            view.restart_count += 1;
        }
    }

    fn report(&self, view: &ContainerView) {
        // The pod worker outlives its containers; a closed channel means it was aborted.
        let _ = self.updates.send((self.slot, view.clone()));
    }

    fn finish(&self, mut view: ContainerView) -> ContainerView {
        view.done = true;
        view.ready = false;
        self.report(&view);
        view
    }

    fn stop_requested(&mut self) -> Option<StopRequest> {
        *self.stop.borrow_and_update()
    }

    /// Sleeps `d`; true if a stop was requested meanwhile.
    async fn stops_within(&mut self, d: Duration) -> bool {
        let sleep = tokio::time::sleep(d);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return false,
                changed = self.stop.changed() => {
                    if changed.is_err() || self.stop_requested().is_some() {
                        return true;
                    }
                }
            }
        }
    }

    /// The process plan, with env sources read and Service hosts resolved (bounded wait).
    async fn prepare(&mut self) -> Result<(ProcessPlan, PathBuf), NotStarted> {
        let sources = self.env_sources().await.map_err(NotStarted::Config)?;
        let env = container_env(&self.container, &self.pod.facts, &sources)
            .map_err(NotStarted::Config)?;
        let mounts = self.pod.volumes.mounts(&self.container);
        let plan = plan(&self.container, env, &mounts).map_err(NotStarted::Start)?;
        let deadline = Instant::now() + SERVICE_WAIT;
        let mut endpoints: Vec<(String, String, Option<u16>, Endpoint)> = Vec::new();
        let client = self.node.client.clone();
        for r in plan.service_refs() {
            let resolved = tokio::select! {
                resolved = dns::resolve(&client, &r, deadline) => resolved,
                () = self.stopped() => return Err(NotStarted::Stopped),
            };
            match resolved {
                Ok(endpoint) => endpoints.push((r.service, r.namespace, r.port, endpoint)),
                Err(why) => {
                    tracing::warn!(container = %self.container.name, "left unresolved: {why}")
                }
            }
        }
        let plan = plan.with_endpoints(|r| {
            endpoints
                .iter()
                .find(|(s, ns, port, _)| *s == r.service && *ns == r.namespace && *port == r.port)
                .map(|(.., endpoint)| endpoint.clone())
        });
        let program = resolve_program(
            &plan.program,
            &self.node.bin_dirs,
            std::env::var_os("PATH").as_deref(),
        )
        .ok_or_else(|| {
            NotStarted::Start(format!(
                "{}: not found in {:?} or PATH",
                plan.program, self.node.bin_dirs
            ))
        })?;
        Ok((plan, program))
    }

    async fn stopped(&mut self) {
        loop {
            if self.stop_requested().is_some() || self.stop.changed().await.is_err() {
                return;
            }
        }
    }

    /// The ConfigMaps and Secrets the container's env refers to (missing ones left out).
    async fn env_sources(&self) -> Result<EnvSources, String> {
        let (config_maps, secrets) = referenced_objects(&self.container);
        let ns = &self.pod.facts.namespace;
        let mut sources = EnvSources::default();
        for name in config_maps {
            let api = Api::<ConfigMap>::namespaced(self.node.client.clone(), ns);
            let found = tokio::time::timeout(API_TIMEOUT, api.get_opt(&name))
                .await
                .map_err(|_| format!("reading ConfigMap {name} timed out"))?
                .map_err(|e| format!("reading ConfigMap {name}: {e}"))?;
            if let Some(cm) = found {
                sources
                    .config_maps
                    .insert(name, as_text(config_map_bytes(&cm)));
            }
        }
        for name in secrets {
            let api = Api::<Secret>::namespaced(self.node.client.clone(), ns);
            let found = tokio::time::timeout(API_TIMEOUT, api.get_opt(&name))
                .await
                .map_err(|_| format!("reading Secret {name} timed out"))?
                .map_err(|e| format!("reading Secret {name}: {e}"))?;
            if let Some(secret) = found {
                sources.secrets.insert(name, as_text(secret_bytes(&secret)));
            }
        }
        Ok(sources)
    }

    /// Starts the process and waits for it to exit (or to be stopped).
    async fn execute(
        &mut self,
        plan: &ProcessPlan,
        program: &std::path::Path,
        view: &mut ContainerView,
    ) -> Exit {
        let extra_env: Vec<(String, String)> = self
            .pod
            .volumes
            .kubeconfig()
            .map(|k| ("KUBECONFIG".to_owned(), k.to_string_lossy().into_owned()))
            .into_iter()
            .collect();
        let log = self.pod.dir.join(format!("{}.log", self.container.name));
        let mut child = match spawn(plan, program, &extra_env, &self.pod.dir, &log) {
            Ok(child) => child,
            Err(e) => {
                return Exit {
                    code: 128,
                    signal: None,
                    reason: "StartError",
                    message: Some(format!("{e:#}")),
                };
            }
        };
        let Some(pid) = child.id() else {
            return self.exit_of(child.wait().await);
        };
        if !self
            .node
            .register_pid(&self.pod.uid, &self.container.name, pid)
        {
            return self.exit_of(child.wait().await);
        }
        view.state = RunState::Running {
            started_at: Timestamp::now(),
        };
        self.report(view);
        let exit = self.wait(&mut child, pid, view).await;
        self.node
            .unregister_pid(&self.pod.uid, &self.container.name);
        // The container is its process group: nothing of it outlives its main process.
        signal_group(pid, Signal::KILL);
        exit
    }

    async fn wait(&mut self, child: &mut Child, pid: u32, view: &mut ContainerView) -> Exit {
        let ready = tokio::time::sleep(READY_AFTER);
        tokio::pin!(ready);
        let mut ready_reported = false;
        loop {
            tokio::select! {
                status = child.wait() => return self.exit_of(status),
                () = &mut ready, if !ready_reported => {
                    ready_reported = true;
                    view.ready = true;
                    self.report(view);
                }
                changed = self.stop.changed() => {
                    let request = match changed {
                        Ok(()) => self.stop_requested(),
                        // The pod worker is gone: stop at once.
                        Err(_) => Some(StopRequest { deadline: Instant::now(), delete: false }),
                    };
                    if let Some(request) = request {
                        return self.terminate(child, pid, request.deadline).await;
                    }
                }
            }
        }
    }

    /// SIGTERM to the group, SIGKILL at the deadline (at most MAX_GRACE away).
    async fn terminate(&self, child: &mut Child, pid: u32, deadline: Instant) -> Exit {
        signal_group(pid, Signal::TERM);
        let deadline = deadline.min(Instant::now() + MAX_GRACE);
        if let Ok(status) = tokio::time::timeout_at(deadline, child.wait()).await {
            return self.exit_of(status);
        }
        signal_group(pid, Signal::KILL);
        match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
            Ok(status) => self.exit_of(status),
            Err(_) => Exit {
                code: 137,
                signal: Some(9),
                reason: "Error",
                message: Some("did not exit 5 s after SIGKILL".into()),
            },
        }
    }

    fn exit_of(&self, status: std::io::Result<ExitStatus>) -> Exit {
        match status {
            Ok(status) => {
                let (code, signal) = exit_code(status);
                Exit {
                    code,
                    signal,
                    reason: if code == 0 { "Completed" } else { "Error" },
                    message: None,
                }
            }
            Err(e) => Exit {
                code: 128,
                signal: None,
                reason: "Error",
                message: Some(format!("waiting for the process: {e}")),
            },
        }
    }
}
