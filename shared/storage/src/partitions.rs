//! Time partitions of the history tables (migrations 0018, 0019 and 0022): delivery
//! attempts and bulk-order results are partitioned by day on their parent's id (the
//! delivery's, the batch's), deliveries on their own id (whose first 48 bits are a
//! time, like a UUIDv7's) and events on their acceptance time, so retention drops a
//! whole day at once instead of deleting its rows one by one (no WAL per row, no dead
//! tuples, no vacuum debt), and a read of one delivery, its attempts or one batch's
//! results touches one partition.
//!
//! The batch-processor's retention round ([`ensure_ahead`] first) keeps
//! [`DAYS_AHEAD`] days of partitions ready; a row no day partition covers is stored in
//! the table's DEFAULT partition and moved into its day's partition when that is
//! created, so a stopped maintainer never loses or refuses a write. The SQL functions
//! doing the DDL (`portico_ensure_day_partitions`, `portico_drop_day_partition`) live in
//! migration 0018; they take turns through an advisory lock and give up on a lock not
//! had within 2 s (the next round tries again).

use chrono::NaiveDate;
use sqlx::PgPool;

/// Days of partitions created ahead of today (UTC), here and at migrate time: the
/// maintainer can stop for this long before rows start landing in DEFAULT partitions.
pub const DAYS_AHEAD: i32 = 7;

/// A table partitioned by day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitioned {
    /// `webhook_delivery_attempts`, by delivery id.
    Attempts,
    /// `bulk_order_results`, by batch id.
    BulkResults,
    /// `webhook_deliveries`, by delivery id (migration 0022).
    Deliveries,
    /// `events`, by acceptance time (migration 0022).
    Events,
}

impl Partitioned {
    /// Every partitioned table.
    pub const ALL: [Partitioned; 4] = [
        Partitioned::Attempts,
        Partitioned::BulkResults,
        Partitioned::Deliveries,
        Partitioned::Events,
    ];

    /// The parent table's name (its partitions are `<name>_pYYYYMMDD` and
    /// `<name>_default`).
    pub fn table(self) -> &'static str {
        match self {
            Partitioned::Attempts => "webhook_delivery_attempts",
            Partitioned::BulkResults => "bulk_order_results",
            Partitioned::Deliveries => "webhook_deliveries",
            Partitioned::Events => "events",
        }
    }
}

/// One day partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayPartition {
    /// Its table name.
    pub name: String,
    /// The UTC day whose parents' rows it holds.
    pub day: NaiveDate,
}

/// The day partitions of `table`, oldest first (the DEFAULT partition is not listed).
pub async fn list(pool: &PgPool, table: Partitioned) -> Result<Vec<DayPartition>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT name AS "name!", day AS "day!" FROM portico_day_partitions($1) ORDER BY day"#,
        table.table()
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| DayPartition {
            name: r.name,
            day: r.day,
        })
        .collect())
}

/// Creates the missing day partitions of `table` for `first..=last` (UTC days), moving
/// rows of those days out of the DEFAULT partition; returns how many it created.
pub async fn ensure_days(
    pool: &PgPool,
    table: Partitioned,
    first: NaiveDate,
    last: NaiveDate,
) -> Result<i32, sqlx::Error> {
    let created = sqlx::query_scalar!(
        r#"SELECT portico_ensure_day_partitions($1, $2, $3) AS "created!""#,
        table.table(),
        first,
        last
    )
    .fetch_one(pool)
    .await?;
    Ok(created)
}

/// Creates the partitions of every partitioned table from today to [`DAYS_AHEAD`] days
/// ahead (UTC), those missing; returns how many it created.
pub async fn ensure_ahead(pool: &PgPool) -> Result<i32, sqlx::Error> {
    let mut created = 0;
    for table in Partitioned::ALL {
        created += sqlx::query_scalar!(
            r#"SELECT portico_ensure_day_partitions($1, (now() AT TIME ZONE 'UTC')::date,
                                                   (now() AT TIME ZONE 'UTC')::date + $2::int4)
               AS "created!""#,
            table.table(),
            DAYS_AHEAD
        )
        .fetch_one(pool)
        .await?;
    }
    Ok(created)
}

/// Drops the day partitions of delivery attempts whose every delivery was created
/// more than `age_secs` ago (the partition's whole day is older); returns their names.
/// Nothing refers to attempts, so nothing else is checked.
pub async fn drop_attempts(pool: &PgPool, age_secs: f64) -> Result<Vec<String>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let names = sqlx::query_scalar!(
        r#"SELECT name AS "name!" FROM portico_day_partitions('webhook_delivery_attempts')
           WHERE hi <= portico_uuid7_floor(now() - make_interval(secs => $1))"#,
        age_secs
    )
    .fetch_all(&mut *tx)
    .await?;
    let dropped = drop_each(&mut tx, Partitioned::Attempts, names).await?;
    tx.commit().await?;
    Ok(dropped)
}

/// Drops the day partitions of deliveries whose whole day is more than `age_secs` old
/// and that hold no delivery still in progress (`pending`, `delivering`, `retrying`:
/// such a day is kept whole until its last one is final), each with the same day of
/// attempts (a delivery's attempts go with it, as its cascade did before migration
/// 0022); returns the deliveries' partitions dropped.
pub async fn drop_deliveries(pool: &PgPool, age_secs: f64) -> Result<Vec<String>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let names = sqlx::query_scalar!(
        r#"SELECT p.name AS "name!" FROM portico_day_partitions('webhook_deliveries') p
           WHERE p.hi <= portico_uuid7_floor(now() - make_interval(secs => $1))
             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d
                             WHERE d.id >= p.lo AND d.id < p.hi
                               AND d.status IN ('pending', 'retrying', 'delivering'))"#,
        age_secs
    )
    .fetch_all(&mut *tx)
    .await?;
    let attempts: Vec<String> = names
        .iter()
        .map(|n| n.replacen("webhook_deliveries_", "webhook_delivery_attempts_", 1))
        .collect();
    drop_each(&mut tx, Partitioned::Attempts, attempts).await?;
    let dropped = drop_each(&mut tx, Partitioned::Deliveries, names).await?;
    tx.commit().await?;
    Ok(dropped)
}

/// Drops the day partitions of events whose whole day is more than `age_secs` old and
/// to which no delivery can still refer: a delivery's id starts with its event's
/// acceptance time (or, for a delivery made before migration 0021, its own creation
/// time, at most moments later), so a day of events goes only once the deliveries'
/// partitions of that day and the next are gone. A kept delivery (in progress, or
/// within its retention) keeps its events, whose payload a retry needs.
pub async fn drop_events(pool: &PgPool, age_secs: f64) -> Result<Vec<String>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let names = sqlx::query_scalar!(
        r#"SELECT e.name AS "name!" FROM portico_day_partitions('events') e
           WHERE (e.day + 1)::timestamp AT TIME ZONE 'UTC' <= now() - make_interval(secs => $1)
             AND NOT EXISTS (SELECT 1 FROM portico_day_partitions('webhook_deliveries') d
                             WHERE d.day <= e.day + 1)"#,
        age_secs
    )
    .fetch_all(&mut *tx)
    .await?;
    let dropped = drop_each(&mut tx, Partitioned::Events, names).await?;
    tx.commit().await?;
    Ok(dropped)
}

/// Drops the day partitions of bulk-order results whose day is over and of which no
/// batch is left (every batch created that day expired and was deleted by
/// [`crate::bulk_orders::delete_expired`]), and deletes up to `limit` results in the
/// DEFAULT partition whose batch is gone; returns the partitions' names and the rows.
/// A batch still stored keeps its day's partition, whatever its state.
pub async fn drop_results(pool: &PgPool, limit: i64) -> Result<(Vec<String>, u64), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let names = sqlx::query_scalar!(
        r#"SELECT p.name AS "name!" FROM portico_day_partitions('bulk_order_results') p
           WHERE p.hi <= portico_uuid7_floor(now())
             AND NOT EXISTS (SELECT 1 FROM bulk_order_batches b WHERE b.id >= p.lo AND b.id < p.hi)"#
    )
    .fetch_all(&mut *tx)
    .await?;
    let dropped = drop_each(&mut tx, Partitioned::BulkResults, names).await?;
    tx.commit().await?;
    let orphans = sqlx::query!(
        "DELETE FROM bulk_order_results_default WHERE ctid = ANY(ARRAY(
             SELECT r.ctid FROM bulk_order_results_default r
             WHERE NOT EXISTS (SELECT 1 FROM bulk_order_batches b WHERE b.id = r.batch_id)
             LIMIT $1 FOR UPDATE SKIP LOCKED))",
        limit
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok((dropped, orphans))
}

async fn drop_each(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    table: Partitioned,
    names: Vec<String>,
) -> Result<Vec<String>, sqlx::Error> {
    let mut dropped = Vec::with_capacity(names.len());
    for name in names {
        let done = sqlx::query_scalar!(
            r#"SELECT portico_drop_day_partition($1, $2) AS "dropped!""#,
            table.table(),
            &name
        )
        .fetch_one(&mut **tx)
        .await?;
        if done {
            dropped.push(name);
        }
    }
    Ok(dropped)
}
