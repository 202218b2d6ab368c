use clap::Parser;
use tributary_operator::cli::Cli;

fn main() -> std::process::ExitCode {
    match Cli::parse().run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
