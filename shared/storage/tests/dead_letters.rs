//! The dead-letter statements (`job_dead_letters`, `dead_letter_actions`) against the
//! real PostgreSQL: each test creates its own database, applies the migrations and
//! drops it at the end.
//!
//! Server: `PORTICO_TEST_DATABASE_URL` (any database on it; default
//! `postgres://postgres@127.0.0.1:5432/postgres`).

use chrono::{Duration, Utc};
use portico_storage::dead_letters::{
    self, Audit, DeadLetterFilter, NewDeadLetter, Resolution, StatusFilter,
};

mod common;
use common::with_database;

const EVENTS: &str = "webhook-dispatcher.events";
const BATCHES: &str = "batch-processor.batches";

fn job<'a>(
    consumer: &'a str,
    message_id: &'a str,
    user: Option<&'a str>,
    reason: &'a str,
) -> NewDeadLetter<'a> {
    NewDeadLetter {
        consumer,
        subject: "PORTICO.jobs.events",
        payload: b"{\"v\":1}",
        reason,
        user_id: user,
        message_id,
    }
}

fn audit<'a>(reason: &'a str, replay_message_id: Option<&'a str>) -> Audit<'a> {
    Audit {
        operator: "ops-alice",
        request_id: Some("req-1"),
        client_addr: Some("10.0.0.7"),
        reason,
        replay_message_id,
    }
}

/// Undecodable messages add a record each; a decoded job is recorded once per
/// consumer and message id until an operator resolves it, and failing again after
/// that reopens it with the new reason.
#[tokio::test]
async fn jobs_are_recorded_once_and_reopened_after_resolution() {
    with_database(|pool| async move {
        for _ in 0..2 {
            dead_letters::record(&pool, EVENTS, "PORTICO.jobs.events", b"\xff", "undecodable")
                .await
                .unwrap();
        }
        assert_eq!(dead_letters::count_unresolved(&pool).await.unwrap(), 2);

        let first = job(EVENTS, "m-1", Some("alice"), "endpoint gone");
        assert!(dead_letters::record_job(&pool, &first).await.unwrap());
        let again = job(EVENTS, "m-1", Some("alice"), "second failure");
        assert!(!dead_letters::record_job(&pool, &again).await.unwrap());
        // Another consumer's record of the same message is its own.
        assert!(
            dead_letters::record_job(&pool, &job(BATCHES, "m-1", None, "x"))
                .await
                .unwrap()
        );
        assert_eq!(dead_letters::count_unresolved(&pool).await.unwrap(), 4);

        let all = dead_letters::list(&pool, &DeadLetterFilter::default(), None, 10)
            .await
            .unwrap();
        let recorded = all
            .iter()
            .find(|d| d.consumer == EVENTS && d.message_id.as_deref() == Some("m-1"))
            .expect("the job's record")
            .clone();
        assert_eq!(recorded.reason, "endpoint gone");
        assert_eq!(recorded.user_id.as_deref(), Some("alice"));
        assert_eq!(recorded.payload_bytes, 7);

        let mut tx = pool.begin().await.unwrap();
        dead_letters::resolve(
            &mut tx,
            recorded.id,
            Resolution::Discarded,
            &audit("known bad", None),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(dead_letters::count_unresolved(&pool).await.unwrap(), 3);

        assert!(dead_letters::record_job(&pool, &again).await.unwrap());
        let reopened = dead_letters::get(&pool, recorded.id)
            .await
            .unwrap()
            .expect("the record");
        assert_eq!(reopened.record.reason, "second failure");
        assert_eq!(reopened.record.resolution, None);
        assert_eq!(reopened.record.resolved_at, None);
        assert_eq!(dead_letters::count_unresolved(&pool).await.unwrap(), 4);
        // The audit of the earlier discard stays.
        assert_eq!(
            dead_letters::actions(&pool, recorded.id)
                .await
                .unwrap()
                .len(),
            1
        );
    })
    .await;
}

/// The list pages newest first and filters by consumer, owner, time and resolution.
#[tokio::test]
async fn the_list_filters_and_pages() {
    with_database(|pool| async move {
        for (consumer, id, user) in [
            (EVENTS, "a", Some("alice")),
            (EVENTS, "b", Some("bob")),
            (BATCHES, "c", None),
            (EVENTS, "d", Some("alice")),
        ] {
            dead_letters::record_job(&pool, &job(consumer, id, user, "failed"))
                .await
                .unwrap();
        }
        let ids = |rows: &[dead_letters::DeadLetterRow]| {
            rows.iter()
                .map(|r| r.message_id.clone().unwrap_or_default())
                .collect::<Vec<_>>()
        };
        let all = dead_letters::list(&pool, &DeadLetterFilter::default(), None, 10)
            .await
            .unwrap();
        assert_eq!(ids(&all), ["d", "c", "b", "a"]);

        let page = dead_letters::list(&pool, &DeadLetterFilter::default(), None, 2)
            .await
            .unwrap();
        assert_eq!(ids(&page), ["d", "c"]);
        let rest = dead_letters::list(&pool, &DeadLetterFilter::default(), Some(page[1].id), 10)
            .await
            .unwrap();
        assert_eq!(ids(&rest), ["b", "a"]);

        let by = |filter: DeadLetterFilter<'static>| {
            let pool = pool.clone();
            async move { ids(&dead_letters::list(&pool, &filter, None, 10).await.unwrap()) }
        };
        assert_eq!(
            by(DeadLetterFilter {
                consumer: Some(BATCHES),
                ..Default::default()
            })
            .await,
            ["c"]
        );
        assert_eq!(
            by(DeadLetterFilter {
                consumer: Some(EVENTS),
                user_id: Some("alice"),
                ..Default::default()
            })
            .await,
            ["d", "a"]
        );
        assert_eq!(
            by(DeadLetterFilter {
                since: Some(Utc::now() + Duration::hours(1)),
                ..Default::default()
            })
            .await,
            Vec::<String>::new()
        );
        assert_eq!(
            by(DeadLetterFilter {
                until: Some(Utc::now() + Duration::hours(1)),
                since: Some(Utc::now() - Duration::hours(1)),
                ..Default::default()
            })
            .await
            .len(),
            4
        );

        let b = all[2].id;
        let c = all[1].id;
        let mut tx = pool.begin().await.unwrap();
        dead_letters::resolve(
            &mut tx,
            b,
            Resolution::Replayed,
            &audit("fixed", Some("b:replay:1")),
        )
        .await
        .unwrap();
        dead_letters::resolve(&mut tx, c, Resolution::Discarded, &audit("junk", None))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let status = |s| DeadLetterFilter {
            status: Some(s),
            ..Default::default()
        };
        assert_eq!(by(status(StatusFilter::Unresolved)).await, ["d", "a"]);
        assert_eq!(
            by(status(StatusFilter::Resolved(Resolution::Replayed))).await,
            ["b"]
        );
        assert_eq!(
            by(status(StatusFilter::Resolved(Resolution::Discarded))).await,
            ["c"]
        );
    })
    .await;
}

/// A resolution locks its record, numbers replays from the audit trail and writes
/// the audit row with the record's new state; an unknown id reads as `None`.
#[tokio::test]
async fn resolutions_lock_and_are_audited() {
    with_database(|pool| async move {
        dead_letters::record_job(&pool, &job(EVENTS, "m", Some("alice"), "failed"))
            .await
            .unwrap();
        let id = dead_letters::list(&pool, &DeadLetterFilter::default(), None, 1)
            .await
            .unwrap()[0]
            .id;
        assert_eq!(dead_letters::get(&pool, id + 1).await.unwrap(), None);
        assert_eq!(dead_letters::lock(&pool, id + 1).await.unwrap(), None);

        let mut tx = pool.begin().await.unwrap();
        let locked = dead_letters::lock(&mut *tx, id)
            .await
            .unwrap()
            .expect("the record");
        assert_eq!(locked.payload, b"{\"v\":1}");
        assert_eq!((locked.resolution, locked.resolved_at), (None, None));
        // Another operator's transaction cannot take it meanwhile.
        let mut other = pool.begin().await.unwrap();
        sqlx::query("SET LOCAL lock_timeout = '50ms'")
            .execute(&mut *other)
            .await
            .unwrap();
        let blocked = dead_letters::lock(&mut *other, id).await.unwrap_err();
        assert_eq!(
            blocked
                .as_database_error()
                .and_then(|e| e.code())
                .as_deref(),
            Some("55P03")
        );
        other.rollback().await.unwrap();

        assert_eq!(dead_letters::count_replays(&mut *tx, id).await.unwrap(), 0);
        dead_letters::resolve(
            &mut tx,
            id,
            Resolution::Replayed,
            &audit("fixed in 1.4.2", Some("m:replay:1.1")),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();

        let detail = dead_letters::get(&pool, id)
            .await
            .unwrap()
            .expect("the record");
        assert_eq!(detail.record.resolution, Some(Resolution::Replayed));
        assert!(detail.record.resolved_at.is_some());
        assert_eq!(detail.payload, b"{\"v\":1}");
        let locked = dead_letters::lock(&pool, id)
            .await
            .unwrap()
            .expect("the record");
        assert_eq!(locked.resolution, Some(Resolution::Replayed));
        assert_eq!(dead_letters::count_replays(&pool, id).await.unwrap(), 1);

        let actions = dead_letters::actions(&pool, id).await.unwrap();
        assert_eq!(actions.len(), 1);
        let a = &actions[0];
        assert_eq!(a.action, "replayed");
        assert_eq!(a.operator, "ops-alice");
        assert_eq!(a.request_id.as_deref(), Some("req-1"));
        assert_eq!(a.client_addr.as_deref(), Some("10.0.0.7"));
        assert_eq!(a.reason, "fixed in 1.4.2");
        assert_eq!(a.replay_message_id.as_deref(), Some("m:replay:1.1"));
        assert_eq!(dead_letters::count_unresolved(&pool).await.unwrap(), 0);
    })
    .await;
}
