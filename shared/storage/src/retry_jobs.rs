//! Retry-failed jobs (`webhook_retry_jobs`): re-queueing a webhook's deliveries that
//! match a filter, as a durable, resumable, cancellable job.
//!
//! The gateway counts the matching deliveries and commits the job row with its outbox
//! entry ([`count_matching`], [`insert`]); owners read and cancel it ([`get`],
//! [`cancel`]). The dispatcher runs it ([`load_for_run`], [`mark_running`], then
//! [`lock_status`], [`requeue_chunk`] and [`add_processed`] in one transaction per
//! chunk, and [`mark_completed`]): a re-queued delivery is stamped with the job's id, so
//! it never matches the same job again, and a job resumed after a crash neither counts
//! nor re-queues a delivery twice. The `webhook_deliveries` statements here are the
//! job's own (which deliveries it matches and how it makes them due).

use chrono::{DateTime, Utc};
use portico_domain::ids::{RetryJobId, WebhookId};

/// One `webhook_retry_jobs` row as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryJobRow {
    /// The job.
    pub id: RetryJobId,
    /// The webhook whose deliveries it retries.
    pub webhook_id: WebhookId,
    /// `pending`, `running`, `completed`, `cancelled` or `failed`.
    pub status: String,
    /// A count-only job.
    pub dry_run: bool,
    /// What it retries (`RetryJobFilters` as JSON).
    pub filters: serde_json::Value,
    /// Retry budget per delivery from now on; `None` = the webhook's policy.
    pub max_retries: Option<i32>,
    /// Deliveries matching when the job was created.
    pub total: i64,
    /// Deliveries re-queued so far.
    pub processed: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// Which deliveries of a webhook a job retries: the statuses (`failed`, `retrying`),
/// and optionally an exact event type and a `created_at` range (`since` inclusive,
/// `until` exclusive).
#[derive(Debug, Clone, Copy)]
pub struct DeliveryMatch<'a> {
    /// Delivery statuses.
    pub statuses: &'a [String],
    /// Exact event type, or any.
    pub event_type: Option<&'a str>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
}

/// How many deliveries of `webhook_id` match `m`: the dry-run answer and the `total`
/// of a new job.
pub async fn count_matching(
    executor: impl sqlx::PgExecutor<'_>,
    webhook_id: WebhookId,
    m: &DeliveryMatch<'_>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM webhook_deliveries
            WHERE webhook_id = $1 AND status = ANY($2)
              AND ($3::text IS NULL OR event_type = $3)
              AND ($4::timestamptz IS NULL OR created_at >= $4)
              AND ($5::timestamptz IS NULL OR created_at < $5)"#,
        webhook_id.as_uuid(),
        m.statuses,
        m.event_type,
        m.since,
        m.until,
    )
    .fetch_one(executor)
    .await
}

/// A new `pending` job of `user_id` for `webhook_id` (the caller has checked they own
/// it). With an idempotency key already used for this webhook nothing is written and
/// `None` comes back: the caller answers with the existing job ([`by_idempotency_key`]).
pub async fn insert(
    executor: impl sqlx::PgExecutor<'_>,
    user_id: &str,
    webhook_id: WebhookId,
    idempotency_key: Option<&str>,
    filters: &serde_json::Value,
    max_retries: Option<i32>,
    total: i64,
) -> Result<Option<RetryJobRow>, sqlx::Error> {
    sqlx::query_as!(
        RetryJobRow,
        "INSERT INTO webhook_retry_jobs
           (id, webhook_id, user_id, idempotency_key, status, dry_run, filters, max_retries, total)
         VALUES ($1, $2, $3, $4, 'pending', false, $5, $6, $7)
         ON CONFLICT (webhook_id, idempotency_key) DO NOTHING
         RETURNING id, webhook_id, status, dry_run, filters, max_retries, total, processed,
                   created_at, updated_at",
        RetryJobId::generate().as_uuid(),
        webhook_id.as_uuid(),
        user_id,
        idempotency_key,
        filters,
        max_retries,
        total,
    )
    .fetch_optional(executor)
    .await
}

/// The job `user_id` created for `webhook_id` with this idempotency key, if any.
pub async fn by_idempotency_key(
    executor: impl sqlx::PgExecutor<'_>,
    user_id: &str,
    webhook_id: WebhookId,
    idempotency_key: &str,
) -> Result<Option<RetryJobRow>, sqlx::Error> {
    sqlx::query_as!(
        RetryJobRow,
        "SELECT id, webhook_id, status, dry_run, filters, max_retries, total, processed,
                created_at, updated_at
           FROM webhook_retry_jobs
          WHERE webhook_id = $1 AND user_id = $2 AND idempotency_key = $3",
        webhook_id.as_uuid(),
        user_id,
        idempotency_key,
    )
    .fetch_optional(executor)
    .await
}

/// One of `user_id`'s jobs of `webhook_id`.
pub async fn get(
    executor: impl sqlx::PgExecutor<'_>,
    user_id: &str,
    webhook_id: WebhookId,
    id: RetryJobId,
) -> Result<Option<RetryJobRow>, sqlx::Error> {
    sqlx::query_as!(
        RetryJobRow,
        "SELECT id, webhook_id, status, dry_run, filters, max_retries, total, processed,
                created_at, updated_at
           FROM webhook_retry_jobs WHERE id = $1 AND webhook_id = $2 AND user_id = $3",
        id.as_uuid(),
        webhook_id.as_uuid(),
        user_id,
    )
    .fetch_optional(executor)
    .await
}

/// Cancels one of `user_id`'s jobs if it is still `pending` or `running` (the
/// dispatcher sees it at its next chunk; deliveries already re-queued stay queued).
/// `None` when there is no such job or it has already finished.
pub async fn cancel(
    executor: impl sqlx::PgExecutor<'_>,
    user_id: &str,
    webhook_id: WebhookId,
    id: RetryJobId,
) -> Result<Option<RetryJobRow>, sqlx::Error> {
    sqlx::query_as!(
        RetryJobRow,
        "UPDATE webhook_retry_jobs SET status = 'cancelled', updated_at = now()
          WHERE id = $1 AND webhook_id = $2 AND user_id = $3 AND status IN ('pending', 'running')
          RETURNING id, webhook_id, status, dry_run, filters, max_retries, total, processed,
                    created_at, updated_at",
        id.as_uuid(),
        webhook_id.as_uuid(),
        user_id,
    )
    .fetch_optional(executor)
    .await
}

/// What the dispatcher needs to run a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobToRun {
    /// Only `pending` and `running` jobs are (still) run.
    pub status: String,
    /// The webhook whose deliveries it retries.
    pub webhook_id: WebhookId,
    /// What it retries (`RetryJobFilters` as JSON).
    pub filters: serde_json::Value,
    /// Retry budget override.
    pub max_retries: Option<i32>,
    /// A count-only job: completed without touching a delivery.
    pub dry_run: bool,
}

/// The job the dispatcher was handed; `None` when it is gone (deleted with its
/// webhook).
pub async fn load_for_run(
    executor: impl sqlx::PgExecutor<'_>,
    id: RetryJobId,
) -> Result<Option<JobToRun>, sqlx::Error> {
    sqlx::query_as!(
        JobToRun,
        "SELECT status, webhook_id, filters, max_retries, dry_run
           FROM webhook_retry_jobs WHERE id = $1",
        id.as_uuid(),
    )
    .fetch_optional(executor)
    .await
}

/// Fails a job whose stored filters cannot be read (it could never run).
pub async fn mark_failed(
    executor: impl sqlx::PgExecutor<'_>,
    id: RetryJobId,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE webhook_retry_jobs SET status = 'failed', updated_at = now() WHERE id = $1",
        id.as_uuid(),
    )
    .execute(executor)
    .await?;
    Ok(())
}

/// Sets a `pending` (or resumed `running`) job `running`; a job cancelled meanwhile
/// stays cancelled.
pub async fn mark_running(
    executor: impl sqlx::PgExecutor<'_>,
    id: RetryJobId,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE webhook_retry_jobs SET status = 'running', updated_at = now()
          WHERE id = $1 AND status IN ('pending', 'running')",
        id.as_uuid(),
    )
    .execute(executor)
    .await?;
    Ok(())
}

/// Sets a `running` job `completed`; a job cancelled meanwhile stays cancelled.
pub async fn mark_completed(
    executor: impl sqlx::PgExecutor<'_>,
    id: RetryJobId,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE webhook_retry_jobs SET status = 'completed', updated_at = now()
          WHERE id = $1 AND status = 'running'",
        id.as_uuid(),
    )
    .execute(executor)
    .await?;
    Ok(())
}

/// The job's status, locked (`FOR UPDATE`) until the caller's transaction ends: a
/// cancel waits for the chunk in hand and is seen by the next. `None` when the job is
/// gone.
pub async fn lock_status(
    conn: &mut sqlx::PgConnection,
    id: RetryJobId,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT status FROM webhook_retry_jobs WHERE id = $1 FOR UPDATE",
        id.as_uuid(),
    )
    .fetch_optional(conn)
    .await
}

/// Makes up to `limit` matching deliveries of the job's webhook due now (`retrying`,
/// lease dropped, a retry budget of `max_retries` more attempts, default the
/// webhook's), oldest first, and stamps them with the job's id so the job never
/// matches them again. Rows another transaction holds are skipped (`SKIP LOCKED`) and
/// picked up by a later chunk. Returns how many were re-queued (0: the job is done).
pub async fn requeue_chunk(
    conn: &mut sqlx::PgConnection,
    id: RetryJobId,
    webhook_id: WebhookId,
    m: &DeliveryMatch<'_>,
    max_retries: Option<i32>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let requeued = sqlx::query!(
        "WITH picked AS (
             SELECT d.id FROM webhook_deliveries d
             WHERE d.webhook_id = $2 AND d.status = ANY($3)
               AND ($4::text IS NULL OR d.event_type = $4)
               AND ($5::timestamptz IS NULL OR d.created_at >= $5)
               AND ($6::timestamptz IS NULL OR d.created_at < $6)
               AND d.last_retry_job_id IS DISTINCT FROM $1
             ORDER BY d.created_at, d.id
             LIMIT $8
             FOR UPDATE OF d SKIP LOCKED)
         UPDATE webhook_deliveries d SET
             status = 'retrying', next_attempt_at = now(), lease_until = NULL, lease_owner = NULL,
             last_retry_job_id = $1,
             max_retries = d.attempts + coalesce($7, w.max_retries),
             updated_at = now()
         FROM picked, webhooks w
         WHERE d.id = picked.id AND w.id = d.webhook_id",
        id.as_uuid(),
        webhook_id.as_uuid(),
        m.statuses,
        m.event_type,
        m.since,
        m.until,
        max_retries,
        limit,
    )
    .execute(conn)
    .await?
    .rows_affected();
    Ok(requeued)
}

/// Adds a chunk's re-queued deliveries to the job's `processed`, in the chunk's
/// transaction.
pub async fn add_processed(
    conn: &mut sqlx::PgConnection,
    id: RetryJobId,
    requeued: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE webhook_retry_jobs SET processed = processed + $2, updated_at = now()
          WHERE id = $1",
        id.as_uuid(),
        requeued,
    )
    .execute(conn)
    .await?;
    Ok(())
}
