//! `/api/live`: the live-updates WebSocket and the tickets browsers open it with.
//! The protocol, close codes and examples are in `docs/api/live.md`; the work is in
//! [`crate::live`].

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::live::hub::JoinError;
use crate::live_session::{self as session, MAX_CLIENT_MESSAGE_BYTES, READ_BUFFER_BYTES};
use crate::rest::openapi::PROBLEM;
use crate::rest::webhooks::query;
use crate::state::AppState;

/// The routes, with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(live_socket))
        .routes(routes!(create_ticket))
}

/// A ticket that opens one live WebSocket.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TicketBody {
    /// Pass as `?ticket=` to `GET /api/live` within a minute; works once.
    pub ticket: String,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

/// `GET /live` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LiveQuery {
    /// A ticket from `POST /api/live/tickets`, for clients that cannot set an
    /// `Authorization` header (browsers).
    pub ticket: Option<String>,
    /// `true`: each WebSocket message carries every pushed message ready at the time,
    /// one JSON object per line (newline-separated), instead of one per WebSocket
    /// message. For clients that follow busy users: far fewer messages to handle.
    pub batch: Option<bool>,
}

/// Get a short-lived, single-use ticket for opening the live WebSocket from a browser.
#[utoipa::path(post, path = "/live/tickets", tag = "live",
    responses(
        (status = 201, description = "A ticket, valid for 60 seconds, usable once", body = TicketBody),
        (status = 401, description = "Not authenticated", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn create_ticket(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let identity = session::authenticate(&state, &headers, Some(caller), None).await?;
    let (ticket, expires_at) =
        state
            .live()
            .tickets()
            .issue(&identity.caller, identity.expires_at, Utc::now());
    Ok((
        StatusCode::CREATED,
        axum::Json(TicketBody { ticket, expires_at }),
    ))
}

/// Open the live-updates WebSocket (`101 Switching Protocols`). Authenticate with the
/// `Authorization` header (user JWT, service token with `x-portico-user-id`, partner
/// Basic credentials) or `?ticket=`; refused before the upgrade otherwise. Then send
/// `{"op":"subscribe","topics":["deliveries"]}`; see docs/api/live.md for the messages
/// and close codes. With `?batch=true` a WebSocket message holds one or more pushed
/// messages, one per line.
#[utoipa::path(get, path = "/live", tag = "live",
    params(LiveQuery),
    responses(
        (status = 101, description = "Switching Protocols: the WebSocket is open"),
        (status = 400, description = "A query parameter is not valid (validation_failed with invalid_query: `batch` must be true or false)", body = Problem, content_type = PROBLEM),
        (status = 401, description = "No valid credential or ticket (unauthenticated, invalid_ticket)", body = Problem, content_type = PROBLEM),
        (status = 426, description = "Not a WebSocket upgrade request (websocket_upgrade_required)", body = Problem, content_type = PROBLEM),
        (status = 429, description = "The user already holds the maximum number of live connections (live_connection_limit)", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = []), ()))]
pub async fn live_socket(
    State(state): State<AppState>,
    headers: HeaderMap,
    caller: Option<axum::Extension<Caller>>,
    params: Result<Query<LiveQuery>, axum::extract::rejection::QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let LiveQuery { ticket, batch } = query(params)?;
    let identity = session::authenticate(
        &state,
        &headers,
        caller.map(|axum::Extension(c)| c),
        ticket.as_deref(),
    )
    .await?;
    let framing = if batch.unwrap_or(false) {
        session::Framing::Batched
    } else {
        session::Framing::Single
    };
    let upgrade = upgrade.map_err(|e| ApiError::Specific {
        status: StatusCode::UPGRADE_REQUIRED,
        code: "websocket_upgrade_required",
        message: format!("open this route as a WebSocket: {e}"),
    })?;
    let hub = state.live().clone();
    let membership = hub
        .join(identity.caller.user_id(), identity.caller.integration_id())
        .map_err(|e| match e {
            JoinError::TooMany(_) => ApiError::Specific {
                status: StatusCode::TOO_MANY_REQUESTS,
                code: "live_connection_limit",
                message: e.to_string(),
            },
        })?;
    Ok(upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .max_frame_size(MAX_CLIENT_MESSAGE_BYTES)
        .on_upgrade(move |socket| {
            session::run_websocket(socket, membership, identity, hub, framing)
        }))
}
