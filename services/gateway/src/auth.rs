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
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// Header naming the user an internal service acts for.
pub const USER_ID_HEADER: &str = "x-portico-user-id";

/// The scopes partners' credentials hold; defined in the domain crate so validation
/// and the workers share one list.
pub use portico_domain::integrations::Scope;

/// A partner authenticated by integration credentials.
#[derive(Debug, Clone)]
pub struct PartnerIdentity {
    /// The integration whose credentials were presented.
    pub integration_id: Uuid,
    /// The integration's owner, on whose behalf the partner acts.
    pub user_id: String,
    /// What the integration may do.
    pub scopes: Vec<Scope>,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A platform user with a valid JWT.
    User {
        /// The token's `sub`.
        user_id: String,
    },
    /// An internal service acting for a user.
    Service {
        /// From `x-portico-user-id`.
        user_id: String,
    },
    /// A partner acting for an integration's owner.
    Partner(PartnerIdentity),
}

impl Caller {
    /// The user whose resources this request may see; every query is scoped to it.
    pub fn user_id(&self) -> &str {
        match self {
            Caller::User { user_id } | Caller::Service { user_id } => user_id,
            Caller::Partner(p) => &p.user_id,
        }
    }

    /// The integration, when a partner is calling.
    pub fn integration_id(&self) -> Option<Uuid> {
        match self {
            Caller::Partner(p) => Some(p.integration_id),
            _ => None,
        }
    }

    /// Refuses a partner whose integration lacks `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        match self {
            Caller::Partner(p) if !p.scopes.contains(&scope) => Err(ApiError::Forbidden(format!(
                "the integration's credentials lack the {} scope",
                scope.as_str()
            ))),
            _ => Ok(()),
        }
    }

    /// Refuses anyone but an internal service (event publishing).
    pub fn require_service(&self) -> Result<(), ApiError> {
        match self {
            Caller::Service { .. } => Ok(()),
            _ => Err(ApiError::Forbidden(
                "only internal services (service token) may do this".into(),
            )),
        }
    }

    /// Refuses partners: user-management actions (integrations, credentials) are for
    /// the platform user or an internal service only.
    pub fn require_user_or_service(&self) -> Result<(), ApiError> {
        match self {
            Caller::Partner(_) => Err(ApiError::Forbidden(
                "partner credentials cannot manage integrations".into(),
            )),
            _ => Ok(()),
        }
    }
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
            let user_id = headers
                .get(USER_ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.len() <= 255)
                .ok_or_else(|| {
                    ApiError::field(
                        "missing_user_id",
                        "/headers/x-portico-user-id",
                        "internal callers must name the user they act for in x-portico-user-id",
                    )
                })?;
            return Ok(Caller::Service {
                user_id: user_id.to_owned(),
            });
        }
        let now = chrono::Utc::now().timestamp();
        let claims = state
            .jwt()
            .verify(credentials, now)
            .map_err(|e| ApiError::Unauthenticated(format!("invalid token: {e}")))?;
        Ok(Caller::User {
            user_id: claims.sub,
        })
    } else if scheme.eq_ignore_ascii_case("basic") {
        let identity = state.credentials().authenticate_basic(credentials).await?;
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
