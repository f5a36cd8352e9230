//! The day partitions of the history tables (`webhook_delivery_attempts`,
//! `bulk_order_results`) against the real PostgreSQL: retention drops whole partitions
//! (checked in the catalog), keeps what is still needed, and the maintenance creates
//! partitions ahead that take inserts, moving rows out of the DEFAULT partition.

use chrono::{Days, NaiveDate, Utc};
use portico_storage::partitions::{self, Partitioned};
use portico_storage::retention::{self, Retention};
use sqlx::PgPool;
use uuid::{NoContext, Timestamp, Uuid};

mod common;
use common::with_database;

/// A UUIDv7 made `days_ago` days ago (negative: in the future), like the ids the
/// services generate at that time.
fn id_at(days_ago: i64) -> Uuid {
    let at = Utc::now() - chrono::Duration::days(days_ago);
    let secs = u64::try_from(at.timestamp()).expect("after 1970");
    Uuid::new_v7(Timestamp::from_unix(
        NoContext,
        secs,
        at.timestamp_subsec_nanos(),
    ))
}

/// Today's UTC date moved by `days` (negative: back).
fn day(days: i64) -> NaiveDate {
    let today = Utc::now().date_naive();
    if days >= 0 {
        today + Days::new(days.unsigned_abs())
    } else {
        today - Days::new(days.unsigned_abs())
    }
}

/// The partition (child table) a row with this key is stored in.
async fn partition_of(pool: &PgPool, sql: &str, key: Uuid) -> String {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(key)
        .fetch_one(pool)
        .await
        .expect("locate row")
}

/// The children of `parent` in the catalog (pg_inherits), by name.
async fn children(pool: &PgPool, parent: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = $1::regclass ORDER BY 1",
    )
    .bind(parent)
    .fetch_all(pool)
    .await
    .expect("list partitions")
}

/// Whether a relation of this name exists at all (a dropped partition does not).
async fn exists(pool: &PgPool, name: &str) -> bool {
    sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(name)
        .fetch_one(pool)
        .await
        .expect("to_regclass")
}

async fn webhook(pool: &PgPool) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO webhooks (id, user_id, url, events, max_retries, base_delay_ms, max_delay_ms)
         VALUES ($1, 'alice', 'https://h.example/', ARRAY['*'], 3, 1000, 300000)",
    )
    .bind(id)
    .execute(pool)
    .await
    .expect("insert webhook");
    id
}

/// An event and one delivery of it with id `id`, created `days_ago` days ago, with
/// `attempts` attempt rows.
async fn delivery(
    pool: &PgPool,
    webhook: Uuid,
    id: Uuid,
    status: &str,
    days_ago: i64,
    attempts: i32,
) -> Uuid {
    let event = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO events (id, user_id, event_type, payload, idempotency_key, accepted_at, created_at)
         VALUES ($1, 'alice', 'order.created', '{}', $1::text, now(), now() - make_interval(days => $2))",
    )
    .bind(event)
    .bind(days_ago as i32)
    .execute(pool)
    .await
    .expect("insert event");
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, webhook_id, event_id, user_id, event_type, status,
                                         attempts, max_retries, created_at)
         VALUES ($1, $2, $3, 'alice', 'order.created', $4, $5, 3, now() - make_interval(days => $6))",
    )
    .bind(id)
    .bind(webhook)
    .bind(event)
    .bind(status)
    .bind(attempts)
    .bind(days_ago as i32)
    .execute(pool)
    .await
    .expect("insert delivery");
    insert_attempts(pool, id, attempts).await;
    event
}

/// Attempts 1..=n of a delivery, as the dispatcher writes them (`ON CONFLICT` on the
/// primary key, which every release uses).
async fn insert_attempts(pool: &PgPool, delivery: Uuid, n: i32) -> u64 {
    sqlx::query(
        "INSERT INTO webhook_delivery_attempts (delivery_id, attempt_number, latency_ms, started_at)
         SELECT $1, g, 5, now() FROM generate_series(1, $2) g
         ON CONFLICT (delivery_id, attempt_number) DO NOTHING",
    )
    .bind(delivery)
    .bind(n)
    .execute(pool)
    .await
    .expect("insert attempts")
    .rows_affected()
}

async fn count(pool: &PgPool, sql: &str, key: Uuid) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(key)
        .fetch_one(pool)
        .await
        .expect("count")
}

const ATTEMPT_PARTITION: &str =
    "SELECT tableoid::regclass::text FROM webhook_delivery_attempts WHERE delivery_id = $1 LIMIT 1";

/// Old days of attempts go as whole partitions (gone from pg_inherits and pg_class),
/// newer ones stay; a final old delivery goes, a retrying one and its event stay; a
/// direct DELETE of attempts (what release 0c6b075's purge runs) deletes nothing, while
/// a delivery's cascade still takes its attempts.
#[tokio::test]
async fn retention_drops_whole_attempt_partitions_and_keeps_what_is_needed() {
    with_database(|pool| async move {
        let created = partitions::ensure_days(&pool, Partitioned::Attempts, day(-41), day(-39))
            .await
            .expect("create old partitions");
        assert_eq!(created, 3);
        let hook = webhook(&pool).await;
        let (old_done, old_retrying, recent) = (id_at(40), id_at(40), id_at(0));
        delivery(&pool, hook, old_done, "succeeded", 40, 2).await;
        let retrying_event = delivery(&pool, hook, old_retrying, "retrying", 40, 3).await;
        delivery(&pool, hook, recent, "succeeded", 0, 1).await;
        let old_partition = partition_of(&pool, ATTEMPT_PARTITION, old_done).await;
        assert_eq!(
            old_partition,
            format!("webhook_delivery_attempts_p{}", day(-40).format("%Y%m%d"))
        );
        assert_eq!(
            partition_of(&pool, ATTEMPT_PARTITION, recent).await,
            format!("webhook_delivery_attempts_p{}", day(0).format("%Y%m%d"))
        );

        // The guard: a direct row delete is skipped; 0c6b075's ctid purge ends at once.
        let deleted = sqlx::query(
            "DELETE FROM webhook_delivery_attempts WHERE ctid = ANY(ARRAY(
                 SELECT ctid FROM webhook_delivery_attempts LIMIT 100))",
        )
        .execute(&pool)
        .await
        .expect("direct delete")
        .rows_affected();
        assert_eq!(deleted, 0);

        let purged = retention::purge(
            &pool,
            &Retention {
                delivery_days: 30,
                attempt_days: 30,
                event_days: 30,
                usage_log_days: 30,
                dead_letter_days: 30,
                ..Retention::default()
            },
        )
        .await
        .expect("purge");
        assert_eq!(purged.attempt_partitions, 3, "{purged:?}");
        assert_eq!(purged.attempts, 0, "no attempt was deleted row by row");
        assert_eq!(purged.deliveries, 1);
        assert!(!exists(&pool, &old_partition).await);
        let kids = children(&pool, "webhook_delivery_attempts").await;
        assert!(!kids.contains(&old_partition), "{kids:?}");
        assert!(kids.contains(&"webhook_delivery_attempts_default".to_owned()));
        assert_eq!(
            kids.len(),
            1 + 1 + partitions::DAYS_AHEAD as usize,
            "today to {} days ahead and the default: {kids:?}",
            partitions::DAYS_AHEAD
        );

        // What is still needed survives: the retrying delivery and its event.
        let still: (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM webhook_deliveries WHERE id = $1),
                    (SELECT count(*) FROM events WHERE id = $2),
                    (SELECT count(*) FROM webhook_deliveries WHERE id = $3)",
        )
        .bind(old_retrying)
        .bind(retrying_event)
        .bind(old_done)
        .fetch_one(&pool)
        .await
        .expect("count kept");
        assert_eq!(
            still,
            (1, 1, 0),
            "(retrying delivery, its event, final old delivery)"
        );
        let recent_attempts =
            "SELECT count(*) FROM webhook_delivery_attempts WHERE delivery_id = $1";
        assert_eq!(count(&pool, recent_attempts, recent).await, 1);

        // The cascade still deletes a delivery's attempts (depth 1, past the guard).
        sqlx::query("DELETE FROM webhook_deliveries WHERE id = $1")
            .bind(recent)
            .execute(&pool)
            .await
            .expect("delete delivery");
        assert_eq!(count(&pool, recent_attempts, recent).await, 0);
    })
    .await;
}

/// Rows of a day without a partition are kept in the DEFAULT partition; the maintenance
/// creating that day moves them into its partition, and later inserts (with
/// `ON CONFLICT` on the primary key) go there directly.
#[tokio::test]
async fn maintenance_creates_future_partitions_that_take_inserts() {
    with_database(|pool| async move {
        // The migration created today to DAYS_AHEAD days ahead already.
        assert_eq!(partitions::ensure_ahead(&pool).await.expect("ensure"), 0);
        let listed = partitions::list(&pool, Partitioned::BulkResults)
            .await
            .expect("list");
        assert_eq!(listed.first().map(|p| p.day), Some(day(0)));
        assert_eq!(
            listed.last().map(|p| p.day),
            Some(day(partitions::DAYS_AHEAD.into()))
        );

        let hook = webhook(&pool).await;
        let future = id_at(-20);
        delivery(&pool, hook, future, "pending", 0, 2).await;
        assert_eq!(
            partition_of(&pool, ATTEMPT_PARTITION, future).await,
            "webhook_delivery_attempts_default"
        );
        let created = partitions::ensure_days(&pool, Partitioned::Attempts, day(0), day(25))
            .await
            .expect("create ahead");
        assert_eq!(created, 25 - partitions::DAYS_AHEAD);
        let future_partition = format!("webhook_delivery_attempts_p{}", day(20).format("%Y%m%d"));
        assert_eq!(
            partition_of(&pool, ATTEMPT_PARTITION, future).await,
            future_partition
        );
        assert_eq!(
            count(
                &pool,
                "SELECT count(*) FROM webhook_delivery_attempts_default WHERE delivery_id = $1",
                future
            )
            .await,
            0
        );
        // A redelivered chunk writes the same attempts again: one row each.
        assert_eq!(insert_attempts(&pool, future, 3).await, 1);
        assert_eq!(
            count(
                &pool,
                "SELECT count(*) FROM webhook_delivery_attempts WHERE delivery_id = $1",
                future
            )
            .await,
            3
        );
        let later = id_at(-24);
        delivery(&pool, hook, later, "pending", 0, 1).await;
        assert_eq!(
            partition_of(&pool, ATTEMPT_PARTITION, later).await,
            format!("webhook_delivery_attempts_p{}", day(24).format("%Y%m%d"))
        );
    })
    .await;
}

async fn batch(pool: &PgPool, id: Uuid, status: &str, expired: bool, results: i32) {
    sqlx::query(
        "INSERT INTO bulk_order_batches (id, user_id, status, total, expires_at)
         VALUES ($1, 'alice', $2, $3, now() + CASE WHEN $4 THEN interval '-1 day' ELSE interval '30 days' END)",
    )
    .bind(id)
    .bind(status)
    .bind(results)
    .bind(expired)
    .execute(pool)
    .await
    .expect("insert batch");
    sqlx::query(
        "INSERT INTO bulk_order_results (batch_id, order_index, status)
         SELECT $1, g, 'succeeded' FROM generate_series(0, $2 - 1) g
         ON CONFLICT (batch_id, order_index) DO NOTHING",
    )
    .bind(id)
    .bind(results)
    .execute(pool)
    .await
    .expect("insert results");
}

const RESULTS: &str = "SELECT count(*) FROM bulk_order_results WHERE batch_id = $1";

/// A day of results goes as a whole partition once all of that day's batches are
/// deleted (a past day without batches at once); a day with a batch still stored (here one still processing) keeps its
/// partition and every result in it; results of a deleted batch in the DEFAULT
/// partition are deleted.
#[tokio::test]
async fn result_partitions_are_dropped_once_their_batches_are_gone() {
    with_database(|pool| async move {
        partitions::ensure_days(&pool, Partitioned::BulkResults, day(-40), day(-35))
            .await
            .expect("create old partitions");
        let (gone_a, gone_b) = (id_at(40), id_at(40));
        let (expired, processing) = (id_at(35), id_at(35));
        let recent = id_at(0);
        let odd = Uuid::parse_str("ffffffff-0000-4000-8000-000000000001").expect("uuid");
        batch(&pool, gone_a, "completed", true, 5).await;
        batch(&pool, gone_b, "completed_with_errors", true, 3).await;
        batch(&pool, expired, "completed", true, 4).await;
        batch(&pool, processing, "processing", true, 2).await;
        batch(&pool, recent, "completed", false, 2).await;
        batch(&pool, odd, "completed", true, 2).await;
        let day40 = format!("bulk_order_results_p{}", day(-40).format("%Y%m%d"));
        let day35 = format!("bulk_order_results_p{}", day(-35).format("%Y%m%d"));
        let located =
            "SELECT tableoid::regclass::text FROM bulk_order_results WHERE batch_id = $1 LIMIT 1";
        assert_eq!(partition_of(&pool, located, gone_a).await, day40);
        assert_eq!(
            partition_of(&pool, located, odd).await,
            "bulk_order_results_default"
        );

        // While the batches are stored only the past days without any batch go.
        let (mut dropped, orphans) = partitions::drop_results(&pool, 100).await.expect("drop");
        dropped.sort();
        let empty_days: Vec<String> = (36..=39)
            .rev()
            .map(|d| format!("bulk_order_results_p{}", day(-d).format("%Y%m%d")))
            .collect();
        assert_eq!(dropped, empty_days);
        assert_eq!(orphans, 0);
        assert!(exists(&pool, &day40).await);

        assert_eq!(
            portico_storage::bulk_orders::delete_expired(&pool, 100)
                .await
                .expect("delete expired"),
            4,
            "the expired, finished batches"
        );
        // The batches' results wait for their partition (no row-by-row cascade).
        assert_eq!(count(&pool, RESULTS, gone_a).await, 5);
        let (dropped, orphans) = partitions::drop_results(&pool, 100).await.expect("drop");
        assert_eq!(dropped, vec![day40.clone()]);
        assert_eq!(
            orphans, 2,
            "the odd batch's results in the DEFAULT partition"
        );
        assert!(!exists(&pool, &day40).await);
        let kids = children(&pool, "bulk_order_results").await;
        assert!(!kids.contains(&day40) && kids.contains(&day35), "{kids:?}");
        for (batch, kept) in [
            (gone_a, 0),
            (gone_b, 0),
            (expired, 4),
            (processing, 2),
            (recent, 2),
            (odd, 0),
        ] {
            assert_eq!(
                count(&pool, RESULTS, batch).await,
                kept,
                "results of {batch}"
            );
        }
        let (dropped, _) = partitions::drop_results(&pool, 100)
            .await
            .expect("drop again");
        assert!(dropped.is_empty(), "{dropped:?}");
    })
    .await;
}

/// An event accepted `days_ago` days ago, recorded as the dispatcher records it (with
/// its key in `event_keys`).
async fn event_at(pool: &PgPool, days_ago: i64) -> Uuid {
    let id = Uuid::new_v4();
    let mut rows = portico_storage::events::NewEvents::with_capacity(1);
    rows.push(portico_storage::events::NewEvent {
        id: portico_domain::ids::EventId(id),
        user_id: "alice",
        event_type: "order.created",
        payload: "{}",
        idempotency_key: "k",
        ordering_key: None,
        accepted_at: Utc::now() - chrono::Duration::days(days_ago),
    });
    let new = portico_storage::events::insert(pool, &rows)
        .await
        .expect("insert event");
    assert_eq!(new.len(), 1);
    id
}

/// A delivery of `event` with the id the dispatcher derives (the event's acceptance
/// time first), `attempts` attempt rows, in state `status`.
async fn derived_delivery(
    pool: &PgPool,
    webhook: Uuid,
    event: Uuid,
    status: &str,
    attempts: i32,
) -> Uuid {
    let accepted: chrono::DateTime<Utc> =
        sqlx::query_scalar("SELECT accepted_at FROM events WHERE id = $1")
            .bind(event)
            .fetch_one(pool)
            .await
            .expect("event");
    let id = portico_domain::ids::delivery_id(event, webhook, accepted.timestamp_millis());
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, webhook_id, event_id, user_id, event_type, status,
                                         attempts, max_retries)
         VALUES ($1, $2, $3, 'alice', 'order.created', $4, $5, 3)",
    )
    .bind(id)
    .bind(webhook)
    .bind(event)
    .bind(status)
    .bind(attempts)
    .execute(pool)
    .await
    .expect("insert delivery");
    insert_attempts(pool, id, attempts).await;
    id
}

/// Deliveries and events (migration 0022) are stored in the partition of their day: a
/// delivery in its event's day, by its derived id. Retention drops a past day of
/// deliveries whole, with its attempts, unless a delivery of it is still retrying; a
/// day of events goes only once no delivery of that day or the next is left, and the
/// keys of its events with it. Deleting a webhook takes its deliveries' attempts.
#[tokio::test]
async fn retention_drops_whole_days_of_deliveries_and_events() {
    with_database(|pool| async move {
        for table in [
            Partitioned::Deliveries,
            Partitioned::Attempts,
            Partitioned::Events,
        ] {
            let created = partitions::ensure_days(&pool, table, day(-42), day(-39))
                .await
                .expect("create old partitions");
            assert_eq!(created, 4, "{table:?}");
        }
        let hook = webhook(&pool).await;
        let lonely = event_at(&pool, 42).await; // no delivery
        let done_event = event_at(&pool, 41).await;
        let done = derived_delivery(&pool, hook, done_event, "succeeded", 2).await;
        let retrying_event = event_at(&pool, 39).await;
        let retrying = derived_delivery(&pool, hook, retrying_event, "retrying", 3).await;
        let recent_event = event_at(&pool, 0).await;
        let recent = derived_delivery(&pool, hook, recent_event, "succeeded", 1).await;

        let name =
            |table: &str, days_ago: i64| format!("{table}_p{}", day(-days_ago).format("%Y%m%d"));
        let located = "SELECT tableoid::regclass::text FROM webhook_deliveries WHERE id = $1";
        assert_eq!(
            partition_of(&pool, located, done).await,
            name("webhook_deliveries", 41)
        );
        assert_eq!(
            partition_of(&pool, ATTEMPT_PARTITION, done).await,
            name("webhook_delivery_attempts", 41)
        );
        let event_located = "SELECT tableoid::regclass::text FROM events WHERE id = $1";
        assert_eq!(
            partition_of(&pool, event_located, done_event).await,
            name("events", 41)
        );
        assert_eq!(
            partition_of(&pool, located, recent).await,
            name("webhook_deliveries", 0)
        );

        let purged = retention::purge(
            &pool,
            &Retention {
                delivery_days: 30,
                attempt_days: 0,
                event_days: 30,
                ..Retention::default()
            },
        )
        .await
        .expect("purge");
        // Deliveries: -42, -41, -40 go (empty or final), -39 stays (retrying).
        assert_eq!(purged.delivery_partitions, 3, "{purged:?}");
        assert_eq!(purged.deliveries, 0, "no delivery was deleted row by row");
        // Events: -42 and -41 go; -40 and -39 stay while deliveries of -39 are kept.
        assert_eq!(purged.event_partitions, 2, "{purged:?}");
        assert_eq!(purged.events, 0, "no event was deleted row by row");
        assert_eq!(purged.event_keys, 2, "the keys of the two dropped events");
        for gone in [
            name("webhook_deliveries", 41),
            name("webhook_delivery_attempts", 41),
            name("events", 41),
            name("events", 42),
        ] {
            assert!(!exists(&pool, &gone).await, "{gone} is dropped");
        }
        let kids = children(&pool, "webhook_deliveries").await;
        assert!(kids.contains(&name("webhook_deliveries", 39)), "{kids:?}");
        assert!(!kids.contains(&name("webhook_deliveries", 40)), "{kids:?}");
        assert!(
            children(&pool, "events")
                .await
                .contains(&name("events", 40))
        );

        let kept: (i64, i64, i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM webhook_deliveries WHERE id = $1),
                    (SELECT count(*) FROM webhook_delivery_attempts WHERE delivery_id = $1),
                    (SELECT count(*) FROM events WHERE id = $2),
                    (SELECT count(*) FROM event_keys WHERE id = $2),
                    (SELECT count(*) FROM event_keys WHERE id = ANY($3))",
        )
        .bind(retrying)
        .bind(retrying_event)
        .bind(vec![lonely, done_event])
        .fetch_one(&pool)
        .await
        .expect("count kept");
        assert_eq!(
            kept,
            (1, 3, 1, 1, 0),
            "(retrying delivery, its attempts, its event, its key, dropped events' keys)"
        );

        // Deleting the webhook deletes its deliveries (foreign key) and their attempts
        // (the deliveries' trigger).
        assert!(
            portico_storage::webhooks::delete(&pool, "alice", portico_domain::ids::WebhookId(hook))
                .await
                .expect("delete webhook")
        );
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM webhook_delivery_attempts WHERE delivery_id = ANY($1)",
        )
        .bind(vec![retrying, recent])
        .fetch_one(&pool)
        .await
        .expect("count attempts");
        assert_eq!(left, 0);
    })
    .await;
}
