//! The jobs services hand each other. Versioned and tagged (`{"type": "event_dispatch.v1",
//! ...}`), so a new version can be rolled out while old messages are still queued.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::topology::JobKind;

/// One unit of asynchronous work. Adjacently tagged (`{"type": .., "job": {..}}`) so the
/// event payload can stay raw JSON text end to end: serde must buffer an internally
/// tagged enum, and a raw value cannot be buffered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", content = "job")]
pub enum Job {
    /// An accepted event to record and deliver to the owner's matching webhooks.
    #[serde(rename = "event_dispatch.v1")]
    EventDispatchV1(EventDispatch),
    /// A committed bulk-order batch to process.
    #[serde(rename = "bulk_order_batch.v1")]
    BulkOrderBatchV1 {
        /// The batch row to work through.
        batch_id: Uuid,
    },
    /// A durable retry-failed job for one webhook.
    #[serde(rename = "webhook_retry.v1")]
    WebhookRetryV1 {
        /// The `webhook_retry_jobs` row.
        job_id: Uuid,
    },
}

/// An event as accepted by the gateway: everything the dispatcher needs to record and
/// fan it out without reading anything back from the gateway.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventDispatch {
    /// Deterministic from (user, idempotency key): a re-published event maps to one row.
    pub event_id: Uuid,
    /// The owning user; only their webhooks receive it.
    pub user_id: String,
    /// The event type, e.g. `order.created`.
    pub event_type: String,
    /// The event's data, delivered as the `data` field of the body.
    pub data: Box<serde_json::value::RawValue>,
    /// The caller's idempotency key.
    pub idempotency_key: String,
    /// Opt-in ordering: events with the same key reach an endpoint in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<String>,
    /// When the gateway accepted it (RFC 3339 to the microsecond, what PostgreSQL
    /// keeps), the start of the delivery-latency clock.
    #[serde(
        serialize_with = "portico_domain::timestamp::serialize",
        deserialize_with = "portico_domain::timestamp::deserialize"
    )]
    pub accepted_at: chrono::DateTime<chrono::Utc>,
    /// Restrict delivery to one webhook (test events); `None` fans out by filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only_webhook_id: Option<Uuid>,
}

impl Job {
    /// Which subject and consumer this job travels on.
    pub fn kind(&self) -> JobKind {
        match self {
            Job::EventDispatchV1(_) => JobKind::EventDispatch,
            Job::BulkOrderBatchV1 { .. } => JobKind::BulkOrderBatch,
            Job::WebhookRetryV1 { .. } => JobKind::WebhookMaintenance,
        }
    }

    /// The `Nats-Msg-Id` for this job: JetStream drops a second publish with the same
    /// id inside the duplicate window, so publishing is safe to retry.
    pub fn message_id(&self) -> String {
        match self {
            Job::EventDispatchV1(e) => format!("evt:{}", e.event_id),
            Job::BulkOrderBatchV1 { batch_id } => format!("batch:{batch_id}"),
            Job::WebhookRetryV1 { job_id } => format!("retry:{job_id}"),
        }
    }

    /// Encodes the job as its JSON message body, in a buffer sized for it up front
    /// (an event's body is its data plus about 250 bytes of fields), not grown from
    /// serde_json's default of 128 bytes by reallocating and copying.
    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        let capacity = match self {
            Job::EventDispatchV1(e) => {
                e.data.get().len()
                    + e.user_id.len()
                    + e.event_type.len()
                    + e.idempotency_key.len()
                    + e.ordering_key.as_ref().map_or(0, String::len)
                    + 256
            }
            _ => 128,
        };
        let mut out = Vec::with_capacity(capacity);
        serde_json::to_writer(&mut out, self)?;
        Ok(out)
    }

    /// Decodes a message body.
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event's raw JSON payload survives encoding and decoding byte for byte.
    #[test]
    fn event_payload_round_trips_raw() {
        let job = Job::EventDispatchV1(EventDispatch {
            event_id: Uuid::nil(),
            user_id: "u".into(),
            event_type: "a.b".into(),
            data: serde_json::value::RawValue::from_string(r#"{"b": 1,  "a":[2]}"#.into()).unwrap(),
            idempotency_key: "k".into(),
            ordering_key: None,
            accepted_at: chrono::Utc::now(),
            only_webhook_id: None,
        });
        let bytes = job.encode().unwrap();
        match Job::decode(&bytes).unwrap() {
            Job::EventDispatchV1(e) => assert_eq!(e.data.get(), r#"{"b": 1,  "a":[2]}"#),
            other => panic!("decoded {other:?}"),
        }
    }

    /// The wire form is tagged and versioned, and round-trips.
    #[test]
    fn jobs_are_tagged_and_round_trip() {
        let job = Job::BulkOrderBatchV1 {
            batch_id: Uuid::nil(),
        };
        let text = String::from_utf8(job.encode().unwrap()).unwrap();
        assert!(text.contains(r#""type":"bulk_order_batch.v1""#), "{text}");
        assert_eq!(
            Job::decode(text.as_bytes()).unwrap().encode().unwrap(),
            text.as_bytes()
        );
        assert!(Job::decode(br#"{"type":"bulk_order_batch.v9"}"#).is_err());
    }
}
