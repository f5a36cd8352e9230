//! Events published by internal services: `POST /events` and `POST /events/batch`.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;
use uuid::Uuid;

/// An event to deliver to the owning user's webhooks.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(examples(crate::examples::publish_event))]
pub struct PublishEventBody {
    /// Dotted event type, e.g. `order.created`.
    #[serde(rename = "type")]
    #[schema(schema_with = crate::schema::event_type)]
    pub event_type: String,
    /// Any JSON value; delivered unchanged as the body's `data`.
    #[schema(value_type = Object)]
    pub data: Box<RawValue>,
    /// Publishing again with the same key returns the same event and delivers nothing new.
    /// 1-255 bytes, no control characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 255)]
    pub idempotency_key: Option<String>,
    /// Events with the same ordering key reach each endpoint in order (opt-in per webhook).
    /// 1-255 bytes, no control characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 255)]
    pub ordering_key: Option<String>,
}

/// The accepted event.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishedEventBody {
    /// The event id; also the `webhook-id` of its deliveries.
    pub id: Uuid,
    /// True when the idempotency key had been used before.
    pub duplicate: bool,
}

/// Several events in one request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PublishEventsBody {
    /// Up to 1,000 events.
    pub events: Vec<PublishEventBody>,
}

/// The accepted events, in request order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PublishedEventsBody {
    /// One entry per event.
    pub data: Vec<PublishedEventBody>,
}
