use clap::Parser;
use tributary_worker::cli::Cli;

fn main() -> std::process::ExitCode {
    tributary_telemetry::init_logging();
    match Cli::parse().run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
