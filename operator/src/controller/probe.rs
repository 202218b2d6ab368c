//! How the operator reads a run's progress: the coordinator's GetStatus over gRPC. A trait, so
//! reconcile tests run without a coordinator.

use std::time::Duration;

use tonic::transport::Endpoint;
use tributary_proto::v1alpha1::exchange_client::ExchangeClient;
use tributary_proto::v1alpha1::{GetStatusRequest, RunStatus};

/// Asks a coordinator for its run's status.
pub trait StatusProbe: Send + Sync + 'static {
    fn status(&self, url: String)
    -> futures::future::BoxFuture<'static, Result<RunStatus, String>>;
}

/// The real probe: a fresh connection per call, bounded by short timeouts so one stuck
/// coordinator never stalls reconciles of the others.
pub struct GrpcProbe;

const TIMEOUT: Duration = Duration::from_secs(3);

impl StatusProbe for GrpcProbe {
    fn status(
        &self,
        url: String,
    ) -> futures::future::BoxFuture<'static, Result<RunStatus, String>> {
        Box::pin(async move {
            let endpoint = Endpoint::from_shared(url.clone())
                .map_err(|e| format!("bad coordinator address {url}: {e}"))?
                .connect_timeout(TIMEOUT)
                .timeout(TIMEOUT);
            let channel = endpoint
                .connect()
                .await
                .map_err(|e| format!("connecting to {url}: {e}"))?;
            let mut client = ExchangeClient::new(channel);
            client
                .get_status(GetStatusRequest {
                    // The status needs the newest round only; a long run's history is large.
                    history_limit: 1,
                    include_spec: false,
                })
                .await
                .map(tonic::Response::into_inner)
                .map_err(|e| format!("GetStatus at {url}: {}", e.message()))
        })
    }
}
