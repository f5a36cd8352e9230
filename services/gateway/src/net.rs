//! What both doors read from and write to an HTTP request's head: the client's
//! address, `Basic` credentials and the `RateLimit-*` headers. It lives apart from
//! `rest` and `grpc` so that `auth` (which needs the client's address) and the gRPC
//! partner layer import no door, and the module graph keeps no circle.

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::HeaderMap;

use crate::credentials::limiter::RateState;

/// The client's address from a request's head: the first `X-Forwarded-For` hop when
/// the operator says a trusted proxy sets it, else the peer address of the connection.
pub fn peer_address(
    headers: &HeaderMap,
    extensions: &axum::http::Extensions,
    trust_forwarded_for: bool,
) -> Option<String> {
    if trust_forwarded_for
        && let Some(first) = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.len() <= 64)
    {
        return Some(first.to_owned());
    }
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string())
}

/// The credentials of a `Basic` Authorization header, if that is what was sent.
pub fn basic_credentials(headers: &HeaderMap) -> Option<String> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, credentials) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("basic")
        .then(|| credentials.trim().to_owned())
}

/// `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (seconds until the
/// bucket is full), so a partner can pace itself before it is refused; both doors add
/// them to every partner answer of a rate-limited integration.
pub fn rate_limit_headers(headers: &mut HeaderMap, rate: RateState) {
    for (name, value) in [
        ("ratelimit-limit", rate.limit),
        ("ratelimit-remaining", rate.remaining),
        ("ratelimit-reset", rate.reset_secs),
    ] {
        headers.insert(name, axum::http::HeaderValue::from(value));
    }
}
