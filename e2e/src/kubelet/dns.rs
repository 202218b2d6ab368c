//! Resolving Service references against the API server: the Service's selector, a Ready pod it
//! selects, and the Service port's targetPort on that pod; waiting (bounded) for one.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::ListParams;
use kube::{Api, Client};
use tokio::time::Instant;

use super::service_refs::{Endpoint, ServiceRef, is_ready_endpoint, target_port};

const POLL: Duration = Duration::from_millis(250);

/// The endpoint for `r`, polling until `deadline` for the Service and a Ready pod behind it.
pub async fn resolve(
    client: &Client,
    r: &ServiceRef,
    deadline: Instant,
) -> Result<Endpoint, String> {
    let services = Api::<Service>::namespaced(client.clone(), &r.namespace);
    let pods = Api::<Pod>::namespaced(client.clone(), &r.namespace);
    loop {
        let why = match tokio::time::timeout_at(deadline, attempt(&services, &pods, r)).await {
            Ok(Ok(endpoint)) => return Ok(endpoint),
            Ok(Err(Attempt::Never(why))) => return Err(why),
            Ok(Err(Attempt::NotYet(why))) => why,
            Err(_) => "the API server did not answer in time".to_owned(),
        };
        if Instant::now() + POLL > deadline {
            return Err(format!("{}.{}.svc: {why}", r.service, r.namespace));
        }
        tokio::time::sleep(POLL).await;
    }
}

enum Attempt {
    /// Waiting cannot help (a Service without a selector has no pods to route to).
    Never(String),
    NotYet(String),
}

async fn attempt(
    services: &Api<Service>,
    pods: &Api<Pod>,
    r: &ServiceRef,
) -> Result<Endpoint, Attempt> {
    let service = services
        .get_opt(&r.service)
        .await
        .map_err(|e| Attempt::NotYet(format!("reading the Service: {e}")))?
        .ok_or_else(|| Attempt::NotYet("no such Service yet".into()))?;
    let selector = service
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Attempt::Never("the Service has no selector".into()))?;
    let selector = selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut candidates: Vec<Pod> = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| Attempt::NotYet(format!("listing pods: {e}")))?
        .items
        .into_iter()
        .filter(is_ready_endpoint)
        .collect();
    candidates.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut why = "no Ready pod selected yet".to_owned();
    for pod in &candidates {
        match target_port(&service, r.port, pod) {
            Ok(port) => {
                let ip = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.pod_ip.clone())
                    .unwrap_or_default();
                return Ok(Endpoint { ip, port });
            }
            Err(e) => why = e,
        }
    }
    Err(Attempt::NotYet(why))
}
