//! The operator's own metrics (Prometheus text on `/metrics`) and its liveness (`/healthz`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub controller: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub duration: Family<ControllerLabel, Histogram>,
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tributary_operator");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by controller and outcome (ok, error)",
            reconciles.clone(),
        );
        let duration = Family::<ControllerLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register(
            "reconcile_duration_seconds",
            "Time of one reconcile",
            duration.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader lease and acts",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            duration,
            leader,
        }
    }
}

impl Metrics {
    /// Records one reconcile of `controller`.
    pub fn reconciled(&self, controller: &'static str, ok: bool, took: Duration) {
        let outcome = if ok { "ok" } else { "error" };
        self.reconciles
            .get_or_create(&ReconcileLabels {
                controller,
                outcome,
            })
            .inc();
        self.duration
            .get_or_create(&ControllerLabel { controller })
            .observe(took.as_secs_f64());
    }

    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

async fn render(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    match metrics.encode() {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            e.to_string(),
        ),
    }
}

/// Serves `/metrics` and `/healthz` on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(metrics);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics address {addr}"))?;
    axum::serve(listener, app).await.context("serving metrics")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_are_counted_by_outcome() {
        let m = Metrics::default();
        m.reconciled("trainingrun", true, Duration::from_millis(3));
        m.reconciled("trainingrun", true, Duration::from_millis(5));
        m.reconciled("contributor", false, Duration::from_millis(1));
        m.leader.set(1);
        let text = m.encode().unwrap();
        assert!(
            text.contains(
                r#"tributary_operator_reconciles_total{controller="trainingrun",outcome="ok"} 2"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"tributary_operator_reconciles_total{controller="contributor",outcome="error"} 1"#
        ));
        assert!(text.contains(
            r#"tributary_operator_reconcile_duration_seconds_count{controller="trainingrun"} 2"#
        ));
        assert!(text.contains("tributary_operator_leader 1"));
    }
}
