//! The dispatcher's SQL. Every statement is set-based (`unnest` of column arrays), so
//! a chunk of hundreds of deliveries costs a handful of round trips, never one per row.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use portico_queue::jobs::EventDispatch;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

/// Inserts events; one already recorded (a redelivered job, a re-published
/// idempotency key) is left as it is. Returns the ids that were new.
pub async fn insert_events(
    pool: &PgPool,
    events: &[&EventDispatch],
) -> Result<HashSet<Uuid>, sqlx::Error> {
    if events.is_empty() {
        return Ok(HashSet::new());
    }
    let n = events.len();
    let mut ids = Vec::with_capacity(n);
    let mut users = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    let mut payloads = Vec::with_capacity(n);
    let mut keys = Vec::with_capacity(n);
    let mut orderings = Vec::with_capacity(n);
    let mut accepted = Vec::with_capacity(n);
    for e in events {
        ids.push(e.event_id);
        users.push(e.user_id.as_str());
        types.push(e.event_type.as_str());
        payloads.push(e.data.get());
        keys.push(e.idempotency_key.as_str());
        orderings.push(e.ordering_key.as_deref());
        accepted.push(e.accepted_at);
    }
    let inserted: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO events (id, user_id, event_type, payload, idempotency_key, ordering_key, accepted_at)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[]::json[], $5::text[], $6::text[], $7::timestamptz[])
         ON CONFLICT (id) DO NOTHING
         RETURNING id",
    )
    .bind(&ids)
    .bind(&users)
    .bind(&types)
    .bind(&payloads)
    .bind(&keys)
    .bind(&orderings)
    .bind(&accepted)
    .fetch_all(pool)
    .await?;
    Ok(inserted.into_iter().collect())
}

/// The (webhook, event) pairs that already have a delivery, among `event_ids`: a
/// redelivered event must not be delivered again to those.
pub async fn existing_deliveries(
    pool: &PgPool,
    event_ids: &[Uuid],
) -> Result<HashSet<(Uuid, Uuid)>, sqlx::Error> {
    if event_ids.is_empty() {
        return Ok(HashSet::new());
    }
    let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT webhook_id, event_id FROM webhook_deliveries WHERE event_id = ANY($1)",
    )
    .bind(event_ids)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Attempt rows, column by column.
#[derive(Debug, Default)]
pub struct AttemptRows {
    /// Delivery of each attempt.
    pub delivery_id: Vec<Uuid>,
    /// 1-based attempt number.
    pub number: Vec<i32>,
    /// Sent headers (JSON object text).
    pub headers: Vec<String>,
    /// Response status.
    pub status: Vec<Option<i32>>,
    /// Truncated response body.
    pub body: Vec<Option<String>>,
    /// Latency in milliseconds.
    pub latency_ms: Vec<i32>,
    /// Error kind.
    pub error_kind: Vec<Option<&'static str>>,
    /// Error message.
    pub error_message: Vec<Option<String>>,
    /// Start time.
    pub started_at: Vec<DateTime<Utc>>,
}

/// New delivery rows, already in their resulting state.
#[derive(Debug, Default)]
pub struct NewDeliveryRows {
    /// Delivery id.
    pub id: Vec<Uuid>,
    /// Webhook.
    pub webhook_id: Vec<Uuid>,
    /// Event.
    pub event_id: Vec<Uuid>,
    /// Owner.
    pub user_id: Vec<String>,
    /// Event type.
    pub event_type: Vec<String>,
    /// The event's ordering key.
    pub ordering_key: Vec<Option<String>>,
    /// Stream sequence, only on ordered deliveries.
    pub ordering_seq: Vec<Option<i64>>,
    /// Resulting status.
    pub status: Vec<&'static str>,
    /// Attempts made (0 or 1).
    pub attempts: Vec<i32>,
    /// Retry budget.
    pub max_retries: Vec<i32>,
    /// Next attempt time (retrying, or deferred pending).
    pub next_attempt_at: Vec<Option<DateTime<Utc>>>,
    /// Status of the last response.
    pub last_status_code: Vec<Option<i32>>,
    /// Last error message.
    pub last_error: Vec<Option<String>>,
}

/// Updates of claimed (`delivering`) rows after their attempt.
#[derive(Debug, Default)]
pub struct ClaimedUpdates {
    /// Delivery id.
    pub id: Vec<Uuid>,
    /// The lease owner it was claimed with (replica and claim); a row whose owner
    /// changed is not ours any more.
    pub lease_owner: Vec<String>,
    /// Resulting status.
    pub status: Vec<&'static str>,
    /// Attempts made in total.
    pub attempts: Vec<i32>,
    /// Next attempt time.
    pub next_attempt_at: Vec<Option<DateTime<Utc>>>,
    /// Status of this attempt's response.
    pub last_status_code: Vec<Option<i32>>,
    /// This attempt's error.
    pub last_error: Vec<Option<String>>,
    /// Whether an attempt was made (otherwise the last status and error are kept).
    pub attempted: Vec<bool>,
}

/// Inserts new deliveries and, for those actually inserted, their attempts, in one
/// statement. A pair that already has a delivery (another replica got the same
/// redelivered job) is skipped along with its attempt. Returns the inserted ids.
///
/// `healed` webhooks (every attempt to them succeeded) get their failure counter reset
/// in the same statement, which touches only rows whose counter is not already zero: a
/// chunk of successful deliveries commits in one round trip, without a transaction
/// block and without locking its webhooks.
pub async fn insert_deliveries(
    executor: impl sqlx::PgExecutor<'_>,
    d: &NewDeliveryRows,
    a: &AttemptRows,
    healed: &[Uuid],
) -> Result<HashSet<Uuid>, sqlx::Error> {
    if d.id.is_empty() {
        return Ok(HashSet::new());
    }
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "WITH ins AS (
            INSERT INTO webhook_deliveries (id, webhook_id, event_id, user_id, event_type, ordering_key,
                ordering_seq, status, attempts, max_retries, next_attempt_at, last_status_code, last_error)
            SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[],
                $7::int8[], $8::text[], $9::int4[], $10::int4[], $11::timestamptz[], $12::int4[], $13::text[])
            ON CONFLICT (event_id, webhook_id) DO NOTHING
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
         )
         SELECT id FROM ins",
    )
    .bind(&d.id)
    .bind(&d.webhook_id)
    .bind(&d.event_id)
    .bind(&d.user_id)
    .bind(&d.event_type)
    .bind(&d.ordering_key)
    .bind(&d.ordering_seq)
    .bind(&d.status)
    .bind(&d.attempts)
    .bind(&d.max_retries)
    .bind(&d.next_attempt_at)
    .bind(&d.last_status_code)
    .bind(&d.last_error)
    .bind(&a.delivery_id)
    .bind(&a.number)
    .bind(&a.headers)
    .bind(&a.status)
    .bind(&a.body)
    .bind(&a.latency_ms)
    .bind(&a.error_kind)
    .bind(&a.error_message)
    .bind(&a.started_at)
    .bind(healed)
    .fetch_all(executor)
    .await?;
    Ok(ids.into_iter().collect())
}

/// Writes the results of claimed deliveries and their attempts in one statement; a
/// row whose lease is no longer ours (it expired and another replica took it, or a
/// manual retry reset it) is left alone. Returns the ids written.
pub async fn update_claimed(
    tx: &mut Transaction<'_, Postgres>,
    u: &ClaimedUpdates,
    a: &AttemptRows,
) -> Result<HashSet<Uuid>, sqlx::Error> {
    if u.id.is_empty() {
        return Ok(HashSet::new());
    }
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "WITH u AS (
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
         SELECT id FROM upd",
    )
    .bind(&u.id)
    .bind(&u.lease_owner)
    .bind(&u.status)
    .bind(&u.attempts)
    .bind(&u.next_attempt_at)
    .bind(&u.last_status_code)
    .bind(&u.last_error)
    .bind(&u.attempted)
    .bind(&a.delivery_id)
    .bind(&a.number)
    .bind(&a.headers)
    .bind(&a.status)
    .bind(&a.body)
    .bind(&a.latency_ms)
    .bind(&a.error_kind)
    .bind(&a.error_message)
    .bind(&a.started_at)
    .fetch_all(&mut **tx)
    .await?;
    Ok(ids.into_iter().collect())
}

/// What the attempts of one batch say about each endpoint's health.
#[derive(Debug, Default)]
pub struct HealthDeltas {
    /// Webhook.
    pub webhook_id: Vec<Uuid>,
    /// Failed attempts after the batch's last success (or in total, without one).
    pub trailing_failures: Vec<i32>,
    /// Whether any attempt succeeded (resets the counter first).
    pub had_success: Vec<bool>,
    /// Whether the endpoint answered 410 Gone.
    pub gone: Vec<bool>,
}

/// A webhook whose health changed in a way the owner must hear about.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HealthChange {
    /// Webhook.
    pub webhook_id: Uuid,
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

/// Applies health deltas: the failure counter grows with failures and restarts at a
/// success; 410 or reaching `disable_after` (0 = never) disables the endpoint. Rows
/// are locked in id order, so concurrent batches touching the same webhooks cannot
/// deadlock, and with `NO KEY UPDATE`, which does not conflict with the key-share
/// locks that inserting deliveries (foreign keys) takes on the same rows; webhooks with nothing to change (healthy and succeeding) are not touched
/// at all, so the healthy hot path takes no row locks.
pub async fn update_health(
    tx: &mut Transaction<'_, Postgres>,
    h: &HealthDeltas,
    disable_after: i32,
) -> Result<Vec<HealthChange>, sqlx::Error> {
    if h.webhook_id.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as(
        "WITH u AS (
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
         RETURNING w.id AS webhook_id, w.user_id, n.old_failures, n.new_failures, n.was_active,
                   w.active, w.disabled_reason",
    )
    .bind(&h.webhook_id)
    .bind(&h.trailing_failures)
    .bind(&h.had_success)
    .bind(&h.gone)
    .bind(disable_after)
    .fetch_all(&mut **tx)
    .await
}

/// A delivery claimed for an attempt, with what is needed to rebuild its request.
#[derive(Debug, sqlx::FromRow)]
pub struct ClaimedRow {
    /// Delivery id.
    pub id: Uuid,
    /// Webhook.
    pub webhook_id: Uuid,
    /// Event.
    pub event_id: Uuid,
    /// Owner.
    pub user_id: String,
    /// Event type.
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
pub async fn claim_due(
    pool: &PgPool,
    limit: i64,
    owner: &str,
    lease: std::time::Duration,
) -> Result<Vec<ClaimedRow>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE webhook_deliveries d
         SET status = 'delivering', lease_until = now() + make_interval(secs => $3),
             lease_owner = $2, updated_at = now()
         FROM events e
         WHERE e.id = d.event_id AND d.id IN (
             SELECT id FROM webhook_deliveries
             WHERE (status IN ('retrying', 'pending') AND next_attempt_at <= now())
                OR (status IN ('pending', 'delivering') AND lease_until IS NOT NULL AND lease_until < now())
             ORDER BY next_attempt_at
             LIMIT $1
             FOR UPDATE SKIP LOCKED)
         RETURNING d.id, d.webhook_id, d.event_id, d.user_id, d.event_type, d.attempts, d.max_retries,
                   d.lease_owner, e.payload::text AS payload, e.accepted_at",
    )
    .bind(limit)
    .bind(owner)
    .bind(lease.as_secs_f64())
    .fetch_all(pool)
    .await
}

/// Extends the lease of every delivery still claimed by `owner` (one claim of one
/// replica) while its attempts run, so a lease can be short without a slow endpoint
/// losing its claim.
pub async fn renew_leases(
    pool: &PgPool,
    owner: &str,
    lease: std::time::Duration,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE webhook_deliveries SET lease_until = now() + make_interval(secs => $2)
         WHERE lease_owner = $1 AND status = 'delivering'",
    )
    .bind(owner)
    .bind(lease.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Makes every delivery that `replica` had claimed before it restarted due now: the
/// process that claimed them is gone, so they need not wait for their lease to run out.
pub async fn reclaim_own_leases(pool: &PgPool, replica: &str) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE webhook_deliveries SET lease_until = now() - interval '1 millisecond'
         WHERE status = 'delivering' AND lease_owner LIKE $1 || '/%'",
    )
    .bind(replica.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"))
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Releases ordered deliveries whose turn has come: pending, not yet released, no
/// earlier non-final delivery with the same (webhook, ordering key), and a stream
/// sequence at or below `recorded_through` (every event job up to there has been
/// recorded, so no earlier event of the key can still appear). Released rows get a
/// `next_attempt_at` and the claim picks them up.
pub async fn release_ordered(pool: &PgPool, recorded_through: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE webhook_deliveries d SET next_attempt_at = now(), updated_at = now()
         WHERE d.status = 'pending' AND d.next_attempt_at IS NULL AND d.id IN (
             SELECT p.id FROM webhook_deliveries p
             WHERE p.ordering_seq IS NOT NULL AND p.status = 'pending' AND p.next_attempt_at IS NULL
               AND p.ordering_seq <= $1
               AND NOT EXISTS (
                   SELECT 1 FROM webhook_deliveries e
                   WHERE e.webhook_id = p.webhook_id AND e.ordering_key = p.ordering_key
                     AND e.ordering_seq IS NOT NULL AND e.ordering_seq < p.ordering_seq
                     AND e.status IN ('pending', 'retrying', 'delivering'))
             LIMIT 1000)",
    )
    .bind(recorded_through)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
