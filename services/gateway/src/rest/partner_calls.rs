//! Partner calls: authenticated up front and written to the usage log.
//!
//! For a request with `Authorization: Basic`, this layer authenticates the partner
//! (credentials, rate limit, daily quota) before routing reaches the handler, puts the
//! [`Caller`] in the request's extensions so the handler's extractor reuses it, and
//! answers 401/403/429 itself when authentication fails. After the response it hands
//! one usage entry to the buffered writer, without waiting; a failed attempt is logged
//! too when the key it named exists. Other requests pass through untouched.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;

use crate::credentials::usage_log::UsageEntry;
use crate::identity::Caller;
// Re-exported for the portal, which reads the client address the same way.
use crate::credentials::limiter::rate_limit_headers;
use crate::net::basic_credentials;
pub(crate) use crate::net::peer_address;
use crate::state::AppState;

/// The layer's function (`axum::middleware::from_fn_with_state`).
pub async fn authenticate_and_log(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(encoded) = basic_credentials(request.headers()) else {
        return next.run(request).await;
    };
    let started = Instant::now();
    let occurred_at = Utc::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let client_ip = client_ip(&request, state.config().trust_forwarded_for);
    let attempt = state
        .credentials()
        .authenticate(&encoded, client_ip.as_deref().unwrap_or("-"))
        .await;
    let (mut response, admitted) = match attempt.result {
        Ok(identity) => {
            request.extensions_mut().insert(Caller::Partner(identity));
            (next.run(request).await, true)
        }
        Err(err) => (err.into_response(), false),
    };
    if let Some(rate) = attempt.rate {
        rate_limit_headers(response.headers_mut(), rate);
    }
    if let Some(integration_id) = attempt.integration_id {
        state.credentials().record_usage(UsageEntry {
            integration_id,
            method,
            route,
            status: response.status().as_u16(),
            latency_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            client_ip,
            occurred_at,
            admitted,
        });
    }
    response
}

/// The peer address, or the first `X-Forwarded-For` hop when the operator says a
/// trusted proxy sets it.
fn client_ip(request: &Request, trust_forwarded_for: bool) -> Option<String> {
    peer_address(request.headers(), request.extensions(), trust_forwarded_for)
}
