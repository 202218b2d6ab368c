//! Command line of `tributary-operator`. Flags can also come from the environment.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tributary-operator",
    version,
    about = "Tributary operator: Kubernetes controller and run coordinator"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Prints the CustomResourceDefinitions this operator serves, as YAML for `kubectl apply -f -`.
    Crds,
    /// Runs the Kubernetes controller of TrainingRuns and Contributors.
    Controller(ControllerArgs),
    /// Runs one TrainingRun's coordinator: the exchange gRPC server, its rounds and its store.
    Coordinator(CoordinatorArgs),
}

#[derive(Debug, clap::Args)]
pub struct CoordinatorArgs {
    /// The TrainingRun manifest (YAML, as for kubectl apply).
    #[arg(long, env = "TRIBUTARY_RUN_FILE")]
    pub run: PathBuf,
    /// Run id peers must name; defaults to the manifest's metadata.name.
    #[arg(long, env = "TRIBUTARY_RUN_ID")]
    pub run_id: Option<String>,
    /// Where the store (coordinator.redb) lives; reused on restart to resume the run.
    #[arg(long, env = "TRIBUTARY_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Address to serve on; port 0 picks a free port (written to DATA_DIR/address).
    #[arg(long, env = "TRIBUTARY_LISTEN", default_value = "127.0.0.1:7400")]
    pub listen: SocketAddr,
}

#[derive(Debug, clap::Args)]
pub struct ControllerArgs {
    /// Watch only this namespace (default: all namespaces). The chart always passes one (the
    /// release namespace unless told otherwise) and grants a Role there; it omits the flag, and
    /// grants a ClusterRole, only with `clusterWide: true`.
    #[arg(long, env = "TRIBUTARY_WATCH_NAMESPACE", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub namespace: Option<String>,
    /// This replica's name: the leader lease holder and the events' reporting instance.
    #[arg(long, env = "TRIBUTARY_IDENTITY", default_value = "tributary-operator")]
    pub identity: String,
    /// Namespace of the leader lease; without it there is no leader election (one replica only).
    #[arg(long, env = "TRIBUTARY_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    #[arg(long, default_value = "tributary-operator")]
    pub lease_name: String,
    /// Seconds a leader's lease lasts without renewal (at least 3).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..=600))]
    pub lease_duration_seconds: u64,
    /// Image of coordinators whose TrainingRun names none.
    #[arg(long, env = "TRIBUTARY_COORDINATOR_IMAGE", default_value = concat!("ghcr.io/tributary-dev/tributary-operator:", env!("CARGO_PKG_VERSION")))]
    pub coordinator_image: String,
    /// Image of workers whose Contributor and TrainingRun name none.
    #[arg(long, env = "TRIBUTARY_WORKER_IMAGE", default_value = concat!("ghcr.io/tributary-dev/tributary-worker:", env!("CARGO_PKG_VERSION")))]
    pub worker_image: String,
    /// Where `/metrics` and `/healthz` are served.
    #[arg(long, env = "TRIBUTARY_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: SocketAddr,
    /// Seconds between status refreshes of a live run.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub poll_seconds: u64,
}

impl Cli {
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Crds => {
                let docs: Vec<String> = tributary_crds::generated_files()?
                    .into_iter()
                    .map(|(_, yaml)| yaml)
                    .collect();
                print!("{}", docs.join("---\n"));
                Ok(())
            }
            Command::Controller(args) => {
                tributary_telemetry::init_logging();
                let settings = crate::controller::Settings {
                    namespace: args.namespace,
                    leader_election: args.leader_election_namespace.map(|namespace| {
                        crate::controller::LeaseSettings {
                            namespace,
                            name: args.lease_name,
                            duration_seconds: args.lease_duration_seconds,
                        }
                    }),
                    identity: args.identity,
                    images: crate::controller::Images {
                        coordinator: args.coordinator_image,
                        worker: args.worker_image,
                    },
                    metrics_addr: args.metrics_addr,
                    poll: std::time::Duration::from_secs(args.poll_seconds),
                };
                let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
                runtime.block_on(crate::controller::run(settings))
            }
            Command::Coordinator(args) => {
                tributary_telemetry::init_logging();
                let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
                runtime.block_on(crate::coordinator::run_coordinator(args))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use clap::CommandFactory;

    use super::*;

    fn namespace(args: &[&str]) -> Result<Option<String>, clap::Error> {
        let argv = ["tributary-operator", "controller"].iter().chain(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Controller(c) => Ok(c.namespace),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn the_watched_namespace_is_one_flag_or_its_environment_variable() {
        assert_eq!(
            namespace(&["--namespace", "team-a"]).unwrap(),
            Some("team-a".to_owned())
        );
        let err = namespace(&["--namespace", ""]).unwrap_err();
        assert!(err.to_string().contains("--namespace"), "{err}");
        let command = Cli::command();
        let controller = command.find_subcommand("controller").unwrap();
        let arg = controller
            .get_arguments()
            .find(|a| a.get_id() == "namespace")
            .unwrap();
        assert_eq!(
            arg.get_env().and_then(|e| e.to_str()),
            Some("TRIBUTARY_WATCH_NAMESPACE")
        );
    }
}
