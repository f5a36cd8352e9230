//! The outbox statements (`outbox`) and the applied schema version of readiness
//! against the real PostgreSQL: each test creates its own database, applies the
//! migrations (or not, for the unmigrated case) and drops it at the end.
//!
//! Server: `PORTICO_TEST_DATABASE_URL` (any database on it; default
//! `postgres://postgres@127.0.0.1:5432/postgres`).

use portico_storage::AppliedSchema;
use portico_storage::outbox::{self, NewOutboxRow, NewOutboxRows};

mod common;
use common::with_database_migrated as with_database;

fn row(n: u8) -> NewOutboxRow {
    NewOutboxRow {
        subject: format!("PORTICO.jobs.{n}"),
        message_id: format!("msg-{n}"),
        payload: vec![n, 0, 255],
    }
}

/// Jobs added one at a time and in one statement are claimed oldest first with their
/// headers; a second relay skips the rows the first holds; deleted rows are gone once
/// the relay commits, a rolled-back claim leaves its rows; the backlog counts them.
#[tokio::test]
async fn rows_are_claimed_published_and_deleted() {
    with_database(true, |pool| async move {
        let empty = outbox::backlog(&pool).await.unwrap();
        assert_eq!((empty.pending, empty.oldest_age_secs), (0, None));

        let headers = serde_json::json!({ "traceparent": "00-abc-def-01" });
        let mut tx = pool.begin().await.unwrap();
        let first = row(1);
        outbox::insert(
            &mut *tx,
            &first.subject,
            &first.message_id,
            &first.payload,
            &headers,
        )
        .await
        .unwrap();
        let mut rows = NewOutboxRows::with_capacity(3);
        for n in 2..=4 {
            rows.push(row(n));
        }
        assert_eq!(rows.len(), 3);
        outbox::insert_all(&mut *tx, &rows, &serde_json::json!({}))
            .await
            .unwrap();
        outbox::insert_all(&mut *tx, &NewOutboxRows::default(), &headers)
            .await
            .unwrap();
        tx.commit().await.unwrap();

        let backlog = outbox::backlog(&pool).await.unwrap();
        assert_eq!(backlog.pending, 4);
        assert!(backlog.oldest_age_secs.is_some_and(|age| age >= 0.0));

        let mut relay_a = pool.begin().await.unwrap();
        let claimed_a = outbox::claim(&mut *relay_a, 2).await.unwrap();
        assert_eq!(
            claimed_a
                .iter()
                .map(|r| r.message_id.as_str())
                .collect::<Vec<_>>(),
            ["msg-1", "msg-2"]
        );
        assert_eq!(claimed_a[0].subject, "PORTICO.jobs.1");
        assert_eq!(claimed_a[0].payload, [1, 0, 255]);
        assert_eq!(claimed_a[0].headers, headers);
        assert_eq!(claimed_a[1].headers, serde_json::json!({}));

        let mut relay_b = pool.begin().await.unwrap();
        let claimed_b = outbox::claim(&mut *relay_b, 10).await.unwrap();
        assert_eq!(
            claimed_b
                .iter()
                .map(|r| r.message_id.as_str())
                .collect::<Vec<_>>(),
            ["msg-3", "msg-4"]
        );

        let ids: Vec<i64> = claimed_a.iter().map(|r| r.id).collect();
        assert_eq!(outbox::delete(&mut *relay_a, &ids).await.unwrap(), 2);
        relay_a.commit().await.unwrap();
        relay_b.rollback().await.unwrap();

        assert_eq!(outbox::backlog(&pool).await.unwrap().pending, 2);
        let left = outbox::claim(&pool, 10).await.unwrap();
        assert_eq!(
            left.iter()
                .map(|r| r.message_id.as_str())
                .collect::<Vec<_>>(),
            ["msg-3", "msg-4"]
        );
    })
    .await;
}

/// Readiness tells a database never migrated from one at a given version.
#[tokio::test]
async fn applied_schema_version_tells_unmigrated_from_current() {
    with_database(false, |pool| async move {
        assert_eq!(
            portico_storage::applied_schema_version(&pool)
                .await
                .unwrap(),
            AppliedSchema::NotMigrated
        );
        portico_storage::migrate(&pool).await.unwrap();
        assert_eq!(
            portico_storage::applied_schema_version(&pool)
                .await
                .unwrap(),
            AppliedSchema::Applied(Some(portico_storage::schema_version()))
        );
    })
    .await;
}
