//! Per-request plumbing: a span whose parent is the caller's `traceparent`, and the
//! rate/errors/duration metrics per route template.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// Wraps a request in a span and records its metrics.
pub async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let span = tracing::info_span!(
        "http_request",
        otel.name = %format!("{method} {route}"),
        http.request.method = %method,
        http.route = %route,
        request_id = %request_id,
        http.response.status_code = tracing::field::Empty,
    );
    portico_telemetry::propagation::set_parent_from_http(&span, request.headers());
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    let elapsed = started.elapsed().as_secs_f64();
    let method = method.to_string();
    metrics::counter!(portico_telemetry::metrics::HTTP_REQUESTS,
        "service" => "gateway", "method" => method.clone(), "route" => route.clone(), "status" => status.to_string())
    .increment(1);
    metrics::histogram!(portico_telemetry::metrics::HTTP_DURATION,
        "service" => "gateway", "method" => method, "route" => route)
    .record(elapsed);
    if status >= 500 {
        tracing::warn!(parent: &span, status, "request failed");
    }
    response
}

/// Makes the request's origin (request id, client address) visible to the audit log
/// while the handler runs ([`crate::app::audit::with_origin`]); covers the API, the
/// portal and the admin routes.
pub async fn audit_origin(
    axum::extract::State(state): axum::extract::State<crate::state::AppState>,
    request: Request,
    next: Next,
) -> Response {
    let origin = crate::app::audit::RequestOrigin::from_head(
        request.headers(),
        request.extensions(),
        state.config().trust_forwarded_for,
    );
    crate::app::audit::with_origin(origin, next.run(request)).await
}
