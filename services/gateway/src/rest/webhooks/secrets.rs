//! A webhook's signing secret: read it, rotate it.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use portico_api::webhooks::{RotateSecretBody, SecretBody};

use super::{OptionalJson, parse_id};
use crate::app::webhooks::{self, SecretView};
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::rest::openapi::PROBLEM;
use crate::state::AppState;

/// The one mapping of the application's secret view to its REST body.
fn secret_body(s: SecretView) -> SecretBody {
    SecretBody {
        secret: s.secret,
        previous_secret_expires_at: s.previous_secret_expires_at,
    }
}

/// The current signing secret (and, during a rotation, when the old one expires).
#[utoipa::path(get, path = "/webhooks/{id}/secret", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id")),
    responses(
        (status = 200, description = "The secret", body = SecretBody),
        (status = 404, description = "No such webhook for this caller", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn get_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "id")?;
    let secret = webhooks::get_secret(&state, &caller, id).await?;
    Ok(axum::Json(secret_body(secret)))
}

/// Replace the signing secret; the old one keeps signing during the grace period.
#[utoipa::path(post, path = "/webhooks/{id}/secret/rotate", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id")),
    request_body(content = Option<RotateSecretBody>, description = "Optional"),
    responses(
        (status = 200, description = "The new secret", body = SecretBody),
        (status = 400, description = "invalid_grace_period", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such webhook for this caller", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<RotateSecretBody>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "id")?;
    let secret = webhooks::rotate_secret(&state, &caller, id, body.grace_period_seconds).await?;
    Ok(axum::Json(secret_body(secret)))
}
