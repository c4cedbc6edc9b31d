//! `/metrics` and `/healthz` over plain HTTP, on the port given by
//! `--listen-metrics`, for whichever roles the node runs (the roaming system
//! adds `/mesh`). Like kubelet's metrics it carries no secrets, only counts,
//! region codes and link states.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::ServiceCenterMetrics;
use crate::mesh::MeshConfig;
use crate::service_center::data_center::DataCenter;

/// The OpenMetrics text format that prometheus-client writes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What a scrape reads.
pub struct Scrape {
    pub registry: Registry,
    /// The service center's metrics, whose outbox and session gauges are
    /// read from its data center at each scrape.
    pub center: Option<(ServiceCenterMetrics, DataCenter)>,
    /// The peers, so that every one has an outbox depth (0 when empty).
    pub mesh: watch::Receiver<MeshConfig>,
}

/// Serves `/metrics`, `/healthz` and the routes of `more` on `listener`.
pub async fn serve(listener: TcpListener, scrape: Scrape, more: Router) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(Arc::new(scrape))
        .merge(more);
    axum::serve(listener, app).await
}

async fn metrics(State(scrape): State<Arc<Scrape>>) -> impl IntoResponse {
    if let Some((metrics, dc)) = &scrape.center {
        let peers: Vec<String> = scrape
            .mesh
            .borrow()
            .peers
            .iter()
            .map(|p| p.region.clone())
            .collect();
        // The counters are still worth serving when the gauges cannot be read.
        if let Err(err) = metrics.observe(dc, &peers).await {
            tracing::warn!(%err, "metrics: the data center's gauges could not be read");
        }
    }
    let mut text = String::new();
    if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &scrape.registry) {
        tracing::error!(%err, "metrics could not be encoded");
    }
    ([(CONTENT_TYPE, OPENMETRICS)], text)
}
