//! The event-type catalogue: every event type Portico itself delivers, with its payload's
//! JSON Schema and an example, and the conventional families the platform publishes.
//!
//! One list serves three readers, so they cannot disagree: `GET /api/event-types`
//! (REST, for partners and the portal), the OpenAPI document's `webhooks` section (one
//! entry per type, the payload schema inside the Standard Webhooks envelope) and the
//! docs. A new event emitted by a Portico service is added here in the same change; the
//! services' tests check that their event names are listed.
//!
//! Event types published by the platform's own services (`POST /api/events`, gRPC
//! `PublishEvent`) are free-form: any name that [`crate::webhooks::validate_event_type`]
//! accepts, with any JSON `data`. Portico never parses that data; it delivers the bytes
//! it received. The [`Origin::Platform`] entries below record the conventions the
//! platform follows (and integration templates subscribe to), not a rule Portico checks.
//!
//! The schemas are JSON Schema 2020-12 (the dialect of OpenAPI 3.1) and describe the
//! event's `data`; every delivery wraps it in the same envelope ([`envelope_schema`]).

use std::sync::LazyLock;

use serde_json::{Value, json};

use crate::webhooks::{OPERATIONAL_EVENT_PREFIX, TEST_EVENT_TYPE};

/// Who emits an event type, which says how far its payload schema is a promise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Emitted by Portico itself: the payload schema is part of Portico's contract
    /// (changed only under the versioning policy, docs/versioning.md).
    Portico,
    /// Published by the platform's services through `POST /api/events`: the name and
    /// payload are the platform's convention; Portico delivers them unchanged.
    Platform,
}

impl Origin {
    /// Every origin, in catalogue order.
    pub const ALL: [Origin; 2] = [Origin::Portico, Origin::Platform];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Portico => "portico",
            Origin::Platform => "platform",
        }
    }
}

/// What a subscriber needs to know about one event type.
#[derive(Debug, Clone, PartialEq)]
pub struct EventType {
    /// The event type name, the `type` of the delivered body (`order.created`).
    pub name: &'static str,
    /// Who emits it.
    pub origin: Origin,
    /// Which component emits it (`gateway`, `webhook-dispatcher`, `batch-processor`,
    /// or `platform services`).
    pub emitted_by: &'static str,
    /// When it is sent and what it means.
    pub description: &'static str,
    /// JSON Schema (2020-12) of the event's `data`.
    pub payload_schema: Value,
    /// An example `data`, valid against `payload_schema`.
    pub example: Value,
}

impl EventType {
    /// True for Portico's operational events (`portico.*`), which the `*` filter does
    /// not match: an endpoint subscribes to them by name or with `portico.*`.
    pub fn is_operational(&self) -> bool {
        self.name.starts_with(OPERATIONAL_EVENT_PREFIX)
    }

    /// A full example delivery body (`{"id", "type", "timestamp", "data"}`) of this
    /// type, as the receiver gets it.
    pub fn example_delivery(&self) -> Value {
        json!({
            "id": EXAMPLE_EVENT_ID,
            "type": self.name,
            "timestamp": EXAMPLE_TIMESTAMP,
            "data": self.example,
        })
    }
}

/// `portico.delivery.failing`: a delivery's first attempt failed; retries are scheduled.
pub const DELIVERY_FAILING: &str = "portico.delivery.failing";
/// `portico.delivery.exhausted`: a delivery failed for good.
pub const DELIVERY_EXHAUSTED: &str = "portico.delivery.exhausted";
/// `portico.delivery.recovered`: a delivery succeeded after failed attempts.
pub const DELIVERY_RECOVERED: &str = "portico.delivery.recovered";
/// `portico.webhook.disabling_soon`: the endpoint reached 80 % of its failure limit.
pub const WEBHOOK_DISABLING_SOON: &str = "portico.webhook.disabling_soon";
/// `portico.webhook.disabled`: the endpoint was disabled.
pub const WEBHOOK_DISABLED: &str = "portico.webhook.disabled";
/// `portico.event.dead_lettered`: an event was dead-lettered and will not be delivered.
pub const EVENT_DEAD_LETTERED: &str = "portico.event.dead_lettered";
/// `bulk_order.completed`: a batch reached a final status.
pub const BULK_ORDER_COMPLETED: &str = "bulk_order.completed";
/// `order.created`: a bulk-order batch created an order.
pub const ORDER_CREATED: &str = "order.created";
/// `integration.credentials_rotated`: an integration's API credentials were regenerated.
pub const CREDENTIALS_ROTATED: &str = "integration.credentials_rotated";

/// The headers of every delivery (Standard Webhooks), each with what it carries.
pub const DELIVERY_HEADERS: [(&str, &str); 3] = [
    (
        "webhook-id",
        "The event id (a UUID): the same on every retry and every endpoint, so receivers deduplicate on it.",
    ),
    (
        "webhook-timestamp",
        "Unix time in seconds of this attempt; refuse deliveries too far from your clock (e.g. 5 minutes) against replays.",
    ),
    (
        "webhook-signature",
        "Space-separated `v1,<base64 HMAC-SHA256 of \"<webhook-id>.<webhook-timestamp>.<body>\">` entries, one per active signing secret (two during a rotation); accept the delivery when any entry matches.",
    ),
];

/// How the platform names the event types it publishes (free-form, but this is the
/// convention the catalogue and the integration templates follow).
pub const NAMING_CONVENTION: &str = "Lower-case `<resource>.<past-tense verb>` (order.created, order.cancelled), \
    1-128 characters of dot-separated segments of letters, digits, '_' and '-'. The `portico.` prefix is Portico's own \
    (operational events; `*` does not match it). Publish the resource's id in `data` (orderId) and an idempotency key \
    such as `order:<id>:created`, so a retried publish delivers once.";

/// The id in every example delivery.
pub const EXAMPLE_EVENT_ID: &str = "0193a6f2-5c1e-7b3a-9f10-2d4e6a8b0c12";
/// The timestamp in every example delivery.
pub const EXAMPLE_TIMESTAMP: &str = "2026-12-01T08:00:00.000000Z";

/// The catalogue, Portico's own types first, each group in name order.
pub fn all() -> &'static [EventType] {
    static CATALOGUE: LazyLock<Vec<EventType>> = LazyLock::new(build);
    &CATALOGUE
}

/// The catalogue entry of `name`, if Portico knows that type.
pub fn find(name: &str) -> Option<&'static EventType> {
    all().iter().find(|t| t.name == name)
}

/// JSON Schema of the delivered body: `{"id", "type", "timestamp", "data"}`, with
/// `data` described by `data_schema`.
pub fn envelope_schema(data_schema: Value) -> Value {
    json!({
        "type": "object",
        "description": "The body of every delivery (Standard Webhooks): the event's id, type, acceptance time and data.",
        "required": ["id", "type", "timestamp", "data"],
        "properties": {
            "id": {"type": "string", "format": "uuid", "description": "The event id; also the webhook-id header."},
            "type": {"type": "string", "description": "The event type."},
            "timestamp": {"type": "string", "format": "date-time", "description": "When Portico accepted the event (RFC 3339, microseconds, UTC)."},
            "data": data_schema,
        }
    })
}

fn uuid(description: &str) -> Value {
    json!({"type": "string", "format": "uuid", "description": description})
}

fn nullable(type_name: &str, format: Option<&str>, description: &str) -> Value {
    let mut schema = json!({"type": [type_name, "null"], "description": description});
    if let (Some(format), Value::Object(map)) = (format, &mut schema) {
        map.insert("format".into(), json!(format));
    }
    schema
}

/// The fields of the delivery-level operational events.
fn delivery_properties() -> serde_json::Map<String, Value> {
    let Value::Object(map) = json!({
        "webhookId": uuid("The endpoint."),
        "url": {"type": "string", "format": "uri", "description": "The endpoint's URL."},
        "deliveryId": uuid("The delivery (GET /api/webhooks/{webhookId}/deliveries/{deliveryId})."),
        "eventId": uuid("The event being delivered."),
        "eventType": {"type": "string", "description": "Its type."},
        "lastStatusCode": nullable("integer", None, "HTTP status of the last response; null when none came (timeout, connection refused)."),
        "lastError": nullable("string", None, "What went wrong in the last attempt, if anything."),
        "attempts": {"type": "integer", "minimum": 0, "description": "Attempts made so far."},
        "nextAttemptAt": nullable("string", Some("date-time"), "When the next attempt is due; null when none is."),
    }) else {
        unreachable!("a JSON object literal")
    };
    map
}

fn object(
    description: &str,
    properties: serde_json::Map<String, Value>,
    optional: &[&str],
) -> Value {
    let required: Vec<&String> = properties
        .keys()
        .filter(|k| !optional.contains(&k.as_str()))
        .collect();
    json!({
        "type": "object",
        "description": description,
        "required": required,
        "properties": properties,
    })
}

fn delivery_example(status: Option<u16>, attempts: u32, next: Option<&str>) -> Value {
    json!({
        "webhookId": "0193a6f0-1111-7c2d-8e3f-4a5b6c7d8e9f",
        "url": "https://partner.example.com/hooks",
        "deliveryId": "0193a6f2-6d2f-7c4b-8a21-3e5f7b9c1d23",
        "eventId": "0193a6f2-4b0d-7a29-8e0f-1c3d5f7a9b01",
        "eventType": "order.created",
        "lastStatusCode": status,
        "lastError": status.map_or(Some("connect timeout"), |_| None),
        "attempts": attempts,
        "nextAttemptAt": next,
    })
}

fn webhook_properties() -> serde_json::Map<String, Value> {
    let mut map = delivery_properties();
    map.insert(
        "reason".into(),
        json!({
            "type": ["string", "null"],
            "enum": ["gone", "failing", null],
            "description": "Why it was disabled: `gone` (the endpoint answered 410) or `failing` (too many consecutive failures); null in the warning.",
        }),
    );
    map.insert(
        "consecutiveFailures".into(),
        json!({"type": "integer", "minimum": 0, "description": "Consecutive failed attempts of the endpoint."}),
    );
    map.insert(
        "disableAfterFailures".into(),
        json!({"type": "integer", "minimum": 0, "description": "The count at which the endpoint is disabled (PORTICO_DISABLE_AFTER_FAILURES)."}),
    );
    map
}

fn webhook_example(reason: Option<&str>, failures: i32) -> Value {
    let mut example = delivery_example(Some(503), 3, None);
    if let Value::Object(map) = &mut example {
        map.insert("reason".into(), json!(reason));
        map.insert("consecutiveFailures".into(), json!(failures));
        map.insert("disableAfterFailures".into(), json!(50));
    }
    example
}

fn platform_order(name: &'static str, description: &'static str, example: Value) -> EventType {
    EventType {
        name,
        origin: Origin::Platform,
        emitted_by: "platform services",
        description,
        payload_schema: json!({
            "type": "object",
            "description": "Free-form: the platform's convention is the order's id and what changed; Portico delivers the published data unchanged.",
            "properties": {
                "orderId": {"type": "string", "description": "The order (convention)."}
            },
            "additionalProperties": true,
        }),
        example,
    }
}

fn build() -> Vec<EventType> {
    let mut counts = serde_json::Map::new();
    for (name, description) in [
        ("total", "Orders in the batch."),
        ("processed", "Orders with a result."),
        ("succeeded", "Orders created."),
        ("failed", "Orders refused (see errorSummary)."),
        (
            "duplicate",
            "Orders already created by an earlier submission (same clientOrderRef).",
        ),
        (
            "unprocessed",
            "Orders never processed (the batch was cancelled).",
        ),
    ] {
        counts.insert(
            name.into(),
            json!({"type": "integer", "minimum": 0, "description": description}),
        );
    }
    let mut types = vec![
        EventType {
            name: BULK_ORDER_COMPLETED,
            origin: Origin::Portico,
            emitted_by: "batch-processor",
            description: "A bulk-order batch reached a final status (completed, completed_with_errors, failed or cancelled). Sent once per batch, in the transaction that records the status.",
            payload_schema: object(
                "The batch's final state.",
                serde_json::Map::from_iter([
                    (
                        "batchId".to_owned(),
                        uuid("The batch (GET /api/bulk-orders/{batchId})."),
                    ),
                    (
                        "status".to_owned(),
                        json!({"type": "string", "enum": ["completed", "completed_with_errors", "failed", "cancelled"], "description": "The final status."}),
                    ),
                    (
                        "counts".to_owned(),
                        object("Per-order counts.", counts, &[]),
                    ),
                    (
                        "errorSummary".to_owned(),
                        json!({"type": "object", "additionalProperties": {"type": "integer", "minimum": 1}, "description": "Failed orders per error code."}),
                    ),
                    (
                        "parentBatchId".to_owned(),
                        nullable(
                            "string",
                            Some("uuid"),
                            "The batch this one retries (retry-failed), if any.",
                        ),
                    ),
                    (
                        "integrationId".to_owned(),
                        nullable(
                            "string",
                            Some("uuid"),
                            "The integration that submitted it; null for the user or a service.",
                        ),
                    ),
                    (
                        "completedAt".to_owned(),
                        nullable(
                            "string",
                            Some("date-time"),
                            "When it reached its final status.",
                        ),
                    ),
                ]),
                &[],
            ),
            example: json!({
                "batchId": "0193a6e8-0a1b-7c2d-9e3f-405162738495",
                "status": "completed_with_errors",
                "counts": {"total": 1000, "processed": 1000, "succeeded": 997, "failed": 2, "duplicate": 1, "unprocessed": 0},
                "errorSummary": {"invalid_currency": 2},
                "parentBatchId": null,
                "integrationId": "0193a6d0-7f00-7a11-8b22-c33d44e55f66",
                "completedAt": "2026-12-01T07:59:58.412Z",
            }),
        },
        EventType {
            name: CREDENTIALS_ROTATED,
            origin: Origin::Portico,
            emitted_by: "gateway",
            description: "An integration's API credentials were regenerated (POST /api/integrations/{id}/regenerate-credentials). The old secret keeps working until previousExpiresAt (null: revoked at once).",
            payload_schema: object(
                "The new key (never the secret).",
                serde_json::Map::from_iter([
                    ("integrationId".to_owned(), uuid("The integration.")),
                    (
                        "apiKey".to_owned(),
                        json!({"type": "string", "description": "The new public API key (ptk_...)."}),
                    ),
                    (
                        "previousExpiresAt".to_owned(),
                        nullable(
                            "string",
                            Some("date-time"),
                            "When the previous credentials stop working; null when they were revoked at once.",
                        ),
                    ),
                ]),
                &[],
            ),
            example: json!({
                "integrationId": "0193a6d0-7f00-7a11-8b22-c33d44e55f66",
                "apiKey": "ptk_3kq9Zr7TbW2mXc8vNp4hYs6d",
                "previousExpiresAt": "2026-12-02T08:00:00Z",
            }),
        },
        EventType {
            name: ORDER_CREATED,
            origin: Origin::Portico,
            emitted_by: "batch-processor",
            description: "A bulk-order batch created an order. Sent once per order, only while the owner has an active webhook subscribed to order.created, order.* or *. The platform may publish order.created for orders made elsewhere; those carry the platform's own data.",
            payload_schema: object(
                "The created order.",
                serde_json::Map::from_iter([
                    (
                        "orderId".to_owned(),
                        uuid("The order (GET /api/orders/{orderId})."),
                    ),
                    (
                        "clientOrderRef".to_owned(),
                        json!({"type": "string", "description": "The submitter's reference of the order."}),
                    ),
                    ("batchId".to_owned(), uuid("The batch that created it.")),
                    (
                        "integrationId".to_owned(),
                        nullable(
                            "string",
                            Some("uuid"),
                            "The integration that submitted the batch, if any.",
                        ),
                    ),
                    (
                        "currency".to_owned(),
                        json!({"type": "string", "pattern": "^[A-Z]{3}$", "description": "ISO 4217 code."}),
                    ),
                    (
                        "totalMinor".to_owned(),
                        json!({"type": "integer", "description": "Total in minor units (cents)."}),
                    ),
                    (
                        "total".to_owned(),
                        json!({"type": "string", "description": "Total as a decimal string in the currency's exponent (\"12.50\")."}),
                    ),
                    (
                        "lineItemCount".to_owned(),
                        json!({"type": "integer", "minimum": 1, "description": "Line items."}),
                    ),
                ]),
                &[],
            ),
            example: json!({
                "orderId": "0193a6e8-1b2c-7d3e-8f40-5162738495a6",
                "clientOrderRef": "PO-2026-000123",
                "batchId": "0193a6e8-0a1b-7c2d-9e3f-405162738495",
                "integrationId": null,
                "currency": "EUR",
                "totalMinor": 2599,
                "total": "25.99",
                "lineItemCount": 2,
            }),
        },
        EventType {
            name: DELIVERY_EXHAUSTED,
            origin: Origin::Portico,
            emitted_by: "webhook-dispatcher",
            description: "A delivery failed for good: its retries are exhausted, or the endpoint is gone (410). Retry it with POST /api/webhooks/{webhookId}/deliveries/{deliveryId}/retry. Never sent about an operational event's own delivery.",
            payload_schema: object("The delivery that failed.", delivery_properties(), &[]),
            example: delivery_example(Some(500), 6, None),
        },
        EventType {
            name: DELIVERY_FAILING,
            origin: Origin::Portico,
            emitted_by: "webhook-dispatcher",
            description: "A delivery's first attempt failed; retries are scheduled (nextAttemptAt). Never sent about an operational event's own delivery.",
            payload_schema: object("The delivery that is failing.", delivery_properties(), &[]),
            example: delivery_example(None, 1, Some("2026-12-01T08:00:01Z")),
        },
        EventType {
            name: DELIVERY_RECOVERED,
            origin: Origin::Portico,
            emitted_by: "webhook-dispatcher",
            description: "A delivery succeeded after at least one failed attempt.",
            payload_schema: object("The delivery that recovered.", delivery_properties(), &[]),
            example: delivery_example(Some(200), 3, None),
        },
        EventType {
            name: EVENT_DEAD_LETTERED,
            origin: Origin::Portico,
            emitted_by: "webhook-dispatcher",
            description: "One of your events could not be stored or fanned out and was dead-lettered: nothing will be delivered for it unless an operator replays it. Never sent about an operational event.",
            payload_schema: object(
                "The event that was dead-lettered.",
                serde_json::Map::from_iter([
                    ("eventId".to_owned(), uuid("The event.")),
                    (
                        "eventType".to_owned(),
                        json!({"type": "string", "description": "Its type."}),
                    ),
                    (
                        "reason".to_owned(),
                        json!({"type": "string", "description": "Why it was dead-lettered."}),
                    ),
                ]),
                &[],
            ),
            example: json!({
                "eventId": "0193a6f2-4b0d-7a29-8e0f-1c3d5f7a9b01",
                "eventType": "order.created",
                "reason": "gave up after 5 deliveries: database unavailable",
            }),
        },
        EventType {
            name: WEBHOOK_DISABLED,
            origin: Origin::Portico,
            emitted_by: "webhook-dispatcher",
            description: "The endpoint was disabled: it answered 410 Gone (reason gone) or failed disableAfterFailures times in a row (reason failing). Nothing is delivered to it until it is enabled again (PATCH /api/webhooks/{webhookId} with active: true). Delivered to the owner's other endpoints that subscribe to it.",
            payload_schema: object(
                "The endpoint and the delivery that tipped it over.",
                webhook_properties(),
                &[],
            ),
            example: webhook_example(Some("failing"), 50),
        },
        EventType {
            name: WEBHOOK_DISABLING_SOON,
            origin: Origin::Portico,
            emitted_by: "webhook-dispatcher",
            description: "Warning: the endpoint reached 80 % of the consecutive failures that disable it.",
            payload_schema: object(
                "The endpoint and the delivery that crossed the threshold.",
                webhook_properties(),
                &[],
            ),
            example: webhook_example(None, 40),
        },
        EventType {
            name: TEST_EVENT_TYPE,
            origin: Origin::Portico,
            emitted_by: "gateway",
            description: "Sent by POST /api/webhooks/{webhookId}/test to that endpoint only, whatever its event filters, to check it receives and verifies deliveries.",
            payload_schema: object(
                "Which endpoint was tested.",
                serde_json::Map::from_iter([
                    ("webhookId".to_owned(), uuid("The endpoint tested.")),
                    (
                        "message".to_owned(),
                        json!({"type": "string", "description": "A fixed human-readable line."}),
                    ),
                ]),
                &[],
            ),
            example: json!({
                "webhookId": "0193a6f0-1111-7c2d-8e3f-4a5b6c7d8e9f",
                "message": "This is a test event from Portico",
            }),
        },
        platform_order(
            "order.cancelled",
            "Convention: the platform cancelled an order.",
            json!({"orderId": "0193a6e8-1b2c-7d3e-8f40-5162738495a6", "reason": "customer_request"}),
        ),
        platform_order(
            "order.updated",
            "Convention: the platform changed an order (address, items, status).",
            json!({"orderId": "0193a6e8-1b2c-7d3e-8f40-5162738495a6", "changed": ["shippingAddress"]}),
        ),
    ];
    types.sort_by_key(|t| (t.origin != Origin::Portico, t.name));
    types
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhooks::{filter_matches, validate_event_type};

    /// Every name is a valid, unique event type; operational ones are exactly the
    /// `portico.*` ones and only `*` skips them.
    #[test]
    fn names_are_valid_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for t in all() {
            assert!(validate_event_type(t.name, "/type").is_ok(), "{}", t.name);
            assert!(seen.insert(t.name), "{} twice", t.name);
            assert_eq!(
                filter_matches("*", t.name),
                !t.is_operational(),
                "{}",
                t.name
            );
            assert!(!t.description.is_empty());
        }
        for name in [
            DELIVERY_FAILING,
            DELIVERY_EXHAUSTED,
            DELIVERY_RECOVERED,
            WEBHOOK_DISABLING_SOON,
            WEBHOOK_DISABLED,
            EVENT_DEAD_LETTERED,
            BULK_ORDER_COMPLETED,
            ORDER_CREATED,
            CREDENTIALS_ROTATED,
            TEST_EVENT_TYPE,
        ] {
            assert_eq!(
                find(name).map(|t| t.origin),
                Some(Origin::Portico),
                "{name}"
            );
        }
        assert!(find("order.shipped.v9").is_none());
    }

    /// Each example carries exactly the schema's properties, the required ones present,
    /// and every value has the declared JSON type: the example cannot drift from the
    /// schema it illustrates.
    #[test]
    fn examples_match_their_schemas() {
        for t in all() {
            check(&t.payload_schema, &t.example, t.name);
            assert_eq!(t.example_delivery()["data"], t.example);
        }
    }

    fn check(schema: &Value, value: &Value, at: &str) {
        let types: Vec<&str> = match &schema["type"] {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => return,
        };
        let actual = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        assert!(types.contains(&actual), "{at}: {actual} is not {types:?}");
        if let Some(values) = schema["enum"].as_array() {
            assert!(values.contains(value), "{at}: {value} not in enum");
        }
        let Value::Object(fields) = value else { return };
        let properties = schema["properties"].as_object();
        for required in schema["required"].as_array().into_iter().flatten() {
            let name = required.as_str().unwrap_or_default();
            assert!(fields.contains_key(name), "{at}: {name} missing");
        }
        for (name, field) in fields {
            match properties.and_then(|p| p.get(name)) {
                Some(sub) => check(sub, field, &format!("{at}.{name}")),
                None => assert!(
                    schema["additionalProperties"] != Value::Bool(false)
                        && (schema["additionalProperties"].is_object()
                            || schema["additionalProperties"] == Value::Bool(true)),
                    "{at}: {name} is not in the schema"
                ),
            }
        }
    }
}
