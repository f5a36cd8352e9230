//! The delivery family's statements (`events`, `webhook_deliveries`,
//! `webhook_delivery_attempts`) against the real PostgreSQL: each test creates its own
//! database, applies the migrations and drops it at the end.
//!
//! Server: `PORTICO_TEST_DATABASE_URL` (any database on it; default
//! `postgres://postgres@127.0.0.1:5432/postgres`).

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use portico_domain::ids::{DeliveryId, EventId, WebhookId};
use portico_domain::pagination::{Cursor, PageRequest};
use portico_domain::webhooks::DeliveryStatus;
use portico_storage::deliveries::{
    self, AttemptRows, ClaimedUpdate, ClaimedUpdates, DeliveryFilter, HealthDelta, HealthDeltas,
    IdArray, NewAttempt, NewDelivery, NewDeliveryRows,
};
use portico_storage::events::{self, NewEvent, NewEvents};
use sqlx::PgPool;

mod common;
use common::with_database;

const ALICE: &str = "alice";
const BOB: &str = "bob";
const LEASE: Duration = Duration::from_secs(15);

/// A webhook row to hang deliveries on (the webhooks family owns its statements; a
/// fixture needs only the columns without defaults).
async fn webhook(pool: &PgPool, user: &str, max_retries: i32, failures: i32) -> WebhookId {
    let id = WebhookId::generate();
    sqlx::query(
        "INSERT INTO webhooks (id, user_id, url, events, max_retries, base_delay_ms, max_delay_ms,
                               consecutive_failures)
         VALUES ($1, $2, 'https://h.example/', ARRAY['*'], $3, 1000, 300000, $4)",
    )
    .bind(id.as_uuid())
    .bind(user)
    .bind(max_retries)
    .bind(failures)
    .execute(pool)
    .await
    .expect("insert webhook");
    id
}

/// Records one event per `(id, user, type)` with a JSON payload naming it.
async fn record_events(pool: &PgPool, events: &[(EventId, &str, &str)]) -> HashSet<EventId> {
    let payloads: Vec<String> = events
        .iter()
        .map(|(id, _, _)| format!(r#"{{"n": "{id}"}}"#))
        .collect();
    let mut rows = NewEvents::with_capacity(events.len());
    for ((id, user, event_type), payload) in events.iter().zip(&payloads) {
        rows.push(NewEvent {
            id: *id,
            user_id: user,
            event_type,
            payload,
            idempotency_key: "k",
            ordering_key: None,
            accepted_at: Utc::now(),
        });
    }
    events::insert(pool, &rows).await.expect("insert events")
}

fn delivery(
    id: DeliveryId,
    webhook_id: WebhookId,
    event_id: EventId,
    user: &str,
    status: DeliveryStatus,
    attempts: i32,
    next_attempt_at: Option<DateTime<Utc>>,
) -> NewDelivery {
    NewDelivery {
        id,
        webhook_id,
        event_id,
        user_id: user.to_owned(),
        event_type: "order.created".to_owned(),
        ordering_key: None,
        ordering_seq: None,
        status,
        attempts,
        max_retries: 3,
        next_attempt_at,
        last_status_code: (attempts > 0).then_some(500),
        last_error: (attempts > 0).then(|| "boom".to_owned()),
    }
}

fn attempt(delivery_id: DeliveryId, number: i32, status: i32) -> NewAttempt {
    NewAttempt {
        delivery_id,
        number,
        headers: r#"{"webhook-id": "x"}"#.to_owned(),
        status: Some(status),
        body: Some("ok".to_owned()),
        latency_ms: 12,
        error_kind: (status >= 300).then_some("http_status"),
        error_message: (status >= 300).then(|| format!("status {status}")),
        started_at: Utc::now(),
    }
}

/// A chunk of deliveries that succeeded at their first attempt (status 200), one per
/// `(delivery, webhook, event)` of ALICE's.
fn succeeded_chunk(rows: &[(DeliveryId, WebhookId, EventId)]) -> (NewDeliveryRows, AttemptRows) {
    let mut deliveries = NewDeliveryRows::default();
    let mut attempts = AttemptRows::default();
    for &(id, webhook_id, event_id) in rows {
        deliveries.push(delivery(
            id,
            webhook_id,
            event_id,
            ALICE,
            DeliveryStatus::Succeeded,
            1,
            None,
        ));
        attempts.push(attempt(id, 1, 200));
    }
    (deliveries, attempts)
}

/// How many deliveries and attempts the database holds.
async fn row_counts(pool: &PgPool) -> (i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM webhook_deliveries),
                (SELECT count(*) FROM webhook_delivery_attempts)",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A list filter on one status.
fn only(status: DeliveryStatus) -> DeliveryFilter {
    DeliveryFilter {
        status: Some(status),
        ..DeliveryFilter::default()
    }
}

/// How many entries the partitions of index `parent` hold, as the last ANALYZE
/// counted them.
async fn index_entries(pool: &PgPool, parent: &str) -> f64 {
    sqlx::query_scalar(
        "SELECT sum(greatest(c.reltuples, 0))::float8 FROM pg_inherits i
           JOIN pg_class c ON c.oid = i.inhrelid
          WHERE i.inhparent = $1::regclass",
    )
    .bind(parent)
    .fetch_one(pool)
    .await
    .unwrap()
}

fn all(page_limit: u32) -> PageRequest {
    PageRequest {
        limit: page_limit,
        after: None,
    }
}

/// Events are recorded once: a chunk replayed with one new event reports only that
/// one as new (by its key in `event_keys`, whatever its acceptance time), and the
/// stored payload is the text given (read back by the claim).
#[tokio::test]
async fn events_are_recorded_once() {
    with_database(|pool| async move {
        let (e1, e2, e3) = (
            EventId::generate(),
            EventId::generate(),
            EventId::generate(),
        );
        let new = record_events(&pool, &[(e1, ALICE, "a"), (e2, ALICE, "b")]).await;
        assert_eq!(new, HashSet::from([e1, e2]));
        // e1 again, accepted later (a re-published event): its key says it is known,
        // so no second row, even though the events table is partitioned by day of
        // acceptance and has no unique index on the id alone.
        let new = record_events(&pool, &[(e1, ALICE, "a"), (e3, BOB, "c")]).await;
        assert_eq!(new, HashSet::from([e3]));
        let rows: (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM events WHERE id = $1),
                    (SELECT count(*) FROM event_keys WHERE id = $1)",
        )
        .bind(e1.as_uuid())
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(
            rows,
            (1, 1),
            "one event row and one key for a re-published event"
        );
        assert!(
            events::insert(&pool, &NewEvents::default())
                .await
                .unwrap()
                .is_empty()
        );
        let stored: (String, Option<String>) =
            sqlx::query_as("SELECT payload::text, ordering_key FROM events WHERE id = $1")
                .bind(e3.as_uuid())
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(stored, (format!(r#"{{"n": "{e3}"}}"#), None));
    })
    .await;
}

/// New deliveries go in with their attempts in one statement, a repeated pair is
/// skipped with its attempt, healed webhooks get their counter reset; the gateway's
/// reads (list with filters and pages, get, attempts) see them, each user only theirs;
/// a manual retry resets the budget of a failed delivery only.
#[tokio::test]
async fn deliveries_are_recorded_read_and_retried() {
    with_database(|pool| async move {
        let w1 = webhook(&pool, ALICE, 5, 3).await;
        let w2 = webhook(&pool, BOB, 5, 0).await;
        let (e1, e2, e3) = (
            EventId::generate(),
            EventId::generate(),
            EventId::generate(),
        );
        record_events(&pool, &[(e1, ALICE, "a"), (e2, ALICE, "b"), (e3, BOB, "c")]).await;

        let (d1, d2, d3) = (
            DeliveryId::generate(),
            DeliveryId::generate(),
            DeliveryId::generate(),
        );
        let mut rows = NewDeliveryRows::default();
        rows.push(delivery(
            d1,
            w1,
            e1,
            ALICE,
            DeliveryStatus::Succeeded,
            1,
            None,
        ));
        rows.push(delivery(d2, w1, e2, ALICE, DeliveryStatus::Failed, 1, None));
        rows.push(delivery(d3, w2, e3, BOB, DeliveryStatus::Pending, 0, None));
        let mut attempts = AttemptRows::default();
        attempts.push(attempt(d1, 1, 200));
        attempts.push(attempt(d2, 1, 500));
        let healed: IdArray<WebhookId> = [w1, w1].into_iter().collect();
        let written = deliveries::insert_deliveries(&pool, &rows, &attempts, &healed)
            .await
            .unwrap();
        assert_eq!(written, HashSet::from([d1, d2, d3]));
        let failures: i32 =
            sqlx::query_scalar("SELECT consecutive_failures FROM webhooks WHERE id = $1")
                .bind(w1.as_uuid())
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(failures, 0);

        // The same (webhook, event) again: a redelivered job derives the same id
        // (`ids::delivery_id`), and nothing is written.
        let (rows, attempts) = succeeded_chunk(&[(d1, w1, e1)]);
        let written = deliveries::insert_deliveries(&pool, &rows, &attempts, &IdArray::default())
            .await
            .unwrap();
        assert!(written.is_empty());
        let existing = deliveries::existing(&pool, &[e1, e3].into_iter().collect())
            .await
            .unwrap();
        assert_eq!(existing, HashSet::from([(w1, e1), (w2, e3)]));

        // Reads: newest first, filters, pages, isolation by user.
        let listed = deliveries::list(&pool, w1, &DeliveryFilter::default(), &all(10))
            .await
            .unwrap();
        assert_eq!(listed.iter().map(|d| d.id).collect::<Vec<_>>(), [d2, d1]);
        let failed = deliveries::list(&pool, w1, &only(DeliveryStatus::Failed), &all(10))
            .await
            .unwrap();
        assert_eq!(failed.iter().map(|d| d.id).collect::<Vec<_>>(), [d2]);
        let other_type = DeliveryFilter {
            event_type: Some("order.cancelled".to_owned()),
            ..DeliveryFilter::default()
        };
        assert!(
            deliveries::list(&pool, w1, &other_type, &all(10))
                .await
                .unwrap()
                .is_empty()
        );
        let future = DeliveryFilter {
            since: Some(Utc::now() + chrono::Duration::hours(1)),
            ..DeliveryFilter::default()
        };
        assert!(
            deliveries::list(&pool, w1, &future, &all(10))
                .await
                .unwrap()
                .is_empty()
        );
        let first_page = deliveries::list(&pool, w1, &DeliveryFilter::default(), &all(1))
            .await
            .unwrap();
        assert_eq!(first_page.len(), 2, "limit + 1 rows");
        let after = PageRequest {
            limit: 1,
            after: Some(Cursor {
                created_at: first_page[0].created_at,
                id: first_page[0].id.as_uuid(),
            }),
        };
        let second_page = deliveries::list(&pool, w1, &DeliveryFilter::default(), &after)
            .await
            .unwrap();
        assert_eq!(second_page.iter().map(|d| d.id).collect::<Vec<_>>(), [d1]);

        let got = deliveries::get(&pool, ALICE, w1, d2)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (got.status.as_str(), got.attempts, got.event_id),
            ("failed", 1, e2)
        );
        assert_eq!(got.last_status_code, Some(500));
        assert_eq!(deliveries::get(&pool, BOB, w1, d2).await.unwrap(), None);
        assert_eq!(deliveries::get(&pool, ALICE, w2, d2).await.unwrap(), None);
        let tries = deliveries::attempts(&pool, d2).await.unwrap();
        assert_eq!(tries.len(), 1);
        assert_eq!(tries[0].request_headers["webhook-id"], "x");
        assert_eq!(tries[0].error_kind.as_deref(), Some("http_status"));

        // Manual retry: failed only, the owner only, a fresh budget.
        assert_eq!(
            deliveries::retry_now(&pool, BOB, w1, d2, None)
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            deliveries::retry_now(&pool, ALICE, w1, d1, None)
                .await
                .unwrap(),
            None,
            "a succeeded delivery is not retried"
        );
        let retried = deliveries::retry_now(&pool, ALICE, w1, d2, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(retried.status, "retrying");
        assert_eq!(
            retried.max_retries,
            1 + 5,
            "attempts + the webhook's budget"
        );
        assert!(retried.next_attempt_at.is_some());
        let retried = deliveries::retry_now(&pool, ALICE, w1, d2, Some(2))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(retried.max_retries, 1 + 2);
    })
    .await;
}

/// The retry poller's cycle: due rows are claimed once (with their event's payload),
/// leases are renewed and taken back after a restart, a result is written only under
/// the lease it was claimed with, and ordered deliveries are released one at a time.
#[tokio::test]
async fn claims_leases_results_and_ordered_release() {
    with_database(|pool| async move {
        let w = webhook(&pool, ALICE, 5, 0).await;
        let (e1, e2, e3, e4) = (
            EventId::generate(),
            EventId::generate(),
            EventId::generate(),
            EventId::generate(),
        );
        record_events(
            &pool,
            &[
                (e1, ALICE, "a"),
                (e2, ALICE, "b"),
                (e3, ALICE, "c"),
                (e4, ALICE, "d"),
            ],
        )
        .await;
        let due = DeliveryId::generate();
        let later = DeliveryId::generate();
        let (o1, o2) = (DeliveryId::generate(), DeliveryId::generate());
        let past = Utc::now() - chrono::Duration::seconds(1);
        let future = Utc::now() + chrono::Duration::hours(1);
        let mut rows = NewDeliveryRows::default();
        rows.push(delivery(
            due,
            w,
            e1,
            ALICE,
            DeliveryStatus::Retrying,
            1,
            Some(past),
        ));
        rows.push(delivery(
            later,
            w,
            e2,
            ALICE,
            DeliveryStatus::Retrying,
            1,
            Some(future),
        ));
        for (id, event, seq) in [(o1, e3, 1), (o2, e4, 2)] {
            let mut d = delivery(id, w, event, ALICE, DeliveryStatus::Pending, 0, None);
            d.ordering_key = Some("k".to_owned());
            d.ordering_seq = Some(seq);
            rows.push(d);
        }
        let mut attempts = AttemptRows::default();
        attempts.push(attempt(due, 1, 500));
        attempts.push(attempt(later, 1, 500));
        deliveries::insert_deliveries(&pool, &rows, &attempts, &IdArray::default())
            .await
            .unwrap();

        // Only the due row is claimed, once.
        let owner = "replica-a/claim-1";
        let claimed = deliveries::claim_due(&pool, 10, owner, LEASE)
            .await
            .unwrap();
        assert_eq!(claimed.iter().map(|r| r.id).collect::<Vec<_>>(), [due]);
        let row = &claimed[0];
        assert_eq!((row.webhook_id, row.event_id, row.attempts), (w, e1, 1));
        assert_eq!(row.lease_owner, owner);
        assert_eq!(row.payload, format!(r#"{{"n": "{e1}"}}"#));
        assert!(
            deliveries::claim_due(&pool, 10, "replica-b/claim-2", LEASE)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            deliveries::renew_leases(&pool, owner, LEASE).await.unwrap(),
            1
        );
        assert_eq!(
            deliveries::renew_leases(&pool, "replica-b/claim-2", LEASE)
                .await
                .unwrap(),
            0
        );
        // `_` and `%` in a replica name are literal, not patterns.
        assert_eq!(
            deliveries::reclaim_own_leases(&pool, "replica_a")
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            deliveries::reclaim_own_leases(&pool, "replica-%")
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            deliveries::reclaim_own_leases(&pool, "replica-a")
                .await
                .unwrap(),
            1
        );
        let reclaimed = deliveries::claim_due(&pool, 10, "replica-a/claim-3", LEASE)
            .await
            .unwrap();
        assert_eq!(reclaimed.iter().map(|r| r.id).collect::<Vec<_>>(), [due]);

        // The first claim's result comes too late: its lease is gone.
        let result = |lease_owner: &str| {
            let mut u = ClaimedUpdates::default();
            u.push(ClaimedUpdate {
                id: due,
                lease_owner: lease_owner.to_owned(),
                status: DeliveryStatus::Succeeded,
                attempts: 2,
                next_attempt_at: None,
                last_status_code: Some(200),
                last_error: None,
                attempted: true,
            });
            let mut a = AttemptRows::default();
            a.push(attempt(due, 2, 200));
            (u, a)
        };
        let (u, a) = result(owner);
        assert!(
            deliveries::update_claimed(&pool, &u, &a)
                .await
                .unwrap()
                .is_empty()
        );
        let (u, a) = result("replica-a/claim-3");
        assert_eq!(
            deliveries::update_claimed(&pool, &u, &a).await.unwrap(),
            HashSet::from([due])
        );
        let done = deliveries::get(&pool, ALICE, w, due)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (done.status.as_str(), done.attempts, done.last_status_code),
            ("succeeded", 2, Some(200))
        );
        assert_eq!(done.last_error, None);
        assert_eq!(deliveries::attempts(&pool, due).await.unwrap().len(), 2);

        // Ordered: only sequences recorded through the floor, one per key at a time.
        assert_eq!(deliveries::release_ordered(&pool, 0).await.unwrap(), 0);
        assert_eq!(deliveries::release_ordered(&pool, 10).await.unwrap(), 1);
        let first = deliveries::claim_due(&pool, 10, "replica-a/claim-4", LEASE)
            .await
            .unwrap();
        assert_eq!(first.iter().map(|r| r.id).collect::<Vec<_>>(), [o1]);
        assert_eq!(deliveries::release_ordered(&pool, 10).await.unwrap(), 0);
        let mut u = ClaimedUpdates::default();
        u.push(ClaimedUpdate {
            id: o1,
            lease_owner: "replica-a/claim-4".to_owned(),
            status: DeliveryStatus::Succeeded,
            attempts: 1,
            next_attempt_at: None,
            last_status_code: Some(200),
            last_error: None,
            attempted: true,
        });
        let mut a = AttemptRows::default();
        a.push(attempt(o1, 1, 200));
        deliveries::update_claimed(&pool, &u, &a).await.unwrap();
        assert_eq!(deliveries::release_ordered(&pool, 10).await.unwrap(), 1);
        let second = deliveries::claim_due(&pool, 10, "replica-a/claim-5", LEASE)
            .await
            .unwrap();
        assert_eq!(second.iter().map(|r| r.id).collect::<Vec<_>>(), [o2]);
    })
    .await;
}

/// Health: failures add up across batches and disable at the threshold, a success
/// restarts the count, 410 disables at once, and a healthy webhook is not touched.
/// A due delivery whose event row is gone cannot be sent: the claim fails it (with a
/// reason) instead of returning nothing, so it never stands in front of the deliveries
/// that can be sent.
#[tokio::test]
async fn a_delivery_without_its_event_is_failed_not_left_in_front() {
    with_database(|pool| async move {
        let w = webhook(&pool, ALICE, 5, 0).await;
        let event = EventId::generate();
        record_events(&pool, &[(event, ALICE, "a")]).await;
        let (orphan, sendable) = (DeliveryId::generate(), DeliveryId::generate());
        let earlier = Utc::now() - chrono::Duration::seconds(10);
        let past = Utc::now() - chrono::Duration::seconds(1);
        let mut rows = NewDeliveryRows::default();
        // The orphan is due first: it is what a claim of one row takes.
        rows.push(delivery(
            orphan,
            w,
            EventId::generate(),
            ALICE,
            DeliveryStatus::Retrying,
            1,
            Some(earlier),
        ));
        rows.push(delivery(
            sendable,
            w,
            event,
            ALICE,
            DeliveryStatus::Retrying,
            1,
            Some(past),
        ));
        deliveries::insert_deliveries(&pool, &rows, &AttemptRows::default(), &IdArray::default())
            .await
            .unwrap();

        let first = deliveries::claim_due(&pool, 1, "replica-a/claim-1", LEASE)
            .await
            .unwrap();
        assert!(first.is_empty(), "the orphan is not handed out: {first:?}");
        let (status, error): (String, Option<String>) =
            sqlx::query_as("SELECT status, last_error FROM webhook_deliveries WHERE id = $1")
                .bind(orphan.0)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(status, "failed");
        assert!(
            error.is_some_and(|e| e.contains("event record is missing")),
            "the reason is recorded"
        );
        let next = deliveries::claim_due(&pool, 1, "replica-a/claim-2", LEASE)
            .await
            .unwrap();
        assert_eq!(next.iter().map(|r| r.id).collect::<Vec<_>>(), [sendable]);
    })
    .await;
}

/// Deliveries exist only with their webhook (migration 0023, no foreign key): a chunk
/// naming a deleted webhook records the rest, not that webhook's rows; a delete waits
/// for an uncommitted insert's lock, and then removes what it wrote, attempts
/// included.
#[tokio::test]
async fn deliveries_live_and_die_with_their_webhook() {
    with_database(|pool| async move {
        let (kept, deleted) = (
            webhook(&pool, ALICE, 3, 0).await,
            webhook(&pool, ALICE, 3, 0).await,
        );
        let (e1, e2) = (EventId::generate(), EventId::generate());
        record_events(&pool, &[(e1, ALICE, "a"), (e2, ALICE, "b")]).await;
        sqlx::query("DELETE FROM webhooks WHERE id = $1")
            .bind(deleted.as_uuid())
            .execute(&pool)
            .await
            .unwrap();

        let (d_kept, d_deleted) = (DeliveryId::generate(), DeliveryId::generate());
        let (rows, attempts) = succeeded_chunk(&[(d_kept, kept, e1), (d_deleted, deleted, e1)]);
        let written = deliveries::insert_deliveries(&pool, &rows, &attempts, &IdArray::default())
            .await
            .unwrap();
        assert_eq!(
            written,
            HashSet::from([d_kept]),
            "the deleted webhook's row is skipped"
        );
        assert_eq!(row_counts(&pool).await, (1, 1));

        // An insert not yet committed holds its webhook: deleting it has to wait.
        let d_late = DeliveryId::generate();
        let (rows, attempts) = succeeded_chunk(&[(d_late, kept, e2)]);
        let mut tx = pool.begin().await.unwrap();
        let written =
            deliveries::insert_deliveries(&mut *tx, &rows, &attempts, &IdArray::default())
                .await
                .unwrap();
        assert_eq!(written, HashSet::from([d_late]));
        let mut other = pool.begin().await.unwrap();
        sqlx::query("SET LOCAL lock_timeout = '200ms'")
            .execute(&mut *other)
            .await
            .unwrap();
        let blocked = sqlx::query("DELETE FROM webhooks WHERE id = $1")
            .bind(kept.as_uuid())
            .execute(&mut *other)
            .await
            .expect_err("the delete waits for the insert's lock");
        assert_eq!(
            blocked
                .as_database_error()
                .and_then(|e| e.code())
                .as_deref(),
            Some("55P03"),
            "{blocked}"
        );
        other.rollback().await.unwrap();
        tx.commit().await.unwrap();

        // Once it committed, deleting the webhook takes its deliveries and attempts.
        sqlx::query("DELETE FROM webhooks WHERE id = $1")
            .bind(kept.as_uuid())
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(row_counts(&pool).await, (0, 0));
    })
    .await;
}

/// The status index holds the deliveries that have not succeeded and no others
/// (migration 0024), and a list filtered by a status it holds finds them through it.
#[tokio::test]
async fn only_unsettled_deliveries_are_in_the_status_index() {
    with_database(|pool| async move {
        let hook = webhook(&pool, ALICE, 3, 0).await;
        let events: Vec<EventId> = (0..4).map(|_| EventId::generate()).collect();
        record_events(
            &pool,
            &events.iter().map(|e| (*e, ALICE, "a")).collect::<Vec<_>>(),
        )
        .await;
        let ids: Vec<DeliveryId> = events.iter().map(|_| DeliveryId::generate()).collect();
        let (mut rows, mut attempts) = succeeded_chunk(&[
            (ids[0], hook, events[0]),
            (ids[1], hook, events[1]),
            (ids[2], hook, events[2]),
        ]);
        rows.push(delivery(
            ids[3],
            hook,
            events[3],
            ALICE,
            DeliveryStatus::Failed,
            1,
            None,
        ));
        attempts.push(attempt(ids[3], 1, 500));
        deliveries::insert_deliveries(&pool, &rows, &attempts, &IdArray::default())
            .await
            .unwrap();
        // ANALYZE counts every row of a table this small, index by index.
        sqlx::query("ANALYZE webhook_deliveries")
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(
            index_entries(&pool, "webhook_deliveries_list_idx").await,
            4.0
        );
        assert_eq!(
            index_entries(&pool, "webhook_deliveries_unsettled_idx").await,
            1.0,
            "succeeded deliveries take no entry"
        );

        let listed = deliveries::list(&pool, hook, &only(DeliveryStatus::Failed), &all(10))
            .await
            .unwrap();
        assert_eq!(listed.iter().map(|d| d.id).collect::<Vec<_>>(), [ids[3]]);
        // The statement a custom plan of `list` comes to with `failed` for its status;
        // a table this small would otherwise be read whole.
        let mut conn = pool.begin().await.unwrap();
        sqlx::query("SET LOCAL enable_seqscan = off")
            .execute(&mut *conn)
            .await
            .unwrap();
        let plan: Vec<String> = sqlx::query_scalar(
            "EXPLAIN SELECT id FROM webhook_deliveries
              WHERE webhook_id = $1 AND status = 'failed' ORDER BY created_at DESC LIMIT 10",
        )
        .bind(hook.as_uuid())
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        let plan = plan.join("\n");
        let partition_indexes: Vec<String> = sqlx::query_scalar(
            "SELECT i.inhrelid::regclass::text FROM pg_inherits i
              WHERE i.inhparent = 'webhook_deliveries_unsettled_idx'::regclass",
        )
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        assert!(
            partition_indexes
                .iter()
                .any(|ix| plan.contains(ix.as_str())),
            "a failed-status list reads the unsettled index: {plan}"
        );
    })
    .await;
}

#[tokio::test]
async fn health_deltas_count_failures_and_disable() {
    with_database(|pool| async move {
        let failing = webhook(&pool, ALICE, 5, 3).await;
        let gone = webhook(&pool, ALICE, 5, 0).await;
        let healthy = webhook(&pool, BOB, 5, 0).await;
        let recovering = webhook(&pool, BOB, 5, 4).await;
        let mut ids = [failing, gone, healthy, recovering];
        ids.sort();
        let mut h = HealthDeltas::default();
        for id in ids {
            h.push(HealthDelta {
                webhook_id: id,
                trailing_failures: if id == failing {
                    2
                } else if id == recovering {
                    1
                } else {
                    0
                },
                had_success: id == healthy || id == recovering,
                gone: id == gone,
            });
        }
        let mut tx = pool.begin().await.unwrap();
        let mut changes = deliveries::update_health(&mut *tx, &h, 5).await.unwrap();
        tx.commit().await.unwrap();
        changes.sort_by_key(|c| c.webhook_id);
        let by = |id: WebhookId| changes.iter().find(|c| c.webhook_id == id);
        assert!(by(healthy).is_none(), "nothing to change: not touched");
        let f = by(failing).unwrap();
        assert_eq!((f.old_failures, f.new_failures), (3, 5));
        assert!(f.was_active && !f.active);
        assert_eq!(f.disabled_reason.as_deref(), Some("failing"));
        assert_eq!(f.user_id, ALICE);
        let g = by(gone).unwrap();
        assert!(g.was_active && !g.active);
        assert_eq!(g.disabled_reason.as_deref(), Some("gone"));
        let r = by(recovering).unwrap();
        assert_eq!((r.old_failures, r.new_failures), (4, 1));
        assert!(r.active);
        assert!(
            deliveries::update_health(&pool, &HealthDeltas::default(), 5)
                .await
                .unwrap()
                .is_empty()
        );
    })
    .await;
}
