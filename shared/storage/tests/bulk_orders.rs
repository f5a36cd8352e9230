//! The bulk-order family's statements (`bulk_order_batches`, `bulk_order_batch_chunks`,
//! `bulk_order_results`, `orders`, `order_items`) against the real PostgreSQL: each
//! test creates its own database, applies the migrations and drops it at the end.
//!
//! Server: `PORTICO_TEST_DATABASE_URL` (any database on it; default
//! `postgres://postgres@127.0.0.1:5432/postgres`).

use portico_domain::bulk_orders::{BatchStatus, ResultStatus};
use portico_domain::ids::{BatchId, OrderId};
use portico_storage::bulk_orders::{self as store, ChunkCounts, NewBatch, NewChunks, NewResults};
use portico_storage::orders::{self, NewLineItem, NewOrder, NewOrders, OrderOwner};
use portico_storage::webhooks;
use sqlx::PgPool;
use uuid::Uuid;

mod common;
use common::with_database;

const ALICE: &str = "alice";
const BOB: &str = "bob";

/// A JSON order with reference `r`.
fn order_json(r: &str) -> String {
    format!(
        r#"{{"clientOrderRef":"{r}","currency":"EUR","lineItems":[{{"sku":"S","quantity":1,"unitPrice":"1.00"}}]}}"#
    )
}

/// Submits a batch of `user` the way the gateway does: pending row, chunks of 1,000
/// orders, seal; returns its id.
async fn submit(
    pool: &PgPool,
    user: &str,
    key: Option<&str>,
    parent: Option<BatchId>,
    refs: &[&str],
) -> BatchId {
    let id = BatchId::generate();
    let mut tx = pool.begin().await.unwrap();
    let batch = NewBatch {
        id,
        user_id: user,
        integration_id: None,
        parent_batch_id: parent,
        idempotency_key: key,
        retention_days: 30,
    };
    assert!(store::insert_pending(&mut *tx, &batch).await.unwrap());
    let mut chunks = NewChunks::default();
    for (k, part) in refs.chunks(1000).enumerate() {
        let orders: Vec<String> = part.iter().map(|r| order_json(r)).collect();
        chunks.push(k as i32, k as i32 * 1000, format!("[{}]", orders.join(",")));
    }
    assert_eq!(chunks.len(), refs.len().div_ceil(1000));
    store::insert_chunks(&mut *tx, id, &chunks).await.unwrap();
    let row = store::seal(&mut *tx, id, refs.len() as i32, b"hash")
        .await
        .unwrap();
    assert_eq!(row.id, id);
    assert_eq!(row.total, refs.len() as i32);
    assert_eq!(row.status(), BatchStatus::Pending);
    tx.commit().await.unwrap();
    id
}

/// Creates the orders `refs` (one line item each) for `batch` of `user`; returns the
/// ids actually inserted.
async fn create_orders(pool: &PgPool, user: &str, batch: BatchId, refs: &[&str]) -> Vec<OrderId> {
    let mut new = NewOrders::with_capacity(refs.len(), refs.len());
    for r in refs {
        new.push(
            NewOrder {
                id: OrderId::generate(),
                client_order_ref: r,
                currency: "EUR",
                customer: r#"{"email":"ada@example.com","name":"Ada"}"#.into(),
                shipping_address:
                    r#"{"line1":"1 Main St","city":"Berlin","postalCode":"10115","country":"DE"}"#
                        .into(),
                total_minor: 250,
                metadata: Some(r#"{"k":1}"#),
            },
            [
                NewLineItem {
                    line_number: 1,
                    sku: "A",
                    quantity: 2,
                    unit_price_minor: 100,
                },
                NewLineItem {
                    line_number: 2,
                    sku: "B",
                    quantity: 1,
                    unit_price_minor: 50,
                },
            ],
        );
    }
    let owner = OrderOwner {
        user_id: user,
        batch_id: batch,
        integration_id: None,
    };
    orders::insert(pool, &owner, &new).await.unwrap()
}

/// Submission: a taken idempotency key inserts nothing and finds the first batch (for
/// its owner only); reads, lists (status filter, keyset cursor) and cancel see only
/// the owner's batches.
#[tokio::test]
async fn submission_reads_and_cancel() {
    with_database(|pool| async move {
        let first = submit(&pool, ALICE, Some("k1"), None, &["a", "b"]).await;
        let again = NewBatch {
            id: BatchId::generate(),
            user_id: ALICE,
            integration_id: None,
            parent_batch_id: None,
            idempotency_key: Some("k1"),
            retention_days: 30,
        };
        assert!(!store::insert_pending(&pool, &again).await.unwrap());
        let found = store::find_by_idempotency_key(&pool, ALICE, "k1")
            .await
            .unwrap()
            .expect("alice's key");
        assert_eq!(found.id, first);
        assert!(
            store::find_by_idempotency_key(&pool, BOB, "k1")
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(
            store::request_hash(&pool, first).await.unwrap().as_deref(),
            Some(&b"hash"[..])
        );

        // The same key is free for another owner.
        let bobs = submit(&pool, BOB, Some("k1"), None, &["a"]).await;
        assert!(
            store::get_for_user(&pool, BOB, first)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(
            store::get_for_user(&pool, ALICE, first)
                .await
                .unwrap()
                .unwrap()
                .total,
            2
        );

        let second = submit(&pool, ALICE, None, None, &["c"]).await;
        let third = submit(&pool, ALICE, None, None, &["d"]).await;
        let all = store::list_for_user(&pool, ALICE, None, None, 10)
            .await
            .unwrap();
        let ids: Vec<BatchId> = all.iter().map(|b| b.id).collect();
        assert_eq!(ids, [third, second, first], "newest first, alice's only");
        let after = Some((all[0].created_at, all[0].id));
        let page = store::list_for_user(&pool, ALICE, None, after, 1)
            .await
            .unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].id, second);

        // Cancel: only the owner, only while unfinished.
        assert!(
            store::request_cancel(&pool, BOB, first)
                .await
                .unwrap()
                .is_none()
        );
        let cancelled = store::request_cancel(&pool, ALICE, first)
            .await
            .unwrap()
            .expect("pending batch");
        assert!(cancelled.cancel_requested);
        let processing =
            store::list_for_user(&pool, ALICE, Some(BatchStatus::Processing), None, 10)
                .await
                .unwrap();
        assert!(processing.is_empty());
        let claimed = store::claim(&pool, second).await.unwrap().expect("pending");
        assert_eq!(claimed.user_id, ALICE);
        assert!(!claimed.cancel_requested);
        let processing =
            store::list_for_user(&pool, ALICE, Some(BatchStatus::Processing), None, 10)
                .await
                .unwrap();
        assert_eq!(processing.len(), 1);
        assert_eq!(processing[0].id, second);
        store::complete(&pool, bobs, BatchStatus::Completed)
            .await
            .unwrap();
        assert!(
            store::request_cancel(&pool, BOB, bobs)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store::claim(&pool, bobs).await.unwrap().is_none(),
            "finished"
        );
    })
    .await;
}

/// One chunk processed the way the batch-processor does it: lock, insert orders (an
/// existing reference is skipped and then found), results, counts with the error
/// summary merged, finish; results read back in order and by status; orders read back
/// by their owner only.
#[tokio::test]
async fn a_chunk_is_processed_and_read_back() {
    with_database(|pool| async move {
        let earlier = submit(&pool, ALICE, None, None, &["x"]).await;
        let taken = create_orders(&pool, ALICE, earlier, &["x"]).await;
        assert_eq!(taken.len(), 1);

        let batch = submit(&pool, ALICE, None, None, &["x", "y", "bad"]).await;
        store::claim(&pool, batch).await.unwrap().expect("claimed");
        assert_eq!(store::unprocessed_chunks(&pool, batch).await.unwrap(), [0]);

        let mut tx = pool.begin().await.unwrap();
        let chunk = store::lock_chunk(&mut *tx, batch, 0)
            .await
            .unwrap()
            .expect("unprocessed chunk");
        assert_eq!(chunk.first_index, 0);
        let parsed: Vec<serde_json::Value> = serde_json::from_str(&chunk.orders).unwrap();
        assert_eq!(parsed.len(), 3);

        let mut new = NewOrders::with_capacity(2, 2);
        let (x_id, y_id) = (OrderId::generate(), OrderId::generate());
        for (id, r) in [(x_id, "x"), (y_id, "y")] {
            new.push(
                NewOrder {
                    id,
                    client_order_ref: r,
                    currency: "EUR",
                    customer: "{}".into(),
                    shipping_address: "{}".into(),
                    total_minor: 100,
                    metadata: None,
                },
                [NewLineItem {
                    line_number: 1,
                    sku: "S",
                    quantity: 1,
                    unit_price_minor: 100,
                }],
            );
        }
        let owner = OrderOwner {
            user_id: ALICE,
            batch_id: batch,
            integration_id: None,
        };
        let created = orders::insert(&mut *tx, &owner, &new).await.unwrap();
        assert_eq!(created, [y_id], "x already existed");
        let existing = orders::find_by_refs(&mut *tx, ALICE, &["x", "nope"])
            .await
            .unwrap();
        assert_eq!(existing, [("x".to_owned(), taken[0])]);
        assert!(
            orders::find_by_refs(&mut *tx, BOB, &["x"])
                .await
                .unwrap()
                .is_empty()
        );

        let mut results = NewResults::with_capacity(3);
        results.push(0, Some("x"), ResultStatus::Duplicate, Some(taken[0]), None);
        results.push(1, Some("y"), ResultStatus::Succeeded, Some(y_id), None);
        results.push(
            2,
            Some("bad"),
            ResultStatus::Failed,
            None,
            Some(r#"[{"code":"invalid_currency","path":"/currency","message":"no"}]"#.into()),
        );
        store::insert_results(&mut *tx, batch, &results)
            .await
            .unwrap();
        store::mark_chunk_processed(&mut *tx, batch, 0)
            .await
            .unwrap();
        let counts = ChunkCounts {
            processed: 3,
            succeeded: 1,
            failed: 1,
            duplicate: 1,
        };
        let after = store::add_chunk_counts(&mut *tx, batch, counts, r#"{"invalid_currency":1}"#)
            .await
            .unwrap();
        assert!(!after.cancel_requested);
        assert_eq!((after.processed, after.succeeded), (3, 1));
        // A second chunk's summary is merged, an empty one leaves it alone.
        store::add_chunk_counts(
            &mut *tx,
            batch,
            ChunkCounts::default(),
            r#"{"invalid_currency":2,"x":1}"#,
        )
        .await
        .unwrap();
        store::add_chunk_counts(&mut *tx, batch, ChunkCounts::default(), "{}")
            .await
            .unwrap();
        tx.commit().await.unwrap();

        assert!(
            store::lock_chunk(&pool, batch, 0).await.unwrap().is_none(),
            "processed"
        );
        assert_eq!(
            store::count_unprocessed_chunks(&pool, batch).await.unwrap(),
            0
        );
        let mut tx = pool.begin().await.unwrap();
        let row = store::lock_processing(&mut *tx, batch)
            .await
            .unwrap()
            .expect("processing");
        assert_eq!(row.processed, 3);
        assert_eq!(
            row.error_summary(),
            [("invalid_currency".to_owned(), 3), ("x".to_owned(), 1)]
        );
        let status = BatchStatus::finished(&row.counts());
        let done = store::complete(&mut *tx, batch, status).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(done.status(), BatchStatus::CompletedWithErrors);
        assert!(done.completed_at.is_some());
        assert!(
            store::lock_processing(&pool, batch)
                .await
                .unwrap()
                .is_none()
        );

        let all = store::list_results(&pool, batch, None, -1, 10)
            .await
            .unwrap();
        let indexes: Vec<i32> = all.iter().map(|r| r.order_index).collect();
        assert_eq!(indexes, [0, 1, 2]);
        assert_eq!(all[1].order_id, Some(y_id));
        assert_eq!(all[0].errors, serde_json::json!([]));
        assert_eq!(all[2].errors[0]["code"], "invalid_currency");
        let failed = store::list_results(&pool, batch, Some(ResultStatus::Failed), -1, 10)
            .await
            .unwrap();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].status(), ResultStatus::Failed);
        let after = store::list_results(&pool, batch, None, 0, 1).await.unwrap();
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].order_index, 1);

        let order = orders::get_for_user(&pool, ALICE, y_id)
            .await
            .unwrap()
            .expect("alice's order");
        assert_eq!(order.batch_id, Some(batch));
        assert_eq!(order.client_order_ref, "y");
        assert!(
            orders::get_for_user(&pool, BOB, y_id)
                .await
                .unwrap()
                .is_none()
        );
        let items = orders::line_items(&pool, y_id).await.unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].unit_price_minor, 100);
        let two = create_orders(&pool, ALICE, earlier, &["z"]).await;
        let items = orders::line_items(&pool, two[0]).await.unwrap();
        let skus: Vec<&str> = items.iter().map(|i| i.sku.as_str()).collect();
        assert_eq!(skus, ["A", "B"], "in line order");
    })
    .await;
}

/// Cancel and give-up: the unprocessed chunks' orders get `unprocessed` results (a
/// result already there is kept), the chunks are marked processed and counted.
#[tokio::test]
async fn unprocessed_orders_are_reported_and_retried() {
    with_database(|pool| async move {
        let refs: Vec<String> = (0..1500).map(|i| format!("r{i}")).collect();
        let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
        let batch = submit(&pool, ALICE, None, None, &refs).await;
        store::claim(&pool, batch).await.unwrap().expect("claimed");

        // Chunk 0 was processed before the cancel: one failed result.
        let mut results = NewResults::with_capacity(1);
        results.push(3, Some("r3"), ResultStatus::Failed, None, None);
        store::insert_results(&pool, batch, &results).await.unwrap();
        store::mark_chunk_processed(&pool, batch, 0).await.unwrap();

        let mut tx = pool.begin().await.unwrap();
        let chunks = store::lock_unprocessed_chunks(&mut *tx, batch)
            .await
            .unwrap();
        assert_eq!(chunks, [1]);
        let row = store::lock_unfinished(&mut *tx, batch)
            .await
            .unwrap()
            .expect("unfinished");
        assert_eq!(row.unprocessed, 0);
        let written = store::write_unprocessed_results(&mut *tx, batch, &chunks)
            .await
            .unwrap();
        assert_eq!(written, 500);
        store::mark_chunks_processed(&mut *tx, batch, &chunks)
            .await
            .unwrap();
        store::add_unprocessed(&mut *tx, batch, written as i32)
            .await
            .unwrap();
        let done = store::complete(&mut *tx, batch, BatchStatus::Cancelled)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(done.unprocessed, 500);
        assert!(
            store::lock_unfinished(&pool, batch)
                .await
                .unwrap()
                .is_none()
        );
        let unprocessed =
            store::list_results(&pool, batch, Some(ResultStatus::Unprocessed), -1, 1000)
                .await
                .unwrap();
        assert_eq!(unprocessed.len(), 500);
        assert_eq!(unprocessed[0].order_index, 1000);
        assert_eq!(unprocessed[0].client_order_ref.as_deref(), Some("r1000"));

        // retry-failed: the failed and unprocessed orders, re-cut into chunks.
        let child = BatchId::generate();
        let mut tx = pool.begin().await.unwrap();
        let new = NewBatch {
            id: child,
            user_id: ALICE,
            integration_id: None,
            parent_batch_id: Some(batch),
            idempotency_key: None,
            retention_days: 30,
        };
        assert!(store::insert_pending(&mut *tx, &new).await.unwrap());
        let copied = store::copy_retried_orders(&mut *tx, child, batch)
            .await
            .unwrap();
        assert_eq!(copied, 501);
        let row = store::seal(&mut *tx, child, copied as i32, b"retry")
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(row.parent_batch_id, Some(batch));
        assert_eq!(store::unprocessed_chunks(&pool, child).await.unwrap(), [0]);
        let chunk = store::lock_chunk(&pool, child, 0).await.unwrap().unwrap();
        let orders: Vec<serde_json::Value> = serde_json::from_str(&chunk.orders).unwrap();
        assert_eq!(orders.len(), 501);
        assert_eq!(orders[0]["clientOrderRef"], "r3");
        assert_eq!(orders[1]["clientOrderRef"], "r1000");
    })
    .await;
}

/// Retention deletes only finished batches past their expiry, with their chunks and
/// results; the orders stay and lose the link. `order.created` is wanted only with an
/// active webhook whose filters match.
#[tokio::test]
async fn expired_batches_are_deleted_and_webhook_interest_is_read() {
    with_database(|pool| async move {
        let done = submit(&pool, ALICE, None, None, &["a"]).await;
        let running = submit(&pool, ALICE, None, None, &["b"]).await;
        let fresh = submit(&pool, ALICE, None, None, &["c"]).await;
        let order = create_orders(&pool, ALICE, done, &["a"]).await[0];
        store::complete(&pool, done, BatchStatus::Completed)
            .await
            .unwrap();
        store::complete(&pool, fresh, BatchStatus::Completed)
            .await
            .unwrap();
        store::claim(&pool, running).await.unwrap();
        sqlx::query("UPDATE bulk_order_batches SET expires_at = now() - interval '1 day' WHERE id = ANY($1)")
            .bind([done.as_uuid(), running.as_uuid()])
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(store::delete_expired(&pool, 100).await.unwrap(), 1);
        assert!(store::get_for_user(&pool, ALICE, done).await.unwrap().is_none());
        assert!(store::get_for_user(&pool, ALICE, running).await.unwrap().is_some());
        assert!(store::get_for_user(&pool, ALICE, fresh).await.unwrap().is_some());
        assert!(store::lock_chunk(&pool, done, 0).await.unwrap().is_none());
        let kept = orders::get_for_user(&pool, ALICE, order).await.unwrap().unwrap();
        assert_eq!(kept.batch_id, None);
        assert_eq!(store::delete_expired(&pool, 100).await.unwrap(), 0);

        let filters = ["order.created".to_owned(), "*".to_owned(), "order.*".to_owned()];
        assert!(!webhooks::any_active_matching(&pool, ALICE, &filters).await.unwrap());
        for (user, events, active) in [
            (ALICE, vec!["bulk_order.*"], true),
            (BOB, vec!["order.*"], true),
            (ALICE, vec!["order.*"], false),
        ] {
            sqlx::query(
                "INSERT INTO webhooks (id, user_id, url, events, active, max_retries, base_delay_ms, max_delay_ms)
                 VALUES ($1, $2, 'https://example.com/h', $3, $4, 5, 1000, 60000)",
            )
            .bind(Uuid::now_v7())
            .bind(user)
            .bind(events)
            .bind(active)
            .execute(&pool)
            .await
            .unwrap();
        }
        assert!(!webhooks::any_active_matching(&pool, ALICE, &filters).await.unwrap());
        assert!(webhooks::any_active_matching(&pool, BOB, &filters).await.unwrap());
    })
    .await;
}
