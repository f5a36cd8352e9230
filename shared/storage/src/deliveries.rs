//! Webhook deliveries and their attempts (`webhook_deliveries`,
//! `webhook_delivery_attempts`): the dispatcher's hot path (recording new deliveries
//! with their first attempts, claiming due ones, writing their results, the endpoint
//! health those results imply) and the gateway's reads and manual retry.
//!
//! Every dispatcher statement is set-based (`unnest` of column arrays), so a chunk of
//! hundreds of deliveries costs a handful of round trips, never one per row. The
//! column-array types ([`NewDeliveryRows`], [`AttemptRows`], [`ClaimedUpdates`],
//! [`HealthDeltas`], [`IdArray`]) take one row at a time with typed ids and hold the
//! raw columns the statements bind, so nothing is copied between the caller and the
//! database.
//!
//! Array parameters of element types the macros do not match on their own (`&str`,
//! `Option<_>`) are bound with an explicit `as &[_]`, which PostgreSQL still checks
//! against the statement's `::type[]` casts.

use std::collections::HashSet;
use std::marker::PhantomData;

use chrono::{DateTime, Utc};
use portico_domain::ids::{DeliveryId, EventId, WebhookId};
use portico_domain::pagination::PageRequest;
use portico_domain::webhooks::DeliveryStatus;
use uuid::Uuid;

use crate::analytics::{HIST_LEN, RollupRows};

/// Typed ids bound as one `uuid[]` parameter: built from ids of one kind, so a list of
/// webhook ids cannot be passed where event ids are expected, and held as the UUID
/// column itself, so binding it copies nothing.
#[derive(Debug, Clone)]
pub struct IdArray<T> {
    uuids: Vec<Uuid>,
    kind: PhantomData<fn(T)>,
}

impl<T> Default for IdArray<T> {
    fn default() -> Self {
        Self {
            uuids: Vec::new(),
            kind: PhantomData,
        }
    }
}

impl<T: Into<Uuid>> IdArray<T> {
    /// Room for `n` ids without reallocating.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            uuids: Vec::with_capacity(n),
            kind: PhantomData,
        }
    }

    /// Adds one id.
    pub fn push(&mut self, id: T) {
        self.uuids.push(id.into());
    }

    /// Sorts the ids and drops repeats: the order in which rows are locked, the same in
    /// every statement, so concurrent statements cannot deadlock on them.
    pub fn sort_unique(&mut self) {
        self.uuids.sort_unstable();
        self.uuids.dedup();
    }

    /// How many ids.
    pub fn len(&self) -> usize {
        self.uuids.len()
    }

    /// Whether there are none (the statements are skipped then).
    pub fn is_empty(&self) -> bool {
        self.uuids.is_empty()
    }
}

impl<T: Into<Uuid>> FromIterator<T> for IdArray<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        Self {
            uuids: iter.into_iter().map(Into::into).collect(),
            kind: PhantomData,
        }
    }
}

/// One attempt to record: the request made for a delivery and what came back.
#[derive(Debug, Clone)]
pub struct NewAttempt {
    /// The delivery it was made for.
    pub delivery_id: DeliveryId,
    /// 1-based attempt number (unique per delivery: a repeated write is ignored).
    pub number: i32,
    /// Sent headers, as JSON object text (stored as `jsonb`).
    pub headers: String,
    /// Response status, if a response came.
    pub status: Option<i32>,
    /// Response body, already truncated.
    pub body: Option<String>,
    /// Request to end of response (or failure), in milliseconds.
    pub latency_ms: i32,
    /// Failure class (`timeout`, `connect`, `http_status`, ...).
    pub error_kind: Option<&'static str>,
    /// Failure detail.
    pub error_message: Option<String>,
    /// When the attempt started.
    pub started_at: DateTime<Utc>,
}

/// Attempt rows, column by column, as [`insert_deliveries`] and [`update_claimed`]
/// bind them.
#[derive(Debug, Default)]
pub struct AttemptRows {
    delivery_id: Vec<Uuid>,
    number: Vec<i32>,
    headers: Vec<String>,
    status: Vec<Option<i32>>,
    body: Vec<Option<String>>,
    latency_ms: Vec<i32>,
    error_kind: Vec<Option<&'static str>>,
    error_message: Vec<Option<String>>,
    started_at: Vec<DateTime<Utc>>,
}

impl AttemptRows {
    /// Adds one attempt (its strings are moved, not copied).
    pub fn push(&mut self, a: NewAttempt) {
        self.delivery_id.push(a.delivery_id.as_uuid());
        self.number.push(a.number);
        self.headers.push(a.headers);
        self.status.push(a.status);
        self.body.push(a.body);
        self.latency_ms.push(a.latency_ms);
        self.error_kind.push(a.error_kind);
        self.error_message.push(a.error_message);
        self.started_at.push(a.started_at);
    }

    /// How many attempts.
    pub fn len(&self) -> usize {
        self.delivery_id.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.delivery_id.is_empty()
    }
}

/// One new delivery row, already in the state its first handling left it in.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// Its id.
    pub id: DeliveryId,
    /// The webhook it goes to.
    pub webhook_id: WebhookId,
    /// The event it carries.
    pub event_id: EventId,
    /// The owner.
    pub user_id: String,
    /// The event's type.
    pub event_type: String,
    /// The event's ordering key.
    pub ordering_key: Option<String>,
    /// Stream sequence, only on ordered deliveries (they wait to be released).
    pub ordering_seq: Option<i64>,
    /// Resulting status.
    pub status: DeliveryStatus,
    /// Attempts made (0 or 1).
    pub attempts: i32,
    /// Retry budget.
    pub max_retries: i32,
    /// Next attempt time (retrying, or deferred pending).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Status of the last response.
    pub last_status_code: Option<i32>,
    /// Last error message.
    pub last_error: Option<String>,
}

/// New delivery rows, column by column, as [`insert_deliveries`] binds them.
#[derive(Debug, Default)]
pub struct NewDeliveryRows {
    id: Vec<Uuid>,
    webhook_id: Vec<Uuid>,
    event_id: Vec<Uuid>,
    user_id: Vec<String>,
    event_type: Vec<String>,
    ordering_key: Vec<Option<String>>,
    ordering_seq: Vec<Option<i64>>,
    status: Vec<&'static str>,
    attempts: Vec<i32>,
    max_retries: Vec<i32>,
    next_attempt_at: Vec<Option<DateTime<Utc>>>,
    last_status_code: Vec<Option<i32>>,
    last_error: Vec<Option<String>>,
}

impl NewDeliveryRows {
    /// Adds one row (its strings are moved, not copied).
    pub fn push(&mut self, d: NewDelivery) {
        self.id.push(d.id.as_uuid());
        self.webhook_id.push(d.webhook_id.as_uuid());
        self.event_id.push(d.event_id.as_uuid());
        self.user_id.push(d.user_id);
        self.event_type.push(d.event_type);
        self.ordering_key.push(d.ordering_key);
        self.ordering_seq.push(d.ordering_seq);
        self.status.push(d.status.as_str());
        self.attempts.push(d.attempts);
        self.max_retries.push(d.max_retries);
        self.next_attempt_at.push(d.next_attempt_at);
        self.last_status_code.push(d.last_status_code);
        self.last_error.push(d.last_error);
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        self.id.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.id.is_empty()
    }
}

/// The result of one claimed (`delivering`) delivery after its attempt.
#[derive(Debug, Clone)]
pub struct ClaimedUpdate {
    /// The delivery.
    pub id: DeliveryId,
    /// The lease owner it was claimed with (replica and claim); a row whose owner
    /// changed is not ours any more and is left alone.
    pub lease_owner: String,
    /// Resulting status.
    pub status: DeliveryStatus,
    /// Attempts made in total.
    pub attempts: i32,
    /// Next attempt time.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Status of this attempt's response.
    pub last_status_code: Option<i32>,
    /// This attempt's error.
    pub last_error: Option<String>,
    /// Whether an attempt was made (otherwise the last status and error are kept).
    pub attempted: bool,
}

/// Updates of claimed rows, column by column, as [`update_claimed`] binds them.
#[derive(Debug, Default)]
pub struct ClaimedUpdates {
    id: Vec<Uuid>,
    lease_owner: Vec<String>,
    status: Vec<&'static str>,
    attempts: Vec<i32>,
    next_attempt_at: Vec<Option<DateTime<Utc>>>,
    last_status_code: Vec<Option<i32>>,
    last_error: Vec<Option<String>>,
    attempted: Vec<bool>,
}

impl ClaimedUpdates {
    /// Adds one update (its strings are moved, not copied).
    pub fn push(&mut self, u: ClaimedUpdate) {
        self.id.push(u.id.as_uuid());
        self.lease_owner.push(u.lease_owner);
        self.status.push(u.status.as_str());
        self.attempts.push(u.attempts);
        self.next_attempt_at.push(u.next_attempt_at);
        self.last_status_code.push(u.last_status_code);
        self.last_error.push(u.last_error);
        self.attempted.push(u.attempted);
    }

    /// How many updates.
    pub fn len(&self) -> usize {
        self.id.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.id.is_empty()
    }
}

/// The (webhook, event) pairs that already have a delivery, among `event_ids`: a
/// redelivered event must not be delivered again to those.
pub async fn existing(
    executor: impl sqlx::PgExecutor<'_>,
    event_ids: &IdArray<EventId>,
) -> Result<HashSet<(WebhookId, EventId)>, sqlx::Error> {
    if event_ids.is_empty() {
        return Ok(HashSet::new());
    }
    let rows = sqlx::query!(
        "SELECT webhook_id, event_id FROM webhook_deliveries WHERE event_id = ANY($1)",
        &event_ids.uuids
    )
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (WebhookId(r.webhook_id), EventId(r.event_id)))
        .collect())
}

/// Inserts new deliveries and, for those actually inserted, their attempts, in one
/// statement. A pair that already has a delivery (another replica got the same
/// redelivered job) is skipped along with its attempt. Returns the inserted ids.
///
/// The skip is `ON CONFLICT DO NOTHING` on the primary key: delivery ids are derived
/// from (event, webhook, acceptance time) ([`portico_domain::ids::delivery_id`]), so a
/// redelivered pair makes the same id. No conflict target, so the statement works
/// on the partitioned table (migration 0022), which has no unique index on
/// `(event_id, webhook_id)`.
///
/// A delivery is inserted only while its webhook exists: the statement takes a
/// `FOR KEY SHARE` lock on each distinct webhook of the chunk once (it conflicts only
/// with deleting the webhook, not with updating it) and skips the rows of a webhook
/// already deleted. This is the foreign key's guarantee without its check per row
/// (migration 0023), and a webhook deleted under a chunk no longer fails the rest of
/// it. A deleted webhook's deliveries are removed by a trigger on `webhooks`.
///
/// `healed` webhooks (every attempt to them succeeded) get their failure counter reset
/// in the same statement, which touches only rows whose counter is not already zero: a
/// chunk of successful deliveries commits in one round trip, without a transaction
/// block.
pub async fn insert_deliveries(
    executor: impl sqlx::PgExecutor<'_>,
    d: &NewDeliveryRows,
    a: &AttemptRows,
    healed: &IdArray<WebhookId>,
) -> Result<HashSet<DeliveryId>, sqlx::Error> {
    let (ids, _) =
        insert_deliveries_with_rollups(executor, d, a, healed, &RollupRows::default()).await?;
    Ok(ids)
}

/// [`insert_deliveries`] that also adds the chunk's delivery rollups
/// ([`crate::analytics`]) in the same statement, so the dispatcher's common case stays
/// one round trip and the rollups commit atomically with the attempts they count.
/// `rollups` must describe every row of `d`: they are added only when every row was
/// inserted (the second flag of the result). When a redelivered pair was skipped the
/// rollups are not written, and the caller adds the rollups of the rows actually
/// inserted ([`crate::analytics::upsert`]), so nothing is counted twice.
pub async fn insert_deliveries_with_rollups(
    executor: impl sqlx::PgExecutor<'_>,
    d: &NewDeliveryRows,
    a: &AttemptRows,
    healed: &IdArray<WebhookId>,
    rollups: &RollupRows,
) -> Result<(HashSet<DeliveryId>, bool), sqlx::Error> {
    if d.is_empty() {
        return Ok((HashSet::new(), rollups.is_empty()));
    }
    let r = rollups.columns();
    let ids = sqlx::query!(
        r#"WITH hooks AS (
            SELECT id FROM webhooks WHERE id = ANY($2::uuid[]) FOR KEY SHARE
         ), ins AS (
            INSERT INTO webhook_deliveries (id, webhook_id, event_id, user_id, event_type, ordering_key,
                ordering_seq, status, attempts, max_retries, next_attempt_at, last_status_code, last_error)
            SELECT u.* FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[],
                $7::int8[], $8::text[], $9::int4[], $10::int4[], $11::timestamptz[], $12::int4[], $13::text[])
                AS u(id, webhook_id, event_id, user_id, event_type, ordering_key, ordering_seq, status,
                     attempts, max_retries, next_attempt_at, last_status_code, last_error)
            WHERE u.webhook_id IN (SELECT id FROM hooks)
            ON CONFLICT DO NOTHING
            RETURNING id
         ), att AS (
            INSERT INTO webhook_delivery_attempts (delivery_id, attempt_number, request_headers,
                response_status, response_body, latency_ms, error_kind, error_message, started_at)
            SELECT a.* FROM unnest($14::uuid[], $15::int4[], $16::text[]::jsonb[], $17::int4[], $18::text[],
                $19::int4[], $20::text[], $21::text[], $22::timestamptz[])
                AS a(delivery_id, attempt_number, request_headers, response_status, response_body,
                     latency_ms, error_kind, error_message, started_at)
            WHERE a.delivery_id IN (SELECT id FROM ins)
         ), healed AS (
            UPDATE webhooks SET consecutive_failures = 0
            WHERE id = ANY($23) AND consecutive_failures <> 0
         ), complete AS (
            SELECT count(*) = cardinality($1::uuid[]) AS all_in FROM ins
         ), rollup AS (
            INSERT INTO delivery_rollups AS r (user_id, bucket_secs, level, bucket_start, webhook_id, event_type,
                    attempts, succeeded, retrying, failed, exhausted, latency_sum_ms, latency_hist)
            SELECT u.user_id, u.bucket_secs, u.level, u.bucket_start, u.webhook_id, u.event_type, u.attempts,
                   u.succeeded, u.retrying, u.failed, u.exhausted, u.latency_sum_ms,
                   ($35::int8[])[(u.n - 1) * $36 + 1 : u.n * $36]
            FROM unnest($24::text[], $25::int4[], $26::timestamptz[], $27::uuid[], $28::text[], $29::int8[],
                        $30::int8[], $31::int8[], $32::int8[], $33::int8[], $34::int8[], $37::int2[]) WITH ORDINALITY
                 AS u(user_id, bucket_secs, bucket_start, webhook_id, event_type, attempts, succeeded,
                      retrying, failed, exhausted, latency_sum_ms, level, n)
            WHERE (SELECT all_in FROM complete)
            ON CONFLICT (user_id, bucket_secs, level, bucket_start, webhook_id, event_type) DO UPDATE SET
               attempts = r.attempts + EXCLUDED.attempts,
               succeeded = r.succeeded + EXCLUDED.succeeded,
               retrying = r.retrying + EXCLUDED.retrying,
               failed = r.failed + EXCLUDED.failed,
               exhausted = r.exhausted + EXCLUDED.exhausted,
               latency_sum_ms = r.latency_sum_ms + EXCLUDED.latency_sum_ms,
               latency_hist = (SELECT array_agg(COALESCE(h.a, 0) + COALESCE(h.b, 0) ORDER BY h.i)
                               FROM unnest(r.latency_hist, EXCLUDED.latency_hist) WITH ORDINALITY AS h(a, b, i))
         )
         SELECT ins.id AS "id!", complete.all_in AS "all_in!" FROM ins, complete"#,
        &d.id,
        &d.webhook_id,
        &d.event_id,
        &d.user_id,
        &d.event_type,
        &d.ordering_key as &[Option<String>],
        &d.ordering_seq as &[Option<i64>],
        &d.status as &[&str],
        &d.attempts,
        &d.max_retries,
        &d.next_attempt_at as &[Option<DateTime<Utc>>],
        &d.last_status_code as &[Option<i32>],
        &d.last_error as &[Option<String>],
        &a.delivery_id,
        &a.number,
        &a.headers,
        &a.status as &[Option<i32>],
        &a.body as &[Option<String>],
        &a.latency_ms,
        &a.error_kind as &[Option<&str>],
        &a.error_message as &[Option<String>],
        &a.started_at,
        &healed.uuids,
        r.user_id,
        r.bucket_secs,
        r.bucket_start,
        r.webhook_id,
        r.event_type,
        r.attempts,
        r.succeeded,
        r.retrying,
        r.failed,
        r.exhausted,
        r.latency_sum_ms,
        r.latency_hist,
        HIST_LEN as i64,
        r.level
    )
    .fetch_all(executor)
    .await?;
    let complete = ids.first().is_some_and(|row| row.all_in);
    let written = ids.into_iter().map(|row| DeliveryId(row.id)).collect();
    Ok((written, complete || rollups.is_empty()))
}

/// Writes the results of claimed deliveries and their attempts in one statement; a
/// row whose lease is no longer ours (it expired and another replica took it, or a
/// manual retry reset it) is left alone. Returns the ids written.
pub async fn update_claimed(
    executor: impl sqlx::PgExecutor<'_>,
    u: &ClaimedUpdates,
    a: &AttemptRows,
) -> Result<HashSet<DeliveryId>, sqlx::Error> {
    if u.is_empty() {
        return Ok(HashSet::new());
    }
    let ids = sqlx::query_scalar!(
        r#"WITH u AS (
            SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int4[], $5::timestamptz[],
                $6::int4[], $7::text[], $8::bool[])
                AS u(id, lease_owner, status, attempts, next_attempt_at, last_status_code, last_error, attempted)
         ), upd AS (
            UPDATE webhook_deliveries d SET
                status = u.status,
                attempts = u.attempts,
                next_attempt_at = u.next_attempt_at,
                lease_until = NULL,
                lease_owner = NULL,
                last_status_code = CASE WHEN u.attempted THEN u.last_status_code ELSE d.last_status_code END,
                last_error = CASE WHEN u.attempted OR u.status = 'failed' THEN u.last_error ELSE d.last_error END,
                updated_at = now()
            FROM u
            WHERE d.id = u.id AND d.status = 'delivering' AND d.lease_owner = u.lease_owner
            RETURNING d.id
         ), att AS (
            INSERT INTO webhook_delivery_attempts (delivery_id, attempt_number, request_headers,
                response_status, response_body, latency_ms, error_kind, error_message, started_at)
            SELECT a.* FROM unnest($9::uuid[], $10::int4[], $11::text[]::jsonb[], $12::int4[], $13::text[],
                $14::int4[], $15::text[], $16::text[], $17::timestamptz[])
                AS a(delivery_id, attempt_number, request_headers, response_status, response_body,
                     latency_ms, error_kind, error_message, started_at)
            WHERE a.delivery_id IN (SELECT id FROM upd)
            ON CONFLICT (delivery_id, attempt_number) DO NOTHING
         )
         SELECT id AS "id!" FROM upd"#,
        &u.id,
        &u.lease_owner,
        &u.status as &[&str],
        &u.attempts,
        &u.next_attempt_at as &[Option<DateTime<Utc>>],
        &u.last_status_code as &[Option<i32>],
        &u.last_error as &[Option<String>],
        &u.attempted,
        &a.delivery_id,
        &a.number,
        &a.headers,
        &a.status as &[Option<i32>],
        &a.body as &[Option<String>],
        &a.latency_ms,
        &a.error_kind as &[Option<&str>],
        &a.error_message as &[Option<String>],
        &a.started_at
    )
    .fetch_all(executor)
    .await?;
    Ok(ids.into_iter().map(DeliveryId).collect())
}

/// What the attempts of one batch say about one endpoint's health.
#[derive(Debug, Clone, Copy)]
pub struct HealthDelta {
    /// The webhook.
    pub webhook_id: WebhookId,
    /// Failed attempts after the batch's last success (or in total, without one).
    pub trailing_failures: i32,
    /// Whether any attempt succeeded (resets the counter first).
    pub had_success: bool,
    /// Whether the endpoint answered 410 Gone.
    pub gone: bool,
}

/// Health deltas, column by column, as [`update_health`] binds them.
#[derive(Debug, Default)]
pub struct HealthDeltas {
    webhook_id: Vec<Uuid>,
    trailing_failures: Vec<i32>,
    had_success: Vec<bool>,
    gone: Vec<bool>,
}

impl HealthDeltas {
    /// Adds one webhook's delta; push them in id order (the order rows are locked in).
    pub fn push(&mut self, h: HealthDelta) {
        self.webhook_id.push(h.webhook_id.as_uuid());
        self.trailing_failures.push(h.trailing_failures);
        self.had_success.push(h.had_success);
        self.gone.push(h.gone);
    }

    /// How many webhooks.
    pub fn len(&self) -> usize {
        self.webhook_id.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.webhook_id.is_empty()
    }
}

/// A webhook whose health changed in a way the owner must hear about.
#[derive(Debug, Clone)]
pub struct HealthChange {
    /// The webhook.
    pub webhook_id: WebhookId,
    /// Its owner.
    pub user_id: String,
    /// Consecutive failures before this batch.
    pub old_failures: i32,
    /// Consecutive failures after it.
    pub new_failures: i32,
    /// Active before.
    pub was_active: bool,
    /// Active after.
    pub active: bool,
    /// Why it was disabled, if it is.
    pub disabled_reason: Option<String>,
}

/// Applies health deltas to `webhooks`: the failure counter grows with failures and
/// restarts at a success; 410 or reaching `disable_after` (0 = never) disables the
/// endpoint. Rows are locked in id order, so concurrent batches touching the same
/// webhooks cannot deadlock, and with `NO KEY UPDATE`, which does not conflict with the
/// key-share locks that inserting deliveries (foreign keys) takes on the same rows;
/// webhooks with nothing to change (healthy and succeeding) are not touched at all, so
/// the healthy hot path takes no row locks. It lives here, not with the webhooks,
/// because it is one step of recording delivery results, in their transaction.
pub async fn update_health(
    executor: impl sqlx::PgExecutor<'_>,
    h: &HealthDeltas,
    disable_after: i32,
) -> Result<Vec<HealthChange>, sqlx::Error> {
    if h.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as!(
        HealthChange,
        r#"WITH u AS (
            SELECT * FROM unnest($1::uuid[], $2::int4[], $3::bool[], $4::bool[])
                AS u(id, trailing_failures, had_success, gone)
         ), locked AS (
            SELECT w.id, w.consecutive_failures AS old_failures, w.active AS was_active
            FROM webhooks w JOIN u ON u.id = w.id
            WHERE w.consecutive_failures <> 0 OR u.trailing_failures > 0 OR u.gone
            ORDER BY w.id
            FOR NO KEY UPDATE OF w
         ), n AS (
            SELECT u.id, u.gone, l.old_failures, l.was_active,
                   CASE WHEN u.had_success THEN u.trailing_failures
                        ELSE l.old_failures + u.trailing_failures END AS new_failures
            FROM u JOIN locked l ON l.id = u.id
         )
         UPDATE webhooks w SET
            consecutive_failures = n.new_failures,
            active = w.active AND NOT n.gone AND NOT ($5 > 0 AND n.new_failures >= $5),
            disabled_reason = CASE
                WHEN w.active AND n.gone THEN 'gone'
                WHEN w.active AND $5 > 0 AND n.new_failures >= $5 THEN 'failing'
                ELSE w.disabled_reason END,
            disabled_at = CASE
                WHEN w.active AND (n.gone OR ($5 > 0 AND n.new_failures >= $5)) THEN now()
                ELSE w.disabled_at END,
            updated_at = CASE
                WHEN w.active AND (n.gone OR ($5 > 0 AND n.new_failures >= $5)) THEN now()
                ELSE w.updated_at END
         FROM n
         WHERE w.id = n.id
         RETURNING w.id AS "webhook_id!", w.user_id AS "user_id!", n.old_failures AS "old_failures!",
                   n.new_failures AS "new_failures!", n.was_active AS "was_active!",
                   w.active AS "active!", w.disabled_reason"#,
        &h.webhook_id,
        &h.trailing_failures,
        &h.had_success,
        &h.gone,
        disable_after
    )
    .fetch_all(executor)
    .await
}

/// A delivery claimed for an attempt, with what is needed to rebuild its request.
#[derive(Debug, Clone)]
pub struct ClaimedRow {
    /// The delivery.
    pub id: DeliveryId,
    /// The webhook.
    pub webhook_id: WebhookId,
    /// The event.
    pub event_id: EventId,
    /// The owner.
    pub user_id: String,
    /// The event's type.
    pub event_type: String,
    /// Attempts made so far.
    pub attempts: i32,
    /// Retry budget.
    pub max_retries: i32,
    /// The lease owner written by the claim (`<replica>/<claim id>`).
    pub lease_owner: String,
    /// The event's data, verbatim.
    pub payload: String,
    /// When the event was accepted.
    pub accepted_at: DateTime<Utc>,
}

/// Claims up to `limit` due deliveries in one statement: retries whose time has come,
/// pending deliveries that were deferred or released, and rows whose lease expired (a
/// dispatcher died mid-attempt). `FOR UPDATE SKIP LOCKED` plus the status change to
/// `delivering` with a lease owned by `owner` means replicas never claim the same row
/// twice. The lease is short; [`renew_leases`] extends it while the attempts run.
///
/// A due delivery whose event row is missing can never be sent (its payload is gone):
/// the same statement fails it with a `last_error` saying so, rather than leaving it at
/// the head of the due order, where 500 such rows once made every claim come back
/// empty and stopped all retries.
pub async fn claim_due(
    executor: impl sqlx::PgExecutor<'_>,
    limit: i64,
    owner: &str,
    lease: std::time::Duration,
) -> Result<Vec<ClaimedRow>, sqlx::Error> {
    sqlx::query_as!(
        ClaimedRow,
        r#"WITH due AS MATERIALIZED (
             SELECT id, event_id FROM webhook_deliveries
             WHERE (status IN ('retrying', 'pending') AND next_attempt_at <= now())
                OR (status IN ('pending', 'delivering') AND lease_until IS NOT NULL AND lease_until < now())
             ORDER BY next_attempt_at
             LIMIT $1
             FOR UPDATE SKIP LOCKED),
         orphaned AS (
             UPDATE webhook_deliveries d
             SET status = 'failed', next_attempt_at = NULL, lease_until = NULL, lease_owner = NULL,
                 last_error = 'the event record is missing; the delivery cannot be rebuilt',
                 updated_at = now()
             FROM due
             WHERE d.id = due.id AND NOT EXISTS (SELECT 1 FROM events e WHERE e.id = due.event_id))
         UPDATE webhook_deliveries d
         SET status = 'delivering', lease_until = now() + make_interval(secs => $3),
             lease_owner = $2, updated_at = now()
         FROM due JOIN events e ON e.id = due.event_id
         WHERE d.id = due.id
         RETURNING d.id, d.webhook_id, d.event_id, d.user_id, d.event_type, d.attempts, d.max_retries,
                   d.lease_owner AS "lease_owner!", e.payload::text AS "payload!", e.accepted_at"#,
        limit,
        owner,
        lease.as_secs_f64()
    )
    .fetch_all(executor)
    .await
}

/// Extends the lease of every delivery still claimed by `owner` (one claim of one
/// replica) while its attempts run, so a lease can be short without a slow endpoint
/// losing its claim. Returns the rows renewed.
pub async fn renew_leases(
    executor: impl sqlx::PgExecutor<'_>,
    owner: &str,
    lease: std::time::Duration,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE webhook_deliveries SET lease_until = now() + make_interval(secs => $2)
         WHERE lease_owner = $1 AND status = 'delivering'",
        owner,
        lease.as_secs_f64()
    )
    .execute(executor)
    .await?;
    Ok(done.rows_affected())
}

/// Makes every delivery that `replica` had claimed before it restarted due now: the
/// process that claimed them is gone, so they need not wait for their lease to run out.
/// Returns the rows made due.
pub async fn reclaim_own_leases(
    executor: impl sqlx::PgExecutor<'_>,
    replica: &str,
) -> Result<u64, sqlx::Error> {
    let pattern = replica
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    let done = sqlx::query!(
        "UPDATE webhook_deliveries SET lease_until = now() - interval '1 millisecond'
         WHERE status = 'delivering' AND lease_owner LIKE $1 || '/%'",
        pattern
    )
    .execute(executor)
    .await?;
    Ok(done.rows_affected())
}

/// Releases ordered deliveries whose turn has come: pending, not yet released, no
/// earlier non-final delivery with the same (webhook, ordering key), and a stream
/// sequence at or below `recorded_through` (every event job up to there has been
/// recorded, so no earlier event of the key can still appear). Released rows get a
/// `next_attempt_at` and the claim picks them up. Returns the rows released.
pub async fn release_ordered(
    executor: impl sqlx::PgExecutor<'_>,
    recorded_through: i64,
) -> Result<u64, sqlx::Error> {
    // Each key's head, the non-final delivery with the lowest stream sequence, is found
    // in one ordered pass over the partial index `webhook_deliveries_ordered_idx`
    // (DISTINCT ON); a head still pending and not yet released takes its turn. An
    // anti-join ("no earlier non-final delivery of the key") compared every waiting row
    // with every earlier one of its key: 20,000 waiting deliveries on 100 keys took 2 s
    // per release, and released 35 a second. The turn-takers are joined by id once
    // found (MATERIALIZED), so the planner cannot re-run the search per row.
    let done = sqlx::query!(
        "WITH heads AS MATERIALIZED (
             SELECT DISTINCT ON (webhook_id, ordering_key)
                    id, status, next_attempt_at, ordering_seq
             FROM webhook_deliveries
             WHERE ordering_seq IS NOT NULL AND status IN ('pending', 'retrying', 'delivering')
             ORDER BY webhook_id, ordering_key, ordering_seq),
         turn AS MATERIALIZED (
             SELECT id FROM heads
             WHERE status = 'pending' AND next_attempt_at IS NULL AND ordering_seq <= $1
             LIMIT 1000)
         UPDATE webhook_deliveries d SET next_attempt_at = now(), updated_at = now()
         FROM turn
         WHERE d.id = turn.id AND d.status = 'pending' AND d.next_attempt_at IS NULL",
        recorded_through
    )
    .execute(executor)
    .await?;
    Ok(done.rows_affected())
}

/// Filters of a webhook's delivery list (every one optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryFilter {
    /// Only this status.
    pub status: Option<DeliveryStatus>,
    /// Only this exact event type.
    pub event_type: Option<String>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
}

/// One `webhook_deliveries` row as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    /// The delivery.
    pub id: DeliveryId,
    /// The webhook.
    pub webhook_id: WebhookId,
    /// The event; also the `webhook-id` header, stable across attempts.
    pub event_id: EventId,
    /// The event's type.
    pub event_type: String,
    /// One of [`DeliveryStatus`]'s names (checked by the table).
    pub status: String,
    /// Attempts made so far.
    pub attempts: i32,
    /// Retry budget in force.
    pub max_retries: i32,
    /// When the next attempt is due.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// HTTP status of the last attempt, if it got a response.
    pub last_status_code: Option<i32>,
    /// Last failure.
    pub last_error: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// One page of a webhook's deliveries, newest first (`limit + 1` rows, so the caller
/// learns whether another page exists). The caller has checked that the webhook is
/// the user's.
pub async fn list(
    executor: impl sqlx::PgExecutor<'_>,
    webhook_id: WebhookId,
    filter: &DeliveryFilter,
    page: &PageRequest,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    sqlx::query_as!(
        DeliveryRow,
        "SELECT d.id, d.webhook_id, d.event_id, d.event_type, d.status, d.attempts, d.max_retries,
                d.next_attempt_at, d.last_status_code, d.last_error, d.created_at, d.updated_at
           FROM webhook_deliveries d
          WHERE d.webhook_id = $1
            AND ($2::text IS NULL OR d.status = $2)
            AND ($3::text IS NULL OR d.event_type = $3)
            AND ($4::timestamptz IS NULL OR d.created_at >= $4)
            AND ($5::timestamptz IS NULL OR d.created_at < $5)
            AND ($6::timestamptz IS NULL OR (d.created_at, d.id) < ($6, $7))
          ORDER BY d.created_at DESC, d.id DESC LIMIT $8",
        webhook_id.as_uuid(),
        filter.status.map(DeliveryStatus::as_str),
        filter.event_type.as_deref(),
        filter.since,
        filter.until,
        page.after.map(|c| c.created_at),
        page.after.map(|c| c.id),
        page.fetch_limit()
    )
    .fetch_all(executor)
    .await
}

/// One delivery of one of `user_id`'s webhooks; `None` when it does not exist or is
/// someone else's (the same answer, so ids of others cannot be probed).
pub async fn get(
    executor: impl sqlx::PgExecutor<'_>,
    user_id: &str,
    webhook_id: WebhookId,
    delivery_id: DeliveryId,
) -> Result<Option<DeliveryRow>, sqlx::Error> {
    sqlx::query_as!(
        DeliveryRow,
        "SELECT d.id, d.webhook_id, d.event_id, d.event_type, d.status, d.attempts, d.max_retries,
                d.next_attempt_at, d.last_status_code, d.last_error, d.created_at, d.updated_at
           FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
          WHERE d.id = $1 AND d.webhook_id = $2 AND w.user_id = $3",
        delivery_id.as_uuid(),
        webhook_id.as_uuid(),
        user_id
    )
    .fetch_optional(executor)
    .await
}

/// One `webhook_delivery_attempts` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRow {
    /// 1-based.
    pub attempt_number: i32,
    /// Headers sent (signature included), a JSON object.
    pub request_headers: serde_json::Value,
    /// Response status, if a response came.
    pub response_status: Option<i32>,
    /// Response body, truncated by the dispatcher.
    pub response_body: Option<String>,
    /// Request to end of response (or failure).
    pub latency_ms: i32,
    /// Failure class.
    pub error_kind: Option<String>,
    /// Failure detail.
    pub error_message: Option<String>,
    /// When the attempt started.
    pub started_at: DateTime<Utc>,
}

/// Every attempt of one delivery, oldest first. The caller has checked that the
/// delivery is the user's ([`get`]).
pub async fn attempts(
    executor: impl sqlx::PgExecutor<'_>,
    delivery_id: DeliveryId,
) -> Result<Vec<AttemptRow>, sqlx::Error> {
    sqlx::query_as!(
        AttemptRow,
        "SELECT attempt_number, request_headers, response_status, response_body, latency_ms,
                error_kind, error_message, started_at
           FROM webhook_delivery_attempts WHERE delivery_id = $1 ORDER BY attempt_number",
        delivery_id.as_uuid()
    )
    .fetch_all(executor)
    .await
}

/// Schedules a new attempt of a failed (or retrying) delivery of one of `user_id`'s
/// webhooks now, with a fresh retry budget: `max_retries` more retries after this
/// attempt (`None`: the webhook's). A claim in flight loses its lease, so its late
/// result cannot overwrite this. `None` when no such delivery is failed or retrying.
pub async fn retry_now(
    executor: impl sqlx::PgExecutor<'_>,
    user_id: &str,
    webhook_id: WebhookId,
    delivery_id: DeliveryId,
    max_retries: Option<i32>,
) -> Result<Option<DeliveryRow>, sqlx::Error> {
    sqlx::query_as!(
        DeliveryRow,
        "UPDATE webhook_deliveries d
            SET status = 'retrying', next_attempt_at = now(), lease_until = NULL, lease_owner = NULL,
                max_retries = d.attempts + COALESCE($4, w.max_retries), updated_at = now()
           FROM webhooks w
          WHERE d.id = $1 AND d.webhook_id = $2 AND w.id = d.webhook_id AND w.user_id = $3
            AND d.status IN ('failed', 'retrying')
          RETURNING d.id, d.webhook_id, d.event_id, d.event_type, d.status, d.attempts, d.max_retries,
                    d.next_attempt_at, d.last_status_code, d.last_error, d.created_at, d.updated_at",
        delivery_id.as_uuid(),
        webhook_id.as_uuid(),
        user_id,
        max_retries
    )
    .fetch_optional(executor)
    .await
}
