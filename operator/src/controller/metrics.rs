//! The operator's metrics, health and readiness, served over HTTP.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ResultLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub duration: Histogram,
    /// Whether this replica leads (and so reconciles).
    pub leading: AtomicBool,
    /// What `/healthz` and `/readyz` answer.
    pub health: super::health::Health,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("meridian_operator");
        let reconciles = Family::<ResultLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]);
        registry.register(
            "reconciles",
            "Reconciles of Regions, by result",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciles, by error",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            duration.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            duration,
            leading: AtomicBool::new(false),
            health: super::health::Health::default(),
        }
    }
}

impl Metrics {
    pub fn reconciled(&self, seconds: f64, error: Option<&'static str>) {
        self.duration.observe(seconds);
        let result = if error.is_some() { "error" } else { "ok" };
        self.reconciles
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
        if let Some(error) = error {
            self.errors
                .get_or_create(&ErrorLabels {
                    error: error.into(),
                })
                .inc();
        }
    }

    fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("metrics encode");
        text.push_str(&format!(
            "# HELP meridian_operator_leader Whether this replica is the leader.\n# TYPE meridian_operator_leader gauge\nmeridian_operator_leader {}\n",
            u8::from(self.leading.load(Ordering::Relaxed))
        ));
        text
    }
}

/// `/metrics`, `/healthz` and `/readyz` (see [`super::health`] for what the
/// last two answer: 200, or 503 with the reason).
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| async move { m.encode() }),
        )
        .route(
            "/healthz",
            get(|State(m): State<Arc<Metrics>>| async move {
                match m.health.live(Instant::now()) {
                    Ok(()) => (StatusCode::OK, "ok".to_owned()),
                    Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
                }
            }),
        )
        .route(
            "/readyz",
            get(|State(m): State<Arc<Metrics>>| async move {
                match m.health.ready(Instant::now()) {
                    Ok(what) => (StatusCode::OK, what.to_owned()),
                    Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
                }
            }),
        )
        .with_state(metrics)
}

/// Serves [`router`] on `listener` (bound by the caller, so that a port in
/// use fails the start rather than a background task).
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, router(metrics)).await
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn get(metrics: &Arc<Metrics>, path: &str) -> (StatusCode, String) {
        let request = Request::get(path).body(Body::empty()).unwrap();
        let response = router(metrics.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn the_endpoints_answer_what_the_health_says() {
        let metrics = Arc::new(Metrics::default());
        assert_eq!(
            get(&metrics, "/healthz").await,
            (StatusCode::OK, "ok".into())
        );
        let (status, why) = get(&metrics, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{why}");
        assert!(why.contains("starting"), "{why}");

        metrics.health.leading();
        let (status, why) = get(&metrics, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(why.contains("not synced"), "{why}");
        metrics.health.synced();
        assert_eq!(
            get(&metrics, "/readyz").await,
            (StatusCode::OK, "leading; caches synced".into())
        );

        metrics.health.stopped();
        assert_eq!(
            get(&metrics, "/healthz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            get(&metrics, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert!(
            get(&metrics, "/metrics")
                .await
                .1
                .contains("meridian_operator_leader")
        );
    }

    #[tokio::test]
    async fn a_standby_is_ready() {
        let metrics = Arc::new(Metrics::default());
        metrics.health.standing_by();
        assert_eq!(
            get(&metrics, "/readyz").await,
            (StatusCode::OK, "standing by for the leader Lease".into())
        );
    }
}
