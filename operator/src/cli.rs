//! Command line of `tributary-operator`. Flags can also come from the environment.

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
        }
    }
}
