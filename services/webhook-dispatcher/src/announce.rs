//! Live announcements of what a batch committed ([`portico_queue::live`]): every
//! attempt, the state changes made without one, and endpoint state changes.
//!
//! While a batch is handled, [`Notes`] keeps what is needed for the announcements (a
//! reference to the shared event, ids and a few numbers: nothing is copied or
//! formatted); after the commit, [`Notes::announce`] publishes those of the rows that
//! were actually written, fire-and-forget, as one NATS message per owner and topic
//! ([`portico_queue::live::LiveBatch`]). With no listener anywhere the cost is one
//! serialisation per announcement and one hand-over to the NATS client per batch, never
//! a wait.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use portico_domain::ids::{DeliveryId, WebhookId};
use portico_domain::webhooks::DeliveryStatus;
use portico_queue::live::{
    DeliveryAttempt, DeliveryState, EndpointState, LiveEvent, LivePublisher,
};
use uuid::Uuid;

use crate::delivery::{Next, Planned};
use crate::envelope::PreparedEvent;

/// One attempt, as it will be announced.
struct AttemptNote {
    event: Arc<PreparedEvent>,
    delivery_id: Uuid,
    webhook_id: Uuid,
    attempt: i32,
    status: DeliveryStatus,
    http_status: Option<u16>,
    duration_ms: i32,
    error_kind: Option<&'static str>,
    next_attempt_at: Option<DateTime<Utc>>,
}

/// A state change without an attempt (a claimed delivery whose endpoint is gone).
struct StateNote {
    owner: String,
    delivery_id: DeliveryId,
    webhook_id: WebhookId,
    event_id: Uuid,
    status: DeliveryStatus,
    reason: &'static str,
}

/// An endpoint state change found while committing.
pub struct EndpointNote {
    /// The owner.
    pub owner: String,
    /// The webhook.
    pub webhook_id: WebhookId,
    /// `failing` or `disabled`.
    pub state: &'static str,
    /// Why it was disabled.
    pub reason: Option<String>,
    /// Consecutive failures after the batch.
    pub failures: i32,
}

/// What a batch will announce once committed.
#[derive(Default)]
pub struct Notes {
    attempts: Vec<AttemptNote>,
    states: Vec<StateNote>,
}

/// What a commit wrote, for the announcements that follow it.
pub struct Committed {
    /// The delivery rows written (a redelivered pair another replica recorded first
    /// is not, and is not announced).
    pub written: HashSet<DeliveryId>,
    /// Endpoint state changes.
    pub endpoints: Vec<EndpointNote>,
}

impl Committed {
    /// A commit that changed no endpoint.
    pub fn rows(written: HashSet<DeliveryId>) -> Self {
        Self {
            written,
            endpoints: Vec::new(),
        }
    }
}

impl Notes {
    /// Notes one attempt of `p`.
    pub fn attempt(
        &mut self,
        p: &Planned,
        attempt: i32,
        http_status: Option<u16>,
        latency: Duration,
        next: Next,
        error_kind: Option<&'static str>,
    ) {
        let next_attempt_at = match next {
            Next::Retry(at) => Some(at),
            _ => None,
        };
        self.attempts.push(AttemptNote {
            event: Arc::clone(&p.event),
            delivery_id: p.delivery_id,
            webhook_id: p.endpoint.id,
            attempt,
            status: next.status(),
            http_status,
            duration_ms: latency.as_millis().min(i32::MAX as u128) as i32,
            error_kind,
            next_attempt_at,
        });
    }

    /// Notes a claimed delivery failed because its endpoint is disabled or deleted.
    pub fn endpoint_inactive(
        &mut self,
        owner: &str,
        delivery_id: DeliveryId,
        webhook_id: WebhookId,
        event_id: Uuid,
    ) {
        self.states.push(StateNote {
            owner: owner.to_owned(),
            delivery_id,
            webhook_id,
            event_id,
            status: DeliveryStatus::Failed,
            reason: "the webhook is disabled or deleted",
        });
    }

    /// Publishes, after the commit, what `committed` wrote. Never waits.
    pub fn announce(&self, live: &LivePublisher, committed: &Committed) {
        let now = Utc::now();
        let mut batch = live.batch();
        for a in &self.attempts {
            if !committed.written.contains(&DeliveryId(a.delivery_id)) {
                continue;
            }
            batch.push(&LiveEvent::DeliveryAttempt(DeliveryAttempt {
                owner: a.event.user_id.as_str().into(),
                delivery_id: a.delivery_id,
                webhook_id: a.webhook_id,
                event_id: a.event.id,
                event_type: a.event.event_type.as_str().into(),
                attempt: a.attempt,
                status: a.status,
                http_status: a.http_status,
                duration_ms: a.duration_ms,
                error_kind: a.error_kind.map(Into::into),
                next_attempt_at: a.next_attempt_at,
                occurred_at: now,
            }));
        }
        for s in &self.states {
            if !committed.written.contains(&s.delivery_id) {
                continue;
            }
            batch.push(&LiveEvent::DeliveryState(DeliveryState {
                owner: s.owner.as_str().into(),
                delivery_id: s.delivery_id.as_uuid(),
                webhook_id: s.webhook_id.as_uuid(),
                event_id: Some(s.event_id),
                event_type: None,
                status: s.status,
                reason: Some(s.reason.into()),
                occurred_at: now,
            }));
        }
        for e in &committed.endpoints {
            batch.push(&LiveEvent::EndpointState(EndpointState {
                owner: e.owner.as_str().into(),
                webhook_id: e.webhook_id.as_uuid(),
                state: e.state.into(),
                reason: e.reason.as_deref().map(Into::into),
                consecutive_failures: Some(e.failures),
                occurred_at: now,
            }));
        }
        batch.send();
    }
}
