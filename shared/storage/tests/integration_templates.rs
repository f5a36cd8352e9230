//! The integration-template statements against a real PostgreSQL (each test gets its own
//! database, migrated, dropped afterwards): CRUD scoped to the owner, key-ordered pages,
//! and creating an integration with its credential and webhook atomically, including
//! a failure half way that must leave nothing behind.

use std::collections::BTreeMap;

use portico_domain::ids::IntegrationId;
use portico_storage::integration_templates::{
    self as templates, IntegrationWithWebhook, TemplateValues,
};
use portico_storage::integrations::{self, NewIntegration};
use portico_storage::webhooks::{self, WebhookValues};
use sqlx::PgPool;

mod common;

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Insert, duplicate key, get, key-ordered pages, update, delete, and that another
/// user sees none of it.
#[tokio::test]
async fn templates_are_scoped_to_their_owner() {
    common::with_database(|pool| async move {
        let pool = &pool;
        let scopes = strings(&["orders:read"]);
        let events = strings(&["order.*"]);
        let overridable = strings(&["name", "events"]);
        let values = TemplateValues {
            name: "Mine",
            description: "d",
            integration_type: "erp",
            scopes: &scopes,
            allowed_scopes: Some(&scopes),
            rate_limit_per_second: 5,
            daily_quota: 100,
            events: &events,
            overridable: &overridable,
        };
        for key in ["bbb", "aaa", "ccc"] {
            let row = templates::insert(pool, "alice", key, &values)
                .await
                .unwrap()
                .expect("new key");
            assert_eq!(row.key, key);
            assert_eq!(row.allowed_scopes.as_deref(), Some(&scopes[..]));
        }
        assert!(
            templates::insert(pool, "alice", "aaa", &values)
                .await
                .unwrap()
                .is_none(),
            "a repeated key is refused"
        );
        // bob may use the same key: keys are per owner.
        templates::insert(pool, "bob", "aaa", &values)
            .await
            .unwrap()
            .expect("bob's own");

        let keys =
            |rows: Vec<templates::TemplateRow>| rows.into_iter().map(|r| r.key).collect::<Vec<_>>();
        let first = templates::list(pool, "alice", None, 2).await.unwrap();
        assert_eq!(keys(first), ["aaa", "bbb"]);
        let next = templates::list(pool, "alice", Some("bbb"), 2)
            .await
            .unwrap();
        assert_eq!(keys(next), ["ccc"]);
        assert_eq!(
            keys(templates::list(pool, "bob", None, 10).await.unwrap()),
            ["aaa"]
        );

        let changed = TemplateValues {
            name: "Renamed",
            allowed_scopes: None,
            ..values
        };
        let row = templates::update(pool, "alice", "bbb", &changed)
            .await
            .unwrap()
            .expect("own template");
        assert_eq!((row.name.as_str(), row.allowed_scopes), ("Renamed", None));
        assert!(row.updated_at >= row.created_at);
        assert!(
            templates::update(pool, "bob", "bbb", &changed)
                .await
                .unwrap()
                .is_none(),
            "another user's template is not found"
        );
        assert!(!templates::delete(pool, "bob", "ccc").await.unwrap());
        assert!(templates::delete(pool, "alice", "ccc").await.unwrap());
        assert!(
            templates::get(pool, "alice", "ccc")
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(
            templates::get(pool, "bob", "aaa")
                .await
                .unwrap()
                .map(|r| r.name),
            Some("Mine".to_owned())
        );
    })
    .await;
}

async fn counts(pool: &PgPool, user_id: &str) -> (i64, i64, i64, i64) {
    let row: (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM integrations WHERE user_id = $1),
                (SELECT count(*) FROM integration_credentials c JOIN integrations i
                   ON i.id = c.integration_id WHERE i.user_id = $1),
                (SELECT count(*) FROM webhooks WHERE user_id = $1),
                (SELECT count(*) FROM webhook_secrets s JOIN webhooks w
                   ON w.id = s.webhook_id WHERE w.user_id = $1)",
    )
    .bind(user_id)
    .fetch_one(pool)
    .await
    .unwrap();
    row
}

/// The integration, its credential, its webhook and the webhook's secret are written
/// together; when the webhook insert fails on a constraint after the integration and
/// its credential went in, nothing at all is left.
#[tokio::test]
async fn integration_with_webhook_is_atomic() {
    common::with_database(|pool| async move {
        let pool = &pool;
        // The failure half way: a constraint only the webhook insert (the last step)
        // violates.
        sqlx::query(
            "ALTER TABLE webhooks ADD CONSTRAINT test_no_fail_url
               CHECK (url <> 'https://fail.example.com/hook')",
        )
        .execute(pool)
        .await
        .unwrap();
        let scopes = strings(&["orders:read"]);
        let events = strings(&["order.*"]);
        let headers = BTreeMap::new();
        let new = |id, api_key, url| IntegrationWithWebhook {
            integration: NewIntegration {
                id,
                user_id: "alice",
                name: "From a template",
                integration_type: "erp",
                webhook_url: Some(url),
                scopes: &scopes,
                expires_at: None,
                rate_limit_per_second: 10,
                daily_quota: 1000,
            },
            api_key,
            secret_hash: b"hash",
            webhook: WebhookValues {
                id: portico_domain::ids::WebhookId::generate(),
                url,
                events: &events,
                description: None,
                max_retries: 3,
                base_delay_ms: 1000,
                max_delay_ms: 60_000,
                headers: &headers,
                ordering_enabled: false,
                rate_limit_per_second: None,
                max_concurrency: None,
            },
            sealed_secret: b"sealed",
        };

        let failing = IntegrationId::generate();
        let mut tx = pool.begin().await.unwrap();
        let err = templates::create_integration_with_webhook(
            &mut tx,
            &new(failing, "ptk_failing", "https://fail.example.com/hook"),
        )
        .await
        .expect_err("the webhook insert violates the constraint");
        drop(tx);
        assert!(
            err.as_database_error()
                .is_some_and(|e| e.is_check_violation()),
            "{err}"
        );
        assert_eq!(counts(pool, "alice").await, (0, 0, 0, 0), "nothing left");
        assert!(
            integrations::fetch(pool, "alice", failing)
                .await
                .unwrap()
                .is_none()
        );

        let ok = IntegrationId::generate();
        let mut tx = pool.begin().await.unwrap();
        let (id, webhook) = templates::create_integration_with_webhook(
            &mut tx,
            &new(ok, "ptk_ok", "https://ok.example.com/hook"),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(id, ok);
        assert_eq!(counts(pool, "alice").await, (1, 1, 1, 1));
        let row = integrations::fetch(pool, "alice", ok)
            .await
            .unwrap()
            .expect("created");
        assert_eq!(row.api_key.as_deref(), Some("ptk_ok"));
        let stored = webhooks::get(pool, "alice", webhook.id)
            .await
            .unwrap()
            .expect("webhook");
        assert_eq!(stored.events, events);
        assert_eq!(stored.url, "https://ok.example.com/hook");
    })
    .await;
}
