//! Command line of `tributary-worker`. Every flag can also come from the environment, so a pod
//! spec and a terminal configure the worker the same way.

use clap::{Parser, Subcommand};

use crate::self_check;

#[derive(Debug, Parser)]
#[command(
    name = "tributary-worker",
    version,
    about = "Tributary worker: trains with libtorch and exchanges compressed pseudo-gradients"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Checks that libtorch loads and trains: one AdamW step on CPU (and on CUDA when visible).
    SelfCheck {
        /// Print the report as JSON.
        #[arg(long, env = "TRIBUTARY_SELF_CHECK_JSON")]
        json: bool,
    },
}

impl Cli {
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::SelfCheck { json } => {
                let report = self_check::run()?;
                if json {
                    println!("{}", report.to_json()?);
                } else {
                    print!("{report}");
                }
                Ok(())
            }
        }
    }
}
