//! Retry-failed jobs (`Job::WebhookRetryV1`): re-queue a webhook's deliveries that match
//! a filter, as a durable, resumable, cancellable job.
//!
//! The gateway commits a `webhook_retry_jobs` row and publishes the job through the
//! outbox. Here the job is set `running`, then worked through in chunks of 1,000: one
//! transaction locks the job row (so a cancel waits for the chunk in hand and is seen
//! by the next), makes the chunk's deliveries due (`retrying`, `next_attempt_at =
//! now()`, a raised retry budget) and marks them with the job's id, and adds the
//! chunk to `processed`. Marked rows never match the same job again, so a dispatcher
//! that dies mid-job resumes where the last commit left off, never counting or
//! re-queueing a delivery twice, and a re-queued delivery that fails again is not
//! picked up again by the same job. The retry poller then delivers them.

use std::time::Duration;

use portico_domain::webhooks::RetryJobFilters;
use portico_queue::consumer::{JobMessage, Outcome};
use portico_queue::jobs::Job;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Deliveries re-queued per transaction.
pub const CHUNK: i64 = 1_000;

/// Why a job stopped before its end.
#[derive(Debug, thiserror::Error)]
enum Interrupted {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the dispatcher is shutting down")]
    Shutdown,
}

/// Runs one maintenance job and returns what to do with its message. On shutdown the
/// job stops between chunks and is handed back at once, to resume elsewhere.
pub async fn handle(pool: &PgPool, message: &JobMessage, shutdown: &CancellationToken) -> Outcome {
    match &message.job {
        Job::WebhookRetryV1 { job_id } => {
            match run_retry_job(pool, *job_id, message, shutdown).await {
                Ok(()) => Outcome::Done,
                Err(Interrupted::Shutdown) => Outcome::RetryAfter(Duration::ZERO),
                Err(err) => {
                    tracing::warn!(%err, job = %job_id, "retry-failed job interrupted; it resumes on redelivery");
                    Outcome::RetryAfter(message.backoff())
                }
            }
        }
        other => Outcome::Poison(format!("not a webhook maintenance job: {other:?}")),
    }
}

type JobRow = (String, Uuid, serde_json::Value, Option<i32>, bool);

async fn run_retry_job(
    pool: &PgPool,
    job_id: Uuid,
    message: &JobMessage,
    shutdown: &CancellationToken,
) -> Result<(), Interrupted> {
    let row: Option<JobRow> = sqlx::query_as(
        "SELECT status, webhook_id, filters, max_retries, dry_run FROM webhook_retry_jobs WHERE id = $1",
    )
    .bind(job_id)
    .fetch_optional(pool)
    .await?;
    // Gone (its webhook was deleted) or already finished: nothing to do.
    let Some((status, webhook_id, filters, max_retries, dry_run)) = row else {
        return Ok(());
    };
    if !matches!(status.as_str(), "pending" | "running") {
        return Ok(());
    }
    let filters: RetryJobFilters = match serde_json::from_value(filters) {
        Ok(f) => f,
        Err(err) => {
            tracing::error!(%err, job = %job_id, "unreadable retry job filters; failing the job");
            sqlx::query(
                "UPDATE webhook_retry_jobs SET status = 'failed', updated_at = now() WHERE id = $1",
            )
            .bind(job_id)
            .execute(pool)
            .await?;
            return Ok(());
        }
    };
    // In-flight (`delivering`) and not-yet-attempted (`pending`, possibly held back by
    // ordering) deliveries are never touched, whatever the filter says.
    let statuses: Vec<&str> = filters
        .statuses
        .iter()
        .filter(|s| s.is_retryable())
        .map(|s| s.as_str())
        .collect();

    // The gateway counted `total` when it created the job.
    sqlx::query(
        "UPDATE webhook_retry_jobs SET status = 'running', updated_at = now()
         WHERE id = $1 AND status IN ('pending', 'running')",
    )
    .bind(job_id)
    .execute(pool)
    .await?;
    if dry_run {
        sqlx::query(
            "UPDATE webhook_retry_jobs SET status = 'completed', updated_at = now()
             WHERE id = $1 AND status = 'running'",
        )
        .bind(job_id)
        .execute(pool)
        .await?;
        return Ok(());
    }

    loop {
        let mut tx = pool.begin().await?;
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM webhook_retry_jobs WHERE id = $1 FOR UPDATE")
                .bind(job_id)
                .fetch_optional(&mut *tx)
                .await?;
        if status.as_deref() != Some("running") {
            // Cancelled (or deleted with its webhook): stop where we are.
            tx.commit().await?;
            tracing::info!(job = %job_id, ?status, "retry-failed job stopped");
            return Ok(());
        }
        let requeued = sqlx::query(
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
        )
        .bind(job_id)
        .bind(webhook_id)
        .bind(&statuses)
        .bind(&filters.event_type)
        .bind(filters.since)
        .bind(filters.until)
        .bind(max_retries)
        .bind(CHUNK)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if requeued > 0 {
            sqlx::query(
                "UPDATE webhook_retry_jobs SET processed = processed + $2, updated_at = now() WHERE id = $1",
            )
            .bind(job_id)
            .bind(requeued as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        portico_queue::failpoint::hit("retry_job_after_chunk");
        if requeued == 0 {
            break;
        }
        if shutdown.is_cancelled() {
            return Err(Interrupted::Shutdown);
        }
        if let Err(err) = message.keep_alive().await {
            tracing::debug!(%err, "keep-alive failed; the job may be redelivered and resume");
        }
        // Let the poller take a share of the database between chunks.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sqlx::query(
        "UPDATE webhook_retry_jobs SET status = 'completed', updated_at = now()
         WHERE id = $1 AND status = 'running'",
    )
    .bind(job_id)
    .execute(pool)
    .await?;
    tracing::info!(job = %job_id, "retry-failed job completed");
    Ok(())
}
