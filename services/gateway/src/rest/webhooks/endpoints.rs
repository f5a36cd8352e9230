//! Webhook endpoints: create, list, get, update, delete, and the test event.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use portico_api::PageQuery;
use portico_api::webhooks::{
    CreateWebhookBody, CreatedWebhookBody, TestEventBody, UpdateWebhookBody, WebhookBody,
    WebhookListBody,
};
use portico_domain::pagination::PageRequest;

use super::{parse_id, query};
use crate::app::webhooks::{self, Webhook};
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::rest::concurrency::{IfMatch, with_etag};
use crate::rest::json::ApiJson;
use crate::rest::openapi::PROBLEM;
use crate::state::AppState;

/// The one mapping of the application's webhook to its REST body.
pub(crate) fn webhook_body(w: Webhook) -> WebhookBody {
    WebhookBody {
        id: w.id,
        url: w.url,
        events: w.events,
        description: w.description,
        active: w.active,
        disabled_reason: w.disabled_reason,
        retry_policy: w.retry_policy.into(),
        headers: w.headers,
        ordering_enabled: w.ordering_enabled,
        rate_limit_per_second: w.rate_limit_per_second,
        max_concurrency: w.max_concurrency,
        created_at: w.created_at,
        updated_at: w.updated_at,
    }
}

/// Register a webhook endpoint; the response carries its signing secret.
#[utoipa::path(post, path = "/webhooks", tag = "webhooks",
    request_body = CreateWebhookBody,
    responses(
        (status = 201, description = "Created", body = CreatedWebhookBody,
            headers(("ETag" = String, description = "The webhook's version (a strong entity tag): send it in If-Match to change or delete only this version, or in If-None-Match to get 304 while it is current"))),
        (status = 400, description = "Invalid input (invalid_url, empty_events, invalid_event_filter, reserved_header, invalid_retry_policy, forbidden_address, unresolvable_host, ...)", body = Problem, content_type = PROBLEM),
        (status = 401, description = "Not authenticated", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn create_webhook(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateWebhookBody>,
) -> Result<impl IntoResponse, ApiError> {
    let created = webhooks::create(&state, &caller, body.into()).await?;
    let etag = created.webhook.etag();
    Ok(with_etag(
        Some(etag),
        (
            StatusCode::CREATED,
            axum::Json(CreatedWebhookBody {
                webhook: webhook_body(created.webhook),
                secret: created.secret,
            }),
        ),
    ))
}

/// List the caller's webhooks, newest first.
#[utoipa::path(get, path = "/webhooks", tag = "webhooks",
    params(PageQuery),
    responses(
        (status = 200, description = "One page", body = WebhookListBody),
        (status = 400, description = "Invalid limit or cursor", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn list_webhooks(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<PageQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let params = query(params)?;
    let page = PageRequest::parse(params.limit, params.cursor.as_deref())?;
    let (items, next_cursor) = webhooks::list(&state, &caller, page).await?;
    Ok(axum::Json(WebhookListBody {
        data: items.into_iter().map(webhook_body).collect(),
        next_cursor,
    }))
}

/// Get one webhook.
#[utoipa::path(get, path = "/webhooks/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id")),
    responses(
        (status = 200, description = "The webhook", body = WebhookBody,
            headers(("ETag" = String, description = "The webhook's version (a strong entity tag): send it in If-Match to change or delete only this version, or in If-None-Match to get 304 while it is current"))),
        (status = 404, description = "No such webhook for this caller", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn get_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "id")?;
    let webhook = webhooks::get(&state, &caller, id).await?;
    Ok(with_etag(
        Some(webhook.etag()),
        axum::Json(webhook_body(webhook)),
    ))
}

/// Update a webhook partially; `active: true` re-enables a disabled one.
#[utoipa::path(patch, path = "/webhooks/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id")),
    request_body = UpdateWebhookBody,
    responses(
        (status = 200, description = "The updated webhook", body = WebhookBody,
            headers(("ETag" = String, description = "The webhook's version (a strong entity tag): send it in If-Match to change or delete only this version, or in If-None-Match to get 304 while it is current"))),
        (status = 400, description = "Invalid input; nothing changed", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such webhook for this caller", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn update_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    IfMatch(precondition): IfMatch,
    ApiJson(body): ApiJson<UpdateWebhookBody>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "id")?;
    let webhook = webhooks::update_if(&state, &caller, id, body.into(), &precondition).await?;
    Ok(with_etag(
        Some(webhook.etag()),
        axum::Json(webhook_body(webhook)),
    ))
}

/// Delete a webhook with its deliveries; pending deliveries are not sent.
#[utoipa::path(delete, path = "/webhooks/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such webhook for this caller", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn delete_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    IfMatch(precondition): IfMatch,
) -> Result<Response, ApiError> {
    let id = parse_id(&id, "id")?;
    webhooks::delete_if(&state, &caller, id, &precondition).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Send a `webhook.test` event to this endpoint only.
#[utoipa::path(post, path = "/webhooks/{id}/test", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id")),
    responses(
        (status = 202, description = "Queued for delivery", body = TestEventBody),
        (status = 404, description = "No such webhook for this caller", body = Problem, content_type = PROBLEM),
        (status = 409, description = "The webhook is disabled (failed_precondition)", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn send_test_event(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "id")?;
    let event_id = webhooks::send_test_event(&state, &caller, id).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(TestEventBody { event_id })))
}
