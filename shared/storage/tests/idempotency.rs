//! The idempotency-key statements against a real PostgreSQL (each test its own
//! database): one claim per key, a held claim refused until its lease runs out, a
//! completed answer kept for replays, release, keys scoped by owner and route, and
//! retention; and the row versions a conditional write locks.

use portico_domain::ids::WebhookId;
use portico_storage::idempotency::{self as keys, KeyRef};
use sqlx::PgPool;

mod common;

fn key<'a>(user_id: &'a str, route: &'a str, key: &'a str) -> KeyRef<'a> {
    KeyRef {
        user_id,
        route,
        key,
    }
}

/// A key is claimed once; the holder's answer is stored and read back; another owner
/// or route with the same key is independent; a release frees the key.
#[tokio::test]
async fn a_key_is_claimed_once_and_keeps_its_answer() {
    common::with_database(|pool: PgPool| async move {
        let k = key("ann", "POST /webhooks", "k-1");
        assert!(keys::claim(&pool, k, b"hash-a", 60.0).await.unwrap());
        // Held: neither the same nor another request may claim it.
        assert!(!keys::claim(&pool, k, b"hash-a", 60.0).await.unwrap());
        assert!(!keys::claim(&pool, k, b"hash-b", 60.0).await.unwrap());
        let held = keys::find(&pool, k).await.unwrap().expect("the claim");
        assert_eq!(held.request_hash, b"hash-a");
        assert_eq!(held.status, None);

        // Another owner, another route: their own keys.
        assert!(
            keys::claim(&pool, key("bob", "POST /webhooks", "k-1"), b"x", 60.0)
                .await
                .unwrap()
        );
        assert!(
            keys::claim(&pool, key("ann", "POST /integrations", "k-1"), b"x", 60.0)
                .await
                .unwrap()
        );

        // Only the holder's request completes it.
        assert!(
            !keys::complete(&pool, k, b"hash-b", 201, None, b"sealed")
                .await
                .unwrap()
        );
        assert!(
            keys::complete(
                &pool,
                k,
                b"hash-a",
                201,
                Some("application/json"),
                b"sealed"
            )
            .await
            .unwrap()
        );
        let done = keys::find(&pool, k).await.unwrap().expect("the answer");
        assert_eq!(done.status, Some(201));
        assert_eq!(done.content_type.as_deref(), Some("application/json"));
        assert_eq!(done.response.as_deref(), Some(b"sealed".as_slice()));
        // A completed key is not released, nor claimed again.
        keys::release(&pool, k, b"hash-a").await.unwrap();
        assert!(keys::find(&pool, k).await.unwrap().is_some());
        assert!(!keys::claim(&pool, k, b"hash-a", 60.0).await.unwrap());

        // A released claim is free again.
        let r = key("ann", "POST /webhooks", "k-2");
        assert!(keys::claim(&pool, r, b"h", 60.0).await.unwrap());
        keys::release(&pool, r, b"h").await.unwrap();
        assert!(keys::find(&pool, r).await.unwrap().is_none());
        assert!(keys::claim(&pool, r, b"h2", 60.0).await.unwrap());
    })
    .await;
}

/// An abandoned claim (its lease ran out) is taken over; a completed key past its
/// retention is claimed afresh and purged.
#[tokio::test]
async fn abandoned_and_expired_keys_are_taken_over_and_purged() {
    common::with_database(|pool: PgPool| async move {
        let k = key("ann", "POST /webhooks", "stale");
        assert!(keys::claim(&pool, k, b"first", 60.0).await.unwrap());
        sqlx::query("UPDATE idempotency_keys SET locked_until = now() - interval '1 second'")
            .execute(&pool)
            .await
            .unwrap();
        assert!(keys::claim(&pool, k, b"second", 60.0).await.unwrap());
        assert_eq!(
            keys::find(&pool, k).await.unwrap().unwrap().request_hash,
            b"second"
        );
        // The first request's late answer no longer lands.
        assert!(
            !keys::complete(&pool, k, b"first", 201, None, b"x")
                .await
                .unwrap()
        );

        let old = key("ann", "POST /webhooks", "old");
        assert!(keys::claim(&pool, old, b"h", 60.0).await.unwrap());
        assert!(
            keys::complete(&pool, old, b"h", 201, None, b"x")
                .await
                .unwrap()
        );
        sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(keys::purge_expired(&pool).await.unwrap(), 2);
        assert!(keys::find(&pool, old).await.unwrap().is_none());
        assert!(keys::claim(&pool, old, b"h", 60.0).await.unwrap());
    })
    .await;
}

/// A row's version is its `updated_at`, found only for its owner, and locked: a second
/// transaction waits until the first ends.
#[tokio::test]
async fn versions_are_scoped_and_locked() {
    common::with_database(|pool: PgPool| async move {
        let id = WebhookId::generate();
        sqlx::query(
            "INSERT INTO webhooks (id, user_id, url, events, max_retries, base_delay_ms, max_delay_ms)
             VALUES ($1, 'ann', 'https://example.com/h', '{order.*}', 5, 1000, 300000)",
        )
        .bind(id.as_uuid())
        .execute(&pool)
        .await
        .unwrap();
        let mut tx = pool.begin().await.unwrap();
        let version = portico_storage::versions::webhook(&mut tx, "ann", id).await.unwrap();
        assert!(version.is_some());
        let mut other = pool.begin().await.unwrap();
        assert_eq!(portico_storage::versions::webhook(&mut other, "bob", id).await.unwrap(), None);
        other.rollback().await.unwrap();
        // While `tx` holds the lock, a NOWAIT lock of the same row fails.
        let mut probe = pool.begin().await.unwrap();
        let locked = sqlx::query("SELECT 1 FROM webhooks WHERE id = $1 FOR UPDATE NOWAIT")
            .bind(id.as_uuid())
            .execute(&mut *probe)
            .await;
        assert!(locked.is_err());
        probe.rollback().await.unwrap();
        tx.rollback().await.unwrap();
    })
    .await;
}
