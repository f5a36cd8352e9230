//! What both doors read from an HTTP request's head: the client's address and
//! `Basic` credentials. It lives apart from
//! `rest` and `grpc` so that `auth` (which needs the client's address) and the gRPC
//! partner layer import no door, and the module graph keeps no circle.

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::HeaderMap;

/// The client's address from a request's head: the first `X-Forwarded-For` hop when
/// the operator says a trusted proxy sets it, else the peer address of the connection.
pub fn peer_address(
    headers: &HeaderMap,
    extensions: &axum::http::Extensions,
    trust_forwarded_for: bool,
) -> Option<String> {
    if trust_forwarded_for
        && let Some(first) = headers.get("x-forwarded-for").and_then(first_forwarded_hop)
    {
        return Some(first.to_owned());
    }
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string())
}

/// The first hop of an `X-Forwarded-For` value (the client, as the trusted proxy saw
/// it), when it is readable and of a plausible length.
pub fn first_forwarded_hop(value: &axum::http::HeaderValue) -> Option<&str> {
    value
        .to_str()
        .ok()
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 64)
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
