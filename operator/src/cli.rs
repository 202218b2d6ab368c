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
            Command::Coordinator(args) => {
                tributary_telemetry::init_logging();
                let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
                runtime.block_on(crate::coordinator::serve::run(args))
            }
        }
    }
}
