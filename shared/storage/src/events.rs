//! Events (`events`): the record of every published event, written by the dispatcher
//! before it delivers them. Deliveries refer to their event, and a claimed retry reads
//! its payload back from here ([`crate::deliveries::claim_due`]).
//!
//! Events arrive in chunks of hundreds; [`insert`] records a whole chunk in one
//! statement (`unnest` of column arrays) from borrowed text, so recording them copies
//! nothing the caller already holds.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use portico_domain::ids::EventId;
use uuid::Uuid;

/// One event to record, borrowing its text from the caller's job.
#[derive(Debug, Clone, Copy)]
pub struct NewEvent<'a> {
    /// Deterministic from (user, idempotency key): a re-published event maps to one row.
    pub id: EventId,
    /// The owner.
    pub user_id: &'a str,
    /// The event's type.
    pub event_type: &'a str,
    /// The event's data, as JSON text (stored verbatim as `json`).
    pub payload: &'a str,
    /// The publisher's idempotency key.
    pub idempotency_key: &'a str,
    /// Opt-in ordering key.
    pub ordering_key: Option<&'a str>,
    /// When the gateway accepted it.
    pub accepted_at: DateTime<Utc>,
}

/// Events to record, column by column, as [`insert`] binds them.
#[derive(Debug, Default)]
pub struct NewEvents<'a> {
    id: Vec<Uuid>,
    user_id: Vec<&'a str>,
    event_type: Vec<&'a str>,
    payload: Vec<&'a str>,
    idempotency_key: Vec<&'a str>,
    ordering_key: Vec<Option<&'a str>>,
    accepted_at: Vec<DateTime<Utc>>,
}

impl<'a> NewEvents<'a> {
    /// Room for `n` events without reallocating.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            id: Vec::with_capacity(n),
            user_id: Vec::with_capacity(n),
            event_type: Vec::with_capacity(n),
            payload: Vec::with_capacity(n),
            idempotency_key: Vec::with_capacity(n),
            ordering_key: Vec::with_capacity(n),
            accepted_at: Vec::with_capacity(n),
        }
    }

    /// Adds one event.
    pub fn push(&mut self, e: NewEvent<'a>) {
        self.id.push(e.id.as_uuid());
        self.user_id.push(e.user_id);
        self.event_type.push(e.event_type);
        self.payload.push(e.payload);
        self.idempotency_key.push(e.idempotency_key);
        self.ordering_key.push(e.ordering_key);
        self.accepted_at.push(e.accepted_at);
    }

    /// How many events.
    pub fn len(&self) -> usize {
        self.id.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.id.is_empty()
    }
}

/// Inserts events; one already recorded (a redelivered job, a re-published
/// idempotency key) is left as it is. Returns the ids that were new.
///
/// Whether an event is new is decided by its key in `event_keys` (migration 0021), not
/// by a unique index of `events`: the events table is partitioned by day of acceptance
/// (migration 0022), and a re-published event carries another acceptance time, so
/// only the key table, unique on the id across all days, can tell. One statement: the
/// keys that went in select the event rows that go in.
///
/// The events themselves insert without `ON CONFLICT`: every event row has its key
/// (written by the same statement since migration 0021, and given to the older rows by
/// 0021 and 0022; retention deletes a key only after its event), so a new key means a
/// new row, and the speculative insertion's extra index probe and WAL record per event
/// bought nothing. Were a row ever there without its key, the statement fails with a
/// unique violation, a data error: its chunk is tried item by item and that one event
/// dead-lettered with the reason. `events` holds each id once (the dispatcher keeps
/// one job of each event in a chunk).
pub async fn insert(
    executor: impl sqlx::PgExecutor<'_>,
    events: &NewEvents<'_>,
) -> Result<HashSet<EventId>, sqlx::Error> {
    if events.is_empty() {
        return Ok(HashSet::new());
    }
    let inserted = sqlx::query_scalar!(
        r#"WITH fresh AS (
             INSERT INTO event_keys (id, accepted_at)
             SELECT * FROM unnest($1::uuid[], $7::timestamptz[])
             ON CONFLICT (id) DO NOTHING
             RETURNING id)
         INSERT INTO events (id, user_id, event_type, payload, idempotency_key, ordering_key, accepted_at)
         SELECT e.* FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[]::json[], $5::text[], $6::text[],
                                $7::timestamptz[])
              AS e(id, user_id, event_type, payload, idempotency_key, ordering_key, accepted_at)
         WHERE e.id IN (SELECT id FROM fresh)
         RETURNING id AS "id!""#,
        &events.id,
        &events.user_id as &[&str],
        &events.event_type as &[&str],
        &events.payload as &[&str],
        &events.idempotency_key as &[&str],
        &events.ordering_key as &[Option<&str>],
        &events.accepted_at
    )
    .fetch_all(executor)
    .await?;
    Ok(inserted.into_iter().map(EventId).collect())
}

/// One of an owner's events as the portal lists it: the payload only as an excerpt,
/// so a page of large events stays small.
#[derive(Debug, Clone)]
pub struct EventSummary {
    /// The event's id.
    pub id: Uuid,
    /// Its type.
    pub event_type: String,
    /// When the gateway accepted it.
    pub accepted_at: DateTime<Utc>,
    /// When the dispatcher recorded it (the sort key).
    pub created_at: DateTime<Utc>,
    /// The first [`PAYLOAD_EXCERPT_CHARS`] characters of the payload's JSON text.
    pub payload_excerpt: String,
}

/// How much of a payload [`recent`] returns.
pub const PAYLOAD_EXCERPT_CHARS: i32 = 300;

/// A keyset page of `user_id`'s events recorded since `since`, newest first, after a
/// position `(created_at, id)`; fetches up to `limit` rows.
///
/// There is no index on the owner (migration 0007 dropped it from the dispatcher's hot
/// path: one index entry per event). The time bound lets the BRIN index on
/// `created_at` skip everything older, so the reader pays for the window it asks
/// for, and publishing pays nothing.
pub async fn recent(
    executor: impl sqlx::PgExecutor<'_>,
    user_id: &str,
    since: DateTime<Utc>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<EventSummary>, sqlx::Error> {
    sqlx::query_as!(
        EventSummary,
        r#"SELECT id, event_type, accepted_at, created_at,
                  left(payload::text, $5) AS "payload_excerpt!"
           FROM events
           WHERE user_id = $1 AND created_at >= $2
             AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4::uuid))
           ORDER BY created_at DESC, id DESC
           LIMIT $6"#,
        user_id,
        since,
        after.map(|(at, _)| at),
        after.map(|(_, id)| id),
        PAYLOAD_EXCERPT_CHARS,
        limit,
    )
    .fetch_all(executor)
    .await
}
