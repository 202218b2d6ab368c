//! Pod spec → local process plan: the pure part of starting a container. Env is resolved,
//! `$(VAR)`s in command and args are expanded, mount paths become local directories, and the
//! Service hosts left in the result are listed for the caller to resolve.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::Container;

use super::env::EnvVars;
use super::mounts::MountTable;
use super::service_refs::{self, Endpoint, ServiceRef};

/// How to run one container as a local process.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessPlan {
    /// `command[0]`: a path, or a name to look up in the bin dirs and PATH.
    pub program: String,
    pub args: Vec<String>,
    pub env: EnvVars,
    pub working_dir: Option<PathBuf>,
}

/// The plan for `container` with its resolved `env`; Err when it cannot run here.
pub fn plan(
    container: &Container,
    env: EnvVars,
    mounts: &MountTable,
) -> Result<ProcessPlan, String> {
    let mut words = container
        .command
        .iter()
        .flatten()
        .chain(container.args.iter().flatten())
        .map(|word| mounts.rewrite(&env.expand(word)));
    let Some(program) = container
        .command
        .as_ref()
        .and_then(|c| c.first())
        .and(words.next())
    else {
        return Err(format!(
            "container {} has no command: a process kubelet cannot run an image's entrypoint",
            container.name
        ));
    };
    let args = words.collect();
    let mut env = env;
    for value in env.iter_mut() {
        *value = mounts.rewrite(value);
    }
    let working_dir = container
        .working_dir
        .as_deref()
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(mounts.rewrite(d)));
    Ok(ProcessPlan {
        program,
        args,
        env,
        working_dir,
    })
}

impl ProcessPlan {
    fn values(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .chain(self.env.iter().map(|(_, v)| v))
    }

    /// Distinct Service hosts (with the port dialled) in the program, args and env values.
    pub fn service_refs(&self) -> Vec<ServiceRef> {
        let mut refs: Vec<ServiceRef> = Vec::new();
        for r in self.values().flat_map(service_refs::find) {
            let seen = refs
                .iter()
                .any(|s| s.service == r.service && s.namespace == r.namespace && s.port == r.port);
            if !seen {
                refs.push(r);
            }
        }
        refs
    }

    /// The plan with Service hosts replaced by the endpoints `resolve` gives.
    pub fn with_endpoints(mut self, resolve: impl Fn(&ServiceRef) -> Option<Endpoint>) -> Self {
        let rewrite =
            |value: &str| service_refs::substitute(value, &service_refs::find(value), &resolve);
        self.program = rewrite(&self.program);
        for arg in &mut self.args {
            *arg = rewrite(arg);
        }
        for value in self.env.iter_mut() {
            *value = rewrite(value);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::env::{EnvSources, PodFacts, container_env};

    fn coordinator() -> Container {
        serde_json::from_value(
            serde_yaml::from_str(
                r#"
name: coordinator
command: ["tributary-operator"]
args: ["coordinator", "--run", "/etc/tributary/run.yaml", "--data-dir", "/var/lib/tributary",
       "--listen", "$(POD_IP):50051", "--peer", "http://r-coordinator.ns1.svc:50051", "$(UNSET)"]
workingDir: /var/lib/tributary
env:
- {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
- {name: STORE, value: /var/lib/tributary/store}
- {name: UPSTREAM, value: "r-coordinator.ns1.svc.cluster.local:50051"}
"#,
            )
            .unwrap(),
        )
        .unwrap()
    }

    fn mounts() -> MountTable {
        MountTable::new([
            (
                "/etc/tributary".to_owned(),
                PathBuf::from("/k/ns1_c/volumes/run"),
            ),
            (
                "/var/lib/tributary".to_owned(),
                PathBuf::from("/k/pvc/ns1_data"),
            ),
        ])
    }

    fn facts() -> PodFacts {
        PodFacts {
            name: "c".into(),
            namespace: "ns1".into(),
            pod_ip: "127.0.0.9".into(),
            ..PodFacts::default()
        }
    }

    #[test]
    fn command_args_env_and_working_dir_are_planned() {
        let c = coordinator();
        let env = container_env(&c, &facts(), &EnvSources::default()).unwrap();
        let plan = plan(&c, env, &mounts()).unwrap();
        assert_eq!(plan.program, "tributary-operator");
        assert_eq!(
            plan.args,
            [
                "coordinator",
                "--run",
                "/k/ns1_c/volumes/run/run.yaml",
                "--data-dir",
                "/k/pvc/ns1_data",
                "--listen",
                "127.0.0.9:50051",
                "--peer",
                "http://r-coordinator.ns1.svc:50051",
                "$(UNSET)",
            ]
        );
        assert_eq!(plan.env.get("STORE"), Some("/k/pvc/ns1_data/store"));
        assert_eq!(plan.working_dir, Some(PathBuf::from("/k/pvc/ns1_data")));
    }

    #[test]
    fn service_hosts_are_listed_once_and_rewritten() {
        let c = coordinator();
        let env = container_env(&c, &facts(), &EnvSources::default()).unwrap();
        let plan = plan(&c, env, &mounts()).unwrap();
        let refs = plan.service_refs();
        assert_eq!(refs.len(), 1, "{refs:?}");
        assert_eq!(
            (refs[0].service.as_str(), refs[0].port),
            ("r-coordinator", Some(50051))
        );
        let plan = plan.with_endpoints(|r| {
            Some(Endpoint {
                ip: "127.0.0.5".into(),
                port: r.port.map(|p| p + 1),
            })
        });
        assert_eq!(plan.args[8], "http://127.0.0.5:50052");
        assert_eq!(plan.env.get("UPSTREAM"), Some("127.0.0.5:50052"));
    }

    #[test]
    fn a_container_without_command_cannot_run() {
        let c: Container =
            serde_json::from_value(serde_json::json!({"name": "c", "args": ["x"]})).unwrap();
        assert!(plan(&c, EnvVars::default(), &mounts()).is_err());
    }
}
