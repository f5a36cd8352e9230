//! A webhook's deliveries: list with filters, one with its attempts, retry one now.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use portico_api::deliveries::{
    AttemptBody, DeliveryBody, DeliveryDetailBody, DeliveryListBody, DeliveryQuery,
    RetryDeliveryBody,
};
use portico_domain::pagination::PageRequest;
use portico_domain::webhooks::DeliveryStatus;
use portico_domain::wire::WireName;

use super::{OptionalJson, collect_field, parse_id, parse_time, query};
use crate::app::webhook_deliveries::{self, Delivery, DeliveryAttempt, DeliveryFilter};
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::rest::openapi::PROBLEM;
use crate::state::AppState;

/// The one mapping of the application's delivery to its REST body.
fn delivery_body(d: Delivery) -> DeliveryBody {
    DeliveryBody {
        id: d.id,
        webhook_id: d.webhook_id,
        event_id: d.event_id,
        event_type: d.event_type,
        status: d.status,
        attempts: d.attempts,
        max_retries: d.max_retries,
        next_attempt_at: d.next_attempt_at,
        last_status_code: d.last_status_code,
        last_error: d.last_error,
        created_at: d.created_at,
        updated_at: d.updated_at,
    }
}

/// The one mapping of the application's attempt to its REST body.
fn attempt_body(a: DeliveryAttempt) -> AttemptBody {
    AttemptBody {
        attempt_number: a.attempt_number,
        request_headers: a.request_headers,
        response_status: a.response_status,
        response_body: a.response_body,
        latency_ms: a.latency_ms,
        error_kind: a.error_kind,
        error_message: a.error_message,
        started_at: a.started_at,
    }
}

/// List a webhook's deliveries, newest first, with filters.
#[utoipa::path(get, path = "/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id"), DeliveryQuery),
    responses(
        (status = 200, description = "One page", body = DeliveryListBody),
        (status = 400, description = "Invalid filter (invalid_status, invalid_timestamp, invalid_event_type, invalid_cursor)", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such webhook for this caller", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    params: Result<Query<DeliveryQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "id")?;
    let params = query(params)?;
    let mut errors = Vec::new();
    let status = collect_field(
        &mut errors,
        params
            .status
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| DeliveryStatus::parse_field(s, "/status"))
            .transpose(),
    )
    .flatten();
    let since = collect_field(&mut errors, parse_time(params.since.as_deref(), "/since")).flatten();
    let until = collect_field(&mut errors, parse_time(params.until.as_deref(), "/until")).flatten();
    let page = collect_field(
        &mut errors,
        PageRequest::parse(params.limit, params.cursor.as_deref()),
    );
    let Some(page) = page.filter(|_| errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let filter = DeliveryFilter {
        status,
        event_type: params.event_type.filter(|t| !t.is_empty()),
        since,
        until,
    };
    let (items, next_cursor) = webhook_deliveries::list(&state, &caller, id, filter, page).await?;
    Ok(axum::Json(DeliveryListBody {
        data: items.into_iter().map(delivery_body).collect(),
        next_cursor,
    }))
}

/// One delivery with every attempt.
#[utoipa::path(get, path = "/webhooks/{id}/deliveries/{deliveryId}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id"), ("deliveryId" = Uuid, Path, description = "Delivery id")),
    responses(
        (status = 200, description = "The delivery and its attempts", body = DeliveryDetailBody),
        (status = 404, description = "No such delivery of this caller's webhook", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn get_delivery(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "id")?;
    let delivery_id = parse_id(&delivery_id, "deliveryId")?;
    let (d, attempts) = webhook_deliveries::get(&state, &caller, id, delivery_id).await?;
    Ok(axum::Json(DeliveryDetailBody::new(
        delivery_body(d),
        attempts.into_iter().map(attempt_body).collect(),
    )))
}

/// Retry one failed (or retrying) delivery now.
#[utoipa::path(post, path = "/webhooks/{id}/deliveries/{deliveryId}/retry", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id"), ("deliveryId" = Uuid, Path, description = "Delivery id")),
    request_body(content = Option<RetryDeliveryBody>, description = "Optional"),
    responses(
        (status = 202, description = "Scheduled now", body = DeliveryBody),
        (status = 400, description = "invalid_max_retries", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such delivery of this caller's webhook", body = Problem, content_type = PROBLEM),
        (status = 409, description = "Not failed or retrying (failed_precondition)", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn retry_delivery(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, delivery_id)): Path<(String, String)>,
    OptionalJson(body): OptionalJson<RetryDeliveryBody>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "id")?;
    let delivery_id = parse_id(&delivery_id, "deliveryId")?;
    let delivery =
        webhook_deliveries::retry(&state, &caller, id, delivery_id, body.max_retries).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(delivery_body(delivery))))
}
