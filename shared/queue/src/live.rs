//! Live announcements: what the workers committed, told on plain core-NATS subjects so
//! gateways can push it to WebSocket and gRPC listeners as it happens.
//!
//! # Subjects
//! `<prefix>.live.<owner token>.<topic>`, where `<prefix>` is the stream prefix of the
//! deployment ([`crate::Topology::prefix`]), `<owner token>` is [`OwnerToken`] (a hex
//! hash of the owner id: owner ids may hold dots, spaces or `>`, which NATS subjects
//! cannot) and `<topic>` is one of [`Topic`]. A gateway serving an owner subscribes
//! `<prefix>.live.<owner token>.>` and receives nothing of other owners.
//!
//! # Guarantees (and their absence)
//! Announcements are core NATS, not JetStream: at most once, no replay, no
//! acknowledgement. They are sent only *after* the transaction that made them true
//! committed, so a listener never hears of something that did not happen; a listener
//! that was away fills the gap from the REST lists. Publishing never waits: when the
//! NATS client's outgoing buffer is full the announcement is dropped and counted
//! ([`LIVE_DROPPED`]), so a live update can never slow a delivery or a batch.
//!
//! Every message is one JSON object with a `type` ([`LiveEvent`]), or several of them
//! separated by newlines (`\n`, which JSON text never holds unescaped): what one commit
//! announces to one owner's topic travels as one message ([`LiveBatch`]), so a chunk of
//! a thousand deliveries costs the worker, nats-server and every gateway one message,
//! not a thousand. The owner is inside every object, and the gateway checks it against
//! the listener (a hash collision can never leak one owner's updates to another).

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use portico_domain::bulk_orders::BatchStatus;
use portico_domain::timestamp::Rfc3339Micros;
use portico_domain::webhooks::DeliveryStatus;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Topology;

/// Announcements dropped because the NATS client could not take them at once.
pub const LIVE_DROPPED: &str = "portico_live_dropped_total";

/// A batched message is sent once it holds this many bytes (about 180 delivery
/// attempts): far under nats-server's default `max_payload` of 1 MiB, and small enough
/// that a gateway hands the first of them to listeners without a long wait.
const MAX_BATCH_BYTES: usize = 64 * 1024;

/// What a listener can subscribe to; also the last token of the subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Topic {
    /// `delivery.attempt` and `delivery.state`.
    Deliveries,
    /// `batch.progress`.
    Batches,
    /// `endpoint.state`.
    Endpoints,
    /// `credential.event`.
    Credentials,
}

impl Topic {
    /// Every topic, in a fixed order (bit positions of a topic set).
    pub const ALL: [Topic; 4] = [
        Topic::Deliveries,
        Topic::Batches,
        Topic::Endpoints,
        Topic::Credentials,
    ];

    /// The wire name, in subjects and in client messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Topic::Deliveries => "deliveries",
            Topic::Batches => "batches",
            Topic::Endpoints => "endpoints",
            Topic::Credentials => "credentials",
        }
    }

    /// Parses a wire name.
    pub fn parse(text: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.as_str() == text)
    }

    /// This topic's bit in a set of topics.
    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The subject token of one owner: the first 16 bytes of SHA-256 of the owner id, in
/// lower-case hex. Stable across processes and versions (every producer and every
/// gateway must compute the same token), and safe in a subject whatever the id holds.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OwnerToken([u8; 32]);

impl OwnerToken {
    /// The token of `owner`.
    pub fn of(owner: &str) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let digest = ring::digest::digest(&ring::digest::SHA256, owner.as_bytes());
        let mut out = [0u8; 32];
        for (i, byte) in digest.as_ref()[..16].iter().enumerate() {
            out[2 * i] = HEX[usize::from(byte >> 4)];
            out[2 * i + 1] = HEX[usize::from(byte & 0x0f)];
        }
        Self(out)
    }

    /// The token as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Debug for OwnerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The subject `owner`'s `topic` announcements go to.
pub fn subject(topology: &Topology, owner: &str, topic: Topic) -> String {
    format!(
        "{}.live.{}.{}",
        topology.prefix(),
        OwnerToken::of(owner).as_str(),
        topic.as_str()
    )
}

/// The wildcard that receives every announcement of `owner` (what a gateway
/// subscribes when the owner's first listener arrives).
pub fn owner_wildcard(topology: &Topology, owner: &str) -> String {
    format!(
        "{}.live.{}.>",
        topology.prefix(),
        OwnerToken::of(owner).as_str()
    )
}

/// One attempt at delivering an event to a webhook, as committed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryAttempt<'a> {
    /// The owner of the webhook.
    pub owner: Cow<'a, str>,
    /// The delivery (one event to one webhook).
    pub delivery_id: Uuid,
    /// The webhook.
    pub webhook_id: Uuid,
    /// The event.
    pub event_id: Uuid,
    /// The event's type.
    pub event_type: Cow<'a, str>,
    /// 1-based attempt number.
    pub attempt: i32,
    /// The delivery's status after this attempt (`succeeded`, `retrying`, `failed`).
    pub status: DeliveryStatus,
    /// The endpoint's HTTP status; absent without a response.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub http_status: Option<u16>,
    /// Wall time of the attempt.
    pub duration_ms: i32,
    /// Why it failed (`timeout`, `connect`, `http_status`, ...); absent on success.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error_kind: Option<Cow<'a, str>>,
    /// When the next attempt is due; absent when none is scheduled.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When the attempt was committed.
    #[serde(serialize_with = "portico_domain::timestamp::serialize")]
    pub occurred_at: DateTime<Utc>,
}

/// A delivery changed state without an attempt (a due retry whose endpoint was
/// disabled or deleted fails). Changes made by an attempt travel in
/// [`DeliveryAttempt::status`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryState<'a> {
    /// The owner.
    pub owner: Cow<'a, str>,
    /// The delivery.
    pub delivery_id: Uuid,
    /// The webhook.
    pub webhook_id: Uuid,
    /// The event, when known.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub event_id: Option<Uuid>,
    /// The event's type, when known.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub event_type: Option<Cow<'a, str>>,
    /// The new status.
    pub status: DeliveryStatus,
    /// Why, in words.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<Cow<'a, str>>,
    /// When the change was committed.
    #[serde(serialize_with = "portico_domain::timestamp::serialize")]
    pub occurred_at: DateTime<Utc>,
}

/// A batch's counts after a chunk committed, or its final state.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchProgress<'a> {
    /// The owner.
    pub owner: Cow<'a, str>,
    /// The batch.
    pub batch_id: Uuid,
    /// `processing` until the end, then the final status.
    pub status: BatchStatus,
    /// Orders in the batch.
    pub total: i32,
    /// Orders given a result so far.
    pub processed: i32,
    /// Orders created.
    pub succeeded: i32,
    /// Orders refused.
    pub failed: i32,
    /// Orders that already existed.
    pub duplicate: i32,
    /// When the counts were committed.
    #[serde(serialize_with = "portico_domain::timestamp::serialize")]
    pub occurred_at: DateTime<Utc>,
}

/// A webhook endpoint's state changed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointState<'a> {
    /// The owner.
    pub owner: Cow<'a, str>,
    /// The webhook.
    pub webhook_id: Uuid,
    /// `failing` (past 80 % of the failure threshold), `disabled` or `enabled`.
    pub state: Cow<'a, str>,
    /// Why (`failing`, `gone`, ...), when disabled.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<Cow<'a, str>>,
    /// Consecutive failures at the time.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub consecutive_failures: Option<i32>,
    /// When the change was committed.
    #[serde(serialize_with = "portico_domain::timestamp::serialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Something happened to an integration's credentials.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialEvent<'a> {
    /// The integration's owner.
    pub owner: Cow<'a, str>,
    /// The integration.
    pub integration_id: Uuid,
    /// `regenerated`, `revoked` or `deleted`.
    pub action: Cow<'a, str>,
    /// When the change was committed.
    #[serde(serialize_with = "portico_domain::timestamp::serialize")]
    pub occurred_at: DateTime<Utc>,
}

/// One live announcement, tagged by `type`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum LiveEvent<'a> {
    /// See [`DeliveryAttempt`].
    #[serde(rename = "delivery.attempt")]
    DeliveryAttempt(DeliveryAttempt<'a>),
    /// See [`DeliveryState`].
    #[serde(rename = "delivery.state")]
    DeliveryState(DeliveryState<'a>),
    /// See [`BatchProgress`].
    #[serde(rename = "batch.progress")]
    BatchProgress(BatchProgress<'a>),
    /// See [`EndpointState`].
    #[serde(rename = "endpoint.state")]
    EndpointState(EndpointState<'a>),
    /// See [`CredentialEvent`].
    #[serde(rename = "credential.event")]
    CredentialEvent(CredentialEvent<'a>),
}

impl LiveEvent<'_> {
    /// The owner whose listeners may see it.
    pub fn owner(&self) -> &str {
        match self {
            LiveEvent::DeliveryAttempt(m) => &m.owner,
            LiveEvent::DeliveryState(m) => &m.owner,
            LiveEvent::BatchProgress(m) => &m.owner,
            LiveEvent::EndpointState(m) => &m.owner,
            LiveEvent::CredentialEvent(m) => &m.owner,
        }
    }

    /// Its `type`.
    pub fn kind(&self) -> LiveKind {
        match self {
            LiveEvent::DeliveryAttempt(_) => LiveKind::DeliveryAttempt,
            LiveEvent::DeliveryState(_) => LiveKind::DeliveryState,
            LiveEvent::BatchProgress(_) => LiveKind::BatchProgress,
            LiveEvent::EndpointState(_) => LiveKind::EndpointState,
            LiveEvent::CredentialEvent(_) => LiveKind::CredentialEvent,
        }
    }

    /// The topic it belongs to (the last token of its subject).
    pub fn topic(&self) -> Topic {
        self.kind().topic()
    }
}

/// The kind of an announcement: its `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum LiveKind {
    /// [`LiveEvent::DeliveryAttempt`].
    #[serde(rename = "delivery.attempt")]
    DeliveryAttempt,
    /// [`LiveEvent::DeliveryState`].
    #[serde(rename = "delivery.state")]
    DeliveryState,
    /// [`LiveEvent::BatchProgress`].
    #[serde(rename = "batch.progress")]
    BatchProgress,
    /// [`LiveEvent::EndpointState`].
    #[serde(rename = "endpoint.state")]
    EndpointState,
    /// [`LiveEvent::CredentialEvent`].
    #[serde(rename = "credential.event")]
    CredentialEvent,
}

impl LiveKind {
    /// The wire name (`type`).
    pub fn as_str(self) -> &'static str {
        match self {
            LiveKind::DeliveryAttempt => "delivery.attempt",
            LiveKind::DeliveryState => "delivery.state",
            LiveKind::BatchProgress => "batch.progress",
            LiveKind::EndpointState => "endpoint.state",
            LiveKind::CredentialEvent => "credential.event",
        }
    }

    /// The topic announcements of this kind belong to.
    pub fn topic(self) -> Topic {
        match self {
            LiveKind::DeliveryAttempt | LiveKind::DeliveryState => Topic::Deliveries,
            LiveKind::BatchProgress => Topic::Batches,
            LiveKind::EndpointState => Topic::Endpoints,
            LiveKind::CredentialEvent => Topic::Credentials,
        }
    }
}

/// What a gateway reads of an announcement to route it to listeners: the fields any
/// filter, the owner check or the credential check looks at, and none of the rest
/// (which the gateway forwards as the bytes it received).
///
/// A flat struct, not [`LiveEvent`]: serde reads an internally tagged enum by
/// buffering every field first, which cost a gateway about 12,000 instructions per
/// announcement; this reads the object once and skips what it does not name.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveRouting {
    /// The `type`.
    #[serde(rename = "type")]
    pub kind: LiveKind,
    /// The owner whose listeners may see it.
    pub owner: String,
    /// When it was committed, as written (the cursor a gateway hands out): read
    /// without a calendar parse when it is in the fixed form publishers write.
    pub occurred_at: Rfc3339Micros,
    /// The webhook it concerns (deliveries, endpoint states).
    #[serde(default)]
    pub webhook_id: Option<Uuid>,
    /// The batch it concerns (batch progress).
    #[serde(default)]
    pub batch_id: Option<Uuid>,
    /// The event type it concerns (deliveries).
    #[serde(default)]
    pub event_type: Option<String>,
    /// The integration whose credentials changed (credential events).
    #[serde(default)]
    pub integration_id: Option<Uuid>,
    /// What happened to them (credential events).
    #[serde(default)]
    pub action: Option<String>,
}

impl LiveRouting {
    /// The topic it belongs to.
    pub fn topic(&self) -> Topic {
        self.kind.topic()
    }
}

/// Publishes announcements; cheap to clone (a NATS client and a topology).
#[derive(Clone)]
pub struct LivePublisher {
    nats: async_nats::Client,
    topology: Topology,
}

impl LivePublisher {
    /// A publisher on `nats` under `topology`'s prefix.
    pub fn new(nats: async_nats::Client, topology: Topology) -> Self {
        Self { nats, topology }
    }

    /// Announces `event` to its owner's listeners, fire-and-forget: one serialisation,
    /// one hand-over to the NATS client's buffer, no flush and no reply. Never waits:
    /// if the client cannot take the message at once (NATS unreachable, buffer full)
    /// it is dropped and counted. Call only after the transaction that made `event`
    /// true has committed.
    pub fn announce(&self, event: &LiveEvent<'_>) {
        let payload = match serde_json::to_vec(event) {
            Ok(p) => p,
            Err(err) => {
                tracing::warn!(%err, "live announcement not encodable; dropped");
                return;
            }
        };
        self.send(event.owner(), event.topic(), payload, 1);
    }

    /// A batch of announcements to send together after one commit.
    pub fn batch(&self) -> LiveBatch<'_> {
        LiveBatch {
            publisher: self,
            groups: Vec::new(),
        }
    }

    /// Hands `payload` (`count` announcements) to the NATS client without waiting.
    fn send(&self, owner: &str, topic: Topic, payload: Vec<u8>, count: u64) {
        let subject = subject(&self.topology, owner, topic);
        // Polled once, outside tokio's cooperative budget: a burst of announcements
        // from one task must not be refused merely because the task used its budget
        // (the budget would make a ready channel look full).
        let sent =
            tokio::task::unconstrained(self.nats.publish(subject, payload.into())).now_or_never();
        if !matches!(sent, Some(Ok(()))) {
            metrics::counter!(LIVE_DROPPED).increment(count);
        }
    }
}

/// The announcements of one commit, gathered into one message per owner and topic
/// (newline-separated JSON objects, in the order pushed) and published by
/// [`LiveBatch::send`], or sooner for a group past 64 KiB. Same guarantees as
/// [`LivePublisher::announce`]: fire-and-forget, after the commit.
pub struct LiveBatch<'p> {
    publisher: &'p LivePublisher,
    groups: Vec<BatchGroup>,
}

/// One owner's announcements of one topic, waiting in a [`LiveBatch`].
struct BatchGroup {
    owner: String,
    topic: Topic,
    payload: Vec<u8>,
    count: u64,
}

impl LiveBatch<'_> {
    /// Adds `event` to its owner's and topic's message.
    pub fn push(&mut self, event: &LiveEvent<'_>) {
        let (owner, topic) = (event.owner(), event.topic());
        // A commit's announcements are nearly always one owner's: a short scan.
        let index = match self
            .groups
            .iter()
            .position(|g| g.topic == topic && g.owner == owner)
        {
            Some(i) => i,
            None => {
                self.groups.push(BatchGroup {
                    owner: owner.to_owned(),
                    topic,
                    payload: Vec::with_capacity(1024),
                    count: 0,
                });
                self.groups.len() - 1
            }
        };
        let group = &mut self.groups[index];
        let before = group.payload.len();
        if before > 0 {
            group.payload.push(b'\n');
        }
        if let Err(err) = serde_json::to_writer(&mut group.payload, event) {
            group.payload.truncate(before);
            tracing::warn!(%err, "live announcement not encodable; dropped");
            return;
        }
        group.count += 1;
        if group.payload.len() >= MAX_BATCH_BYTES {
            let payload = std::mem::replace(&mut group.payload, Vec::with_capacity(1024));
            let count = std::mem::take(&mut group.count);
            self.publisher.send(&group.owner, topic, payload, count);
        }
    }

    /// Publishes what is gathered, one message per owner and topic.
    pub fn send(self) {
        for group in self.groups {
            if group.count > 0 {
                self.publisher
                    .send(&group.owner, group.topic, group.payload, group.count);
            }
        }
    }
}

/// The announcements in one NATS message: its lines, each one JSON object (a message
/// from [`LivePublisher::announce`] is a single line).
pub fn lines(payload: &[u8]) -> impl Iterator<Item = &[u8]> {
    payload
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Owner ids with subject-breaking characters give fixed-length hex tokens, the
    /// same in every process.
    #[test]
    fn owner_tokens_are_subject_safe_and_stable() {
        let t = Topology::new("T1", 1).unwrap();
        let s = subject(&t, "user.with spaces>*", Topic::Deliveries);
        let token = OwnerToken::of("user.with spaces>*");
        assert_eq!(s, format!("T1.live.{}.deliveries", token.as_str()));
        assert_eq!(token.as_str().len(), 32);
        assert!(token.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(OwnerToken::of("a"), OwnerToken::of("b"));
        // SHA-256("abc") starts with ba7816bf8f01cfea414140de5dae2223.
        assert_eq!(
            OwnerToken::of("abc").as_str(),
            "ba7816bf8f01cfea414140de5dae2223"
        );
        assert_eq!(
            owner_wildcard(&t, "abc"),
            "T1.live.ba7816bf8f01cfea414140de5dae2223.>"
        );
    }

    /// The wire form is tagged by `type`, camelCase, and reads back.
    #[test]
    fn messages_are_tagged_json() {
        let event = LiveEvent::DeliveryAttempt(DeliveryAttempt {
            owner: "u1".into(),
            delivery_id: Uuid::nil(),
            webhook_id: Uuid::nil(),
            event_id: Uuid::nil(),
            event_type: "order.created".into(),
            attempt: 2,
            status: DeliveryStatus::Succeeded,
            http_status: Some(200),
            duration_ms: 12,
            error_kind: None,
            next_attempt_at: None,
            occurred_at: Utc::now(),
        });
        let text = serde_json::to_string(&event).unwrap();
        assert!(text.starts_with(r#"{"type":"delivery.attempt","owner":"u1""#));
        assert!(text.contains(r#""httpStatus":200"#));
        assert!(!text.contains("errorKind"));
        let back: LiveEvent<'_> = serde_json::from_str(&text).unwrap();
        assert_eq!(back.topic(), Topic::Deliveries);
        assert_eq!(back.owner(), "u1");
        assert!(matches!(&back, LiveEvent::DeliveryAttempt(a) if a.event_type == "order.created"));
    }

    /// The routing view reads of every kind what the full message says, and nothing
    /// of another kind's fields.
    #[test]
    fn the_routing_view_agrees_with_the_full_message() {
        let now = Utc::now();
        let events = [
            LiveEvent::DeliveryState(DeliveryState {
                owner: "u1".into(),
                delivery_id: Uuid::now_v7(),
                webhook_id: Uuid::now_v7(),
                event_id: None,
                event_type: Some("order.paid".into()),
                status: DeliveryStatus::Failed,
                reason: Some("gone".into()),
                occurred_at: now,
            }),
            LiveEvent::BatchProgress(BatchProgress {
                owner: "u2".into(),
                batch_id: Uuid::now_v7(),
                status: BatchStatus::Processing,
                total: 3,
                processed: 1,
                succeeded: 1,
                failed: 0,
                duplicate: 0,
                occurred_at: now,
            }),
            LiveEvent::EndpointState(EndpointState {
                owner: "u3".into(),
                webhook_id: Uuid::now_v7(),
                state: "disabled".into(),
                reason: None,
                consecutive_failures: Some(5),
                occurred_at: now,
            }),
            LiveEvent::CredentialEvent(CredentialEvent {
                owner: "u4".into(),
                integration_id: Uuid::now_v7(),
                action: "revoked".into(),
                occurred_at: now,
            }),
        ];
        let uuid = |v: &serde_json::Value| v.as_str().map(|s| s.parse::<Uuid>().unwrap());
        for event in &events {
            let text = serde_json::to_vec(event).unwrap();
            let full: serde_json::Value = serde_json::from_slice(&text).unwrap();
            let route: LiveRouting = serde_json::from_slice(&text).unwrap();
            assert_eq!(route.owner, event.owner());
            assert_eq!(route.topic(), event.topic());
            assert_eq!(route.kind, event.kind());
            assert_eq!(full["type"], route.kind.as_str());
            assert_eq!(route.occurred_at, Rfc3339Micros::new(now));
            assert_eq!(route.webhook_id, uuid(&full["webhookId"]));
            assert_eq!(route.batch_id, uuid(&full["batchId"]));
            assert_eq!(route.event_type.as_deref(), full["eventType"].as_str());
            match event {
                LiveEvent::CredentialEvent(c) => {
                    assert_eq!(route.integration_id, Some(c.integration_id));
                    assert_eq!(route.action.as_deref(), Some(&*c.action));
                }
                _ => assert_eq!((route.integration_id, route.action), (None, None)),
            }
        }
    }
}
