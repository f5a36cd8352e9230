//! What to put back on the queue after a restore. A PostgreSQL backup restored next
//! to an empty JetStream (a new cluster, a lost stream) holds batches and retry-failed
//! jobs whose job message was already published and is gone with the old stream; no
//! worker would ever pick them up again. `portico-gateway requeue` reads them here and
//! adds a fresh job for each to the outbox (docs/operations.md, "Restore").

use uuid::Uuid;

/// Batches not finished yet (`pending` or `processing`), oldest first: each needs a
/// job to be resumed at its first unprocessed chunk.
pub async fn unfinished_batches(
    executor: impl sqlx::PgExecutor<'_>,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT id FROM bulk_order_batches
          WHERE status IN ('pending', 'processing')
          ORDER BY created_at, id"
    )
    .fetch_all(executor)
    .await
}

/// Retry-failed jobs not finished yet (`pending` or `running`), oldest first.
pub async fn unfinished_retry_jobs(
    executor: impl sqlx::PgExecutor<'_>,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT id FROM webhook_retry_jobs
          WHERE status IN ('pending', 'running')
          ORDER BY created_at, id"
    )
    .fetch_all(executor)
    .await
}
