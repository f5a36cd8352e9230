//! `POST /api/events` and `POST /api/events/batch`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use portico_api::events::{
    PublishEventBody, PublishEventsBody, PublishedEventBody, PublishedEventsBody,
};

use crate::app::events::{self, AcceptedEvent, NewEvent};
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::rest::json::ApiJson;
use crate::rest::openapi::PROBLEM;
use crate::state::AppState;

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
