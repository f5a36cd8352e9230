//! Dead letters (`job_dead_letters`) and the audit of what operators did with them
//! (`dead_letter_actions`).
//!
//! Workers record a job that will never be processed: [`record`] for a message that
//! could not even be decoded, [`record_job`] for a decoded job that failed for good
//! (with its owner and message id, inside the worker's transaction). Operators list
//! and inspect the records ([`list`], [`get`], [`actions`]) and resolve each one once:
//! [`lock`] reads it under a row lock, [`count_replays`] numbers a replay's fresh
//! message id, and [`resolve`] marks it replayed or discarded together with its audit
//! row, all in the operator's transaction (the replay's outbox row too). The gauge of
//! records waiting for an operator reads [`count_unresolved`].

use chrono::{DateTime, Utc};

/// Records a message that will never be processed (it could not be decoded), so
/// operators can inspect it. Every call adds a record.
pub async fn record(
    executor: impl sqlx::PgExecutor<'_>,
    consumer: &str,
    subject: &str,
    payload: &[u8],
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO job_dead_letters (consumer, subject, payload, reason) VALUES ($1, $2, $3, $4)",
        consumer,
        subject,
        payload,
        reason
    )
    .execute(executor)
    .await?;
    Ok(())
}

/// A decoded job that failed for good, as [`record_job`] records it.
#[derive(Debug, Clone, Copy)]
pub struct NewDeadLetter<'a> {
    /// The consumer that gives up on it, e.g. `webhook-dispatcher.events`.
    pub consumer: &'a str,
    /// The subject it arrived on.
    pub subject: &'a str,
    /// The encoded job.
    pub payload: &'a [u8],
    /// Why it failed.
    pub reason: &'a str,
    /// The job's owner, when it has one.
    pub user_id: Option<&'a str>,
    /// The job's own `Nats-Msg-Id`: one record per consumer and message id.
    pub message_id: &'a str,
}

/// Records a decoded job that failed for good. Recording the same job twice (its
/// termination was lost and it came back) keeps the first record; a job an operator
/// replayed or discarded that fails for good again reopens its record with the new
/// reason, so it waits for an operator once more. Returns whether a record was written
/// or reopened (false: an unresolved record of the job already existed).
pub async fn record_job(
    executor: impl sqlx::PgExecutor<'_>,
    d: &NewDeadLetter<'_>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "INSERT INTO job_dead_letters (consumer, subject, payload, reason, user_id, message_id)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (consumer, message_id) WHERE message_id IS NOT NULL DO UPDATE
             SET reason = EXCLUDED.reason, resolved_at = NULL, resolution = NULL
             WHERE job_dead_letters.resolved_at IS NOT NULL",
        d.consumer,
        d.subject,
        d.payload,
        d.reason,
        d.user_id,
        d.message_id
    )
    .execute(executor)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// How an operator resolved a dead letter: the words the `resolution` and `action`
/// columns hold (the domain's enum, so the row, the application and the API share it).
pub use portico_domain::dead_letters::Resolution;

/// A stored resolution word as the enum. The column's CHECK constraint admits only
/// these words, so nothing else can come back.
fn resolution(word: Option<String>) -> Option<Resolution> {
    word.as_deref().and_then(Resolution::parse)
}

/// Which dead letters [`list`] shows, by resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    /// Waiting for an operator.
    Unresolved,
    /// Resolved this way.
    Resolved(Resolution),
}

impl StatusFilter {
    /// The word the list statement compares with (`unresolved` or a resolution).
    fn as_str(self) -> &'static str {
        match self {
            Self::Unresolved => "unresolved",
            Self::Resolved(r) => r.as_str(),
        }
    }
}

/// Filters of [`list`] (every one optional).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeadLetterFilter<'a> {
    /// Only this consumer.
    pub consumer: Option<&'a str>,
    /// Only this owner.
    pub user_id: Option<&'a str>,
    /// Recorded at or after.
    pub since: Option<DateTime<Utc>>,
    /// Recorded before.
    pub until: Option<DateTime<Utc>>,
    /// Only this resolution.
    pub status: Option<StatusFilter>,
}

/// A recorded dead letter, without its payload (lists stay small).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterRow {
    /// Ascending in recording order.
    pub id: i64,
    /// The consumer that gave up on the job, e.g. `webhook-dispatcher.events`.
    pub consumer: String,
    /// The JetStream subject the job arrived on.
    pub subject: String,
    /// Why it was dead-lettered (its latest failure).
    pub reason: String,
    /// The job's owner, when known.
    pub user_id: Option<String>,
    /// The job's own `Nats-Msg-Id`, when it decoded.
    pub message_id: Option<String>,
    /// Size of the recorded payload.
    pub payload_bytes: i64,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
    /// When an operator resolved it; `None` while it waits for one.
    pub resolved_at: Option<DateTime<Utc>>,
    /// How it was resolved; `None` while unresolved.
    pub resolution: Option<Resolution>,
}

/// One page of dead letters matching `filter`, newest first, below `before_id` when
/// given. `limit` rows at most: callers ask for one more than the page to learn
/// whether another page exists.
pub async fn list(
    executor: impl sqlx::PgExecutor<'_>,
    filter: &DeadLetterFilter<'_>,
    before_id: Option<i64>,
    limit: i64,
) -> Result<Vec<DeadLetterRow>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT id, consumer, subject, reason, user_id, message_id,
                  octet_length(payload)::bigint AS "payload_bytes!", created_at, resolved_at, resolution
             FROM job_dead_letters
            WHERE ($1::text IS NULL OR consumer = $1)
              AND ($2::text IS NULL OR user_id = $2)
              AND ($3::timestamptz IS NULL OR created_at >= $3)
              AND ($4::timestamptz IS NULL OR created_at < $4)
              AND ($5::text IS NULL
                   OR ($5 = 'unresolved' AND resolved_at IS NULL)
                   OR resolution = $5)
              AND ($6::bigint IS NULL OR id < $6)
            ORDER BY id DESC LIMIT $7"#,
        filter.consumer,
        filter.user_id,
        filter.since,
        filter.until,
        filter.status.map(StatusFilter::as_str),
        before_id,
        limit
    )
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| DeadLetterRow {
            id: r.id,
            consumer: r.consumer,
            subject: r.subject,
            reason: r.reason,
            user_id: r.user_id,
            message_id: r.message_id,
            payload_bytes: r.payload_bytes,
            created_at: r.created_at,
            resolved_at: r.resolved_at,
            resolution: resolution(r.resolution),
        })
        .collect())
}

/// A dead letter with the bytes it recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterWithPayload {
    /// The record.
    pub record: DeadLetterRow,
    /// The recorded bytes (an encoded job, or whatever could not be decoded).
    pub payload: Vec<u8>,
}

/// One dead letter with its payload; `None` when there is no such record.
pub async fn get(
    executor: impl sqlx::PgExecutor<'_>,
    id: i64,
) -> Result<Option<DeadLetterWithPayload>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT id, consumer, subject, reason, user_id, message_id,
                  octet_length(payload)::bigint AS "payload_bytes!", created_at, resolved_at,
                  resolution, payload
             FROM job_dead_letters WHERE id = $1"#,
        id
    )
    .fetch_optional(executor)
    .await?;
    Ok(row.map(|r| DeadLetterWithPayload {
        record: DeadLetterRow {
            id: r.id,
            consumer: r.consumer,
            subject: r.subject,
            reason: r.reason,
            user_id: r.user_id,
            message_id: r.message_id,
            payload_bytes: r.payload_bytes,
            created_at: r.created_at,
            resolved_at: r.resolved_at,
            resolution: resolution(r.resolution),
        },
        payload: r.payload,
    }))
}

/// One operator action on a dead letter, as audited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRow {
    /// Ascending in the order the actions were taken.
    pub id: i64,
    /// `replayed` or `discarded` ([`Resolution`]'s words).
    pub action: String,
    /// The operator's name as given in `x-portico-operator` (or `operator`).
    pub operator: String,
    /// The request's `x-request-id`.
    pub request_id: Option<String>,
    /// The client's address.
    pub client_addr: Option<String>,
    /// The reason given in the request.
    pub reason: String,
    /// A replay's `Nats-Msg-Id`.
    pub replay_message_id: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Every action taken on dead letter `id`, oldest first (its audit trail).
pub async fn actions(
    executor: impl sqlx::PgExecutor<'_>,
    id: i64,
) -> Result<Vec<ActionRow>, sqlx::Error> {
    sqlx::query_as!(
        ActionRow,
        "SELECT id, action, operator, request_id, client_addr, reason, replay_message_id, at
           FROM dead_letter_actions WHERE dead_letter_id = $1 ORDER BY id",
        id
    )
    .fetch_all(executor)
    .await
}

/// The parts of a dead letter a resolution reads, under its row lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedDeadLetter {
    /// The recorded bytes (the job a replay re-publishes).
    pub payload: Vec<u8>,
    /// How it was resolved, when it already was.
    pub resolution: Option<Resolution>,
    /// When it was resolved.
    pub resolved_at: Option<DateTime<Utc>>,
}

/// Reads dead letter `id` and locks it (`FOR UPDATE`) until the caller's transaction
/// ends, so two operators cannot resolve it at once; `None` when there is no such
/// record.
pub async fn lock(
    executor: impl sqlx::PgExecutor<'_>,
    id: i64,
) -> Result<Option<LockedDeadLetter>, sqlx::Error> {
    let row = sqlx::query!(
        "SELECT payload, resolution, resolved_at FROM job_dead_letters WHERE id = $1 FOR UPDATE",
        id
    )
    .fetch_optional(executor)
    .await?;
    Ok(row.map(|r| LockedDeadLetter {
        payload: r.payload,
        resolution: resolution(r.resolution),
        resolved_at: r.resolved_at,
    }))
}

/// How many times dead letter `id` was replayed: a new replay's message id counts on
/// from it, so it never repeats an earlier one.
pub async fn count_replays(
    executor: impl sqlx::PgExecutor<'_>,
    id: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM dead_letter_actions
            WHERE dead_letter_id = $1 AND action = 'replayed'"#,
        id
    )
    .fetch_one(executor)
    .await
}

/// Who resolved a dead letter, and why: its audit row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Audit<'a> {
    /// The operator's name.
    pub operator: &'a str,
    /// The request's `x-request-id`.
    pub request_id: Option<&'a str>,
    /// The client's address.
    pub client_addr: Option<&'a str>,
    /// The reason the operator gave.
    pub reason: &'a str,
    /// A replay's `Nats-Msg-Id`.
    pub replay_message_id: Option<&'a str>,
}

/// Marks dead letter `id` resolved as `resolution` and writes its audit row, in the
/// caller's transaction (which holds the record's [`lock`]): a resolution is never
/// committed without its audit.
pub async fn resolve(
    conn: &mut sqlx::PgConnection,
    id: i64,
    resolution: Resolution,
    audit: &Audit<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE job_dead_letters SET resolved_at = now(), resolution = $2 WHERE id = $1",
        id,
        resolution.as_str()
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "INSERT INTO dead_letter_actions
             (dead_letter_id, action, operator, request_id, client_addr, reason, replay_message_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        id,
        resolution.as_str(),
        audit.operator,
        audit.request_id,
        audit.client_addr,
        audit.reason,
        audit.replay_message_id
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Dead letters no operator has replayed or discarded (read from a partial index).
pub async fn count_unresolved(executor: impl sqlx::PgExecutor<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM job_dead_letters WHERE resolved_at IS NULL"#
    )
    .fetch_one(executor)
    .await
}
