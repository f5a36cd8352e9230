//! The portal's browser security: its configuration, random tokens and their hashes,
//! the session cookie, CSRF tokens, and the headers every portal response carries.
//!
//! - Tokens are 32 random bytes (base64url); the database holds only their SHA-256.
//! - The session cookie is `HttpOnly`, `SameSite=Lax`, `Path=/portal`, and `Secure`
//!   when the request came over TLS (a trusted `X-Forwarded-Proto: https`) or
//!   `PORTICO_PORTAL_SECURE_COOKIES` is set.
//! - CSRF (synchronizer token): every form carries a token derived from the session
//!   cookie (SHA-256 of a label and the cookie), checked on every POST; a page of
//!   another site can neither read the cookie nor the pages, so it cannot forge it.
//!   The sign-in form (before any session) uses a double-submit cookie instead.
//! - Headers: a strict Content-Security-Policy (no inline script or style), the
//!   configured `frame-ancestors`, `X-Content-Type-Options: nosniff`,
//!   `Referrer-Policy: no-referrer` (login links carry a token) and `no-store`.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::ApiError;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "portico_portal";
/// Name of the sign-in form's double-submit cookie.
pub const SIGN_IN_COOKIE: &str = "portico_portal_signin";
/// Header the upload script sends the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Portal settings, declared with the rest of the configuration.
pub use crate::config::PortalConfig;

/// A fresh random token: 32 bytes, base64url without padding.
pub fn new_token() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ApiError::Internal("the system random source failed".into()))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// What the database stores of a token.
pub fn token_hash(token: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .to_vec()
}

/// The CSRF token of the session whose cookie is `session_token`.
pub fn csrf_token(session_token: &str) -> String {
    let mut input = Vec::with_capacity(session_token.len() + 24);
    input.extend_from_slice(b"portico-portal-csrf\0");
    input.extend_from_slice(session_token.as_bytes());
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, &input))
}

/// Whether `presented` is the expected CSRF token (constant time).
pub fn csrf_matches(expected: &str, presented: Option<&str>) -> bool {
    match presented {
        Some(p) if !p.is_empty() => {
            portico_signing::constant_time_eq(p.as_bytes(), expected.as_bytes())
        }
        _ => false,
    }
}

/// The value of cookie `name` in the request, if any.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// Whether the request came over TLS, as far as the gateway can tell: a trusted
/// proxy's `X-Forwarded-Proto: https`, or the configuration says so.
pub fn secure_request(headers: &HeaderMap, config: &crate::config::GatewayConfig) -> bool {
    config.portal.portal_secure_cookies
        || (config.trust_forwarded_for
            && headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.eq_ignore_ascii_case("https")))
}

/// A `Set-Cookie` value for the portal: HttpOnly, SameSite=Lax, Path=/portal, Secure
/// when `secure`; `max_age` 0 deletes it.
pub fn set_cookie(name: &str, value: &str, max_age: i64, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/portal; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .ok()
}

/// Adds the security headers to a portal response.
pub fn add_headers(response: &mut Response, csp: &HeaderValue) {
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, csp.clone());
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens are random and long; hashes and CSRF tokens are stable per token and
    /// differ between tokens.
    #[test]
    fn tokens_hashes_and_csrf() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(token_hash(&a), token_hash(&a));
        assert_ne!(token_hash(&a), token_hash(&b));
        let csrf = csrf_token(&a);
        assert!(csrf_matches(&csrf, Some(&csrf)));
        assert!(!csrf_matches(&csrf, Some(&csrf_token(&b))));
        assert!(!csrf_matches(&csrf, Some("")));
        assert!(!csrf_matches(&csrf, None));
    }

    /// The cookie parser finds a cookie among others and ignores look-alikes.
    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("x=1; portico_portal_signin=s; portico_portal=abc"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, SIGN_IN_COOKIE), Some("s"));
        assert_eq!(cookie(&h, "y"), None);
    }

    /// The cookie is HttpOnly, SameSite and scoped to /portal; Secure only when asked.
    #[test]
    fn cookie_flags() {
        let v = set_cookie(SESSION_COOKIE, "t", 60, true).unwrap();
        let v = v.to_str().unwrap();
        for flag in [
            "HttpOnly",
            "SameSite=Lax",
            "Path=/portal",
            "Secure",
            "Max-Age=60",
        ] {
            assert!(v.contains(flag), "{v}");
        }
        let plain = set_cookie(SESSION_COOKIE, "t", 60, false).unwrap();
        assert!(!plain.to_str().unwrap().contains("Secure"));
    }
}
