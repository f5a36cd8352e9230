//! `POST /api/events` and `POST /api/events/batch`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::app::events::{self, AcceptedEvent, NewEvent};
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::rest::json::ApiJson;
use crate::rest::openapi::PROBLEM;
use crate::state::AppState;

/// An event to deliver to the owning user's webhooks.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PublishEventBody {
    /// Dotted event type, e.g. `order.created`.
    #[serde(rename = "type")]
    #[schema(schema_with = crate::rest::openapi::event_type)]
    pub event_type: String,
    /// Any JSON value; delivered unchanged as the body's `data`.
    #[schema(value_type = Object)]
    pub data: Box<RawValue>,
    /// Publishing again with the same key returns the same event and delivers nothing new.
    /// 1-255 bytes, no control characters.
    #[schema(min_length = 1, max_length = 255)]
    pub idempotency_key: Option<String>,
    /// Events with the same ordering key reach each endpoint in order (opt-in per webhook).
    /// 1-255 bytes, no control characters.
    #[schema(min_length = 1, max_length = 255)]
    pub ordering_key: Option<String>,
}

/// The accepted event.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishedEventBody {
    /// The event id; also the `webhook-id` of its deliveries.
    pub id: Uuid,
    /// True when the idempotency key had been used before.
    pub duplicate: bool,
}

/// Several events in one request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PublishEventsBody {
    /// Up to 1,000 events.
    pub events: Vec<PublishEventBody>,
}

/// The accepted events, in request order.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublishedEventsBody {
    /// One entry per event.
    pub data: Vec<PublishedEventBody>,
}

impl From<PublishEventBody> for NewEvent {
    fn from(b: PublishEventBody) -> Self {
        NewEvent {
            event_type: b.event_type,
            data: b.data,
            idempotency_key: b.idempotency_key,
            ordering_key: b.ordering_key,
        }
    }
}

impl From<AcceptedEvent> for PublishedEventBody {
    fn from(a: AcceptedEvent) -> Self {
        Self {
            id: a.id,
            duplicate: a.duplicate,
        }
    }
}

/// Publish an event (internal services, with the service token).
#[utoipa::path(post, path = "/events", tag = "events",
    request_body = PublishEventBody,
    responses(
        (status = 202, description = "Stored in JetStream; delivery follows", body = PublishedEventBody),
        (status = 400, description = "Invalid event", body = Problem, content_type = PROBLEM),
        (status = 401, description = "Not authenticated", body = Problem, content_type = PROBLEM),
        (status = 403, description = "Not an internal service", body = Problem, content_type = PROBLEM),
    ),
    security(("serviceToken" = [])))]
pub async fn publish_event(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<PublishEventBody>,
) -> Result<impl IntoResponse, ApiError> {
    let accepted = events::publish(&state, &caller, body.into()).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(PublishedEventBody::from(accepted)),
    ))
}

/// Publish up to 1,000 events in one request; validation is all or nothing.
#[utoipa::path(post, path = "/events/batch", tag = "events",
    request_body = PublishEventsBody,
    responses(
        (status = 202, description = "All stored in JetStream", body = PublishedEventsBody),
        (status = 400, description = "At least one invalid event, or not 1-1,000 of them (invalid_batch_size); none published", body = Problem, content_type = PROBLEM),
        (status = 401, description = "Not authenticated", body = Problem, content_type = PROBLEM),
        (status = 403, description = "Not an internal service (users and partners may not publish)", body = Problem, content_type = PROBLEM),
    ),
    security(("serviceToken" = [])))]
pub async fn publish_events(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<PublishEventsBody>,
) -> Result<impl IntoResponse, ApiError> {
    let accepted = events::publish_many(
        &state,
        &caller,
        body.events.into_iter().map(Into::into).collect(),
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(PublishedEventsBody {
            data: accepted.into_iter().map(Into::into).collect(),
        }),
    ))
}
