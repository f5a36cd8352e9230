//! The audit log's chain against the real PostgreSQL: records chain per owner, writers
//! of one owner serialise on the chain head (no fork under concurrency), verification
//! finds a record edited or removed with plain SQL, and retention keeps the retained
//! part verifiable through the chain's anchor.
//!
//! Server: `PORTICO_TEST_DATABASE_URL` (any database on it; default
//! `postgres://postgres@127.0.0.1:5432/postgres`).

use portico_storage::audit::{self, AuditFilter, Break, NewAuditRecord};

mod common;
use common::with_database;

async fn append(pool: &sqlx::PgPool, owner: &str, action: &str) -> audit::AuditRecordRow {
    let changes = serde_json::json!({"fields": ["url", "events"]});
    let mut tx = pool.begin().await.expect("begin");
    let row = audit::append(
        &mut tx,
        &NewAuditRecord {
            owner_id: owner,
            actor_kind: "user",
            actor_id: owner,
            client_addr: Some("127.0.0.1"),
            request_id: Some("req-1"),
            action,
            resource_type: "webhook",
            resource_id: "w-1",
            changes: &changes,
        },
    )
    .await
    .expect("append");
    tx.commit().await.expect("commit");
    row
}

/// Records of one owner chain from 1 with each prev_hash the hash before; another
/// owner has a chain of its own; a list sees only its owner's records, newest first,
/// and filters.
#[tokio::test]
async fn records_chain_per_owner_and_lists_are_isolated() {
    with_database(|pool| async move {
        let a1 = append(&pool, "alice", "webhook.created").await;
        let b1 = append(&pool, "bob", "webhook.created").await;
        let a2 = append(&pool, "alice", "webhook.updated").await;
        assert_eq!((a1.seq, a2.seq, b1.seq), (1, 2, 1));
        assert_eq!(a1.prev_hash, audit::GENESIS.to_vec());
        assert_eq!(a2.prev_hash, a1.hash);
        assert!(a2.at >= a1.at);
        let all = audit::list(&pool, "alice", &AuditFilter::default(), None, 10)
            .await
            .unwrap();
        assert_eq!(
            all.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![2, 1],
            "newest first, alice's only"
        );
        assert_eq!(all[0], a2, "what is read back is what was hashed");
        let updated = AuditFilter {
            action: Some("webhook.updated"),
            ..Default::default()
        };
        let only = audit::list(&pool, "alice", &updated, None, 10)
            .await
            .unwrap();
        assert_eq!(only.len(), 1);
        let page = audit::list(
            &pool,
            "alice",
            &AuditFilter::default(),
            Some((a2.at, a2.id)),
            10,
        )
        .await
        .unwrap();
        assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1]);
        let v = audit::verify(&pool, "alice", None).await.unwrap();
        assert_eq!((v.records, v.broken.clone()), (2, None));
        assert_eq!(v.head_hash, a2.hash);
    })
    .await;
}

/// Forty concurrent writers of one owner: forty records numbered 1..=40, one chain.
#[tokio::test]
async fn concurrent_writers_of_one_owner_never_fork_the_chain() {
    with_database(|pool| async move {
        let mut tasks = Vec::new();
        for _ in 0..40 {
            let pool = pool.clone();
            tasks.push(tokio::spawn(async move {
                append(&pool, "carol", "webhook.updated").await
            }));
        }
        for t in tasks {
            t.await.expect("writer");
        }
        let v = audit::verify(&pool, "carol", None).await.unwrap();
        assert_eq!(v.records, 40);
        assert_eq!(v.head_seq, 40);
        assert_eq!(v.broken, None);
    })
    .await;
}

/// Writes a record the two-step way (as the gateway does): committed, waiting.
async fn enqueue(pool: &sqlx::PgPool, owner: &str, resource_id: &str) {
    let changes = serde_json::json!({"fields": ["description"], "n": resource_id});
    let mut tx = pool.begin().await.expect("begin");
    audit::enqueue(
        &mut *tx,
        &NewAuditRecord {
            owner_id: owner,
            actor_kind: "service",
            actor_id: owner,
            client_addr: None,
            request_id: Some(resource_id),
            action: "webhook.created",
            resource_type: "webhook",
            resource_id,
            changes: &changes,
        },
    )
    .await
    .expect("enqueue");
    tx.commit().await.expect("commit");
}

/// Forty writers of one owner commit their records without the chain head, a rolled
/// back one leaves none, and concurrent linkers (replicas, a list) link each committed
/// record exactly once, in queued order, after any record linked the one-step way:
/// one chain that verifies, times in sequence order, nothing left waiting.
#[tokio::test]
async fn waiting_records_link_once_in_queued_order() {
    with_database(|pool| async move {
        append(&pool, "hana", "webhook.updated").await;
        let mut writers = Vec::new();
        for i in 0..40 {
            let pool = pool.clone();
            writers.push(tokio::spawn(async move {
                enqueue(&pool, "hana", &format!("w-{i}")).await
            }));
        }
        let mut tx = pool.begin().await.expect("begin");
        audit::enqueue(
            &mut *tx,
            &NewAuditRecord {
                owner_id: "hana",
                actor_kind: "user",
                actor_id: "hana",
                client_addr: None,
                request_id: None,
                action: "webhook.deleted",
                resource_type: "webhook",
                resource_id: "rolled-back",
                changes: &serde_json::json!({}),
            },
        )
        .await
        .expect("enqueue");
        tx.rollback().await.expect("rollback");
        for w in writers {
            w.await.expect("writer");
        }
        assert!(audit::has_pending(&pool, "hana").await.unwrap());
        assert_eq!(
            audit::pending_owners(&pool, 10).await.unwrap(),
            vec!["hana".to_owned()]
        );
        let mut linkers = Vec::new();
        for _ in 0..3 {
            let pool = pool.clone();
            linkers.push(tokio::spawn(async move {
                audit::link(&pool, "hana").await.expect("link")
            }));
        }
        let mut linked = 0;
        for l in linkers {
            linked += l.await.expect("linker");
        }
        assert_eq!(linked, 40, "each committed record linked once");
        assert!(!audit::has_pending(&pool, "hana").await.unwrap());
        assert_eq!(audit::link(&pool, "hana").await.unwrap(), 0);
        let v = audit::verify(&pool, "hana", None).await.unwrap();
        assert_eq!((v.records, v.head_seq, v.broken), (41, 41, None));
        let rows = audit::records_from(&pool, "hana", 1, 100).await.unwrap();
        assert!(
            rows.windows(2).all(|w| w[0].at <= w[1].at),
            "time order is seq order"
        );
        assert!(rows.iter().all(|r| r.resource_id != "rolled-back"));
        let distinct: std::collections::HashSet<_> =
            rows[1..].iter().map(|r| r.request_id.clone()).collect();
        assert_eq!(distinct.len(), 40, "every writer's record, once");
        // The one-step form goes on from the linked head.
        let next = append(&pool, "hana", "webhook.deleted").await;
        assert_eq!((next.seq, next.prev_hash.clone()), (42, v.head_hash));
    })
    .await;
}

/// An UPDATE of one record's field is found at that record; a DELETE of a middle record
/// is found as removed at its sequence number; deleting the newest is found too.
#[tokio::test]
async fn verify_finds_an_edited_and_a_removed_record() {
    with_database(|pool| async move {
        for _ in 0..5 {
            append(&pool, "dave", "webhook.updated").await;
        }
        sqlx::query(
            "UPDATE audit_log SET actor_id = 'mallory' WHERE owner_id = 'dave' AND seq = 3",
        )
        .execute(&pool)
        .await
        .unwrap();
        let v = audit::verify(&pool, "dave", None).await.unwrap();
        let (seq, why, _) = v.broken.clone().expect("broken");
        assert_eq!((seq, why, v.records), (3, Break::Edited, 2));
        // From 4 on (trusting record 4's prev_hash) the rest holds.
        let later = audit::verify(&pool, "dave", Some(4)).await.unwrap();
        assert_eq!((later.records, later.broken), (2, None));

        for _ in 0..4 {
            append(&pool, "erin", "integration.updated").await;
        }
        sqlx::query("DELETE FROM audit_log WHERE owner_id = 'erin' AND seq = 2")
            .execute(&pool)
            .await
            .unwrap();
        let v = audit::verify(&pool, "erin", None).await.unwrap();
        let (seq, why, _) = v.broken.expect("broken");
        assert_eq!((seq, why), (2, Break::Removed));

        for _ in 0..3 {
            append(&pool, "frank", "integration.updated").await;
        }
        sqlx::query("DELETE FROM audit_log WHERE owner_id = 'frank' AND seq = 3")
            .execute(&pool)
            .await
            .unwrap();
        let v = audit::verify(&pool, "frank", None).await.unwrap();
        let (seq, why, _) = v.broken.expect("broken");
        assert_eq!((seq, why), (3, Break::Removed));
    })
    .await;
}

/// Retention removes the oldest records and moves the anchor: the rest still verifies;
/// a retention of 0 days removes nothing.
#[tokio::test]
async fn retention_keeps_the_rest_verifiable() {
    with_database(|pool| async move {
        for _ in 0..6 {
            append(&pool, "gina", "webhook.updated").await;
        }
        assert_eq!(audit::purge(&pool, 0).await.unwrap(), 0);
        // Age the first four records (times stay in sequence order) and re-hash them as
        // the gateway would have, so only retention can be at stake here.
        let rows = audit::records_from(&pool, "gina", 1, 10).await.unwrap();
        let mut prev = audit::GENESIS.to_vec();
        for mut row in rows {
            if row.seq <= 4 {
                row.at -= chrono::Duration::days(30 - row.seq);
            }
            row.prev_hash = prev.clone();
            row.hash = row.expected_hash().to_vec();
            prev = row.hash.clone();
            sqlx::query(
                "UPDATE audit_log SET at = $3, prev_hash = $4, hash = $5 WHERE owner_id = $1 AND seq = $2",
            )
            .bind(&row.owner_id)
            .bind(row.seq)
            .bind(row.at)
            .bind(&row.prev_hash)
            .bind(&row.hash)
            .execute(&pool)
            .await
            .unwrap();
        }
        sqlx::query("UPDATE audit_chain_heads SET head_hash = $1 WHERE owner_id = 'gina'")
            .bind(&prev)
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(audit::purge(&pool, 10).await.unwrap(), 4);
        let head = audit::head(&pool, "gina").await.unwrap().expect("head");
        assert_eq!(head.anchor_seq, 5);
        let v = audit::verify(&pool, "gina", None).await.unwrap();
        assert_eq!((v.from_seq, v.records, v.broken), (5, 2, None));
        // The chain goes on from its head.
        append(&pool, "gina", "webhook.deleted").await;
        let v = audit::verify(&pool, "gina", None).await.unwrap();
        assert_eq!((v.records, v.head_seq, v.broken), (3, 7, None));
    })
    .await;
}
