//! Retention: batches (with their chunks and per-order results, by cascade) are deleted
//! once their `expires_at` has passed (`PORTICO_RESULTS_RETENTION_DAYS` after
//! submission, set by the gateway). Orders stay; they only lose the link to the batch.
//! Batches still in progress are kept until they finish. The same loop purges the
//! other history tables past their retention ([`portico_storage::retention`]): this
//! worker is where every retention rule runs, so there is one schedule to watch.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Batches deleted per statement, so one purge never holds a huge transaction.
const DELETE_BATCH: i64 = 100;

/// Purges expired batches every `interval` until `shutdown`. Several replicas may run
/// it at once: each statement deletes what it finds, and a row already gone is skipped.
pub async fn run(
    pool: PgPool,
    interval: Duration,
    history: portico_storage::retention::Retention,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        match purge_expired(&pool).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "deleted expired bulk-order batches"),
            Err(err) => tracing::warn!(%err, "retention purge failed; will retry next round"),
        }
        match portico_storage::retention::purge(&pool, &history).await {
            Ok(p) if p == Default::default() => {}
            Ok(p) => tracing::info!(deliveries = p.deliveries, attempts = p.attempts, events = p.events,
                usage_logs = p.usage_logs, dead_letters = p.dead_letters, "deleted history past its retention"),
            Err(err) => tracing::warn!(%err, "history retention purge failed; will retry next round"),
        }
    }
}

/// Deletes every expired, finished batch; returns how many.
pub async fn purge_expired(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let deleted = sqlx::query(
            "DELETE FROM bulk_order_batches WHERE id IN (
                 SELECT id FROM bulk_order_batches
                 WHERE expires_at < now() AND status NOT IN ('pending', 'processing')
                 ORDER BY expires_at LIMIT $1
                 FOR UPDATE SKIP LOCKED)",
        )
        .bind(DELETE_BATCH)
        .execute(pool)
        .await?
        .rows_affected();
        total += deleted;
        if deleted < DELETE_BATCH as u64 {
            return Ok(total);
        }
    }
}
