//! The integrations, credentials, daily-usage and usage-log statements against a real
//! PostgreSQL: each test creates its own database on `PORTICO_TEST_SERVER_URL`
//! (default `postgres://postgres@127.0.0.1:5432`), applies the migrations and drops it.

use chrono::{Duration, NaiveDate, TimeZone, Utc};
use portico_domain::ids::IntegrationId;
use portico_storage::integrations::{self, DailyCalls, IntegrationChanges, NewIntegration};
use portico_storage::usage::{self, NewUsageLog};
use sqlx::PgPool;

mod common;

async fn add(pool: &PgPool, user_id: &str, name: &str, integration_type: &str) -> IntegrationId {
    let id = IntegrationId::generate();
    let scopes = vec!["webhooks:read".to_owned()];
    integrations::insert(
        pool,
        &NewIntegration {
            id,
            user_id,
            name,
            integration_type,
            webhook_url: Some("https://example.com/hook"),
            scopes: &scopes,
            expires_at: None,
            rate_limit_per_second: 10,
            daily_quota: 1000,
        },
    )
    .await
    .expect("insert");
    id
}

/// Insert, read back, the list's filters and keyset, update, delete, and that every
/// owner statement sees only the owner's rows.
#[tokio::test]
async fn integrations_are_scoped_to_their_owner() {
    common::with_database(|pool| async move {
        let pool = &pool;
        let erp = add(pool, "alice", "ERP", "erp").await;
        let shop = add(pool, "alice", "Shop", "marketplace").await;
        let other = add(pool, "bob", "Bob's", "erp").await;

        let row = integrations::fetch(pool, "alice", erp)
            .await
            .unwrap()
            .expect("own integration");
        assert_eq!(row.id, erp);
        assert_eq!(row.name, "ERP");
        assert_eq!(row.integration_type, "erp");
        assert_eq!(row.webhook_url.as_deref(), Some("https://example.com/hook"));
        assert_eq!(row.scopes, vec!["webhooks:read".to_owned()]);
        assert!(row.active);
        assert_eq!(row.api_key, None, "no credential yet");
        assert_eq!(
            (row.rate_limit_per_second, row.daily_quota),
            (Some(10), Some(1000))
        );
        assert!(
            integrations::fetch(pool, "alice", other)
                .await
                .unwrap()
                .is_none()
        );
        assert!(integrations::exists(pool, "bob", other).await.unwrap());
        assert!(!integrations::exists(pool, "alice", other).await.unwrap());

        // Newest first, only alice's; the type filter; the keyset continues after a row.
        let all = integrations::list(pool, "alice", None, None, 10)
            .await
            .unwrap();
        assert_eq!(
            all.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![shop, erp]
        );
        let erps = integrations::list(pool, "alice", Some("erp"), None, 10)
            .await
            .unwrap();
        assert_eq!(erps.iter().map(|r| r.id).collect::<Vec<_>>(), vec![erp]);
        let after = integrations::list(pool, "alice", None, Some((all[0].created_at, shop)), 10)
            .await
            .unwrap();
        assert_eq!(after.iter().map(|r| r.id).collect::<Vec<_>>(), vec![erp]);
        assert_eq!(
            integrations::list(pool, "alice", None, None, 1)
                .await
                .unwrap()
                .len(),
            1
        );

        // A partial update: set some columns, clear the nullable ones, keep the rest.
        let expiry = Utc::now() + Duration::days(3);
        let changes = IntegrationChanges {
            name: Some("ERP 2"),
            webhook_url: Some(None),
            active: Some(false),
            expires_at: Some(Some(expiry)),
            daily_quota: Some(0),
            ..IntegrationChanges::default()
        };
        assert!(
            integrations::update(pool, "alice", erp, &changes)
                .await
                .unwrap()
        );
        assert!(
            !integrations::update(pool, "alice", other, &changes)
                .await
                .unwrap()
        );
        let row = integrations::fetch(pool, "alice", erp)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.name, "ERP 2");
        assert_eq!(row.integration_type, "erp");
        assert_eq!(row.webhook_url, None);
        assert!(!row.active);
        assert_eq!(
            row.expires_at.map(|t| t.timestamp_micros()),
            Some(expiry.timestamp_micros())
        );
        assert_eq!(
            (row.rate_limit_per_second, row.daily_quota),
            (Some(10), Some(0))
        );
        assert!(row.updated_at >= row.created_at);
        let untouched = integrations::fetch(pool, "bob", other)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(untouched.name, "Bob's");
        assert!(untouched.active);

        assert!(!integrations::delete(pool, "alice", other).await.unwrap());
        assert!(integrations::delete(pool, "alice", erp).await.unwrap());
        assert!(
            integrations::fetch(pool, "alice", erp)
                .await
                .unwrap()
                .is_none()
        );
        assert!(integrations::exists(pool, "bob", other).await.unwrap());
    })
    .await;
}

/// Credentials: the current key, lookup by key with today's count, rotation with and
/// without grace, pruning, and the daily counters' upsert.
#[tokio::test]
async fn credentials_rotate_and_count() {
    common::with_database(|pool| async move {
    let pool = &pool;
    let id = add(pool, "alice", "ERP", "erp").await;
    let other = add(pool, "bob", "Bob's", "erp").await;
    let first = integrations::insert_credential(pool, id, "ptk_first", b"hash-1")
        .await
        .unwrap();
    let row = integrations::fetch(pool, "alice", id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.api_key.as_deref(), Some("ptk_first"));

    let today = Utc::now().date_naive();
    let found = integrations::find_credential(pool, "ptk_first", today)
        .await
        .unwrap()
        .expect("known key");
    assert_eq!(found.credential_id, first);
    assert_eq!(found.integration_id, id);
    assert_eq!(found.user_id, "alice");
    assert_eq!(found.secret_hash, b"hash-1".to_vec());
    assert_eq!(found.scopes, vec!["webhooks:read".to_owned()]);
    assert!(found.active);
    assert_eq!(found.calls_on_day, None);
    assert_eq!(found.revoked_at, None);
    assert!(
        integrations::find_credential(pool, "ptk_nope", today)
            .await
            .unwrap()
            .is_none()
    );

    // Rotation with grace: the lock only finds the owner's row; working credentials
    // expire at `until`, the new key becomes current.
    let mut tx = pool.begin().await.unwrap();
    assert!(
        !integrations::lock_for_rotation(&mut *tx, "bob", id)
            .await
            .unwrap()
    );
    assert!(
        integrations::lock_for_rotation(&mut *tx, "alice", id)
            .await
            .unwrap()
    );
    assert_eq!(
        integrations::prune_retired_credentials(&mut *tx, id, 7)
            .await
            .unwrap(),
        0
    );
    let until = Utc::now() + Duration::hours(1);
    let previous = integrations::retire_credentials(&mut *tx, id, until)
        .await
        .unwrap();
    assert_eq!(
        previous.map(|t| t.timestamp_micros()),
        Some(until.timestamp_micros())
    );
    integrations::insert_credential(&mut *tx, id, "ptk_second", b"hash-2")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let row = integrations::fetch(pool, "alice", id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.api_key.as_deref(), Some("ptk_second"));
    let retired = integrations::find_credential(pool, "ptk_first", today)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        retired.credential_expires_at.map(|t| t.timestamp_micros()),
        Some(until.timestamp_micros())
    );
    // Nothing still working: no previous expiry.
    assert_eq!(
        integrations::retire_credentials(pool, other, until)
            .await
            .unwrap(),
        None
    );

    // Rotation without grace revokes every credential not revoked yet; a revoked one
    // is pruned once it is older than the retention given.
    assert_eq!(integrations::revoke_credentials(pool, id).await.unwrap(), 2);
    assert_eq!(integrations::revoke_credentials(pool, id).await.unwrap(), 0);
    let row = integrations::fetch(pool, "alice", id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.api_key, None);
    sqlx::query("UPDATE integration_credentials SET revoked_at = now() - interval '8 days' WHERE api_key = 'ptk_first'")
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(
        integrations::prune_retired_credentials(pool, id, 7)
            .await
            .unwrap(),
        1
    );
    assert!(
        integrations::find_credential(pool, "ptk_first", today)
            .await
            .unwrap()
            .is_none()
    );

    // Daily counters add up and come back as totals; a deleted integration's are
    // skipped; the lookup reads the day's count.
    let yesterday = today.pred_opt().unwrap();
    let counts = |calls| {
        vec![
            DailyCalls {
                integration_id: id,
                day: yesterday,
                calls,
            },
            DailyCalls {
                integration_id: id,
                day: today,
                calls,
            },
        ]
    };
    let totals = integrations::add_daily_calls(pool, &counts(3))
        .await
        .unwrap();
    assert_eq!(totals.len(), 2);
    let totals = integrations::add_daily_calls(pool, &counts(4))
        .await
        .unwrap();
    let mut totals: Vec<(NaiveDate, i64)> = totals.iter().map(|c| (c.day, c.calls)).collect();
    totals.sort();
    assert_eq!(totals, vec![(yesterday, 7), (today, 7)]);
    let found = integrations::find_credential(pool, "ptk_second", today)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.calls_on_day, Some(7));
    let ghost = DailyCalls {
        integration_id: IntegrationId::generate(),
        day: today,
        calls: 1,
    };
    assert!(
        integrations::add_daily_calls(pool, &[ghost])
            .await
            .unwrap()
            .is_empty()
    );

    // last_used_at only moves forward.
    let t1 = Utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 5).unwrap();
    integrations::touch_last_used(pool, &[(id, t1), (other, t1)])
        .await
        .unwrap();
    integrations::touch_last_used(pool, &[(id, t1 - Duration::hours(1))])
        .await
        .unwrap();
    let row = integrations::fetch(pool, "alice", id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.last_used_at, Some(t1));
    })
    .await;
}

/// The usage log: a batch insert (skipping deleted integrations), keyset pages within
/// a range, the grouped totals, and one integration's log never showing another's.
#[tokio::test]
async fn usage_log_pages_and_totals() {
    common::with_database(|pool| async move {
        let pool = &pool;
        let id = add(pool, "alice", "ERP", "erp").await;
        let other = add(pool, "bob", "Bob's", "erp").await;
        let base = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
        let entry = |integration_id, minute: i64, method, route, status| NewUsageLog {
            integration_id,
            method,
            route,
            status,
            latency_us: 1_500,
            client_ip: (status == 200).then_some("10.0.0.1"),
            occurred_at: base + Duration::minutes(minute),
        };
        let entries = vec![
            entry(id, 0, "GET", "/api/webhooks", 200),
            entry(id, 1, "GET", "/api/webhooks", 200),
            entry(id, 2, "POST", "/api/bulk-orders", 202),
            entry(id, 3, "POST", "/api/bulk-orders", 429),
            entry(other, 4, "GET", "/api/webhooks", 200),
            entry(IntegrationId::generate(), 5, "GET", "/api/webhooks", 200),
        ];
        assert_eq!(usage::insert_logs(pool, &entries).await.unwrap(), 5);

        let page = usage::page(pool, id, None, None, None, 3).await.unwrap();
        let minutes: Vec<i64> = page
            .iter()
            .map(|r| (r.occurred_at - base).num_minutes())
            .collect();
        assert_eq!(minutes, vec![3, 2, 1]);
        assert_eq!(page[0].status, 429);
        assert_eq!(page[0].method, "POST");
        assert_eq!(page[0].route, "/api/bulk-orders");
        assert_eq!(page[0].latency_us, 1_500);
        assert_eq!(page[0].client_ip, None);
        assert_eq!(page[2].client_ip.as_deref(), Some("10.0.0.1"));
        let last = &page[2];
        let rest = usage::page(pool, id, None, None, Some((last.occurred_at, last.id)), 3)
            .await
            .unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!((rest[0].occurred_at - base).num_minutes(), 0);
        let ranged = usage::page(
            pool,
            id,
            Some(base + Duration::minutes(1)),
            Some(base + Duration::minutes(3)),
            None,
            10,
        )
        .await
        .unwrap();
        assert_eq!(ranged.len(), 2);

        let mut groups = usage::totals(pool, id, None, None).await.unwrap();
        groups.sort_by_key(|g| (g.status, g.method.clone(), g.route.clone()));
        let grand = groups
            .iter()
            .find(|g| g.status.is_none() && g.method.is_none())
            .expect("grand total");
        assert_eq!(grand.calls, 4);
        let by_status: Vec<(i32, i64)> = groups
            .iter()
            .filter_map(|g| g.status.map(|s| (s, g.calls)))
            .collect();
        assert_eq!(by_status, vec![(200, 2), (202, 1), (429, 1)]);
        let by_route: Vec<(&str, &str, i64)> = groups
            .iter()
            .filter_map(|g| Some((g.method.as_deref()?, g.route.as_deref()?, g.calls)))
            .collect();
        assert_eq!(
            by_route,
            vec![("GET", "/api/webhooks", 2), ("POST", "/api/bulk-orders", 2)]
        );
        let from_two = usage::totals(pool, id, Some(base + Duration::minutes(2)), None)
            .await
            .unwrap();
        assert!(
            from_two
                .iter()
                .any(|g| g.status.is_none() && g.method.is_none() && g.calls == 2)
        );

        let theirs = usage::page(pool, other, None, None, None, 10)
            .await
            .unwrap();
        assert_eq!(theirs.len(), 1);
        // An empty range still has its grand total row.
        let none = usage::totals(pool, id, Some(base + Duration::days(1)), None)
            .await
            .unwrap();
        assert_eq!(none.len(), 1);
        assert_eq!(none[0].calls, 0);

        // The log goes with its integration.
        assert!(integrations::delete(pool, "alice", id).await.unwrap());
        assert!(
            usage::page(pool, id, None, None, None, 10)
                .await
                .unwrap()
                .is_empty()
        );
    })
    .await;
}
