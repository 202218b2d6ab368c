//! Starting a coordinator process: the manifest, the store, the listener, the clock, and a
//! clean stop on SIGINT/SIGTERM (the store is consistent at every instant, so a stop — or a
//! kill — loses nothing that was acknowledged).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::info;
use tributary_crds::TrainingRun;
use tributary_proto::MAX_MESSAGE_BYTES;
use tributary_proto::v1alpha1::exchange_server::ExchangeServer;

use super::run::RunConfig;
use super::server::Shared;
use super::service::ExchangeService;
use crate::cli::CoordinatorArgs;

/// How often deadlines and heartbeat expiry are checked.
const CLOCK_PERIOD: Duration = Duration::from_millis(200);

/// Reads a TrainingRun manifest: its name and spec.
pub fn read_manifest(
    path: &std::path::Path,
) -> anyhow::Result<(String, tributary_crds::TrainingRunSpec)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the run manifest {}", path.display()))?;
    let run: TrainingRun = serde_yaml::from_str(&text)
        .with_context(|| format!("{} is not a valid TrainingRun", path.display()))?;
    let name = run.metadata.name.clone().unwrap_or_default();
    Ok((name, run.spec))
}

pub async fn run(args: CoordinatorArgs) -> anyhow::Result<()> {
    let (name, spec) = read_manifest(&args.run)?;
    let run_id = args.run_id.unwrap_or(name);
    let config = RunConfig::new(&run_id, spec)
        .with_context(|| format!("run {run_id:?} in {}", args.run.display()))?;
    let shared = Shared::open(config, &args.data_dir)?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    write_address(&args.data_dir, addr)?;
    info!(%addr, run = %run_id, "coordinator serving");
    serve(shared, listener, shutdown_signal()).await
}

/// Serves `shared` on `listener` until `shutdown` completes.
pub async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    shared.resume();
    let clock = shared.spawn_clock(CLOCK_PERIOD);
    let closer = Arc::clone(&shared);
    let shutdown = async move {
        shutdown.await;
        closer.close();
    };
    let service = ExchangeServer::new(ExchangeService::new(shared))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let served = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
        .context("serving gRPC");
    // The clock holds the store open; stop it so the data directory can be reopened.
    clock.abort();
    let _ = clock.await;
    info!("coordinator stopped");
    served
}

fn write_address(dir: &std::path::Path, addr: SocketAddr) -> anyhow::Result<()> {
    let tmp = dir.join("address.tmp");
    std::fs::write(&tmp, addr.to_string())?;
    std::fs::rename(&tmp, dir.join("address"))?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    info!("stopping");
}
