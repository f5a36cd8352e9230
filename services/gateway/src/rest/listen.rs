//! `/api/listen`: listen endpoints of `portico listen`. `POST /listen` creates one (a
//! webhook whose deliveries reach the tool, not an address); `GET /listen/{id}` opens
//! its WebSocket. The protocol is in `docs/api/webhooks.md` ("Listen endpoints"); the
//! work is in [`crate::app::listen`] and [`crate::live::listen`].

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use portico_api::listen::CreateListenBody;
use portico_api::webhooks::CreatedWebhookBody;
use portico_domain::ids::WebhookId;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::listen::{self, NewListenEndpoint};
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::live_session::{self as session, MAX_CLIENT_MESSAGE_BYTES, READ_BUFFER_BYTES};
use crate::rest::json::ApiJson;
use crate::rest::live::LiveQuery;
use crate::rest::openapi::PROBLEM;
use crate::rest::webhooks::endpoints::webhook_body;
use crate::rest::webhooks::parse_id;
use crate::state::AppState;

/// The routes, with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_listen_endpoint))
        .routes(routes!(listen_socket))
}

/// Create a listen endpoint: a temporary webhook of the caller whose deliveries go to
/// the `portico listen` tool attached at `GET /api/listen/{id}`, never to an address.
/// Its `url` is the placeholder `listen:<id>`. Owner only: a user token, or the
/// service token acting for the user; partner credentials are refused (403). Delete it
/// with `DELETE /api/webhooks/{id}`; the dispatcher deletes it once no connection has
/// held it for `PORTICO_LISTEN_TIMEOUT_SECS`.
#[utoipa::path(post, path = "/listen", tag = "webhooks",
    request_body = CreateListenBody,
    responses(
        (status = 201, description = "Created, with its signing secret", body = CreatedWebhookBody),
        (status = 400, description = "Invalid input (empty_events, invalid_event_filter, invalid_description)", body = Problem, content_type = PROBLEM),
        (status = 401, description = "Not authenticated", body = Problem, content_type = PROBLEM),
        (status = 403, description = "Partner credentials (forbidden)", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = [])))]
pub async fn create_listen_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateListenBody>,
) -> Result<impl IntoResponse, ApiError> {
    let created = listen::create(
        &state,
        &caller,
        NewListenEndpoint {
            events: body.events,
            description: body.description,
        },
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedWebhookBody {
            webhook: webhook_body(created.webhook),
            secret: created.secret,
        }),
    ))
}

/// Attach to a listen endpoint (`101 Switching Protocols`): deliveries to it arrive as
/// `{"type":"delivery",...}` messages, each answered with
/// `{"op":"result","requestId":...}` (docs/api/webhooks.md). Authenticate like
/// `GET /api/live` (header or `?ticket=`). Another user's endpoint, or a webhook that
/// is not a listen endpoint, answers 404 before the upgrade.
#[utoipa::path(get, path = "/listen/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "The listen endpoint's webhook id"), LiveQuery),
    responses(
        (status = 101, description = "Switching Protocols: the WebSocket is open"),
        (status = 401, description = "No valid credential or ticket", body = Problem, content_type = PROBLEM),
        (status = 403, description = "Partner credentials (forbidden)", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such listen endpoint of the caller", body = Problem, content_type = PROBLEM),
        (status = 426, description = "Not a WebSocket upgrade request (websocket_upgrade_required)", body = Problem, content_type = PROBLEM),
        (status = 503, description = "NATS unavailable", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ()))]
pub async fn listen_socket(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    caller: Option<axum::Extension<Caller>>,
    query: Result<Query<LiveQuery>, axum::extract::rejection::QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let id = WebhookId::from(parse_id(&id, "id")?);
    let ticket = query.ok().and_then(|Query(q)| q.ticket);
    let identity = session::authenticate(
        &state,
        &headers,
        caller.map(|axum::Extension(c)| c),
        ticket.as_deref(),
    )
    .await?;
    let upgrade = upgrade.map_err(|e| ApiError::Specific {
        status: StatusCode::UPGRADE_REQUIRED,
        code: "websocket_upgrade_required",
        message: format!("open this route as a WebSocket: {e}"),
    })?;
    listen::touch(&state, &identity.caller, id).await?;
    // Subscribed before the upgrade: a delivery sent the moment the tool hears
    // `ready` already has a responder.
    let subject = state.publisher().topology().listen_subject(id.as_uuid());
    let requests = state
        .nats()
        .subscribe(subject)
        .await
        .map_err(|e| ApiError::Unavailable(format!("NATS: {e}")))?;
    Ok(upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .max_frame_size(MAX_CLIENT_MESSAGE_BYTES)
        .on_upgrade(move |socket| {
            crate::live::listen::run_listen_socket(socket, state, identity, id, requests)
        }))
}
