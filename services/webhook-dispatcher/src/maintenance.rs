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

use portico_domain::ids::RetryJobId;
use portico_domain::webhooks::RetryJobFilters;
use portico_queue::consumer::{JobMessage, Outcome};
use portico_queue::jobs::Job;
use portico_storage::retry_jobs::{self, DeliveryMatch};
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

async fn run_retry_job(
    pool: &PgPool,
    job_id: Uuid,
    message: &JobMessage,
    shutdown: &CancellationToken,
) -> Result<(), Interrupted> {
    let job_id = RetryJobId::from(job_id);
    // Gone (its webhook was deleted) or already finished: nothing to do.
    let Some(job) = retry_jobs::load_for_run(pool, job_id).await? else {
        return Ok(());
    };
    if !matches!(job.status.as_str(), "pending" | "running") {
        return Ok(());
    }
    let filters: RetryJobFilters = match serde_json::from_value(job.filters) {
        Ok(f) => f,
        Err(err) => {
            tracing::error!(%err, job = %job_id, "unreadable retry job filters; failing the job");
            retry_jobs::mark_failed(pool, job_id).await?;
            return Ok(());
        }
    };
    // In-flight (`delivering`) and not-yet-attempted (`pending`, possibly held back by
    // ordering) deliveries are never touched, whatever the filter says.
    let statuses: Vec<String> = filters
        .statuses
        .iter()
        .filter(|s| s.is_retryable())
        .map(|s| s.as_str().to_owned())
        .collect();
    let matching = DeliveryMatch {
        statuses: &statuses,
        event_type: filters.event_type.as_deref(),
        since: filters.since,
        until: filters.until,
    };

    // The gateway counted `total` when it created the job.
    retry_jobs::mark_running(pool, job_id).await?;
    if job.dry_run {
        retry_jobs::mark_completed(pool, job_id).await?;
        return Ok(());
    }

    loop {
        let mut tx = pool.begin().await?;
        let status = retry_jobs::lock_status(&mut tx, job_id).await?;
        if status.as_deref() != Some("running") {
            // Cancelled (or deleted with its webhook): stop where we are.
            tx.commit().await?;
            tracing::info!(job = %job_id, ?status, "retry-failed job stopped");
            return Ok(());
        }
        let requeued = retry_jobs::requeue_chunk(
            &mut tx,
            job_id,
            job.webhook_id,
            &matching,
            job.max_retries,
            CHUNK,
        )
        .await?;
        if requeued > 0 {
            retry_jobs::add_processed(&mut tx, job_id, requeued as i64).await?;
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
    retry_jobs::mark_completed(pool, job_id).await?;
    tracing::info!(job = %job_id, "retry-failed job completed");
    Ok(())
}
