//! The portal's REST routes (`/api/portal/sessions`): a user, or the platform with the
//! service token on a user's behalf, asks for a one-time login link, and revokes a
//! session. Mounted with the rest of the API, so they are in the OpenAPI document.

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::error::{ApiError, Problem};
use crate::identity::Caller;
use crate::portal::sessions;
use crate::rest::json::ApiJson;
use crate::rest::openapi::PROBLEM;
use crate::state::AppState;

/// The portal session routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_session))
        .routes(routes!(revoke_session))
}

/// Asks for a login link; every field is optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreatePortalSessionBody {
    /// Narrow the session to these webhooks (at most 100, each the user's): the portal
    /// then shows only them, so a platform can embed one customer's endpoints.
    #[serde(default)]
    pub webhook_ids: Option<Vec<Uuid>>,
}

/// A one-time login link.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortalSessionBody {
    /// The session it starts (revoke with `DELETE /api/portal/sessions/{id}`).
    pub id: Uuid,
    /// Open this in a browser once, before `expiresAt`: it signs in and sets the
    /// session cookie. Absolute when `PORTICO_PORTAL_PUBLIC_URL` is set.
    pub login_url: String,
    /// When the link stops working (minutes from now).
    pub expires_at: DateTime<Utc>,
    /// The webhooks the session is narrowed to, if any.
    pub webhook_ids: Option<Vec<Uuid>>,
}

/// The body, or an empty one when none was sent.
pub struct OptionalBody(pub CreatePortalSessionBody);

impl<S: Send + Sync> FromRequest<S> for OptionalBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = req.headers();
        let has_body = headers.contains_key(header::TRANSFER_ENCODING)
            || headers
                .get(header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() != b"0");
        if !has_body {
            return Ok(Self(CreatePortalSessionBody::default()));
        }
        let ApiJson(body) = ApiJson::from_request(req, state).await?;
        Ok(Self(body))
    }
}

/// Create a one-time portal login link for the calling user (a user JWT, or the service
/// token with `x-portico-user-id`). Partners sign in on the portal with their
/// credentials instead.
#[utoipa::path(post, path = "/portal/sessions", tag = "portal",
    request_body(content = Option<CreatePortalSessionBody>, description = "Optional"),
    responses(
        (status = 201, description = "The login link", body = PortalSessionBody),
        (status = 400, description = "invalid_webhook_ids: more than 100 webhooks", body = Problem, content_type = PROBLEM),
        (status = 404, description = "A narrowed webhook is not the user's (not_found)", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = [])))]
pub async fn create_session(
    State(state): State<AppState>,
    caller: Caller,
    OptionalBody(body): OptionalBody,
) -> Result<Response, ApiError> {
    let link = sessions::create_link(&state, &caller, body.webhook_ids).await?;
    let body = PortalSessionBody {
        id: link.id,
        login_url: link.url,
        expires_at: link.expires_at,
        webhook_ids: link.webhook_ids,
    };
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// Revoke a portal session (or an unused login link) of the calling user: its cookie
/// stops working at once.
#[utoipa::path(delete, path = "/portal/sessions/{id}", tag = "portal",
    params(("id" = Uuid, Path, description = "Session id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such live session of this user (not_found)", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = [])))]
pub async fn revoke_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = Uuid::parse_str(&id)
        .map_err(|_| ApiError::field("invalid_id", "/id", "id must be a UUID"))?;
    sessions::revoke(&state, &caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
