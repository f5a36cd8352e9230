//! The webhook family's statements (`webhooks`, `webhook_secrets`,
//! `webhook_retry_jobs`) against the real PostgreSQL: each test creates its own
//! database, applies the migrations and drops it at the end.
//!
//! Server: `PORTICO_TEST_DATABASE_URL` (any database on it; default
//! `postgres://postgres@127.0.0.1:5432/postgres`).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use portico_domain::ids::{RetryJobId, WebhookId};
use portico_storage::retry_jobs::{self, DeliveryMatch};
use portico_storage::webhooks::{self, WebhookValues};
use sqlx::PgPool;
use uuid::Uuid;

mod common;
use common::with_database;

const ALICE: &str = "alice";
const BOB: &str = "bob";

fn values<'a>(
    url: &'a str,
    events: &'a [String],
    headers: &'a BTreeMap<String, String>,
) -> WebhookValues<'a> {
    WebhookValues {
        id: WebhookId::generate(),
        url,
        events,
        description: Some("orders"),
        max_retries: 5,
        base_delay_ms: 1_000,
        max_delay_ms: 300_000,
        headers,
        ordering_enabled: false,
        rate_limit_per_second: Some(10),
        max_concurrency: None,
    }
}

async fn create(pool: &PgPool, user: &str, url: &str, secret: &[u8]) -> webhooks::WebhookRow {
    let events = vec!["order.*".to_owned()];
    let headers = BTreeMap::from([("x-team".to_owned(), "a".to_owned())]);
    webhooks::insert_with_secret(pool, user, &values(url, &events, &headers), secret)
        .await
        .expect("insert webhook")
}

/// Create, read back, list with its keyset cursor, update (disable and re-enable),
/// delete: every statement sees only its user's webhooks.
#[tokio::test]
async fn webhook_rows_round_trip_per_user() {
    with_database(|pool| async move {
        let first = create(&pool, ALICE, "https://a.example/1", b"s1").await;
        assert_eq!(first.url, "https://a.example/1");
        assert_eq!(first.events, ["order.*"]);
        assert_eq!(first.description.as_deref(), Some("orders"));
        assert!(first.active);
        assert_eq!(first.headers.0.get("x-team").map(String::as_str), Some("a"));
        assert_eq!(first.rate_limit_per_second, Some(10));
        assert_eq!(first.max_concurrency, None);
        let second = create(&pool, ALICE, "https://a.example/2", b"s2").await;
        let third = create(&pool, ALICE, "https://a.example/3", b"s3").await;
        let bobs = create(&pool, BOB, "https://b.example/", b"s4").await;

        assert_eq!(
            webhooks::get(&pool, ALICE, first.id).await.unwrap(),
            Some(first.clone())
        );
        assert_eq!(webhooks::get(&pool, BOB, first.id).await.unwrap(), None);

        let page = webhooks::list(&pool, ALICE, None, 2).await.unwrap();
        assert_eq!(
            page.iter().map(|w| w.id).collect::<Vec<_>>(),
            [third.id, second.id]
        );
        let last = &page[1];
        let rest = webhooks::list(&pool, ALICE, Some((last.created_at, last.id)), 2)
            .await
            .unwrap();
        assert_eq!(rest.iter().map(|w| w.id).collect::<Vec<_>>(), [first.id]);
        let theirs = webhooks::list(&pool, BOB, None, 10).await.unwrap();
        assert_eq!(theirs.iter().map(|w| w.id).collect::<Vec<_>>(), [bobs.id]);

        assert_eq!(
            webhooks::max_retries(&pool, ALICE, first.id).await.unwrap(),
            Some(5)
        );
        assert_eq!(
            webhooks::max_retries(&pool, BOB, first.id).await.unwrap(),
            None
        );

        // Portico disabled it; the owner re-enables it with new settings.
        sqlx::query(
            "UPDATE webhooks SET active = false, disabled_reason = 'failing',
                 disabled_at = now(), consecutive_failures = 50 WHERE id = $1",
        )
        .bind(first.id.as_uuid())
        .execute(&pool)
        .await
        .unwrap();
        let events = vec!["order.created".to_owned(), "batch.*".to_owned()];
        let headers = BTreeMap::new();
        let mut new = values("https://a.example/new", &events, &headers);
        new.description = None;
        new.max_concurrency = Some(4);
        assert_eq!(
            webhooks::update(&pool, BOB, first.id, &new, true)
                .await
                .unwrap(),
            None
        );
        let mut tx = pool.begin().await.unwrap();
        let locked = webhooks::get_for_update(&mut tx, ALICE, first.id)
            .await
            .unwrap()
            .expect("own webhook");
        assert!(!locked.active);
        assert_eq!(locked.disabled_reason.as_deref(), Some("failing"));
        let updated = webhooks::update(&mut *tx, ALICE, first.id, &new, true)
            .await
            .unwrap()
            .expect("own webhook");
        tx.commit().await.unwrap();
        assert!(updated.active);
        assert_eq!(updated.disabled_reason, None);
        assert_eq!(updated.url, "https://a.example/new");
        assert_eq!(updated.events, events);
        assert_eq!(updated.description, None);
        assert!(updated.headers.0.is_empty());
        assert_eq!(updated.max_concurrency, Some(4));
        assert!(updated.updated_at >= first.updated_at);
        let (failures, disabled_at): (i32, Option<DateTime<Utc>>) =
            sqlx::query_as("SELECT consecutive_failures, disabled_at FROM webhooks WHERE id = $1")
                .bind(first.id.as_uuid())
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!((failures, disabled_at), (0, None));

        // The owner disables it: no reason, but a time.
        let disabled = webhooks::update(&pool, ALICE, first.id, &new, false)
            .await
            .unwrap()
            .expect("own webhook");
        assert!(!disabled.active);
        assert_eq!(disabled.disabled_reason, None);

        assert!(!webhooks::delete(&pool, BOB, first.id).await.unwrap());
        assert!(webhooks::delete(&pool, ALICE, first.id).await.unwrap());
        assert_eq!(webhooks::get(&pool, ALICE, first.id).await.unwrap(), None);
        assert!(!webhooks::delete(&pool, ALICE, first.id).await.unwrap());
    })
    .await;
}

/// The first secret is stored with the webhook; a rotation with a grace period keeps
/// the old one signing until then, a rotation without one ends it at once, and
/// expired secrets are pruned by the next rotation.
#[tokio::test]
async fn secrets_rotate_with_grace_period() {
    with_database(|pool| async move {
        let w = create(&pool, ALICE, "https://a.example/", b"first").await;
        let secrets = webhooks::active_secrets(&pool, ALICE, w.id).await.unwrap();
        assert_eq!(secrets.len(), 1);
        assert_eq!(secrets[0].ciphertext, b"first");
        assert_eq!(secrets[0].expires_at, None);
        assert!(
            webhooks::active_secrets(&pool, BOB, w.id)
                .await
                .unwrap()
                .is_empty()
        );

        let mut tx = pool.begin().await.unwrap();
        assert!(!webhooks::lock(&mut tx, BOB, w.id).await.unwrap());
        assert!(webhooks::lock(&mut tx, ALICE, w.id).await.unwrap());
        let before = Utc::now();
        let previous = webhooks::rotate_secret(&mut tx, w.id, 3_600, b"second")
            .await
            .unwrap()
            .expect("the old secret keeps signing");
        tx.commit().await.unwrap();
        assert!(previous > before + Duration::seconds(3_500));
        assert!(previous < before + Duration::seconds(3_700));
        let secrets = webhooks::active_secrets(&pool, ALICE, w.id).await.unwrap();
        assert_eq!(
            secrets
                .iter()
                .map(|s| (s.ciphertext.as_slice(), s.expires_at))
                .collect::<Vec<_>>(),
            [
                (b"second".as_slice(), None),
                (b"first".as_slice(), Some(previous))
            ]
        );

        // A longer grace never extends an earlier expiry.
        let mut tx = pool.begin().await.unwrap();
        assert!(webhooks::lock(&mut tx, ALICE, w.id).await.unwrap());
        let later = webhooks::rotate_secret(&mut tx, w.id, 7_200, b"third")
            .await
            .unwrap()
            .expect("the old secrets keep signing");
        tx.commit().await.unwrap();
        assert!(later > previous + Duration::seconds(3_500));
        let secrets = webhooks::active_secrets(&pool, ALICE, w.id).await.unwrap();
        assert_eq!(
            secrets
                .iter()
                .map(|s| (s.ciphertext.as_slice(), s.expires_at))
                .collect::<Vec<_>>(),
            [
                (b"third".as_slice(), None),
                (b"second".as_slice(), Some(later)),
                (b"first".as_slice(), Some(previous)),
            ]
        );

        // Grace 0 ends every old secret at once.
        let mut tx = pool.begin().await.unwrap();
        assert!(webhooks::lock(&mut tx, ALICE, w.id).await.unwrap());
        let again = webhooks::rotate_secret(&mut tx, w.id, 0, b"fourth")
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(again, None);
        let secrets = webhooks::active_secrets(&pool, ALICE, w.id).await.unwrap();
        assert_eq!(secrets.len(), 1);
        assert_eq!(secrets[0].ciphertext, b"fourth");

        let mut tx = pool.begin().await.unwrap();
        assert!(webhooks::lock(&mut tx, ALICE, w.id).await.unwrap());
        webhooks::rotate_secret(&mut tx, w.id, 60, b"fifth")
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let stored: i64 =
            sqlx::query_scalar("SELECT count(*) FROM webhook_secrets WHERE webhook_id = $1")
                .bind(w.id.as_uuid())
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(stored, 2, "expired secrets are pruned at the next rotation");
    })
    .await;
}

/// The dispatcher's view: the active webhooks of every user asked for, oldest first,
/// with their unexpired secrets newest first; inactive webhooks and other users'
/// are left out.
#[tokio::test]
async fn active_endpoints_of_many_users() {
    with_database(|pool| async move {
        let a1 = create(&pool, ALICE, "https://a.example/1", b"a1").await;
        let a2 = create(&pool, ALICE, "https://a.example/2", b"a2").await;
        let b1 = create(&pool, BOB, "https://b.example/1", b"b1").await;
        create(&pool, "carol", "https://c.example/1", b"c1").await;
        let events = vec!["order.*".to_owned()];
        let headers = BTreeMap::new();
        webhooks::update(
            &pool,
            ALICE,
            a2.id,
            &values(&a2.url, &events, &headers),
            false,
        )
        .await
        .unwrap();
        let mut tx = pool.begin().await.unwrap();
        webhooks::rotate_secret(&mut tx, a1.id, 600, b"a1-new")
            .await
            .unwrap();
        tx.commit().await.unwrap();

        let rows = webhooks::active_endpoints(&pool, &[ALICE, BOB])
            .await
            .unwrap();
        assert_eq!(
            rows.iter().map(|r| r.id).collect::<Vec<_>>(),
            [a1.id, b1.id]
        );
        let a = &rows[0];
        assert_eq!(a.user_id, ALICE);
        assert_eq!(a.url, "https://a.example/1");
        assert_eq!(a.headers, serde_json::json!({"x-team": "a"}));
        assert_eq!(
            (a.max_retries, a.base_delay_ms, a.max_delay_ms),
            (5, 1_000, 300_000)
        );
        assert_eq!(a.rate_limit_per_second, Some(10));
        assert_eq!(a.ciphertexts, [b"a1-new".to_vec(), b"a1".to_vec()]);
        assert_eq!(a.expiries.len(), 2);
        assert_eq!(a.expiries[0], None);
        assert!(a.expiries[1].is_some());
        assert!(
            webhooks::active_endpoints(&pool, &["nobody"])
                .await
                .unwrap()
                .is_empty()
        );
    })
    .await;
}

/// Inserts a delivery of `webhook` in `status`, created `age` ago.
async fn delivery(
    pool: &PgPool,
    webhook: WebhookId,
    event_type: &str,
    status: &str,
    age: Duration,
) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, webhook_id, event_id, user_id, event_type, status,
             attempts, max_retries, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, 6, 5, $7)",
    )
    .bind(id)
    .bind(webhook.as_uuid())
    .bind(Uuid::now_v7())
    .bind(ALICE)
    .bind(event_type)
    .bind(status)
    .bind(Utc::now() - age)
    .execute(pool)
    .await
    .unwrap();
    id
}

/// The gateway's half of a retry job (count, insert once per idempotency key, read,
/// cancel, all per user) and the dispatcher's (run it chunk by chunk, never touching a
/// delivery twice).
#[tokio::test]
async fn retry_jobs_from_creation_to_completion() {
    with_database(|pool| async move {
        let w = create(&pool, ALICE, "https://a.example/", b"s").await;
        let hour = Duration::hours(1);
        let old_failed = delivery(&pool, w.id, "order.created", "failed", hour * 3).await;
        let failed = delivery(&pool, w.id, "order.created", "failed", hour).await;
        let other_type = delivery(&pool, w.id, "order.cancelled", "failed", hour).await;
        let retrying = delivery(&pool, w.id, "order.created", "retrying", hour).await;
        let succeeded = delivery(&pool, w.id, "order.created", "succeeded", hour).await;

        let failed_only = vec!["failed".to_owned()];
        let both = vec!["failed".to_owned(), "retrying".to_owned()];
        let all = DeliveryMatch {
            statuses: &both,
            event_type: None,
            since: None,
            until: None,
        };
        let narrow = DeliveryMatch {
            statuses: &failed_only,
            event_type: Some("order.created"),
            since: Some(Utc::now() - hour * 2),
            until: Some(Utc::now()),
        };
        assert_eq!(
            retry_jobs::count_matching(&pool, w.id, &all).await.unwrap(),
            4
        );
        assert_eq!(
            retry_jobs::count_matching(&pool, w.id, &narrow)
                .await
                .unwrap(),
            1
        );

        let filters = serde_json::json!({"statuses": ["failed", "retrying"]});
        let job = retry_jobs::insert(&pool, ALICE, w.id, Some("k1"), &filters, Some(2), 4)
            .await
            .unwrap()
            .expect("a new key");
        assert_eq!(
            (
                job.webhook_id,
                job.status.as_str(),
                job.dry_run,
                job.total,
                job.processed
            ),
            (w.id, "pending", false, 4, 0)
        );
        assert_eq!(job.filters, filters);
        assert_eq!(job.max_retries, Some(2));
        assert_eq!(
            retry_jobs::insert(&pool, ALICE, w.id, Some("k1"), &filters, None, 4)
                .await
                .unwrap(),
            None,
            "an idempotency key is used once per webhook"
        );
        assert_eq!(
            retry_jobs::by_idempotency_key(&pool, ALICE, w.id, "k1")
                .await
                .unwrap(),
            Some(job.clone())
        );
        assert_eq!(
            retry_jobs::by_idempotency_key(&pool, BOB, w.id, "k1")
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            retry_jobs::get(&pool, ALICE, w.id, job.id).await.unwrap(),
            Some(job.clone())
        );
        assert_eq!(
            retry_jobs::get(&pool, BOB, w.id, job.id).await.unwrap(),
            None
        );
        assert_eq!(
            retry_jobs::get(&pool, ALICE, WebhookId::generate(), job.id)
                .await
                .unwrap(),
            None
        );

        // The dispatcher runs it one delivery per chunk.
        let run = retry_jobs::load_for_run(&pool, job.id)
            .await
            .unwrap()
            .expect("the job");
        assert_eq!((run.status.as_str(), run.webhook_id), ("pending", w.id));
        retry_jobs::mark_running(&pool, job.id).await.unwrap();
        let mut chunks = 0;
        loop {
            let mut tx = pool.begin().await.unwrap();
            let status = retry_jobs::lock_status(&mut tx, job.id).await.unwrap();
            assert_eq!(status.as_deref(), Some("running"));
            let n = retry_jobs::requeue_chunk(&mut tx, job.id, w.id, &all, run.max_retries, 1)
                .await
                .unwrap();
            if n > 0 {
                retry_jobs::add_processed(&mut tx, job.id, n as i64)
                    .await
                    .unwrap();
            }
            tx.commit().await.unwrap();
            if n == 0 {
                break;
            }
            chunks += 1;
        }
        assert_eq!(
            chunks, 4,
            "a re-queued delivery never matches the same job again"
        );
        retry_jobs::mark_completed(&pool, job.id).await.unwrap();
        let done = retry_jobs::get(&pool, ALICE, w.id, job.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((done.status.as_str(), done.processed), ("completed", 4));
        let rows: Vec<(Uuid, String, i32, Option<Uuid>)> = sqlx::query_as(
            "SELECT id, status, max_retries, last_retry_job_id FROM webhook_deliveries
              ORDER BY id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        for (id, status, max_retries, stamped) in rows {
            if id == succeeded {
                assert_eq!(
                    (status.as_str(), max_retries, stamped),
                    ("succeeded", 5, None)
                );
            } else {
                assert!([old_failed, failed, other_type, retrying].contains(&id));
                assert_eq!(
                    (status.as_str(), max_retries, stamped),
                    ("retrying", 6 + 2, Some(job.id.as_uuid()))
                );
            }
        }

        // Cancelling: only a pending or running job, only its owner's.
        let second = retry_jobs::insert(&pool, ALICE, w.id, None, &filters, None, 0)
            .await
            .unwrap()
            .expect("no key, no conflict");
        assert_eq!(
            retry_jobs::cancel(&pool, BOB, w.id, second.id)
                .await
                .unwrap(),
            None
        );
        let cancelled = retry_jobs::cancel(&pool, ALICE, w.id, second.id)
            .await
            .unwrap()
            .expect("a pending job");
        assert_eq!(cancelled.status, "cancelled");
        assert_eq!(
            retry_jobs::cancel(&pool, ALICE, w.id, second.id)
                .await
                .unwrap(),
            None
        );
        retry_jobs::mark_running(&pool, second.id).await.unwrap();
        let mut tx = pool.begin().await.unwrap();
        assert_eq!(
            retry_jobs::lock_status(&mut tx, second.id)
                .await
                .unwrap()
                .as_deref(),
            Some("cancelled"),
            "a cancelled job is not restarted"
        );
        tx.commit().await.unwrap();
        assert_eq!(
            retry_jobs::cancel(&pool, ALICE, w.id, job.id)
                .await
                .unwrap(),
            None
        );

        // A job with unreadable filters fails; a vanished job reads as none.
        retry_jobs::mark_failed(&pool, second.id).await.unwrap();
        let failed_job = retry_jobs::load_for_run(&pool, second.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(failed_job.status, "failed");
        assert_eq!(
            retry_jobs::load_for_run(&pool, RetryJobId::generate())
                .await
                .unwrap(),
            None
        );
    })
    .await;
}

/// The audited create writes the webhook, its secret and one waiting audit record
/// together; the plain create writes no record.
#[tokio::test]
async fn the_audited_create_writes_its_record_and_the_plain_one_none() {
    with_database(|pool| async move {
        let pending = |pool: PgPool| async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM audit_pending")
                .fetch_one(&pool)
                .await
                .expect("count")
        };
        create(&pool, ALICE, "https://a.example/plain", b"s1").await;
        assert_eq!(pending(pool.clone()).await, 0);

        let events = vec!["order.*".to_owned()];
        let headers = BTreeMap::new();
        let changes = serde_json::json!({"fields": ["url"]});
        let record = portico_storage::audit::NewAuditRecord {
            owner_id: ALICE,
            actor_kind: "user",
            actor_id: ALICE,
            client_addr: Some("127.0.0.1"),
            request_id: None,
            action: "webhook.created",
            resource_type: "webhook",
            resource_id: "w",
            changes: &changes,
        };
        let row = webhooks::insert_with_secret_audited(
            &pool,
            ALICE,
            &values("https://a.example/audited", &events, &headers),
            b"s2",
            &record,
        )
        .await
        .expect("audited insert");
        assert_eq!(row.url, "https://a.example/audited");
        let (owner, action, addr): (String, String, Option<String>) =
            sqlx::query_as("SELECT owner_id, action, client_addr FROM audit_pending")
                .fetch_one(&pool)
                .await
                .expect("one record");
        assert_eq!(
            (owner.as_str(), action.as_str(), addr.as_deref()),
            (ALICE, "webhook.created", Some("127.0.0.1"))
        );
        let secrets: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_secrets")
            .fetch_one(&pool)
            .await
            .expect("count");
        assert_eq!(secrets, 2);
    })
    .await;
}
