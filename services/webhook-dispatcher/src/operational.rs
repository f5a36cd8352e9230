//! Operational events: the owner hears about their endpoints through their own
//! webhooks (`portico.delivery.failing`, `.exhausted`, `.recovered`,
//! `portico.webhook.disabling_soon`, `.disabled`, and `portico.event.dead_lettered`),
//! never through silence.
//!
//! They are ordinary events of the owner (`Job::EventDispatchV1`), enqueued in the
//! outbox inside the transaction that recorded what they describe, so they cannot be
//! lost or sent for something that was not committed. Their ids derive from what they
//! are about (the delivery, or the webhook and the delivery that tipped it), so a
//! batch replayed after a crash produces the same events and they are deduplicated.
//! Deliveries of operational events never produce delivery-level operational events
//! (no loops); an endpoint failing them still counts towards being disabled.

use chrono::{DateTime, Utc};
use portico_queue::jobs::{EventDispatch, Job};
use serde_json::json;
use uuid::Uuid;

/// A delivery's first attempt failed; retries are scheduled.
pub const DELIVERY_FAILING: &str = "portico.delivery.failing";
/// A delivery failed for good (retries exhausted, or the endpoint is gone).
pub const DELIVERY_EXHAUSTED: &str = "portico.delivery.exhausted";
/// A delivery succeeded after at least one failed attempt.
pub const DELIVERY_RECOVERED: &str = "portico.delivery.recovered";
/// The endpoint reached 80 % of the failures that disable it.
pub const WEBHOOK_DISABLING_SOON: &str = "portico.webhook.disabling_soon";
/// The endpoint was disabled (410 Gone, or too many consecutive failures).
pub const WEBHOOK_DISABLED: &str = "portico.webhook.disabled";

/// An event could not be stored or delivered and was dead-lettered; nothing will be
/// delivered for it.
pub const EVENT_DEAD_LETTERED: &str = "portico.event.dead_lettered";

/// The owner's notice that one of their events was dead-lettered. Never sent for an
/// operational event itself (no loops).
pub fn dead_letter_event(event: &EventDispatch, reason: &str) -> Option<Job> {
    if event.event_type.starts_with("portico.") || event.user_id.contains('\0') {
        return None;
    }
    job(
        &event.user_id,
        EVENT_DEAD_LETTERED,
        format!("{EVENT_DEAD_LETTERED}:{}", event.event_id),
        json!({
            "eventId": event.event_id,
            "eventType": event.event_type,
            "reason": reason,
        }),
    )
}

/// The facts about one delivery an operational event reports.
#[derive(Debug, Clone)]
pub struct DeliveryFacts {
    /// Webhook.
    pub webhook_id: Uuid,
    /// Webhook URL.
    pub url: String,
    /// Delivery.
    pub delivery_id: Uuid,
    /// Event delivered.
    pub event_id: Uuid,
    /// Its type.
    pub event_type: String,
    /// Status of the last response, if any.
    pub last_status_code: Option<u16>,
    /// Attempts made.
    pub attempts: u32,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// When the next attempt is due, if one is.
    pub next_attempt_at: Option<DateTime<Utc>>,
}

fn job(owner: &str, event_type: &str, key: String, data: serde_json::Value) -> Option<Job> {
    let raw = serde_json::value::to_raw_value(&data).ok()?;
    Some(Job::EventDispatchV1(EventDispatch {
        event_id: portico_domain::ids::event_id(owner, &key),
        user_id: owner.to_owned(),
        event_type: event_type.to_owned(),
        data: raw,
        idempotency_key: key,
        ordering_key: None,
        accepted_at: Utc::now(),
        only_webhook_id: None,
    }))
}

fn delivery_data(f: &DeliveryFacts) -> serde_json::Value {
    json!({
        "webhookId": f.webhook_id,
        "url": f.url,
        "deliveryId": f.delivery_id,
        "eventId": f.event_id,
        "eventType": f.event_type,
        "lastStatusCode": f.last_status_code,
        "lastError": f.last_error,
        "attempts": f.attempts,
        "nextAttemptAt": f.next_attempt_at,
    })
}

/// A delivery-level event (`failing`, `exhausted`, `recovered`) for the owner.
pub fn delivery_event(kind: &str, owner: &str, facts: &DeliveryFacts) -> Option<Job> {
    job(
        owner,
        kind,
        format!("{kind}:{}", facts.delivery_id),
        delivery_data(facts),
    )
}

/// A webhook-level event (`disabling_soon`, `disabled`) for the owner; `facts` is the
/// delivery whose attempt tipped it over.
pub fn webhook_event(
    kind: &str,
    owner: &str,
    facts: &DeliveryFacts,
    reason: Option<&str>,
    consecutive_failures: i32,
    disable_after: i32,
) -> Option<Job> {
    let mut data = delivery_data(facts);
    if let serde_json::Value::Object(map) = &mut data {
        map.insert("reason".into(), json!(reason));
        map.insert("consecutiveFailures".into(), json!(consecutive_failures));
        map.insert("disableAfterFailures".into(), json!(disable_after));
    }
    job(
        owner,
        kind,
        format!("{kind}:{}:{}", facts.webhook_id, facts.delivery_id),
        data,
    )
}

/// The failure count at which the owner is warned: 80 % of the disabling threshold.
pub fn warning_threshold(disable_after: i32) -> i32 {
    ((disable_after.max(0) * 4 + 4) / 5).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same facts give the same event id (replays deduplicate); the warning comes
    /// at 80 % of the threshold.
    #[test]
    fn events_are_deterministic_and_warned_early() {
        let facts = DeliveryFacts {
            webhook_id: Uuid::now_v7(),
            url: "https://example.com/".into(),
            delivery_id: Uuid::now_v7(),
            event_id: Uuid::now_v7(),
            event_type: "order.created".into(),
            last_status_code: Some(500),
            attempts: 1,
            last_error: None,
            next_attempt_at: None,
        };
        let id = |j: Option<Job>| match j {
            Some(Job::EventDispatchV1(e)) => (e.event_id, e.event_type),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            id(delivery_event(DELIVERY_FAILING, "u", &facts)),
            id(delivery_event(DELIVERY_FAILING, "u", &facts))
        );
        assert_ne!(
            id(delivery_event(DELIVERY_FAILING, "u", &facts)).0,
            id(delivery_event(DELIVERY_EXHAUSTED, "u", &facts)).0
        );
        assert_eq!(warning_threshold(50), 40);
        assert_eq!(warning_threshold(5), 4);
        assert_eq!(warning_threshold(1), 1);
    }
}
