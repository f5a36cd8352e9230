//! Who is calling: one function for both doors, so REST and gRPC authenticate alike.
//!
//! - users: `Authorization: Bearer <JWT>` (HS256, `sub` = user id);
//! - internal services: `Authorization: Bearer <PORTICO_SERVICE_TOKEN>` plus
//!   `x-portico-user-id` naming the user they act for;
//! - partners: HTTP Basic `apiKey:apiSecret` of an integration, acting for the
//!   integration's owner within its scopes.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;

use crate::error::ApiError;
use crate::state::AppState;

/// Who may call, as the doors see it; the types live in [`crate::identity`], which
/// the application layer uses without depending on how callers authenticate.
pub use crate::identity::{Caller, Operator, PartnerIdentity, Scope};

/// Header naming the user an internal service acts for.
pub const USER_ID_HEADER: &str = "x-portico-user-id";

/// Longest user id, in bytes (a JWT `sub` or `x-portico-user-id`).
pub const MAX_USER_ID_BYTES: usize = 255;

/// Checks a user id from outside (a JWT `sub`, `x-portico-user-id`): user ids are
/// opaque strings of the platform, 1-255 bytes of UTF-8 without control characters.
/// Every query is scoped by it and PostgreSQL refuses some of those bytes (NUL), so
/// nothing else may reach the database.
pub fn check_user_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_USER_ID_BYTES {
        return Err(format!(
            "a user id must be 1-{MAX_USER_ID_BYTES} bytes (this one has {})",
            id.len()
        ));
    }
    if portico_domain::text::has_forbidden_control(id, portico_domain::text::Lines::Single) {
        return Err("a user id must not contain control characters".to_owned());
    }
    Ok(())
}

/// The user an internal service names in `x-portico-user-id`: surrounding blanks are
/// ignored; absent or blank is 401 `missing_user_id`; anything that is not a valid
/// user id (see [`check_user_id`]) is 400 `invalid_user_id`.
fn service_user_id(headers: &HeaderMap) -> Result<String, ApiError> {
    let path = "/headers/x-portico-user-id";
    let value = match headers.get(USER_ID_HEADER) {
        None => None,
        Some(v) => Some(std::str::from_utf8(v.as_bytes()).map_err(|_| {
            ApiError::field(
                "invalid_user_id",
                path,
                "x-portico-user-id must be UTF-8 text",
            )
        })?),
    };
    let id = value
        .map(|v| v.trim_matches([' ', '\t']))
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::UnauthenticatedAs {
            code: "missing_user_id",
            message: "internal callers must name the user they act for in x-portico-user-id".into(),
        })?;
    check_user_id(id)
        .map_err(|e| ApiError::field("invalid_user_id", path, format!("x-portico-user-id: {e}")))?;
    Ok(id.to_owned())
}

/// Authenticates request headers; used by the REST extractor and the gRPC services.
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthenticated("missing Authorization header".into()))?
        .to_str()
        .map_err(|_| ApiError::Unauthenticated("Authorization header is not ASCII".into()))?;
    let (scheme, credentials) = value
        .split_once(' ')
        .ok_or_else(|| ApiError::Unauthenticated("malformed Authorization header".into()))?;
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        if let Some(expected) = state.service_token()
            && portico_signing::constant_time_eq(credentials.as_bytes(), expected.as_bytes())
        {
            return Ok(Caller::Service {
                user_id: service_user_id(headers)?,
            });
        }
        let now = chrono::Utc::now().timestamp();
        let mut verified = state.jwt().verify(credentials, now);
        // A key id we do not know yet: the platform may have rotated its keys.
        if verified.is_err()
            && let Some(jwks) = state.jwks()
            && jwks.refresh_for(credentials).await
        {
            verified = state.jwt().verify(credentials, now);
        }
        let claims =
            verified.map_err(|e| ApiError::Unauthenticated(format!("invalid token: {e}")))?;
        check_user_id(&claims.sub).map_err(|e| ApiError::UnauthenticatedAs {
            code: "invalid_token_subject",
            message: format!("the token's sub is not a user id: {e}"),
        })?;
        Ok(Caller::User {
            user_id: claims.sub,
        })
    } else if scheme.eq_ignore_ascii_case("basic") {
        // Both doors authenticate partners in their partner-call layers with the
        // client's address; this path only runs for a request they did not see.
        let identity = state
            .credentials()
            .authenticate_basic(credentials, "-")
            .await?;
        Ok(Caller::Partner(identity))
    } else {
        Err(ApiError::Unauthenticated(format!(
            "unsupported authorization scheme {scheme:?} (use Bearer or Basic)"
        )))
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let result = authenticate(state, &parts.headers).await;
        match &result {
            Ok(caller) => {
                parts.extensions.insert(caller.clone());
            }
            Err(_) => {
                // Let the usage log see a failed partner attempt too.
                parts.extensions.insert(AuthFailed);
            }
        }
        result
    }
}

/// Marker left in request extensions when authentication failed.
#[derive(Debug, Clone, Copy)]
pub struct AuthFailed;

/// Header in which an operator names themselves for the audit record. The operator
/// token is shared, so the name is recorded as given, not verified.
pub const OPERATOR_HEADER: &str = "x-portico-operator";

/// The name recorded when an operator gives none.
pub const UNNAMED_OPERATOR: &str = "operator";

/// Longest request id kept in an audit record, in bytes.
const MAX_REQUEST_ID_BYTES: usize = 200;

/// Checks that `headers` carry the operator token and returns the operator's name.
///
/// - no token configured: 404 `operator_access_disabled`, whatever the credentials
///   (the admin API does not exist on this gateway);
/// - anything but `Authorization: Bearer <operator token>` (none, a JWT, the service
///   token, Basic credentials, a wrong token): 401 `unauthenticated`;
/// - an `x-portico-operator` that is not 1-255 bytes of text without control
///   characters: 400 `invalid_operator`.
pub fn authenticate_operator(state: &AppState, headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(expected) = state.config().operator_token() else {
        return Err(ApiError::Specific {
            status: axum::http::StatusCode::NOT_FOUND,
            code: "operator_access_disabled",
            message:
                "the admin API is disabled on this gateway (PORTICO_OPERATOR_TOKEN is not set)"
                    .into(),
        });
    };
    let refused = || {
        ApiError::Unauthenticated(
            "the admin API accepts only the operator token (Authorization: Bearer <PORTICO_OPERATOR_TOKEN>)"
                .into(),
        )
    };
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(refused)?;
    let (scheme, credentials) = value.split_once(' ').ok_or_else(refused)?;
    if !scheme.eq_ignore_ascii_case("bearer")
        || !portico_signing::constant_time_eq(credentials.trim().as_bytes(), expected.as_bytes())
    {
        return Err(refused());
    }
    let path = "/headers/x-portico-operator";
    let name = match headers.get(OPERATOR_HEADER) {
        None => return Ok(UNNAMED_OPERATOR.to_owned()),
        Some(v) => std::str::from_utf8(v.as_bytes())
            .map_err(|_| {
                ApiError::field(
                    "invalid_operator",
                    path,
                    "x-portico-operator must be UTF-8 text",
                )
            })?
            .trim_matches([' ', '\t']),
    };
    if name.is_empty() {
        return Ok(UNNAMED_OPERATOR.to_owned());
    }
    check_user_id(name).map_err(|e| {
        ApiError::field(
            "invalid_operator",
            path,
            format!("x-portico-operator: {}", e.replace("user id", "name")),
        )
    })?;
    Ok(name.to_owned())
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let name = authenticate_operator(state, &parts.headers)?;
        let request_id = parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= MAX_REQUEST_ID_BYTES)
            .map(str::to_owned);
        let client_addr = crate::net::peer_address(
            &parts.headers,
            &parts.extensions,
            state.config().trust_forwarded_for,
        );
        Ok(Operator {
            name,
            request_id,
            client_addr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, StatusCode};

    fn named(value: &[u8]) -> Result<String, ApiError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            USER_ID_HEADER,
            HeaderValue::from_bytes(value).expect("a header value"),
        );
        service_user_id(&headers)
    }

    /// User ids are opaque: any text of 1-255 bytes without control characters.
    #[test]
    fn user_ids_are_bounded_text_without_control_characters() {
        for ok in [
            "u",
            "user-1",
            "ünïcødé",
            "a b",
            &"x".repeat(255),
            "é".repeat(127).as_str(),
        ] {
            assert!(check_user_id(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            &"x".repeat(256),
            &"é".repeat(128),
            "a\0b",
            "a\nb",
            "tab\t",
            "del\u{7f}",
            "c1\u{85}",
        ] {
            assert!(check_user_id(bad).is_err(), "{bad:?}");
        }
    }

    /// The header: absent or blank is 401 missing_user_id, malformed is 400
    /// invalid_user_id, surrounding blanks are ignored.
    #[test]
    fn the_service_header_is_required_and_validated() {
        let missing = service_user_id(&HeaderMap::new()).unwrap_err();
        assert_eq!(
            (missing.status(), missing.code()),
            (StatusCode::UNAUTHORIZED, "missing_user_id")
        );
        let blank = named(b"   ").unwrap_err();
        assert_eq!(blank.code(), "missing_user_id");
        assert_eq!(named(b"  user-7 ").unwrap(), "user-7");
        assert_eq!(named("ünï".as_bytes()).unwrap(), "ünï");
        for bad in [
            "x".repeat(256).into_bytes(),
            b"a\tb".to_vec(),
            "c1\u{85}".as_bytes().to_vec(),
            vec![b'a', 0xff],
        ] {
            let err = named(&bad).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{bad:?}");
            let ApiError::Validation(errors) = err else {
                panic!("a validation error for {bad:?}");
            };
            assert_eq!(errors[0].code, "invalid_user_id");
        }
    }
}
