//! Per-request plumbing: a span whose parent is the caller's `traceparent`, and the
//! rate/errors/duration metrics per route template.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// Wraps a request in a span and records its metrics. Every request passes here (each
/// event publish), so it formats nothing of its own: the span borrows the request's
/// values, and the metric handles of a route, method and status are made once
/// ([`record`]).
pub async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    // An `Arc<str>` inside: cloning it copies no text.
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let span = {
        let request_id = request
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        tracing::info_span!(
            "http_request",
            otel.name = tracing::field::Empty,
            http.request.method = %method,
            http.route = route,
            request_id = request_id,
            http.response.status_code = tracing::field::Empty,
        )
    };
    // The span's name in a trace is for the exporter alone: given at creation, the JSON
    // log layer would format it into every request's span for nothing.
    if portico_telemetry::logging::traces_exported() {
        span.record(
            "otel.name",
            tracing::field::display(format_args!("{method} {route}")),
        );
    }
    portico_telemetry::propagation::set_parent_from_http(&span, request.headers());
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    // Recording a field makes the JSON log layer format it into the span's stored
    // fields (with tracing-subscriber's own formatter it parsed and re-serialised them
    // all, a seventh of the gateway's instructions per event publish); a successful
    // request writes no log line, so only an exported span needs it.
    if status >= 400 || portico_telemetry::logging::traces_exported() {
        span.record("http.response.status_code", status);
    }
    record(&method, route, status, started.elapsed().as_secs_f64());
    if status >= 500 {
        tracing::warn!(parent: &span, status, "request failed");
    }
    response
}

/// The request counter and duration histogram of one route, method and status.
struct Handles {
    method: Method,
    status: u16,
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

/// Handles by route template: routes, methods and statuses are few, so this stays
/// small, and a request finds its handles under a read lock without building a key.
type HandleMap = HashMap<String, Vec<Handles>>;

static HANDLES: OnceLock<RwLock<HandleMap>> = OnceLock::new();

/// Counts a request and records its duration (`portico_http_requests_total`,
/// `portico_http_request_duration_seconds`, labelled by service, method, route and,
/// for the count, status). Labels are formatted and the registry searched only the
/// first time a route, method and status are seen.
fn record(method: &Method, route: &str, status: u16, elapsed: f64) {
    let map = HANDLES.get_or_init(Default::default);
    if let Ok(map) = map.read()
        && let Some(h) = map.get(route).and_then(|all| {
            all.iter()
                .find(|h| h.status == status && h.method == *method)
        })
    {
        h.requests.increment(1);
        h.duration.record(elapsed);
        return;
    }
    let made = Handles {
        method: method.clone(),
        status,
        requests: metrics::counter!(portico_telemetry::metrics::HTTP_REQUESTS,
            "service" => "gateway", "method" => method.to_string(), "route" => route.to_owned(),
            "status" => status.to_string()),
        duration: metrics::histogram!(portico_telemetry::metrics::HTTP_DURATION,
            "service" => "gateway", "method" => method.to_string(), "route" => route.to_owned()),
    };
    made.requests.increment(1);
    made.duration.record(elapsed);
    if let Ok(mut map) = map.write() {
        map.entry(route.to_owned()).or_default().push(made);
    }
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
    crate::app::audit::with_origin(origin, state.audit_linker().clone(), next.run(request)).await
}
