//! The re-seal job's statements against the real PostgreSQL: keyset pages cover every
//! secret and every webhook with headers exactly once, and a replacement is a
//! compare-and-swap that leaves a value changed meanwhile alone.
//!
//! Server: `PORTICO_TEST_DATABASE_URL` (any database on it; default
//! `postgres://postgres@127.0.0.1:5432/postgres`).

use std::collections::{BTreeMap, BTreeSet};

use portico_storage::reseal;
use portico_storage::webhooks::{self, WebhookValues};

mod common;
use common::with_database;

async fn create(pool: &sqlx::PgPool, n: usize, headers: &BTreeMap<String, String>) {
    let events = vec!["order.*".to_owned()];
    let values = WebhookValues {
        id: portico_domain::ids::WebhookId::generate(),
        url: "https://a.example/hook",
        events: &events,
        description: None,
        max_retries: 5,
        base_delay_ms: 1_000,
        max_delay_ms: 300_000,
        headers,
        ordering_enabled: false,
        rate_limit_per_second: None,
        max_concurrency: None,
    };
    webhooks::insert_with_secret(pool, "alice", &values, format!("sealed-{n}").as_bytes())
        .await
        .expect("insert webhook");
}

/// Pages of two walk all seven secrets once, in id order; replacing each with a new
/// value works once (a second swap from the old value finds nothing), and a rerun sees
/// the new values only.
#[tokio::test]
async fn secret_pages_cover_everything_once_and_swaps_are_conditional() {
    with_database(|pool| async move {
        let none = BTreeMap::new();
        for n in 0..7 {
            create(&pool, n, &none).await;
        }
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = reseal::secrets_after(&pool, after, 2).await.unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            assert!(page.len() <= 2);
            seen.extend(page);
        }
        assert_eq!(seen.len(), 7);
        let ids: BTreeSet<_> = seen.iter().map(|s| s.id).collect();
        assert_eq!(ids.len(), 7, "no secret twice");
        assert!(seen.windows(2).all(|w| w[0].id < w[1].id));
        for s in &seen {
            let new = [b"new-".as_slice(), &s.ciphertext].concat();
            assert!(
                reseal::replace_secret(&pool, s.id, &s.ciphertext, &new)
                    .await
                    .unwrap()
            );
            assert!(
                !reseal::replace_secret(&pool, s.id, &s.ciphertext, b"stale")
                    .await
                    .unwrap(),
                "a value changed meanwhile is left alone"
            );
        }
        let again = reseal::secrets_after(&pool, None, 100).await.unwrap();
        assert_eq!(again.len(), 7);
        assert!(
            again
                .iter()
                .all(|s| s.ciphertext.starts_with(b"new-sealed-"))
        );
    })
    .await;
}

/// Only webhooks with headers are listed; a header swap is conditional on the stored
/// JSON and keeps `updated_at`.
#[tokio::test]
async fn header_pages_list_only_webhooks_with_headers() {
    with_database(|pool| async move {
        let none = BTreeMap::new();
        let some = BTreeMap::from([("x-api-key".to_owned(), "sk_1".to_owned())]);
        create(&pool, 0, &none).await;
        create(&pool, 1, &some).await;
        create(&pool, 2, &some).await;
        let first = reseal::headers_after(&pool, None, 1).await.unwrap();
        assert_eq!(first.len(), 1);
        let rest = reseal::headers_after(&pool, Some(first[0].webhook_id), 10)
            .await
            .unwrap();
        assert_eq!(rest.len(), 1);
        let row = &rest[0];
        let before = webhooks::get(&pool, "alice", row.webhook_id)
            .await
            .unwrap()
            .unwrap();
        let sealed = serde_json::json!({"x-api-key": "$sealed$abc"});
        assert!(
            reseal::replace_headers(&pool, row.webhook_id, &row.headers, &sealed)
                .await
                .unwrap()
        );
        assert!(
            !reseal::replace_headers(&pool, row.webhook_id, &row.headers, &sealed)
                .await
                .unwrap()
        );
        let after = webhooks::get(&pool, "alice", row.webhook_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            after.headers.0.get("x-api-key").map(String::as_str),
            Some("$sealed$abc")
        );
        assert_eq!(after.updated_at, before.updated_at);
    })
    .await;
}

/// Credentials are counted per pepper id read from their stored hash, id-less (32-byte)
/// hashes apart; revoked credentials are not counted.
#[tokio::test]
async fn credentials_are_counted_per_pepper() {
    with_database(|pool| async move {
        let id = uuid::Uuid::now_v7();
        sqlx::query(
            "INSERT INTO integrations (id, user_id, name, integration_type, scopes)
             VALUES ($1, 'alice', 'i', 'custom', '{}')",
        )
        .bind(id)
        .execute(&pool)
        .await
        .expect("integration");
        let tagged = |pid: &str| [b"P".as_slice(), &[pid.len() as u8], pid.as_bytes(), &[0u8; 32]].concat();
        let rows: [(&str, Vec<u8>, bool); 4] = [
            ("k1", vec![1u8; 32], false),
            ("k2", tagged("p2"), false),
            ("k3", tagged("p2"), false),
            ("k4", tagged("p1"), true),
        ];
        for (key, hash, revoked) in rows {
            sqlx::query(
                "INSERT INTO integration_credentials (id, integration_id, api_key, secret_hash, revoked_at)
                 VALUES ($1, $2, $3, $4, CASE WHEN $5 THEN now() END)",
            )
            .bind(uuid::Uuid::now_v7())
            .bind(id)
            .bind(key)
            .bind(hash)
            .bind(revoked)
            .execute(&pool)
            .await
            .expect("credential");
        }
        let counts = reseal::credentials_per_pepper(&pool).await.unwrap();
        assert_eq!(counts, vec![(None, 1), (Some("p2".to_owned()), 2)]);
    })
    .await;
}
