//! Logging and tracing for every Tributary binary: `tracing` spans and events to stderr,
//! filtered by `RUST_LOG` (default `info`). OTLP export plugs in here.

/// Installs the subscriber; a second call (tests) keeps the first.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only on a terminal: log files stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
