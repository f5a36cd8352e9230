//! The webhooks API over a real gateway, PostgreSQL and JetStream: endpoints, signing
//! secrets, test events, delivery history, retries and retry jobs, over REST and gRPC,
//! with the SSRF guard and user isolation. Only the gateway runs: deliveries are seeded
//! with SQL (the dispatcher writes the real ones and is tested on its own).

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine;
use portico_e2e::{SECRETS_KEY, ServiceKind, TestApp, assert_problem, wait_for};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

/// A gateway alone, with the test allowlist (loopback).
async fn gateway() -> anyhow::Result<TestApp> {
    TestApp::spawn_with(&[], &[ServiceKind::Gateway]).await
}

fn as_user(app: &TestApp, req: reqwest::RequestBuilder, user: &str) -> reqwest::RequestBuilder {
    req.bearer_auth(app.user_token(user))
}

fn hook_body(url: &str) -> Value {
    json!({"url": url, "events": ["order.created", "order.*"]})
}

async fn create(app: &TestApp, user: &str, body: &Value) -> anyhow::Result<Value> {
    let res = as_user(app, app.http.post(app.api("/webhooks")), user)
        .json(body)
        .send()
        .await?;
    let status = res.status();
    let body: Value = res.json().await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    Ok(body)
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap_or_default().to_owned()
}

/// (webhooks, webhook_secrets, webhook_retry_jobs, outbox) row counts.
async fn counts(app: &TestApp) -> anyhow::Result<(i64, i64, i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT (SELECT count(*) FROM webhooks), (SELECT count(*) FROM webhook_secrets),
                (SELECT count(*) FROM webhook_retry_jobs), (SELECT count(*) FROM outbox)",
    )
    .fetch_one(&app.pool)
    .await?)
}

/// Waits until the gateway's outbox relay has published every row to JetStream.
async fn outbox_drained(app: &TestApp) -> anyhow::Result<()> {
    let pool = app.pool.clone();
    wait_for(Duration::from_secs(10), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox")
                .fetch_one(&pool)
                .await
                .unwrap_or(-1)
                == 0
        }
    })
    .await
}

/// A 400 validation problem whose first field error has `code` at `path`.
async fn assert_field_error(
    res: reqwest::Response,
    code: &str,
    path: &str,
) -> anyhow::Result<Value> {
    let body = assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await?;
    assert_eq!(body["errors"][0]["code"], code, "{body}");
    assert_eq!(body["errors"][0]["path"], path, "{body}");
    Ok(body)
}

/// Seeds an event and one delivery of it to `webhook_id`, created `age_secs` ago.
async fn seed_delivery(
    app: &TestApp,
    webhook_id: &str,
    user: &str,
    event_type: &str,
    status: &str,
    attempts: i32,
    age_secs: i64,
) -> anyhow::Result<Uuid> {
    let webhook_id: Uuid = webhook_id.parse()?;
    let event_id = Uuid::now_v7();
    let delivery_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO events (id, user_id, event_type, payload, idempotency_key, accepted_at, created_at)
         VALUES ($1, $2, $3, '{}'::jsonb, $4, now(), now() - $5 * interval '1 second')",
    )
    .bind(event_id)
    .bind(user)
    .bind(event_type)
    .bind(event_id.to_string())
    .bind(age_secs)
    .execute(&app.pool)
    .await?;
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, webhook_id, event_id, user_id, event_type, status,
             attempts, max_retries, next_attempt_at, lease_until, last_status_code, last_error,
             created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 5, NULL, now() + interval '1 minute',
                 CASE WHEN $6 = 'succeeded' THEN 200 ELSE 500 END,
                 CASE WHEN $6 = 'succeeded' THEN NULL ELSE 'HTTP 500' END,
                 now() - $8 * interval '1 second', now() - $8 * interval '1 second')",
    )
    .bind(delivery_id)
    .bind(webhook_id)
    .bind(event_id)
    .bind(user)
    .bind(event_type)
    .bind(status)
    .bind(attempts)
    .bind(age_secs)
    .execute(&app.pool)
    .await?;
    Ok(delivery_id)
}

/// A user creates a webhook: the answer has the documented shape with server defaults
/// filled in and a `whsec_` secret, and the database holds the secret only sealed
/// with the configured key (neither the raw key bytes nor the whsec text appear).
#[tokio::test]
async fn creating_a_webhook_returns_its_secret_and_stores_it_sealed() -> anyhow::Result<()> {
    let app = gateway().await?;
    let created = create(
        &app,
        "alice",
        &json!({
            "url": "http://127.0.0.1:9/hooks",
            "events": ["order.created", "bulk_order.*", "order.created"],
            "description": "orders to the ERP",
            "headers": {"X-Api-Key": "k-123"},
            "retryPolicy": {"maxRetries": 3},
            "rateLimitPerSecond": 50,
            "orderingEnabled": true
        }),
    )
    .await?;
    assert_eq!(created["url"], "http://127.0.0.1:9/hooks");
    assert_eq!(created["events"], json!(["order.created", "bulk_order.*"]));
    assert_eq!(created["description"], "orders to the ERP");
    assert_eq!(created["active"], true);
    assert_eq!(created["disabledReason"], Value::Null);
    assert_eq!(
        created["retryPolicy"],
        json!({"maxRetries": 3, "baseDelayMs": 1000, "maxDelayMs": 300000})
    );
    assert_eq!(created["headers"], json!({"X-Api-Key": "k-123"}));
    assert_eq!(created["orderingEnabled"], true);
    assert_eq!(created["rateLimitPerSecond"], 50);
    assert_eq!(created["maxConcurrency"], Value::Null);
    assert!(created["createdAt"].is_string() && created["updatedAt"].is_string());

    let secret = created["secret"].as_str().unwrap_or_default().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let raw = base64::engine::general_purpose::STANDARD.decode(&secret["whsec_".len()..])?;
    assert_eq!(raw.len(), 32);

    let id: Uuid = id_of(&created).parse()?;
    let sealed: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT ciphertext FROM webhook_secrets WHERE webhook_id = $1")
            .bind(id)
            .fetch_all(&app.pool)
            .await?;
    assert_eq!(sealed.len(), 1);
    let row = &sealed[0];
    assert!(!row.windows(raw.len()).any(|w| w == raw.as_slice()));
    assert!(!row.windows(secret.len()).any(|w| w == secret.as_bytes()));
    let keys = portico_signing::seal::Keyring::from_config(None, Some(SECRETS_KEY))?;
    let context = portico_signing::seal::webhook_secret_context(id.as_bytes());
    let opened = keys.open(&context, row)?;
    assert_eq!(opened.plaintext, raw, "sealed with PORTICO_SECRETS_KEY");
    assert!(
        opened.current,
        "under the newest key, in the current format"
    );
    assert!(
        keys.open(
            &portico_signing::seal::webhook_secret_context(&[0; 16]),
            row
        )
        .is_err(),
        "bound to its webhook"
    );

    let shown: Value = as_user(
        &app,
        app.http.get(app.api(&format!("/v1/webhooks/{id}/secret"))),
        "alice",
    )
    .send()
    .await?
    .json()
    .await?;
    assert_eq!(
        shown,
        json!({"secret": secret, "previousSecretExpiresAt": null})
    );
    app.cleanup().await;
    Ok(())
}

/// Invalid URLs, empty or malformed event filters, reserved headers, bad retry
/// policies and unknown fields are refused with a field code and a JSON pointer, and
/// none of them writes a row.
#[tokio::test]
async fn invalid_webhooks_are_refused_with_field_codes_and_change_nothing() -> anyhow::Result<()> {
    let app = gateway().await?;
    let before = counts(&app).await?;
    let post = |body: Value| {
        as_user(&app, app.http.post(app.api("/webhooks")), "alice")
            .json(&body)
            .send()
    };
    for (body, code, path) in [
        (
            json!({"url": "not a url", "events": ["a.b"]}),
            "invalid_url",
            "/url",
        ),
        (
            json!({"url": "ftp://example.com/x", "events": ["a.b"]}),
            "invalid_url",
            "/url",
        ),
        (json!({"events": ["a.b"]}), "invalid_url", "/url"),
        (
            json!({"url": "http://127.0.0.1:9/x", "events": []}),
            "empty_events",
            "/events",
        ),
        (
            json!({"url": "http://127.0.0.1:9/x"}),
            "empty_events",
            "/events",
        ),
        (
            json!({"url": "http://127.0.0.1:9/x", "events": ["a.b", "order.**"]}),
            "invalid_event_filter",
            "/events/1",
        ),
        (
            json!({"url": "http://127.0.0.1:9/x", "events": ["*.created"]}),
            "invalid_event_filter",
            "/events/0",
        ),
        (
            json!({"url": "http://127.0.0.1:9/x", "events": ["a.b"], "headers": {"Webhook-Signature": "x"}}),
            "reserved_header",
            "/headers/Webhook-Signature",
        ),
        (
            json!({"url": "http://127.0.0.1:9/x", "events": ["a.b"], "headers": {"Content-Type": "text/plain"}}),
            "reserved_header",
            "/headers/Content-Type",
        ),
        (
            json!({"url": "http://127.0.0.1:9/x", "events": ["a.b"], "headers": {"X-Portico-Foo": "x"}}),
            "reserved_header",
            "/headers/X-Portico-Foo",
        ),
        (
            json!({"url": "http://127.0.0.1:9/x", "events": ["a.b"], "retryPolicy": {"maxRetries": 21}}),
            "invalid_retry_policy",
            "/retryPolicy/maxRetries",
        ),
        (
            json!({"url": "http://127.0.0.1:9/x", "events": ["a.b"], "retryPolicy": {"baseDelayMs": 5000, "maxDelayMs": 1000}}),
            "invalid_retry_policy",
            "/retryPolicy/maxDelayMs",
        ),
        (
            json!({"url": "http://127.0.0.1:9/x", "events": ["a.b"], "description": "x".repeat(1025)}),
            "invalid_description",
            "/description",
        ),
        (
            json!({"url": "http://127.0.0.1:9/x", "events": ["a.b"], "maxConcurrency": 0}),
            "invalid_max_concurrency",
            "/maxConcurrency",
        ),
    ] {
        let res = post(body.clone()).await?;
        assert_field_error(res, code, path).await?;
        assert_eq!(counts(&app).await?, before, "{body}");
    }
    let res =
        post(json!({"url": "http://127.0.0.1:9/x", "events": ["a.b"], "colour": "red"})).await?;
    assert_problem(res, StatusCode::BAD_REQUEST, "malformed_body").await?;
    let res = post(json!({"url": "http://127.0.0.1:9/x", "events": "a.b"})).await?;
    assert_problem(res, StatusCode::BAD_REQUEST, "malformed_body").await?;
    let res = app
        .http
        .post(app.api("/webhooks"))
        .json(&hook_body("http://127.0.0.1:9/x"))
        .send()
        .await?;
    assert_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await?;
    assert_eq!(counts(&app).await?, before);
    app.cleanup().await;
    Ok(())
}

/// Five webhooks listed two at a time come newest first, each exactly once, and the
/// last page says there is no next one; another user sees none of them.
#[tokio::test]
async fn webhooks_are_listed_newest_first_in_pages() -> anyhow::Result<()> {
    let app = gateway().await?;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(id_of(
            &create(
                &app,
                "alice",
                &hook_body(&format!("http://127.0.0.1:9/h{i}")),
            )
            .await?,
        ));
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut url = app.api("/webhooks?limit=2");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = as_user(&app, app.http.get(url), "alice")
            .send()
            .await?
            .json()
            .await?;
        pages += 1;
        let data = page["data"].as_array().cloned().unwrap_or_default();
        assert!(data.len() <= 2);
        seen.extend(data.iter().map(id_of));
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => {
                assert_eq!(page["nextCursor"], Value::Null);
                break;
            }
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(pages, 3);
    created.reverse();
    assert_eq!(seen, created, "newest first, no duplicates, none missing");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 5);

    let other: Value = as_user(&app, app.http.get(app.api("/webhooks")), "bob")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(other, json!({"data": [], "nextCursor": null}));
    let res = as_user(
        &app,
        app.http.get(app.api("/webhooks?cursor=garbage")),
        "alice",
    )
    .send()
    .await?;
    assert_field_error(res, "invalid_cursor", "/cursor").await?;
    app.cleanup().await;
    Ok(())
}

/// A webhook is read back by id; a PATCH changes only what it names (null clears a
/// description; one retry-policy field keeps the others); an invalid PATCH changes
/// nothing; `active: true` re-enables a webhook Portico disabled and clears its reason
/// and failure count; DELETE removes it, and it is then not found.
#[tokio::test]
async fn webhooks_are_read_updated_partially_and_deleted() -> anyhow::Result<()> {
    let app = gateway().await?;
    let created = create(
        &app,
        "alice",
        &json!({"url": "http://127.0.0.1:9/a", "events": ["a.b"], "description": "first",
                "headers": {"X-A": "1"}}),
    )
    .await?;
    let id = id_of(&created);
    let url = app.api(&format!("/webhooks/{id}"));
    let got: Value = as_user(&app, app.http.get(&url), "alice")
        .send()
        .await?
        .json()
        .await?;
    let mut expected = created.clone();
    expected.as_object_mut().map(|o| o.remove("secret"));
    assert_eq!(got, expected);

    let patched: Value = as_user(&app, app.http.patch(&url), "alice")
        .json(&json!({"description": null, "retryPolicy": {"maxRetries": 0}, "events": ["c.*"]}))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(patched["description"], Value::Null);
    assert_eq!(patched["events"], json!(["c.*"]));
    assert_eq!(
        patched["retryPolicy"],
        json!({"maxRetries": 0, "baseDelayMs": 1000, "maxDelayMs": 300000})
    );
    assert_eq!(patched["url"], "http://127.0.0.1:9/a");
    assert_eq!(patched["headers"], json!({"X-A": "1"}));
    assert_eq!(patched["createdAt"], created["createdAt"]);

    for (body, code, path) in [
        (json!({"events": []}), "empty_events", "/events"),
        (json!({"url": "gopher://x"}), "invalid_url", "/url"),
        (
            json!({"retryPolicy": {"maxDelayMs": 500}}),
            "invalid_retry_policy",
            "/retryPolicy/maxDelayMs",
        ),
        (
            json!({"headers": {"Host": "evil"}}),
            "reserved_header",
            "/headers/Host",
        ),
    ] {
        let res = as_user(&app, app.http.patch(&url), "alice")
            .json(&body)
            .send()
            .await?;
        assert_field_error(res, code, path).await?;
    }
    let unchanged: Value = as_user(&app, app.http.get(&url), "alice")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(unchanged, patched);

    // The dispatcher disables an endpoint that keeps failing.
    sqlx::query(
        "UPDATE webhooks SET active = false, disabled_reason = 'failing for 5 days',
                disabled_at = now(), consecutive_failures = 42 WHERE id = $1",
    )
    .bind(id.parse::<Uuid>()?)
    .execute(&app.pool)
    .await?;
    let disabled: Value = as_user(&app, app.http.get(&url), "alice")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        (
            disabled["active"].clone(),
            disabled["disabledReason"].clone()
        ),
        (json!(false), json!("failing for 5 days"))
    );
    let enabled: Value = as_user(&app, app.http.patch(&url), "alice")
        .json(&json!({"active": true}))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(enabled["active"], true);
    assert_eq!(enabled["disabledReason"], Value::Null);
    let failures: i32 =
        sqlx::query_scalar("SELECT consecutive_failures FROM webhooks WHERE id = $1")
            .bind(id.parse::<Uuid>()?)
            .fetch_one(&app.pool)
            .await?;
    assert_eq!(failures, 0);

    let res = as_user(&app, app.http.delete(&url), "alice").send().await?;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = as_user(&app, app.http.get(&url), "alice").send().await?;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await?;
    let res = as_user(&app, app.http.delete(&url), "alice").send().await?;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await?;
    assert_eq!(counts(&app).await?.0, 0);
    assert_eq!(counts(&app).await?.1, 0, "secrets go with their webhook");
    app.cleanup().await;
    Ok(())
}

/// Every route answers 404 to a user who does not own the webhook (never 403, never
/// data), and nothing of the owner's changes.
#[tokio::test]
async fn another_users_webhook_is_not_found_on_any_route() -> anyhow::Result<()> {
    let app = gateway().await?;
    let created = create(&app, "alice", &hook_body("http://127.0.0.1:9/a")).await?;
    let id = id_of(&created);
    let delivery = seed_delivery(&app, &id, "alice", "order.created", "failed", 1, 10).await?;
    let job: Value = as_user(
        &app,
        app.http
            .post(app.api(&format!("/webhooks/{id}/retry-failed"))),
        "alice",
    )
    .send()
    .await?
    .json()
    .await?;
    let job_id = id_of(&job);
    outbox_drained(&app).await?;
    let before = counts(&app).await?;
    let base = app.api(&format!("/webhooks/{id}"));
    let requests = [
        app.http.get(&base),
        app.http
            .patch(&base)
            .json(&json!({"description": "mine now"})),
        app.http.delete(&base),
        app.http.get(format!("{base}/secret")),
        app.http.post(format!("{base}/secret/rotate")),
        app.http.post(format!("{base}/test")),
        app.http.get(format!("{base}/deliveries")),
        app.http.get(format!("{base}/deliveries/{delivery}")),
        app.http.post(format!("{base}/deliveries/{delivery}/retry")),
        app.http
            .post(format!("{base}/retry-failed"))
            .json(&json!({"dryRun": true})),
        app.http.post(format!("{base}/retry-failed")),
        app.http.get(format!("{base}/retry-jobs/{job_id}")),
        app.http.post(format!("{base}/retry-jobs/{job_id}/cancel")),
    ];
    for req in requests {
        let res = as_user(&app, req, "mallory").send().await?;
        assert_problem(res, StatusCode::NOT_FOUND, "not_found").await?;
    }
    assert_eq!(counts(&app).await?, before);
    let still: Value = as_user(&app, app.http.get(&base), "alice")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(still["description"], Value::Null);
    let status: String = sqlx::query_scalar("SELECT status FROM webhook_deliveries WHERE id = $1")
        .bind(delivery)
        .fetch_one(&app.pool)
        .await?;
    assert_eq!(status, "failed");
    app.cleanup().await;
    Ok(())
}

fn authed<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// The gRPC twin creates, gets, lists and deletes over the same domain code, answers
/// INVALID_ARGUMENT for an invalid URL and NOT_FOUND for another user's webhook.
#[tokio::test]
async fn grpc_twin_manages_webhooks_with_proper_status_codes() -> anyhow::Result<()> {
    use portico_proto::v1 as pb;
    use portico_proto::v1::webhook_service_client::WebhookServiceClient;
    let app = gateway().await?;
    let mut client = WebhookServiceClient::connect(app.grpc_url()).await?;
    let gina = app.user_token("gina");
    let hank = app.user_token("hank");
    let created = client
        .create_webhook(authed(
            &gina,
            pb::CreateWebhookRequest {
                url: "http://127.0.0.1:9/grpc".into(),
                events: vec!["order.*".into()],
                description: "via gRPC".into(),
                retry_policy: Some(pb::RetryPolicyPatch {
                    max_retries: Some(0),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ))
        .await?
        .into_inner();
    assert!(created.secret.starts_with("whsec_"));
    let hook = created.webhook.unwrap_or_default();
    assert_eq!(hook.url, "http://127.0.0.1:9/grpc");
    assert_eq!(
        hook.retry_policy.map(|p| (p.max_retries, p.base_delay_ms)),
        Some((0, 1000))
    );

    let got = client
        .get_webhook(authed(
            &gina,
            pb::GetWebhookRequest {
                id: hook.id.clone(),
            },
        ))
        .await?
        .into_inner();
    assert_eq!(got, hook);
    // The REST door sees the same webhook.
    let rest: Value = as_user(
        &app,
        app.http.get(app.api(&format!("/webhooks/{}", hook.id))),
        "gina",
    )
    .send()
    .await?
    .json()
    .await?;
    assert_eq!(rest["description"], "via gRPC");

    let listed = client
        .list_webhooks(authed(&gina, pb::ListWebhooksRequest { page: None }))
        .await?
        .into_inner();
    assert_eq!(listed.webhooks.len(), 1);
    assert_eq!(listed.page.map(|p| p.next_cursor), Some(String::new()));

    let err = client
        .create_webhook(authed(
            &gina,
            pb::CreateWebhookRequest {
                url: "nope".into(),
                events: vec!["a.b".into()],
                ..Default::default()
            },
        ))
        .await
        .expect_err("invalid URL");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("invalid_url"), "{}", err.message());

    for call in 0..3 {
        let err = match call {
            0 => client
                .get_webhook(authed(
                    &hank,
                    pb::GetWebhookRequest {
                        id: hook.id.clone(),
                    },
                ))
                .await
                .map(|_| ()),
            1 => client
                .delete_webhook(authed(
                    &hank,
                    pb::DeleteWebhookRequest {
                        id: hook.id.clone(),
                        etag: None,
                    },
                ))
                .await
                .map(|_| ()),
            _ => client
                .get_webhook_secret(authed(
                    &hank,
                    pb::GetWebhookSecretRequest {
                        id: hook.id.clone(),
                    },
                ))
                .await
                .map(|_| ()),
        }
        .expect_err("another user's webhook");
        assert_eq!(err.code(), tonic::Code::NotFound);
    }
    let err = client
        .get_webhook(authed(
            &gina,
            pb::GetWebhookRequest {
                id: "not-a-uuid".into(),
            },
        ))
        .await
        .expect_err("bad id");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    client
        .delete_webhook(authed(
            &gina,
            pb::DeleteWebhookRequest {
                id: hook.id.clone(),
                etag: None,
            },
        ))
        .await?;
    let err = client
        .get_webhook(authed(
            &gina,
            pb::GetWebhookRequest {
                id: hook.id.clone(),
            },
        ))
        .await
        .expect_err("deleted");
    assert_eq!(err.code(), tonic::Code::NotFound);
    app.cleanup().await;
    Ok(())
}

/// Rotating returns a new secret while the old one keeps signing for the grace period
/// (both rows active, previousSecretExpiresAt about a day ahead); a rotation with no
/// grace retires every older secret at once.
#[tokio::test]
async fn rotating_the_secret_keeps_the_old_one_for_the_grace_period() -> anyhow::Result<()> {
    let app = gateway().await?;
    let created = create(&app, "alice", &hook_body("http://127.0.0.1:9/a")).await?;
    let id = id_of(&created);
    let first = created["secret"].as_str().unwrap_or_default().to_owned();
    let rotate = app.api(&format!("/webhooks/{id}/secret/rotate"));
    let rotated: Value = as_user(&app, app.http.post(&rotate), "alice")
        .send()
        .await?
        .json()
        .await?;
    let second = rotated["secret"].as_str().unwrap_or_default().to_owned();
    assert!(second.starts_with("whsec_") && second != first);
    let expires: chrono::DateTime<chrono::Utc> = rotated["previousSecretExpiresAt"]
        .as_str()
        .unwrap_or_default()
        .parse()?;
    let ahead = expires - chrono::Utc::now();
    assert!(
        ahead > chrono::Duration::hours(23) && ahead <= chrono::Duration::hours(24),
        "{ahead}"
    );

    let shown: Value = as_user(
        &app,
        app.http.get(app.api(&format!("/webhooks/{id}/secret"))),
        "alice",
    )
    .send()
    .await?
    .json()
    .await?;
    assert_eq!(shown["secret"], second.as_str());
    assert_eq!(
        shown["previousSecretExpiresAt"],
        rotated["previousSecretExpiresAt"]
    );
    let active = |app: &TestApp| {
        let pool = app.pool.clone();
        let id: Uuid = id.parse().unwrap_or_default();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM webhook_secrets WHERE webhook_id = $1
                   AND (expires_at IS NULL OR expires_at > now())",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
        }
    };
    assert_eq!(active(&app).await?, 2, "both sign during the grace period");

    let res = as_user(&app, app.http.post(&rotate), "alice")
        .json(&json!({"gracePeriodSeconds": -1}))
        .send()
        .await?;
    assert_field_error(res, "invalid_grace_period", "/gracePeriodSeconds").await?;

    let third: Value = as_user(&app, app.http.post(&rotate), "alice")
        .json(&json!({"gracePeriodSeconds": 0}))
        .send()
        .await?
        .json()
        .await?;
    assert_ne!(third["secret"], second.as_str());
    assert_eq!(third["previousSecretExpiresAt"], Value::Null);
    assert_eq!(
        active(&app).await?,
        1,
        "grace 0 stops the old secrets at once"
    );
    let shown: Value = as_user(
        &app,
        app.http.get(app.api(&format!("/webhooks/{id}/secret"))),
        "alice",
    )
    .send()
    .await?
    .json()
    .await?;
    assert_eq!(shown, third);
    app.cleanup().await;
    Ok(())
}

/// The test endpoint answers 202 with an event id and leaves a `webhook.test` job for
/// this webhook only in JetStream; a disabled webhook is refused with 409.
#[tokio::test]
async fn test_event_is_queued_for_this_webhook_only() -> anyhow::Result<()> {
    let app = gateway().await?;
    let id = id_of(&create(&app, "alice", &hook_body("http://127.0.0.1:9/a")).await?);
    let res = as_user(
        &app,
        app.http.post(app.api(&format!("/webhooks/{id}/test"))),
        "alice",
    )
    .send()
    .await?;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let body: Value = res.json().await?;
    let event_id = body["eventId"].as_str().unwrap_or_default().to_owned();
    assert!(event_id.parse::<Uuid>().is_ok(), "{body}");

    let js = async_nats::jetstream::new(async_nats::connect(&app.nats_url).await?);
    let stream = js.get_stream(format!("{}_JOBS", app.stream_prefix)).await?;
    let message = stream
        .get_last_raw_message_by_subject(&format!("{}.jobs.events", app.stream_prefix))
        .await?;
    let job: Value = serde_json::from_slice(&message.payload)?;
    assert_eq!(job["type"], "event_dispatch.v1");
    assert_eq!(job["job"]["event_id"], event_id.as_str());
    assert_eq!(job["job"]["event_type"], "webhook.test");
    assert_eq!(job["job"]["user_id"], "alice");
    assert_eq!(job["job"]["only_webhook_id"], id.as_str());
    assert_eq!(
        job["job"]["data"],
        json!({"webhookId": id, "message": "This is a test event from Portico"})
    );

    as_user(
        &app,
        app.http.patch(app.api(&format!("/webhooks/{id}"))),
        "alice",
    )
    .json(&json!({"active": false}))
    .send()
    .await?;
    let res = as_user(
        &app,
        app.http.post(app.api(&format!("/webhooks/{id}/test"))),
        "alice",
    )
    .send()
    .await?;
    assert_problem(res, StatusCode::CONFLICT, "failed_precondition").await?;
    app.cleanup().await;
    Ok(())
}

/// Deliveries are listed newest first with status, event-type and time filters and
/// pages; one delivery comes with every attempt in order; a delivery of another
/// webhook is not found through this one; a bad filter is a field error.
#[tokio::test]
async fn deliveries_are_listed_filtered_paged_and_shown_with_attempts() -> anyhow::Result<()> {
    let app = gateway().await?;
    let id = id_of(&create(&app, "alice", &hook_body("http://127.0.0.1:9/a")).await?);
    let other = id_of(&create(&app, "alice", &hook_body("http://127.0.0.1:9/b")).await?);
    // Oldest first: ages 50, 40, 30, 20, 10 seconds.
    let d_old_failed = seed_delivery(&app, &id, "alice", "order.created", "failed", 6, 50).await?;
    let d_paid = seed_delivery(&app, &id, "alice", "order.paid", "succeeded", 1, 40).await?;
    let d_retrying = seed_delivery(&app, &id, "alice", "order.created", "retrying", 2, 30).await?;
    let d_pending = seed_delivery(&app, &id, "alice", "order.created", "pending", 0, 20).await?;
    let d_new_failed = seed_delivery(&app, &id, "alice", "order.paid", "failed", 6, 10).await?;
    let foreign = seed_delivery(&app, &other, "alice", "order.created", "failed", 1, 5).await?;
    sqlx::query(
        "INSERT INTO webhook_delivery_attempts (delivery_id, attempt_number, request_headers,
             response_status, response_body, latency_ms, error_kind, error_message, started_at)
         VALUES ($1, 2, '{\"webhook-id\": \"evt\"}', NULL, NULL, 10000, 'timeout', 'timed out', now() - interval '29 seconds'),
                ($1, 1, '{\"webhook-id\": \"evt\"}', 500, 'oops', 12, 'http_status', 'HTTP 500', now() - interval '30 seconds')",
    )
    .bind(d_retrying)
    .execute(&app.pool)
    .await?;

    let list = |query: String| {
        let req = as_user(
            &app,
            app.http
                .get(app.api(&format!("/webhooks/{id}/deliveries{query}"))),
            "alice",
        );
        async move {
            let body: Value = req.send().await?.json().await?;
            let ids: Vec<Uuid> = body["data"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|d| d["id"].as_str()?.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            anyhow::Ok((ids, body))
        }
    };
    let (all, body) = list(String::new()).await?;
    assert_eq!(
        all,
        [d_new_failed, d_pending, d_retrying, d_paid, d_old_failed]
    );
    let first = &body["data"][0];
    assert_eq!(first["webhookId"], id.as_str());
    assert_eq!(first["eventType"], "order.paid");
    assert_eq!(first["status"], "failed");
    assert_eq!(first["attempts"], 6);
    assert_eq!(first["maxRetries"], 5);
    assert_eq!(first["lastStatusCode"], 500);
    assert_eq!(first["lastError"], "HTTP 500");
    assert!(first["eventId"].is_string() && first.get("nextAttemptAt").is_some());

    assert_eq!(
        list("?status=failed".into()).await?.0,
        [d_new_failed, d_old_failed]
    );
    assert_eq!(
        list("?eventType=order.paid".into()).await?.0,
        [d_new_failed, d_paid]
    );
    assert_eq!(
        list("?status=failed&eventType=order.created".into())
            .await?
            .0,
        [d_old_failed]
    );
    let at = |secs: i64| {
        (chrono::Utc::now() - chrono::Duration::seconds(secs))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    assert_eq!(
        list(format!("?since={}&until={}", at(35), at(15))).await?.0,
        [d_pending, d_retrying]
    );

    let mut paged = Vec::new();
    let mut cursor = String::new();
    loop {
        let (ids, body) = list(format!("?limit=2&cursor={cursor}")).await?;
        paged.extend(ids);
        match body["nextCursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    assert_eq!(paged, all);

    let detail: Value = as_user(
        &app,
        app.http
            .get(app.api(&format!("/webhooks/{id}/deliveries/{d_retrying}"))),
        "alice",
    )
    .send()
    .await?
    .json()
    .await?;
    assert_eq!(detail["status"], "retrying");
    assert_eq!(detail["attemptCount"], 2);
    let attempts = detail["attempts"].as_array().cloned().unwrap_or_default();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["attemptNumber"], 1);
    assert_eq!(attempts[0]["responseStatus"], 500);
    assert_eq!(attempts[0]["responseBody"], "oops");
    assert_eq!(attempts[0]["latencyMs"], 12);
    assert_eq!(attempts[0]["errorKind"], "http_status");
    assert_eq!(attempts[0]["requestHeaders"], json!({"webhook-id": "evt"}));
    assert_eq!(attempts[1]["attemptNumber"], 2);
    assert_eq!(attempts[1]["responseStatus"], Value::Null);
    assert_eq!(attempts[1]["errorKind"], "timeout");
    assert_eq!(attempts[1]["errorMessage"], "timed out");
    assert!(attempts[1]["startedAt"].is_string());

    let res = as_user(
        &app,
        app.http
            .get(app.api(&format!("/webhooks/{id}/deliveries/{foreign}"))),
        "alice",
    )
    .send()
    .await?;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await?;
    let res = as_user(
        &app,
        app.http
            .get(app.api(&format!("/webhooks/{id}/deliveries?status=lost"))),
        "alice",
    )
    .send()
    .await?;
    assert_field_error(res, "invalid_status", "/status").await?;
    let res = as_user(
        &app,
        app.http
            .get(app.api(&format!("/webhooks/{id}/deliveries?since=yesterday"))),
        "alice",
    )
    .send()
    .await?;
    assert_field_error(res, "invalid_timestamp", "/since").await?;
    app.cleanup().await;
    Ok(())
}

/// Retrying a failed delivery makes it due now with a fresh retry budget (and frees
/// any lease); a succeeded delivery cannot be retried and is left untouched.
#[tokio::test]
async fn retrying_one_delivery_schedules_it_now() -> anyhow::Result<()> {
    let app = gateway().await?;
    let id = id_of(
        &create(&app, "alice", &json!({"url": "http://127.0.0.1:9/a", "events": ["a.*"], "retryPolicy": {"maxRetries": 4}})).await?,
    );
    let failed = seed_delivery(&app, &id, "alice", "a.b", "failed", 6, 60).await?;
    let done = seed_delivery(&app, &id, "alice", "a.b", "succeeded", 1, 50).await?;

    let res = as_user(
        &app,
        app.http
            .post(app.api(&format!("/webhooks/{id}/deliveries/{failed}/retry"))),
        "alice",
    )
    .send()
    .await?;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let body: Value = res.json().await?;
    assert_eq!(body["status"], "retrying");
    assert_eq!(
        body["maxRetries"],
        6 + 4,
        "attempts so far + the webhook's maxRetries"
    );
    let due: chrono::DateTime<chrono::Utc> =
        body["nextAttemptAt"].as_str().unwrap_or_default().parse()?;
    assert!((chrono::Utc::now() - due).abs() < chrono::Duration::seconds(10));
    let (status, lease): (String, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT status, lease_until FROM webhook_deliveries WHERE id = $1")
            .bind(failed)
            .fetch_one(&app.pool)
            .await?;
    assert_eq!((status.as_str(), lease), ("retrying", None));

    let body: Value = as_user(
        &app,
        app.http
            .post(app.api(&format!("/webhooks/{id}/deliveries/{failed}/retry"))),
        "alice",
    )
    .json(&json!({"maxRetries": 1}))
    .send()
    .await?
    .json()
    .await?;
    assert_eq!(body["maxRetries"], 7);

    let res = as_user(
        &app,
        app.http
            .post(app.api(&format!("/webhooks/{id}/deliveries/{done}/retry"))),
        "alice",
    )
    .send()
    .await?;
    assert_problem(res, StatusCode::CONFLICT, "failed_precondition").await?;
    let res = as_user(
        &app,
        app.http
            .post(app.api(&format!("/webhooks/{id}/deliveries/{failed}/retry"))),
        "alice",
    )
    .json(&json!({"maxRetries": 99}))
    .send()
    .await?;
    assert_field_error(res, "invalid_max_retries", "/maxRetries").await?;
    let status: String = sqlx::query_scalar("SELECT status FROM webhook_deliveries WHERE id = $1")
        .bind(done)
        .fetch_one(&app.pool)
        .await?;
    assert_eq!(status, "succeeded");
    app.cleanup().await;
    Ok(())
}

/// retry-failed: a dry run only counts; a real request commits a job row with its
/// filters and an outbox entry that the relay drains into JetStream; the same
/// Idempotency-Key returns the same job (a different request with it is a conflict);
/// the job can be read and cancelled once.
#[tokio::test]
async fn retry_failed_counts_then_queues_one_durable_job_per_key() -> anyhow::Result<()> {
    let app = gateway().await?;
    let id = id_of(&create(&app, "alice", &hook_body("http://127.0.0.1:9/a")).await?);
    for (ty, status, age) in [
        ("order.created", "failed", 50),
        ("order.created", "failed", 40),
        ("order.paid", "failed", 30),
        ("order.created", "retrying", 20),
        ("order.created", "succeeded", 10),
    ] {
        seed_delivery(&app, &id, "alice", ty, status, 3, age).await?;
    }
    let url = app.api(&format!("/webhooks/{id}/retry-failed"));
    let before = counts(&app).await?;
    let dry = |body: Value| {
        as_user(&app, app.http.post(&url), "alice")
            .json(&body)
            .send()
    };
    let res = dry(json!({"dryRun": true})).await?;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.json::<Value>().await?,
        json!({"dryRun": true, "matched": 3})
    );
    let n: Value = dry(json!({"dryRun": true, "statuses": ["failed", "retrying"]}))
        .await?
        .json()
        .await?;
    assert_eq!(n["matched"], 4);
    let n: Value = dry(json!({"dryRun": true, "eventType": "order.created"}))
        .await?
        .json()
        .await?;
    assert_eq!(n["matched"], 2);
    assert_eq!(counts(&app).await?, before, "a dry run changes nothing");
    let res = dry(json!({"statuses": ["succeeded"]})).await?;
    assert_field_error(res, "invalid_status", "/statuses/0").await?;
    let res = dry(json!({"since": "last week"})).await?;
    assert_field_error(res, "invalid_timestamp", "/since").await?;
    assert_eq!(counts(&app).await?, before);

    let since = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let request = json!({"statuses": ["failed"], "since": since, "maxRetries": 2});
    let res = as_user(&app, app.http.post(&url), "alice")
        .header("Idempotency-Key", "retry-1")
        .json(&request)
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let job: Value = res.json().await?;
    assert_eq!(job["webhookId"], id.as_str());
    assert_eq!(job["status"], "pending");
    assert_eq!(job["dryRun"], false);
    assert_eq!(job["total"], 3);
    assert_eq!(job["processed"], 0);
    let job_id: Uuid = id_of(&job).parse()?;
    let (status, filters, max_retries, total): (String, Value, Option<i32>, i64) = sqlx::query_as(
        "SELECT status, filters, max_retries, total FROM webhook_retry_jobs WHERE id = $1",
    )
    .bind(job_id)
    .fetch_one(&app.pool)
    .await?;
    assert_eq!(
        (status.as_str(), max_retries, total),
        ("pending", Some(2), 3)
    );
    assert_eq!(filters["statuses"], json!(["failed"]));
    assert_eq!(filters["eventType"], Value::Null);
    assert_eq!(filters["until"], Value::Null);
    let stored_since: chrono::DateTime<chrono::Utc> =
        filters["since"].as_str().unwrap_or_default().parse()?;
    assert_eq!(
        stored_since,
        since.parse::<chrono::DateTime<chrono::Utc>>()?
    );

    outbox_drained(&app).await?;
    let js = async_nats::jetstream::new(async_nats::connect(&app.nats_url).await?);
    let stream = js.get_stream(format!("{}_JOBS", app.stream_prefix)).await?;
    let message = stream
        .get_last_raw_message_by_subject(&format!("{}.jobs.webhook_maintenance", app.stream_prefix))
        .await?;
    let queued: Value = serde_json::from_slice(&message.payload)?;
    assert_eq!(
        queued,
        json!({"type": "webhook_retry.v1", "job": {"job_id": job_id}})
    );

    let res = as_user(&app, app.http.post(&url), "alice")
        .header("Idempotency-Key", "retry-1")
        .json(&request)
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await?["id"], job_id.to_string());
    let res = as_user(&app, app.http.post(&url), "alice")
        .header("Idempotency-Key", "retry-1")
        .json(&json!({"statuses": ["retrying"]}))
        .send()
        .await?;
    assert_problem(res, StatusCode::CONFLICT, "conflict").await?;
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_retry_jobs")
        .fetch_one(&app.pool)
        .await?;
    assert_eq!(jobs, 1);

    let job_url = app.api(&format!("/webhooks/{id}/retry-jobs/{job_id}"));
    let got: Value = as_user(&app, app.http.get(&job_url), "alice")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(got["total"], 3);
    let cancelled: Value = as_user(&app, app.http.post(format!("{job_url}/cancel")), "alice")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(cancelled["status"], "cancelled");
    let res = as_user(&app, app.http.post(format!("{job_url}/cancel")), "alice")
        .send()
        .await?;
    assert_problem(res, StatusCode::CONFLICT, "failed_precondition").await?;
    app.cleanup().await;
    Ok(())
}

/// Every change that affects delivery (create, update, rotate, delete) is announced on
/// the core-NATS invalidation subject with the owner's id, so dispatchers drop their
/// cached webhooks of that user; the routes are in the served OpenAPI document.
#[tokio::test]
async fn changes_are_announced_for_dispatcher_caches() -> anyhow::Result<()> {
    use futures::StreamExt;
    let app = gateway().await?;
    let nats = async_nats::connect(&app.nats_url).await?;
    let mut announcements = nats
        .subscribe(format!("{}.invalidate.webhooks", app.stream_prefix))
        .await?;
    nats.flush().await?;
    let id = id_of(&create(&app, "ivy", &hook_body("http://127.0.0.1:9/a")).await?);
    let url = app.api(&format!("/webhooks/{id}"));
    as_user(&app, app.http.patch(&url), "ivy")
        .json(&json!({"active": false}))
        .send()
        .await?;
    as_user(&app, app.http.post(format!("{url}/secret/rotate")), "ivy")
        .send()
        .await?;
    as_user(&app, app.http.delete(&url), "ivy").send().await?;
    for change in ["create", "update", "rotate", "delete"] {
        let message = tokio::time::timeout(Duration::from_secs(5), announcements.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("subscription closed before {change}"))?;
        assert_eq!(&message.payload[..], b"ivy", "{change}");
    }

    let openapi: Value = app
        .http
        .get(format!("{}/api/openapi.json", app.base_url()))
        .send()
        .await?
        .json()
        .await?;
    for (path, method) in [
        ("/webhooks", "post"),
        ("/webhooks", "get"),
        ("/webhooks/{id}", "patch"),
        ("/webhooks/{id}/secret/rotate", "post"),
        ("/webhooks/{id}/deliveries/{deliveryId}/retry", "post"),
        ("/webhooks/{id}/retry-failed", "post"),
        ("/webhooks/{id}/retry-jobs/{jobId}/cancel", "post"),
    ] {
        assert!(
            openapi["paths"][path][method].is_object(),
            "{method} {path}"
        );
    }
    app.cleanup().await;
    Ok(())
}

/// With an empty allowlist the guard refuses loopback (also IPv4-mapped IPv6 and by
/// name), metadata and private addresses with forbidden_address and writes nothing,
/// on create and on update; the test gateway, which allowlists loopback, accepts the
/// same loopback URL; a malformed allowlist stops the gateway at start.
#[tokio::test]
async fn ssrf_guard_refuses_forbidden_addresses_unless_allowlisted() -> anyhow::Result<()> {
    let mut strict = TestApp::spawn_with(
        &[("PORTICO_WEBHOOK_ALLOWLIST", "")],
        &[ServiceKind::Gateway],
    )
    .await?;
    let before = counts(&strict).await?;
    for (url, reason) in [
        ("http://127.0.0.1:9/x", "loopback"),
        ("http://[::ffff:127.0.0.1]/x", "loopback"),
        ("http://localhost/x", "loopback"),
        ("http://169.254.169.254/latest", "metadata"),
        ("http://10.0.0.1/", "private"),
    ] {
        let res = as_user(&strict, strict.http.post(strict.api("/webhooks")), "alice")
            .json(&hook_body(url))
            .send()
            .await?;
        let body = assert_field_error(res, "forbidden_address", "/url").await?;
        assert!(
            body["detail"].as_str().unwrap_or_default().contains(reason),
            "{url}: {body}"
        );
        assert_eq!(counts(&strict).await?, before, "{url}");
    }
    // An update to a forbidden URL is refused too (the webhook is seeded directly,
    // since this gateway would not create it).
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO webhooks (id, user_id, url, events, max_retries, base_delay_ms, max_delay_ms)
         VALUES ($1, 'alice', 'https://example.com/', '{a.b}', 5, 1000, 300000)",
    )
    .bind(id)
    .execute(&strict.pool)
    .await?;
    let res = as_user(
        &strict,
        strict.http.patch(strict.api(&format!("/webhooks/{id}"))),
        "alice",
    )
    .json(&json!({"url": "http://127.0.0.1:9/x"}))
    .send()
    .await?;
    assert_field_error(res, "forbidden_address", "/url").await?;
    let url: String = sqlx::query_scalar("SELECT url FROM webhooks WHERE id = $1")
        .bind(id)
        .fetch_one(&strict.pool)
        .await?;
    assert_eq!(url, "https://example.com/");

    let mut broken = strict.spawn_unready(
        ServiceKind::Gateway,
        &[("PORTICO_WEBHOOK_ALLOWLIST", "10.0.0.0/33")],
    )?;
    let exit = tokio::time::timeout(Duration::from_secs(30), broken.wait()).await??;
    assert!(!exit.success(), "a bad CIDR must stop the gateway");
    strict.cleanup().await;

    let app = gateway().await?;
    let created = create(&app, "alice", &hook_body("http://127.0.0.1:9/x")).await?;
    assert_eq!(created["url"], "http://127.0.0.1:9/x");
    app.cleanup().await;
    Ok(())
}
