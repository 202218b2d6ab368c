//! What the kubelet reports in pods/status: each container's state, the pod's phase and its
//! conditions, built as a JSON merge patch (arrays in it replace the server's whole array).

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// A container's current state.
#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: Timestamp,
    },
    Terminated {
        exit_code: i32,
        signal: Option<i32>,
        reason: String,
        message: Option<String>,
        started_at: Option<Timestamp>,
        finished_at: Timestamp,
    },
}

impl RunState {
    pub fn waiting(reason: &str, message: Option<String>) -> Self {
        Self::Waiting {
            reason: reason.to_owned(),
            message,
        }
    }

    fn to_k8s(&self) -> ContainerState {
        match self {
            Self::Waiting { reason, message } => ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: message.clone(),
                }),
                ..ContainerState::default()
            },
            Self::Running { started_at } => ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(Time(*started_at)),
                }),
                ..ContainerState::default()
            },
            Self::Terminated {
                exit_code,
                signal,
                reason,
                message,
                started_at,
                finished_at,
            } => ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: *exit_code,
                    signal: *signal,
                    reason: Some(reason.clone()),
                    message: message.clone(),
                    started_at: started_at.map(Time),
                    finished_at: Some(Time(*finished_at)),
                    container_id: None,
                }),
                ..ContainerState::default()
            },
        }
    }
}

/// One container as the kubelet tracks it.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    pub state: RunState,
    pub last_terminated: Option<RunState>,
    pub ready: bool,
    pub restart_count: i32,
    /// It will not run again (restartPolicy says so, or the pod is stopping).
    pub done: bool,
}

impl ContainerView {
    pub fn new(name: &str, image: &str) -> Self {
        Self {
            name: name.to_owned(),
            image: image.to_owned(),
            state: RunState::waiting("ContainerCreating", None),
            last_terminated: None,
            ready: false,
            restart_count: 0,
            done: false,
        }
    }

    pub fn exit_code(&self) -> Option<i32> {
        match self.state {
            RunState::Terminated { exit_code, .. } => Some(exit_code),
            _ => None,
        }
    }

    fn started(&self) -> bool {
        !matches!(self.state, RunState::Waiting { .. }) || self.last_terminated.is_some()
    }

    fn to_k8s(&self) -> ContainerStatus {
        ContainerStatus {
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: String::new(),
            ready: self.ready,
            restart_count: self.restart_count,
            started: Some(matches!(self.state, RunState::Running { .. })),
            state: Some(self.state.to_k8s()),
            last_state: Some(
                self.last_terminated
                    .as_ref()
                    .map(RunState::to_k8s)
                    .unwrap_or_default(),
            ),
            ..ContainerStatus::default()
        }
    }
}

/// The pod phase that containers in these states make.
pub fn phase(init: &[ContainerView], containers: &[ContainerView]) -> &'static str {
    let failed = |c: &ContainerView| c.done && c.exit_code() != Some(0);
    if init.iter().any(failed) {
        return "Failed";
    }
    if !containers.is_empty() && containers.iter().all(|c| c.done) {
        return if containers.iter().any(failed) {
            "Failed"
        } else {
            "Succeeded"
        };
    }
    if containers.iter().any(ContainerView::started) {
        "Running"
    } else {
        "Pending"
    }
}

/// A pod as the kubelet reports it.
#[derive(Debug, Clone)]
pub struct PodView {
    pub pod_ip: String,
    pub start_time: Timestamp,
    pub init: Vec<ContainerView>,
    pub containers: Vec<ContainerView>,
    /// (type, status, lastTransitionTime), kept so transition times only move on a change.
    conditions: Vec<(&'static str, bool, Timestamp)>,
}

impl PodView {
    pub fn new(pod_ip: &str, init: Vec<ContainerView>, containers: Vec<ContainerView>) -> Self {
        Self {
            pod_ip: pod_ip.to_owned(),
            start_time: Timestamp::now(),
            init,
            containers,
            conditions: Vec::new(),
        }
    }

    pub fn phase(&self) -> &'static str {
        phase(&self.init, &self.containers)
    }

    fn set_condition(&mut self, kind: &'static str, value: bool, now: Timestamp) {
        match self.conditions.iter_mut().find(|(k, _, _)| *k == kind) {
            Some(slot) if slot.1 == value => {}
            Some(slot) => *slot = (kind, value, now),
            None => self.conditions.push((kind, value, now)),
        }
    }

    /// The status as a merge patch body for pods/status.
    pub fn patch(&mut self, now: Timestamp) -> serde_json::Value {
        let initialized = self.init.iter().all(|c| c.done && c.exit_code() == Some(0));
        let ready = self.phase() == "Running" && self.containers.iter().all(|c| c.ready);
        self.set_condition("PodScheduled", true, now);
        self.set_condition("Initialized", initialized, now);
        self.set_condition("ContainersReady", ready, now);
        self.set_condition("Ready", ready, now);
        let bool_str = |b: bool| if b { "True" } else { "False" }.to_owned();
        let status = PodStatus {
            phase: Some(self.phase().to_owned()),
            pod_ip: Some(self.pod_ip.clone()),
            pod_ips: Some(vec![PodIP {
                ip: self.pod_ip.clone(),
            }]),
            host_ip: Some("127.0.0.1".into()),
            start_time: Some(Time(self.start_time)),
            conditions: Some(
                self.conditions
                    .iter()
                    .map(|(kind, value, at)| PodCondition {
                        type_: (*kind).to_owned(),
                        status: bool_str(*value),
                        last_transition_time: Some(Time(*at)),
                        ..PodCondition::default()
                    })
                    .collect(),
            ),
            container_statuses: Some(self.containers.iter().map(ContainerView::to_k8s).collect()),
            init_container_statuses: Some(self.init.iter().map(ContainerView::to_k8s).collect()),
            ..PodStatus::default()
        };
        let mut status = serde_json::to_value(status).unwrap_or_default();
        if let Some(fields) = status.as_object_mut() {
            // Clear what a merge patch would otherwise leave from an earlier report.
            fields.entry("reason").or_insert(serde_json::Value::Null);
            fields.entry("message").or_insert(serde_json::Value::Null);
        }
        serde_json::json!({ "status": status })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terminated(code: i32) -> RunState {
        RunState::Terminated {
            exit_code: code,
            signal: None,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message: None,
            started_at: None,
            finished_at: Timestamp::now(),
        }
    }

    fn container(state: RunState, done: bool) -> ContainerView {
        ContainerView {
            state,
            done,
            ..ContainerView::new("c", "img")
        }
    }

    #[test]
    fn phases_follow_container_states() {
        let running = container(
            RunState::Running {
                started_at: Timestamp::now(),
            },
            false,
        );
        let creating = ContainerView::new("c", "img");
        assert_eq!(phase(&[], std::slice::from_ref(&creating)), "Pending");
        assert_eq!(phase(&[], &[running.clone(), creating]), "Running");
        assert_eq!(phase(&[], &[container(terminated(0), true)]), "Succeeded");
        assert_eq!(phase(&[], &[container(terminated(3), true)]), "Failed");
        assert_eq!(phase(&[], &[container(terminated(3), false)]), "Running");
        assert_eq!(
            phase(&[], &[running.clone(), container(terminated(0), true)]),
            "Running"
        );
        assert_eq!(
            phase(&[container(terminated(1), true)], &[running]),
            "Failed"
        );
    }

    #[test]
    fn ready_once_every_container_is_ready() {
        let mut c = container(
            RunState::Running {
                started_at: Timestamp::now(),
            },
            false,
        );
        let mut view = PodView::new("127.0.0.2", vec![], vec![c.clone()]);
        let t0 = Timestamp::now();
        let patch = view.patch(t0);
        let status = &patch["status"];
        assert_eq!(status["phase"], "Running");
        assert_eq!(status["podIP"], "127.0.0.2");
        assert_eq!(status["reason"], serde_json::Value::Null);
        let ready = |p: &serde_json::Value| {
            p["status"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == "Ready")
                .unwrap()
                .clone()
        };
        assert_eq!(ready(&patch)["status"], "False");
        c.ready = true;
        view.containers = vec![c];
        let t1 = t0 + std::time::Duration::from_secs(1);
        let patch = view.patch(t1);
        assert_eq!(ready(&patch)["status"], "True");
        assert_eq!(
            ready(&patch)["lastTransitionTime"],
            serde_json::to_value(Time(t1)).unwrap()
        );
        let scheduled = &patch["status"]["conditions"][0];
        assert_eq!(
            scheduled["lastTransitionTime"],
            serde_json::to_value(Time(t0)).unwrap()
        );
        assert_eq!(patch["status"]["containerStatuses"][0]["ready"], true);
        assert!(patch["status"]["containerStatuses"][0]["state"]["running"].is_object());
    }

    #[test]
    fn terminated_containers_report_exit_codes() {
        let mut view = PodView::new("127.0.0.2", vec![], vec![container(terminated(3), true)]);
        let patch = view.patch(Timestamp::now());
        assert_eq!(patch["status"]["phase"], "Failed");
        let state = &patch["status"]["containerStatuses"][0]["state"]["terminated"];
        assert_eq!(state["exitCode"], 3);
        assert_eq!(state["reason"], "Error");
    }
}
