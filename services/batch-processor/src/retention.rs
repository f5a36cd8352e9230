//! Retention: batches (with their chunks, by cascade) are deleted once their
//! `expires_at` has passed (`PORTICO_RESULTS_RETENTION_DAYS` after submission, set by
//! the gateway). Orders stay; they only lose the link to the batch. Batches still in
//! progress are kept until they finish. Per-order results are partitioned by the
//! batch's creation day: a day's partition is dropped whole once none of that day's
//! batches is left ([`portico_storage::partitions::drop_results`]). The same loop keeps
//! the day partitions of the history tables created ahead
//! ([`portico_storage::partitions::ensure_ahead`], first in every round; the first
//! round runs at start-up), purges the
//! other history tables past their retention ([`portico_storage::retention`]) and the
//! delivery-analytics rollups past theirs ([`portico_storage::analytics::purge`]) and
//! idempotency keys past their 24 hours ([`portico_storage::idempotency::purge_expired`]): this
//! worker is where every retention rule runs, so there is one schedule to watch.
//!
//! The loop also counts the dead letters that wait for an operator
//! (`portico_dead_letters_unresolved`, which the `DeadLettersPresent` alert watches),
//! every [`DEAD_LETTER_COUNT_INTERVAL`] or every retention round if that is more often.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Batches deleted per statement, so one purge never holds a huge transaction.
const DELETE_BATCH: i64 = 100;

/// Orphaned results deleted from the DEFAULT partition per round (rarely any: only
/// batches whose id no day partition covers).
const RESULT_ORPHANS_BATCH: i64 = 10_000;

/// How often the unresolved dead letters are counted.
pub const DEAD_LETTER_COUNT_INTERVAL: Duration = Duration::from_secs(30);

/// Purges expired batches every `interval` until `shutdown`. Several replicas may run
/// it at once: each statement deletes what it finds, and a row already gone is skipped.
pub async fn run(
    pool: PgPool,
    interval: Duration,
    history: portico_storage::retention::Retention,
    rollups: portico_storage::analytics::RollupRetention,
    shutdown: CancellationToken,
) {
    let interval = interval.max(Duration::from_secs(1));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut count_tick = tokio::time::interval(interval.min(DEAD_LETTER_COUNT_INTERVAL));
    count_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = count_tick.tick() => {
                report_unresolved_dead_letters(&pool).await;
                continue;
            }
            _ = tick.tick() => {}
        }
        match portico_storage::partitions::ensure_ahead(&pool).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(created = n, "created history partitions ahead"),
            Err(err) => tracing::warn!(
                %err,
                "creating history partitions failed (new rows go to the default partitions); will retry next round"
            ),
        }
        match purge_expired(&pool).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "deleted expired bulk-order batches"),
            Err(err) => tracing::warn!(%err, "retention purge failed; will retry next round"),
        }
        match portico_storage::partitions::drop_results(&pool, RESULT_ORPHANS_BATCH).await {
            Ok((days, 0)) if days.is_empty() => {}
            Ok((days, orphans)) => tracing::info!(
                partitions = ?days,
                default_partition_rows = orphans,
                "dropped bulk-order results of deleted batches"
            ),
            Err(err) => {
                tracing::warn!(%err, "dropping bulk-order results failed; will retry next round")
            }
        }
        match portico_storage::retention::purge(&pool, &history).await {
            Ok(p) if p == Default::default() => {}
            Ok(p) => tracing::info!(
                delivery_partitions = p.delivery_partitions,
                deliveries = p.deliveries,
                attempt_partitions = p.attempt_partitions,
                attempts = p.attempts,
                event_partitions = p.event_partitions,
                events = p.events,
                event_keys = p.event_keys,
                usage_logs = p.usage_logs,
                dead_letters = p.dead_letters,
                audit_records = p.audit_records,
                "deleted history past its retention"
            ),
            Err(err) => {
                tracing::warn!(%err, "history retention purge failed; will retry next round")
            }
        }
        match portico_storage::analytics::purge(&pool, &rollups).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "deleted delivery rollups past their retention"),
            Err(err) => {
                tracing::warn!(%err, "rollup retention purge failed; will retry next round")
            }
        }
        match portico_storage::idempotency::purge_expired(&pool).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(keys = n, "deleted idempotency keys past their 24 hours"),
            Err(err) => {
                tracing::warn!(%err, "idempotency-key purge failed; will retry next round")
            }
        }
    }
}

/// Sets `portico_dead_letters_unresolved` from the database; on failure the gauge keeps
/// its last value (a warning is logged) rather than pretending there is none.
pub async fn report_unresolved_dead_letters(pool: &PgPool) {
    match portico_storage::dead_letters::count_unresolved(pool).await {
        Ok(n) => metrics::gauge!(portico_telemetry::metrics::DEAD_LETTERS_UNRESOLVED).set(n as f64),
        Err(err) => tracing::warn!(%err, "counting unresolved dead letters failed; will retry"),
    }
}

/// Deletes every expired, finished batch; returns how many.
pub async fn purge_expired(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let deleted = portico_storage::bulk_orders::delete_expired(pool, DELETE_BATCH).await?;
        total += deleted;
        if deleted < DELETE_BATCH as u64 {
            return Ok(total);
        }
    }
}
