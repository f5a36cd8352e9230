//! The admin endpoints every service serves: `/healthz` (the process is alive; touches
//! nothing, so a database outage never restarts pods), `/readyz` (dependencies answer,
//! so traffic is only routed to a replica that can serve it) and `/metrics`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

/// A dependency check for `/readyz`: returns the names of the dependencies that failed.
pub trait ReadinessCheck: Send + Sync + 'static {
    /// Runs the checks; an empty list means ready.
    fn check(&self) -> Pin<Box<dyn Future<Output = Vec<String>> + Send + '_>>;
}

#[derive(Clone)]
struct AdminState {
    readiness: Arc<dyn ReadinessCheck>,
    metrics: PrometheusHandle,
}

/// Builds the admin router; services merge it into their own HTTP router.
pub fn router(readiness: Arc<dyn ReadinessCheck>, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(AdminState { readiness, metrics })
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    let failed = state.readiness.check().await;
    if failed.is_empty() {
        (StatusCode::OK, "ready".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}", failed.join(", ")),
        )
    }
}

async fn render_metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// Serves `router` on `listener` until `shutdown`, letting in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
