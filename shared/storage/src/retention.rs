//! Retention of the history tables. Deliveries, their attempts, events and bulk
//! results are partitioned by day ([`crate::partitions`]): their retention drops whole
//! days. The other tables, and the rows of those tables that sit in a DEFAULT partition
//! (ids no day partition covers), are purged by deleting the oldest rows past their
//! retention in bounded batches (one short transaction each, found through the BRIN
//! time indexes of migration 0010), so a purge never holds a long lock and costs the
//! hot path nothing. A retention of 0 days keeps rows forever.
//!
//! What each purge keeps, on purpose:
//! - attempts: a day of attempts (those of the deliveries created that UTC day) goes
//!   once the whole day is older than the attempt retention, even while a delivery of
//!   that day is kept (a delivery's `attempts` count and last status stay on the
//!   delivery). Attempts in the DEFAULT partition are deleted by `started_at`.
//! - deliveries: a UTC day at a time, once the whole day is older than the delivery
//!   retention and every delivery of it is final (`succeeded`, `failed`): one delivery
//!   still pending or retrying keeps its day, and is never deleted. The day's attempts
//!   go with it (as the foreign key's cascade did before migration 0022).
//! - events: a day once it is older than the event retention and no delivery of that
//!   day or the next is left (a kept delivery can still be retried by hand, which needs
//!   the event's payload); an event's key (`event_keys`, what makes a re-published event
//!   a duplicate) only once its event is gone, so the same event is recorded and
//!   delivered once for as long as it is stored.
//! - usage logs: the rows; daily call counts (`integration_daily_usage`) stay.
//! - dead letters: the records.
//! - audit records: the oldest of each owner's chain, moving the chain's anchor
//!   ([`crate::audit::purge`]) so verification still holds.

use std::time::Duration;

use sqlx::PgPool;

/// Rows deleted per statement.
const BATCH: i64 = 5_000;

/// How long each kind of history is kept, in days (0 = forever; the default keeps
/// everything).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Final deliveries (and their attempts).
    pub delivery_days: u32,
    /// Attempt rows.
    pub attempt_days: u32,
    /// Events no delivery refers to.
    pub event_days: u32,
    /// Partner usage-log rows.
    pub usage_log_days: u32,
    /// Dead-letter records.
    pub dead_letter_days: u32,
    /// Audit records (`PORTICO_AUDIT_RETENTION_DAYS`).
    pub audit_days: u32,
}

/// How many rows (or partitions) one round deleted, per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Day partitions of deliveries dropped (with the same days of attempts).
    pub delivery_partitions: u64,
    /// Delivery rows deleted from the DEFAULT partition.
    pub deliveries: u64,
    /// Day partitions of attempts dropped.
    pub attempt_partitions: u64,
    /// Attempt rows deleted from the DEFAULT partition (besides those of purged
    /// deliveries).
    pub attempts: u64,
    /// Day partitions of events dropped.
    pub event_partitions: u64,
    /// Event rows deleted from the DEFAULT partition.
    pub events: u64,
    /// Event keys (`event_keys`, the dedupe record of events whose rows are gone).
    pub event_keys: u64,
    /// Usage-log rows.
    pub usage_logs: u64,
    /// Dead letters.
    pub dead_letters: u64,
    /// Audit records.
    pub audit_records: u64,
}

fn days(n: u32) -> Option<f64> {
    (n > 0).then(|| Duration::from_secs(u64::from(n) * 86_400).as_secs_f64())
}

/// Runs `delete` (one bounded DELETE, returning the rows it deleted) until it deletes
/// less than a full batch; returns the rows deleted in all.
async fn drain<F, Fut>(mut delete: F) -> Result<u64, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<sqlx::postgres::PgQueryResult, sqlx::Error>>,
{
    let mut total = 0;
    loop {
        let n = delete().await?.rows_affected();
        total += n;
        if n < BATCH as u64 {
            return Ok(total);
        }
    }
}

/// Deletes everything past its retention; safe to run from several replicas at once
/// (`SKIP LOCKED`: a row another purge holds is left to it).
pub async fn purge(pool: &PgPool, r: &Retention) -> Result<Purged, sqlx::Error> {
    let mut purged = Purged::default();
    if let Some(age) = days(r.attempt_days) {
        purged.attempt_partitions = crate::partitions::drop_attempts(pool, age).await?.len() as u64;
        purged.attempts = drain(|| async move {
            let mut tx = pool.begin().await?;
            // The attempts' delete guard (migration 0018) lets the maintenance through.
            sqlx::query_scalar!("SELECT set_config('portico.partition_maintenance', 'on', true)")
                .fetch_one(&mut *tx)
                .await?;
            let done = sqlx::query!(
                "DELETE FROM webhook_delivery_attempts_default WHERE ctid = ANY(ARRAY(
                     SELECT ctid FROM webhook_delivery_attempts_default
                     WHERE started_at < now() - make_interval(secs => $1)
                     LIMIT $2 FOR UPDATE SKIP LOCKED))",
                age,
                BATCH
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(done)
        })
        .await?;
    }
    if let Some(age) = days(r.delivery_days) {
        purged.delivery_partitions =
            crate::partitions::drop_deliveries(pool, age).await?.len() as u64;
        // Rows no day partition covers (ids that are not time-ordered, days the
        // maintenance had not created) are in the DEFAULT partition, deleted as before.
        purged.deliveries = drain(|| {
            sqlx::query!(
                "DELETE FROM webhook_deliveries_default WHERE id IN (
                     SELECT id FROM webhook_deliveries_default
                     WHERE created_at < date_trunc('day', now() - make_interval(secs => $1), 'UTC')
                       AND status IN ('succeeded', 'failed')
                     LIMIT $2 FOR UPDATE SKIP LOCKED)",
                age,
                BATCH
            )
            .execute(pool)
        })
        .await?;
    }
    if let Some(age) = days(r.event_days) {
        purged.event_partitions = crate::partitions::drop_events(pool, age).await?.len() as u64;
        purged.events = drain(|| {
            sqlx::query!(
                "DELETE FROM events_default WHERE ctid = ANY(ARRAY(
                     SELECT e.ctid FROM events_default e
                     WHERE e.created_at < now() - make_interval(secs => $1)
                       AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id)
                     LIMIT $2 FOR UPDATE SKIP LOCKED))",
                age,
                BATCH
            )
            .execute(pool)
        })
        .await?;
        // A key goes once its event is gone (never before: it is what keeps a
        // re-published event from being recorded and delivered again). A key and its
        // event were written by one statement with the same acceptance time, which
        // names the event's partition.
        purged.event_keys = drain(|| {
            sqlx::query!(
                "DELETE FROM event_keys WHERE id IN (
                     SELECT k.id FROM event_keys k
                     WHERE k.accepted_at < now() - make_interval(secs => $1)
                       AND NOT EXISTS (SELECT 1 FROM events e
                                       WHERE e.id = k.id AND e.accepted_at = k.accepted_at)
                     LIMIT $2 FOR UPDATE SKIP LOCKED)",
                age,
                BATCH
            )
            .execute(pool)
        })
        .await?;
    }
    if let Some(age) = days(r.usage_log_days) {
        purged.usage_logs = drain(|| {
            sqlx::query!(
                "DELETE FROM integration_usage_logs WHERE id IN (
                     SELECT id FROM integration_usage_logs
                     WHERE occurred_at < now() - make_interval(secs => $1)
                     LIMIT $2 FOR UPDATE SKIP LOCKED)",
                age,
                BATCH
            )
            .execute(pool)
        })
        .await?;
    }
    if let Some(age) = days(r.dead_letter_days) {
        purged.dead_letters = drain(|| {
            sqlx::query!(
                "DELETE FROM job_dead_letters WHERE id IN (
                     SELECT id FROM job_dead_letters
                     WHERE created_at < now() - make_interval(secs => $1)
                     LIMIT $2 FOR UPDATE SKIP LOCKED)",
                age,
                BATCH
            )
            .execute(pool)
        })
        .await?;
    }
    purged.audit_records = crate::audit::purge(pool, r.audit_days).await?;
    Ok(purged)
}
