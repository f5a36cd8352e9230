//! Faults and bad input: text PostgreSQL cannot store is refused at the door, one bad
//! job never holds up the jobs beside it (it is isolated and dead-lettered with a record
//! and an operational event), and readiness tells the truth about NATS, PostgreSQL and
//! the schema. All against the real binaries.

use std::time::Duration;

use portico_e2e::servers::PrivateNats;
use portico_e2e::sink::Sink;
use portico_e2e::{SERVICE_TOKEN, ServiceKind, TestApp, assert_problem, wait_for};
use portico_queue::jobs::{EventDispatch, Job};
use portico_queue::topology::Topology;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

/// How long a scenario waits for something asynchronous to happen.
const PATIENCE: Duration = Duration::from_secs(30);

/// Every text field that reaches PostgreSQL refuses NUL and other control characters
/// with a 400 naming the field, and nothing is stored.
#[tokio::test]
async fn control_characters_are_refused_at_the_door() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(&[], &[ServiceKind::Gateway]).await?;
    let user = "user-nul";
    let events = [
        (
            json!({"type": "order.created", "data": {}, "idempotencyKey": "a\u{0}b"}),
            "/idempotencyKey",
        ),
        (
            json!({"type": "order.created", "data": {}, "orderingKey": "k\u{0}"}),
            "/orderingKey",
        ),
        (
            json!({"type": "order.created", "data": {}, "idempotencyKey": "line\nbreak"}),
            "/idempotencyKey",
        ),
    ];
    for (body, path) in events {
        let res = app
            .http
            .post(app.api("/events"))
            .bearer_auth(SERVICE_TOKEN)
            .header("x-portico-user-id", user)
            .json(&body)
            .send()
            .await?;
        let problem = assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await?;
        assert_eq!(
            problem["errors"][0]["pointer"]
                .as_str()
                .or(problem["errors"][0]["path"].as_str()),
            Some(path),
            "{problem}"
        );
    }
    // The batch route names the event.
    let res = app
        .http
        .post(app.api("/events/batch"))
        .bearer_auth(SERVICE_TOKEN)
        .header("x-portico-user-id", user)
        .json(&json!({"events": [
            {"type": "order.created", "data": {}, "idempotencyKey": "fine"},
            {"type": "order.created", "data": {}, "idempotencyKey": "bad\u{0}"},
        ]}))
        .send()
        .await?;
    let problem = assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await?;
    assert!(
        problem.to_string().contains("/events/1/idempotencyKey"),
        "{problem}"
    );

    let token = app.user_token(user);
    let res = app
        .http
        .post(app.api("/webhooks"))
        .bearer_auth(&token)
        .json(&json!({"url": "http://127.0.0.1:9/hook", "events": ["order.*"], "description": "nul\u{0}here"}))
        .send()
        .await?;
    assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await?;
    // Line breaks are fine in a description.
    let res = app
        .http
        .post(app.api("/webhooks"))
        .bearer_auth(&token)
        .json(&json!({"url": "http://127.0.0.1:9/hook", "events": ["order.*"], "description": "two\nlines"}))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = app
        .http
        .post(app.api("/integrations"))
        .bearer_auth(&token)
        .json(&json!({"name": "ERP\u{0}", "type": "erp"}))
        .send()
        .await?;
    assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await?;
    // An order's metadata may be any JSON object, but not one holding a NUL.
    let order = json!({
        "clientOrderRef": "o-1", "currency": "EUR",
        "customer": {"name": "Ada", "email": "ada@example.com"},
        "shippingAddress": {"line1": "1 Main St", "city": "Berlin", "postalCode": "10115", "country": "DE"},
        "lineItems": [{"sku": "A", "quantity": 1, "unitPrice": "1.00"}],
        "metadata": {"note": "x\u{0}y"}
    });
    let res = app
        .http
        .post(app.api("/bulk-orders"))
        .bearer_auth(&token)
        .json(&json!({"orders": [order]}))
        .send()
        .await?;
    assert_eq!(
        res.status(),
        StatusCode::BAD_REQUEST,
        "{}",
        res.text().await?
    );
    // A NUL anywhere in a query string is a 400, never a 500.
    for path in [
        "/webhooks?cursor=%00",
        "/bulk-orders?cursor=a%00",
        "/integrations?type=erp%00",
    ] {
        let res = app
            .http
            .get(app.api(path))
            .bearer_auth(&token)
            .send()
            .await?;
        assert_eq!(
            res.status(),
            StatusCode::BAD_REQUEST,
            "{path}: {}",
            res.text().await?
        );
    }

    let stored: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM integrations) + (SELECT count(*) FROM bulk_order_batches)",
    )
    .fetch_one(&app.pool)
    .await?;
    assert_eq!(stored, 0, "refused input stored nothing");
    app.cleanup().await;
    Ok(())
}

/// An event job that PostgreSQL refuses (a NUL in its idempotency key, as an older or
/// buggy producer could publish straight to JetStream) sits in the same chunk as good
/// events of two users. The good ones are delivered at once; the bad one is
/// dead-lettered with its owner and a `portico.event.dead_lettered` notice.
#[tokio::test]
async fn one_unstorable_event_does_not_hold_up_its_chunk() -> anyhow::Result<()> {
    let mut app = TestApp::spawn_with(&[], &[ServiceKind::Gateway]).await?;
    let sink = Sink::start().await?;
    let (alice, bob) = ("user-alice", "user-bob");
    for (user, path) in [(alice, "/alice"), (bob, "/bob")] {
        let res = app
            .http
            .post(app.api("/webhooks"))
            .bearer_auth(app.user_token(user))
            .json(&json!({"url": sink.url(path), "events": ["order.*", "portico.*"]}))
            .send()
            .await?;
        assert_eq!(res.status(), StatusCode::CREATED);
    }

    // The bad job first, then the good events, all waiting before any dispatcher runs,
    // so the dispatcher pulls them as one chunk.
    let nats = async_nats::connect(&app.nats_url).await?;
    let js = async_nats::jetstream::new(nats);
    let topology = Topology::new(&app.stream_prefix, 1)?;
    let bad_id = Uuid::now_v7();
    let bad = Job::EventDispatchV1(EventDispatch {
        event_id: bad_id,
        user_id: alice.to_owned(),
        event_type: "order.created".to_owned(),
        data: serde_json::value::to_raw_value(&json!({"n": "bad"}))?,
        idempotency_key: "bad\u{0}key".to_owned(),
        ordering_key: None,
        accepted_at: chrono::Utc::now(),
        only_webhook_id: None,
    });
    js.publish(topology.subject(bad.kind()), bad.encode()?.into())
        .await?
        .await?;
    for (user, n) in [(alice, 1), (bob, 2), (alice, 3), (bob, 4)] {
        let res = app
            .http
            .post(app.api("/events"))
            .bearer_auth(SERVICE_TOKEN)
            .header("x-portico-user-id", user)
            .json(&json!({"type": "order.created", "data": {"n": n}}))
            .send()
            .await?;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
    }
    app.start(ServiceKind::WebhookDispatcher).await?;

    let s = sink.clone();
    wait_for(PATIENCE, move || {
        let s = s.clone();
        async move {
            let orders = |p: &str| {
                s.received_at(p)
                    .iter()
                    .filter(|r| r.json()["type"] == "order.created")
                    .count()
            };
            orders("/alice") >= 2 && orders("/bob") >= 2
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("the good events were held up: {e}"))?;
    let delivered: Vec<Value> = sink.received().iter().map(|r| r.json()).collect();
    assert!(
        !delivered.iter().any(|b| b["data"]["n"] == "bad"),
        "the bad event was not delivered"
    );

    // The bad one is recorded with its owner, and the owner hears about it.
    let pool = app.pool.clone();
    wait_for(PATIENCE, move || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM job_dead_letters WHERE user_id = 'user-alice' AND reason LIKE 'event could not be stored%'",
            )
            .fetch_one(&pool)
            .await
            .unwrap_or(0)
                == 1
        }
    })
    .await?;
    let s = sink.clone();
    wait_for(PATIENCE, move || {
        let s = s.clone();
        async move {
            s.received_at("/alice")
                .iter()
                .any(|r| r.json()["type"] == "portico.event.dead_lettered")
        }
    })
    .await?;
    let notice = sink
        .received_at("/alice")
        .iter()
        .map(|r| r.json())
        .find(|b| b["type"] == "portico.event.dead_lettered")
        .unwrap_or_default();
    assert_eq!(notice["data"]["eventId"], bad_id.to_string(), "{notice}");
    assert!(
        !sink
            .received_at("/bob")
            .iter()
            .any(|r| r.json()["type"] == "portico.event.dead_lettered"),
        "only the owner is told"
    );
    app.cleanup().await;
    Ok(())
}

async fn ready(app: &TestApp, kind: ServiceKind) -> (bool, String) {
    let url = format!("http://{}/readyz", app.addr(kind, "http"));
    match app.http.get(url).send().await {
        Ok(r) => (r.status().is_success(), r.text().await.unwrap_or_default()),
        Err(e) => (false, e.to_string()),
    }
}

async fn grpc_serving(app: &TestApp) -> bool {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(app.grpc_url()) else {
        return false;
    };
    let Ok(channel) = endpoint.connect().await else {
        return false;
    };
    let mut client = HealthClient::new(channel);
    client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|r| r.into_inner().status == ServingStatus::Serving as i32)
        .unwrap_or(false)
}

/// With NATS down every service reports not ready (and gRPC health NOT_SERVING) within
/// seconds, and ready again once NATS is back.
#[tokio::test]
async fn readiness_follows_nats() -> anyhow::Result<()> {
    let mut nats = PrivateNats::start().await?;
    let (pg, _) = portico_e2e::server_urls();
    let mut app = TestApp::prepare_on(&pg, &nats.url()).await?;
    for kind in [
        ServiceKind::Gateway,
        ServiceKind::WebhookDispatcher,
        ServiceKind::BatchProcessor,
    ] {
        app.start(kind).await?;
    }
    assert!(grpc_serving(&app).await);

    nats.kill().await?;
    for kind in [
        ServiceKind::Gateway,
        ServiceKind::WebhookDispatcher,
        ServiceKind::BatchProcessor,
    ] {
        let a = &app;
        wait_for(Duration::from_secs(10), || async move {
            !ready(a, kind).await.0
        })
        .await
        .map_err(|e| anyhow::anyhow!("{kind:?} stayed ready without NATS: {e}"))?;
        assert!(ready(a, kind).await.1.contains("jetstream"));
    }
    let a = &app;
    wait_for(
        Duration::from_secs(10),
        || async move { !grpc_serving(a).await },
    )
    .await
    .map_err(|e| anyhow::anyhow!("gRPC health stayed SERVING without NATS: {e}"))?;

    nats.restart().await?;
    for kind in [
        ServiceKind::Gateway,
        ServiceKind::WebhookDispatcher,
        ServiceKind::BatchProcessor,
    ] {
        let a = &app;
        wait_for(
            Duration::from_secs(20),
            || async move { ready(a, kind).await.0 },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{kind:?} did not recover: {e}"))?;
    }
    let a = &app;
    wait_for(
        Duration::from_secs(20),
        || async move { grpc_serving(a).await },
    )
    .await?;
    app.cleanup().await;
    Ok(())
}

/// With PostgreSQL down every service reports not ready within seconds (naming
/// PostgreSQL), and ready again once it is back; nothing restarts.
#[tokio::test]
async fn readiness_follows_postgres() -> anyhow::Result<()> {
    let pg = portico_e2e::servers::PrivatePostgres::start().await?;
    let (_, nats) = portico_e2e::server_urls();
    let mut app = TestApp::prepare_on(&pg.url(), &nats).await?;
    let kinds = [
        ServiceKind::Gateway,
        ServiceKind::WebhookDispatcher,
        ServiceKind::BatchProcessor,
    ];
    for kind in kinds {
        app.start(kind).await?;
    }
    let outage = pg.crash_and_restart(Duration::from_secs(8));
    // The three services are watched at once, and a not-ready answer counts only if it
    // names PostgreSQL itself: watched one after another on a loaded machine, the last
    // one was first looked at after the outage had ended.
    let observed = async {
        let app = &app;
        let watches = kinds.map(|kind| async move {
            wait_for(Duration::from_secs(6), || async move {
                let (is_ready, body) = ready(app, kind).await;
                !is_ready && body.contains("postgresql")
            })
            .await
            .map_err(|e| anyhow::anyhow!("{kind:?} never said PostgreSQL was missing: {e}"))
        });
        for watched in futures::future::join_all(watches).await {
            watched?;
        }
        Ok::<_, anyhow::Error>(())
    };
    let (restarted, seen) = tokio::join!(outage, observed);
    restarted?;
    seen?;
    for kind in kinds {
        let a = &app;
        wait_for(
            Duration::from_secs(30),
            || async move { ready(a, kind).await.0 },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{kind:?} did not recover: {e}"))?;
    }
    app.cleanup().await;
    pg.remove().await;
    Ok(())
}

/// A schema older than the binary (a gateway started before `migrate`) is not ready,
/// and says why; after migrating it is.
#[tokio::test]
async fn readiness_requires_the_current_schema() -> anyhow::Result<()> {
    let mut app = TestApp::prepare().await?;
    let newest: i64 = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
        .fetch_one(&app.pool)
        .await?;
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
        .bind(newest)
        .execute(&app.pool)
        .await?;
    app.start_unready(ServiceKind::Gateway, &[]).await?;
    let (ok, body) = ready(&app, ServiceKind::Gateway).await;
    assert!(!ok, "ready with an old schema: {body}");
    assert!(body.contains("schema"), "{body}");
    assert!(!grpc_serving(&app).await);
    app.cleanup().await;
    Ok(())
}

/// An order PostgreSQL refuses (injected here with a trigger that raises a data
/// exception for one SKU, the way a value the validator misses would fail) does not
/// hold up its chunk: it gets a `failed` result with `unstorable_order`, every other
/// order of the chunk is created, and the batch completes.
#[tokio::test]
async fn one_unstorable_order_does_not_hold_up_its_chunk() -> anyhow::Result<()> {
    let app =
        TestApp::spawn_with(&[], &[ServiceKind::Gateway, ServiceKind::BatchProcessor]).await?;
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.sku = 'POISON' THEN
                 RAISE EXCEPTION 'poisoned sku' USING ERRCODE = '22023';
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_poison BEFORE INSERT ON order_items
             FOR EACH ROW EXECUTE FUNCTION refuse_poison();",
    )
    .execute(&app.pool)
    .await?;
    let orders: Vec<Value> = (0..50)
        .map(|i| {
            json!({
                "clientOrderRef": format!("P-{i}"),
                "currency": "EUR",
                "customer": {"email": "ada@example.com", "name": "Ada Lovelace"},
                "shippingAddress": {"line1": "1 Main St", "city": "Berlin", "postalCode": "10115", "country": "DE"},
                "lineItems": [{"sku": if i == 7 { "POISON" } else { "SKU-1" }, "quantity": 1, "unitPrice": "1.00"}],
            })
        })
        .collect();
    let token = app.user_token("user-poison");
    let res = app
        .http
        .post(app.api("/bulk-orders"))
        .bearer_auth(&token)
        .json(&json!({"orders": orders}))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let id = res.json::<Value>().await?["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let last = std::sync::Mutex::new(Value::Null);
    wait_for(PATIENCE, || async {
        let Ok(res) = app
            .http
            .get(app.api(&format!("/bulk-orders/{id}")))
            .bearer_auth(&token)
            .send()
            .await
        else {
            return false;
        };
        let batch: Value = res.json().await.unwrap_or_default();
        let done = batch["status"] == "completed_with_errors";
        if let Ok(mut l) = last.lock() {
            *l = batch;
        }
        done
    })
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "batch did not complete: {e}; last {:?}",
            last.lock().map(|l| l.clone())
        )
    })?;
    let batch = last.lock().map(|l| l.clone()).unwrap_or_default();
    assert_eq!(batch["counts"]["succeeded"], 49, "{batch}");
    assert_eq!(batch["counts"]["failed"], 1, "{batch}");
    let failed: Value = app
        .http
        .get(app.api(&format!("/bulk-orders/{id}/results?status=failed")))
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(failed["data"][0]["index"], 7, "{failed}");
    assert_eq!(
        failed["data"][0]["errors"][0]["code"], "unstorable_order",
        "{failed}"
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&app.pool)
        .await?;
    assert_eq!(stored, 49);
    app.cleanup().await;
    Ok(())
}

/// History past its retention is deleted by the batch-processor's retention loop, and
/// nothing that is still needed: a delivery still retrying and the event it refers to
/// stay, recent rows stay, daily usage counts stay. Deliveries, attempts and events go
/// as whole day partitions (checked in the catalog).
#[tokio::test]
async fn history_past_its_retention_is_deleted() -> anyhow::Result<()> {
    let mut app =
        TestApp::spawn_with(&[], &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher]).await?;
    let sink = Sink::start().await?;
    let user = "user-retention";
    let token = app.user_token(user);
    let res = app
        .http
        .post(app.api("/webhooks"))
        .bearer_auth(&token)
        .json(&json!({"url": sink.url("/hook"), "events": ["order.*"]}))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::CREATED);
    for n in 0..3 {
        let res = app
            .http
            .post(app.api("/events"))
            .bearer_auth(SERVICE_TOKEN)
            .header("x-portico-user-id", user)
            .json(&json!({"type": "order.created", "data": {"n": n}, "idempotencyKey": format!("k{n}")}))
            .send()
            .await?;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
    }
    let pool = app.pool.clone();
    wait_for(PATIENCE, || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM webhook_deliveries WHERE status = 'succeeded'",
            )
            .fetch_one(&pool)
            .await
            .unwrap_or(0)
                == 3
        }
    })
    .await?;
    let ids: Vec<(Uuid, Uuid)> =
        sqlx::query_as("SELECT id, event_id FROM webhook_deliveries ORDER BY created_at")
            .fetch_all(&app.pool)
            .await?;
    let (old, retrying, recent) = (ids[0], ids[1], ids[2]);
    // Backdate two deliveries (one still retrying) with their events and attempts: the
    // history is partitioned by day (delivery id, event acceptance time), so their keys
    // move to day partitions 40 and 35 days back, as if recorded then. The moves are
    // maintenance (the deliveries' cascade trigger and the attempts' guard stand aside).
    let mut tx = app.pool.begin().await?;
    sqlx::query("SET LOCAL portico.partition_maintenance = 'on'")
        .execute(&mut *tx)
        .await?;
    for table in ["webhook_deliveries", "webhook_delivery_attempts", "events"] {
        sqlx::query(
            "SELECT portico_ensure_day_partitions($1, (now() AT TIME ZONE 'UTC')::date - 41,
                                                  (now() AT TIME ZONE 'UTC')::date - 34)",
        )
        .bind(table)
        .execute(&mut *tx)
        .await?;
    }
    for ((delivery, event), days) in [(old, 40), (retrying, 35)] {
        // The same id with its first 48 bits (the time) moved back `days` days.
        let moved: Uuid = sqlx::query_scalar(
            "SELECT (left(replace(portico_uuid7_floor(now() - make_interval(days => $2))::text, '-', ''), 12)
                     || right(replace($1::text, '-', ''), 20))::uuid",
        )
        .bind(delivery)
        .bind(days)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE webhook_delivery_attempts SET delivery_id = $2,
                 started_at = now() - make_interval(days => $3) WHERE delivery_id = $1",
        )
        .bind(delivery)
        .bind(moved)
        .bind(days)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE webhook_deliveries SET id = $2, created_at = now() - make_interval(days => $3)
             WHERE id = $1",
        )
        .bind(delivery)
        .bind(moved)
        .bind(days)
        .execute(&mut *tx)
        .await?;
        for table in ["events", "event_keys"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE {table} SET accepted_at = now() - make_interval(days => $2) WHERE id = $1"
            )))
            .bind(event)
            .bind(days)
            .execute(&mut *tx)
            .await?;
        }
        if days == 40 {
            sqlx::query("UPDATE events SET created_at = now() - interval '40 days' WHERE id = $1")
                .bind(event)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    let moved: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM webhook_deliveries WHERE event_id = ANY($1) ORDER BY created_at",
    )
    .bind(vec![old.1, retrying.1])
    .fetch_all(&app.pool)
    .await?;
    let (old, retrying) = ((moved[0], old.1), (moved[1], retrying.1));
    sqlx::query(
        "UPDATE webhook_deliveries SET status = 'retrying', next_attempt_at = now() + interval '1 day' WHERE id = $1",
    )
    .bind(retrying.0)
    .execute(&app.pool)
    .await?;
    // Usage logs and dead letters, one old and one recent each.
    let res = app
        .http
        .post(app.api("/integrations"))
        .bearer_auth(&token)
        .json(&json!({"name": "ERP", "type": "erp"}))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::CREATED);
    let integration: Uuid = res.json::<Value>().await?["id"]
        .as_str()
        .unwrap_or_default()
        .parse()?;
    sqlx::query(
        "INSERT INTO integration_usage_logs (integration_id, method, route, status, latency_us, occurred_at)
         VALUES ($1, 'GET', '/api/x', 200, 10, now() - interval '100 days'), ($1, 'GET', '/api/x', 200, 10, now())",
    )
    .bind(integration)
    .execute(&app.pool)
    .await?;
    sqlx::query(
        "INSERT INTO job_dead_letters (consumer, subject, payload, reason, created_at)
         VALUES ('t', 's', '\\x00', 'old', now() - interval '100 days'), ('t', 's', '\\x00', 'new', now())",
    )
    .execute(&app.pool)
    .await?;

    app.start_with(
        ServiceKind::BatchProcessor,
        &[("PORTICO_RETENTION_INTERVAL_SECS", "1")],
    )
    .await?;
    let pool = app.pool.clone();
    wait_for(PATIENCE, || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT (SELECT count(*) FROM events WHERE id = $1)
                      + (SELECT count(*) FROM integration_usage_logs WHERE occurred_at < now() - interval '1 day')
                      + (SELECT count(*) FROM job_dead_letters WHERE reason = 'old')",
            )
            .bind(old.1)
            .fetch_one(&pool)
            .await
            .unwrap_or(-1)
                == 0
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("old history was not deleted: {e}"))?;
    let kept: (i64, i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM webhook_deliveries WHERE id = $1),
                (SELECT count(*) FROM webhook_deliveries WHERE id = ANY($2)),
                (SELECT count(*) FROM events WHERE id = ANY($3)),
                (SELECT count(*) FROM webhook_delivery_attempts WHERE delivery_id = $1),
                (SELECT count(*) FROM integration_usage_logs),
                (SELECT count(*) FROM job_dead_letters)",
    )
    .bind(old.0)
    .bind(vec![retrying.0, recent.0])
    .bind(vec![retrying.1, recent.1])
    .fetch_one(&app.pool)
    .await?;
    assert_eq!(
        kept,
        (0, 2, 2, 0, 1, 1),
        "(old delivery, kept deliveries, kept events, old attempts, usage rows, dead letters)"
    );
    // Gone as whole days: the old day's partitions of deliveries, attempts and events;
    // the retrying delivery's day stays.
    let days: (bool, bool, bool, bool) = sqlx::query_as(
        "SELECT to_regclass('webhook_deliveries_p' || d40) IS NULL,
                to_regclass('webhook_delivery_attempts_p' || d40) IS NULL,
                to_regclass('events_p' || d40) IS NULL,
                to_regclass('webhook_deliveries_p' || d35) IS NOT NULL
         FROM (SELECT to_char((now() AT TIME ZONE 'UTC')::date - 40, 'YYYYMMDD') AS d40,
                      to_char((now() AT TIME ZONE 'UTC')::date - 35, 'YYYYMMDD') AS d35) d",
    )
    .fetch_one(&app.pool)
    .await?;
    assert_eq!(days, (true, true, true, true), "(dropped x3, kept day)");
    app.cleanup().await;
    Ok(())
}
