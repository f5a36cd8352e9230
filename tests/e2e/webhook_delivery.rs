//! Webhook delivery: events published through the gateway reach the right endpoints,
//! signed per Standard Webhooks, with retries, HTTP etiquette, ordering, operational
//! events, retry-failed jobs and the SSRF guard, all against the real binaries.

use std::time::Duration;

use portico_e2e::sink::{Received, Reply, Sink};
use portico_e2e::{SERVICE_TOKEN, ServiceKind, TestApp, wait_for};
use portico_signing::standard_webhooks::{self, WebhookSecret};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

/// How long a scenario waits for something asynchronous to happen.
const PATIENCE: Duration = Duration::from_secs(30);

/// A webhook as a test wants it.
#[derive(Clone)]
struct Hook {
    url: String,
    events: Vec<&'static str>,
    headers: Value,
    max_retries: u32,
    base_delay_ms: u64,
    max_delay_ms: u64,
    ordering: bool,
}

impl Hook {
    fn new(url: String, events: &[&'static str]) -> Self {
        Self {
            url,
            events: events.to_vec(),
            headers: json!({}),
            max_retries: 5,
            base_delay_ms: 1000,
            max_delay_ms: 300_000,
            ordering: false,
        }
    }

    fn retries(mut self, max: u32, base_ms: u64, max_delay_ms: u64) -> Self {
        self.max_retries = max;
        self.base_delay_ms = base_ms;
        self.max_delay_ms = max_delay_ms;
        self
    }
}

/// A created webhook: its id and signing secret.
struct Created {
    id: Uuid,
    secret: String,
}

/// Creates a webhook for `user` and returns its id and `whsec_` secret.
async fn create_webhook(app: &TestApp, user: &str, hook: &Hook) -> anyhow::Result<Created> {
    let id = Uuid::now_v7();
    let secret = WebhookSecret::generate()?;
    sqlx::query(
        "INSERT INTO webhooks (id, user_id, url, events, headers, max_retries, base_delay_ms, max_delay_ms, ordering_enabled)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(id)
    .bind(user)
    .bind(&hook.url)
    .bind(hook.events.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    .bind(&hook.headers)
    .bind(hook.max_retries as i32)
    .bind(hook.base_delay_ms as i64)
    .bind(hook.max_delay_ms as i64)
    .bind(hook.ordering)
    .execute(&app.pool)
    .await?;
    add_secret(app, id, &secret, None).await?;
    Ok(Created {
        id,
        secret: secret.to_whsec(),
    })
}

async fn add_secret(
    app: &TestApp,
    webhook: Uuid,
    secret: &WebhookSecret,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
) -> anyhow::Result<()> {
    let key = portico_signing::secret_box::SecretsKey::from_base64(portico_e2e::SECRETS_KEY)?;
    sqlx::query(
        "INSERT INTO webhook_secrets (id, webhook_id, ciphertext, expires_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(Uuid::now_v7())
    .bind(webhook)
    .bind(key.seal(secret.as_bytes())?)
    .bind(expires_at)
    .execute(&app.pool)
    .await?;
    Ok(())
}

/// Publishes an event as an internal service acting for `user`; returns its id.
async fn publish(app: &TestApp, user: &str, event: Value) -> anyhow::Result<Uuid> {
    let res = app
        .http
        .post(app.api("/events"))
        .bearer_auth(SERVICE_TOKEN)
        .header("x-portico-user-id", user)
        .json(&event)
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let body: Value = res.json().await?;
    Ok(body["id"].as_str().unwrap_or_default().parse()?)
}

/// Waits until `sink` has received at least `n` requests on `path`.
async fn wait_received(sink: &Sink, path: &str, n: usize) -> anyhow::Result<Vec<Received>> {
    let s = sink.clone();
    let p = path.to_owned();
    wait_for(PATIENCE, move || {
        let s = s.clone();
        let p = p.clone();
        async move { s.received_at(&p).len() >= n }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{path}: {e}; got {}", sink.received_at(path).len()))?;
    Ok(sink.received_at(path))
}

/// One delivery row as the tests look at it.
#[derive(Debug, sqlx::FromRow)]
struct DeliveryRow {
    id: Uuid,
    webhook_id: Uuid,
    status: String,
    attempts: i32,
    next_attempt_at: Option<chrono::DateTime<chrono::Utc>>,
    last_status_code: Option<i32>,
}

async fn deliveries_of(app: &TestApp, webhook: Uuid) -> anyhow::Result<Vec<DeliveryRow>> {
    Ok(sqlx::query_as(
        "SELECT id, webhook_id, status, attempts, next_attempt_at, last_status_code
         FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY created_at, id",
    )
    .bind(webhook)
    .fetch_all(&app.pool)
    .await?)
}

/// Waits until the webhook's deliveries satisfy `check`.
async fn wait_deliveries(
    app: &TestApp,
    webhook: Uuid,
    check: impl Fn(&[DeliveryRow]) -> bool,
) -> anyhow::Result<Vec<DeliveryRow>> {
    let until = tokio::time::Instant::now() + PATIENCE;
    loop {
        let rows = deliveries_of(app, webhook).await?;
        if check(&rows) {
            return Ok(rows);
        }
        if tokio::time::Instant::now() >= until {
            anyhow::bail!("deliveries of {webhook} never matched: {rows:#?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Attempt rows of a delivery, in order.
#[derive(Debug, sqlx::FromRow)]
struct AttemptRow {
    attempt_number: i32,
    request_headers: Value,
    response_status: Option<i32>,
    response_body: Option<String>,
    error_kind: Option<String>,
    error_message: Option<String>,
    started_at: chrono::DateTime<chrono::Utc>,
}

async fn attempts_of(app: &TestApp, delivery: Uuid) -> anyhow::Result<Vec<AttemptRow>> {
    Ok(sqlx::query_as(
        "SELECT attempt_number, request_headers, response_status, response_body, error_kind,
                error_message, started_at
         FROM webhook_delivery_attempts WHERE delivery_id = $1 ORDER BY attempt_number",
    )
    .bind(delivery)
    .fetch_all(&app.pool)
    .await?)
}

fn verify_ours(secret: &str, r: &Received) -> anyhow::Result<()> {
    let key = WebhookSecret::parse(secret)?;
    standard_webhooks::verify(
        &key,
        r.header("webhook-id"),
        r.header("webhook-timestamp"),
        r.header("webhook-signature"),
        &r.body,
        chrono::Utc::now().timestamp(),
        standard_webhooks::DEFAULT_TOLERANCE_SECS,
    )?;
    Ok(())
}

/// An event reaches every active webhook of its owner whose filter matches (exact,
/// `prefix.*`, `*`) exactly once, and no webhook that does not match, is inactive, or
/// belongs to another user.
#[tokio::test]
async fn an_event_reaches_each_matching_webhook_once() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(&[], &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher]).await?;
    let sink = Sink::start().await?;
    let exact = create_webhook(&app, "alice", &Hook::new(sink.url("/exact"), &["order.created"])).await?;
    let prefix = create_webhook(&app, "alice", &Hook::new(sink.url("/prefix"), &["order.*"])).await?;
    let star = create_webhook(&app, "alice", &Hook::new(sink.url("/star"), &["*"])).await?;
    let other = create_webhook(&app, "alice", &Hook::new(sink.url("/other"), &["invoice.paid"])).await?;
    let inactive = create_webhook(&app, "alice", &Hook::new(sink.url("/inactive"), &["*"])).await?;
    sqlx::query("UPDATE webhooks SET active = false WHERE id = $1")
        .bind(inactive.id)
        .execute(&app.pool)
        .await?;
    let bobs = create_webhook(&app, "bob", &Hook::new(sink.url("/bob"), &["*"])).await?;

    let event = publish(&app, "alice", json!({"type": "order.created", "data": {"n": 1}, "idempotencyKey": "k1"})).await?;
    for path in ["/exact", "/prefix", "/star"] {
        let got = wait_received(&sink, path, 1).await?;
        assert_eq!(got[0].header("webhook-id"), event.to_string());
    }
    for hook in [&exact, &prefix, &star] {
        let rows = wait_deliveries(&app, hook.id, |r| r.len() == 1 && r[0].status == "succeeded").await?;
        assert_eq!(rows[0].attempts, 1);
        assert_eq!(rows[0].last_status_code, Some(200));
    }
    // A second event proves the first has been fully handled; nothing else arrived.
    publish(&app, "alice", json!({"type": "order.created", "data": {"n": 2}, "idempotencyKey": "k2"})).await?;
    wait_received(&sink, "/star", 2).await?;
    wait_received(&sink, "/exact", 2).await?;
    wait_received(&sink, "/prefix", 2).await?;
    for path in ["/other", "/inactive", "/bob"] {
        assert!(sink.received_at(path).is_empty(), "{path} must receive nothing");
    }
    for hook in [&other, &inactive, &bobs] {
        assert!(deliveries_of(&app, hook.id).await?.is_empty());
    }
    // Publishing the same idempotency key again delivers nothing new.
    publish(&app, "alice", json!({"type": "order.created", "data": {"n": 1}, "idempotencyKey": "k1"})).await?;
    publish(&app, "alice", json!({"type": "order.created", "data": {"n": 3}, "idempotencyKey": "k3"})).await?;
    wait_received(&sink, "/star", 3).await?;
    assert_eq!(sink.received_at("/star").len(), 3);
    app.cleanup().await;
    Ok(())
}

/// The delivered request is exactly the Standard Webhooks shape: the body is
/// `{"id","type","timestamp","data"}` with `data` byte for byte as published, and the
/// headers carry the event id, the attempt's timestamp, a signature our verifier
/// accepts, the content type, our user agent, and the owner's custom headers.
#[tokio::test]
async fn headers_and_body_are_exact() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(&[], &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher]).await?;
    let sink = Sink::start().await?;
    let mut hook = Hook::new(sink.url("/hook"), &["order.*"]);
    hook.headers = json!({"X-Partner-Token": "abc123", "X-Env": "test"});
    let created = create_webhook(&app, "carol", &hook).await?;
    let raw = r#"{"orderId":"o-17","total":{"amount":1999,"currency":"EUR"},"tags":["a","b"],"note":"caf\u00e9 \"quoted\""}"#;
    let before = chrono::Utc::now().timestamp();
    let res = app
        .http
        .post(app.api("/events"))
        .bearer_auth(SERVICE_TOKEN)
        .header("x-portico-user-id", "carol")
        .header("content-type", "application/json")
        .body(format!(r#"{{"type":"order.created","data":{raw},"idempotencyKey":"exact-1"}}"#))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let event: Uuid = res.json::<Value>().await?["id"].as_str().unwrap_or_default().parse()?;
    let got = wait_received(&sink, "/hook", 1).await?;
    let r = &got[0];
    let body = std::str::from_utf8(&r.body)?;
    let (accepted_at,): (chrono::DateTime<chrono::Utc>,) =
        sqlx::query_as("SELECT accepted_at FROM events WHERE id = $1").bind(event).fetch_one(&app.pool).await?;
    let timestamp = accepted_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    assert_eq!(
        body,
        format!(r#"{{"id":"{event}","type":"order.created","timestamp":"{timestamp}","data":{raw}}}"#)
    );
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(r.header("user-agent"), format!("Portico-Webhooks/{}", env!("CARGO_PKG_VERSION")));
    assert_eq!(r.header("webhook-id"), event.to_string());
    let ts: i64 = r.header("webhook-timestamp").parse()?;
    assert!(ts >= before - 1 && ts <= chrono::Utc::now().timestamp() + 1, "{ts}");
    assert!(r.header("webhook-signature").starts_with("v1,"));
    assert_eq!(r.header("webhook-signature").split(' ').count(), 1);
    assert_eq!(r.header("x-partner-token"), "abc123");
    assert_eq!(r.header("x-env"), "test");
    verify_ours(&created.secret, r)?;
    // Another secret does not verify it.
    let stranger = WebhookSecret::generate()?.to_whsec();
    assert!(verify_ours(&stranger, r).is_err());
    // The attempt records every header that was sent.
    let rows = wait_deliveries(&app, created.id, |r| r.len() == 1 && r[0].status == "succeeded").await?;
    let attempts = attempts_of(&app, rows[0].id).await?;
    assert_eq!(attempts.len(), 1);
    let sent = &attempts[0].request_headers;
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "user-agent", "x-partner-token"] {
        assert_eq!(sent[name], r.header(name), "{name}");
    }
    assert_eq!(attempts[0].response_status, Some(200));
    app.cleanup().await;
    Ok(())
}
