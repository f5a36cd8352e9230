//! The event-type catalogue: `GET /event-types`, the bodies of
//! [`portico_domain::event_types`] (one list behind the REST answer, the OpenAPI
//! `webhooks` section and the docs).

use portico_domain::event_types::{self, EventType, Origin};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// One event type: what it means, who sends it, its payload's JSON Schema and an
/// example.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventTypeBody {
    /// The event type, the `type` of the delivered body.
    #[schema(example = "bulk_order.completed")]
    pub name: String,
    /// `portico`: emitted by Portico, its schema is part of the contract; `platform`: a
    /// convention of the platform's services, delivered as published.
    pub origin: Origin,
    /// The component that emits it.
    #[schema(example = "batch-processor")]
    pub emitted_by: String,
    /// When it is sent and what it means.
    pub description: String,
    /// True for `portico.*` operational events, which `*` does not match: subscribe by
    /// name or with `portico.*`.
    pub operational: bool,
    /// JSON Schema (2020-12) of the event's `data`.
    #[schema(value_type = Object)]
    pub payload_schema: Value,
    /// An example `data`.
    #[schema(value_type = Object)]
    pub example: Value,
    /// The example as a whole delivered body `{"id", "type", "timestamp", "data"}`.
    #[schema(value_type = Object)]
    pub example_delivery: Value,
}

impl From<&EventType> for EventTypeBody {
    fn from(t: &EventType) -> Self {
        Self {
            name: t.name.to_owned(),
            origin: t.origin,
            emitted_by: t.emitted_by.to_owned(),
            description: t.description.to_owned(),
            operational: t.is_operational(),
            payload_schema: t.payload_schema.clone(),
            example: t.example.clone(),
            example_delivery: t.example_delivery(),
        }
    }
}

/// A delivery header and what it carries.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryHeaderBody {
    /// Header name.
    #[schema(example = "webhook-id")]
    pub name: String,
    /// What it carries.
    pub description: String,
}

/// What every delivery shares, and how published event types are named.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventConventionsBody {
    /// Event types published through `POST /events` are free-form; this is the naming
    /// convention.
    pub naming: String,
    /// The pattern every event type matches.
    #[schema(example = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")]
    pub pattern: String,
    /// JSON Schema of the delivered body, whatever the type (`data` is any JSON).
    #[schema(value_type = Object)]
    pub envelope_schema: Value,
    /// The Standard Webhooks headers of every delivery.
    pub headers: Vec<DeliveryHeaderBody>,
}

/// The whole catalogue (not paginated: it is short and fixed per release).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventTypeListBody {
    /// Portico's own event types first, then the platform's conventional ones, each
    /// group in name order.
    pub data: Vec<EventTypeBody>,
    /// The envelope, headers and naming rules every event type shares.
    pub conventions: EventConventionsBody,
}

/// The pattern of an event type (the domain's `validate_event_type`).
pub const EVENT_TYPE_PATTERN: &str = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$";

impl EventTypeListBody {
    /// The catalogue as the API answers it.
    pub fn catalogue() -> Self {
        Self {
            data: event_types::all().iter().map(Into::into).collect(),
            conventions: EventConventionsBody {
                naming: event_types::NAMING_CONVENTION.to_owned(),
                pattern: EVENT_TYPE_PATTERN.to_owned(),
                envelope_schema: event_types::envelope_schema(
                    serde_json::json!({"description": "The event's data: any JSON value, delivered exactly as published."}),
                ),
                headers: event_types::DELIVERY_HEADERS
                    .iter()
                    .map(|(name, description)| DeliveryHeaderBody {
                        name: (*name).to_owned(),
                        description: (*description).to_owned(),
                    })
                    .collect(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pattern stated here is the one the event-type schema uses.
    #[test]
    fn pattern_matches_the_shared_schema() {
        let schema = serde_json::to_value(crate::schema::event_type()).expect("schema");
        assert_eq!(schema["pattern"], EVENT_TYPE_PATTERN);
        let body = EventTypeListBody::catalogue();
        assert_eq!(body.data.len(), event_types::all().len());
        assert_eq!(body.conventions.headers.len(), 3);
    }
}
