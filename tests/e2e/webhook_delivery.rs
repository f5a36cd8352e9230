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
    rate_limit: Option<u32>,
    max_concurrency: Option<u32>,
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
            rate_limit: None,
            max_concurrency: None,
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

/// Creates a webhook for `user` through the REST API; returns its id and secret.
async fn create_webhook(app: &TestApp, user: &str, hook: &Hook) -> anyhow::Result<Created> {
    let res = app
        .http
        .post(app.api("/webhooks"))
        .bearer_auth(app.user_token(user))
        .json(&json!({
            "url": hook.url,
            "events": hook.events,
            "headers": hook.headers,
            "retryPolicy": {
                "maxRetries": hook.max_retries,
                "baseDelayMs": hook.base_delay_ms,
                "maxDelayMs": hook.max_delay_ms,
            },
            "orderingEnabled": hook.ordering,
            "rateLimitPerSecond": hook.rate_limit,
            "maxConcurrency": hook.max_concurrency,
        }))
        .send()
        .await?;
    let status = res.status();
    let body: Value = res.json().await?;
    anyhow::ensure!(
        status == StatusCode::CREATED,
        "creating a webhook: {status} {body}"
    );
    Ok(Created {
        id: body["id"].as_str().unwrap_or_default().parse()?,
        secret: body["secret"].as_str().unwrap_or_default().to_owned(),
    })
}

/// GET (or another method) on the REST API as `user`, returning the JSON body.
async fn user_call(
    app: &TestApp,
    user: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(StatusCode, Value)> {
    let mut req = app
        .http
        .request(method, app.api(path))
        .bearer_auth(app.user_token(user));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await?;
    let status = res.status();
    let text = res.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
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
    status: String,
    attempts: i32,
    next_attempt_at: Option<chrono::DateTime<chrono::Utc>>,
    last_status_code: Option<i32>,
}

async fn deliveries_of(app: &TestApp, webhook: Uuid) -> anyhow::Result<Vec<DeliveryRow>> {
    Ok(sqlx::query_as(
        "SELECT id, status, attempts, next_attempt_at, last_status_code
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
    request_headers: Value,
    response_status: Option<i32>,
    error_kind: Option<String>,
    error_message: Option<String>,
}

async fn attempts_of(app: &TestApp, delivery: Uuid) -> anyhow::Result<Vec<AttemptRow>> {
    Ok(sqlx::query_as(
        "SELECT request_headers, response_status, error_kind, error_message
         FROM webhook_delivery_attempts WHERE delivery_id = $1 ORDER BY attempt_number",
    )
    .bind(delivery)
    .fetch_all(&app.pool)
    .await?)
}

/// The one attempt of `webhook`'s one delivery, once that delivery failed, checked to
/// have been refused as `kind` without any response (the SSRF guard, TLS).
async fn refused_attempt(app: &TestApp, webhook: Uuid, kind: &str) -> anyhow::Result<AttemptRow> {
    let rows = wait_deliveries(app, webhook, |r| r.len() == 1 && r[0].status == "failed").await?;
    let mut attempts = attempts_of(app, rows[0].id).await?;
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        attempts[0].error_kind.as_deref(),
        Some(kind),
        "{attempts:?}"
    );
    assert_eq!(attempts[0].response_status, None);
    Ok(attempts.remove(0))
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
    let app =
        TestApp::spawn_with(&[], &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher]).await?;
    let sink = Sink::start().await?;
    let exact = create_webhook(
        &app,
        "alice",
        &Hook::new(sink.url("/exact"), &["order.created"]),
    )
    .await?;
    let prefix =
        create_webhook(&app, "alice", &Hook::new(sink.url("/prefix"), &["order.*"])).await?;
    let star = create_webhook(&app, "alice", &Hook::new(sink.url("/star"), &["*"])).await?;
    let other = create_webhook(
        &app,
        "alice",
        &Hook::new(sink.url("/other"), &["invoice.paid"]),
    )
    .await?;
    let inactive = create_webhook(&app, "alice", &Hook::new(sink.url("/inactive"), &["*"])).await?;
    let (status, _) = user_call(
        &app,
        "alice",
        reqwest::Method::PATCH,
        &format!("/webhooks/{}", inactive.id),
        Some(json!({"active": false})),
    )
    .await?;
    assert_eq!(status, StatusCode::OK);
    let bobs = create_webhook(&app, "bob", &Hook::new(sink.url("/bob"), &["*"])).await?;

    let event = publish(
        &app,
        "alice",
        json!({"type": "order.created", "data": {"n": 1}, "idempotencyKey": "k1"}),
    )
    .await?;
    for path in ["/exact", "/prefix", "/star"] {
        let got = wait_received(&sink, path, 1).await?;
        assert_eq!(got[0].header("webhook-id"), event.to_string());
    }
    for hook in [&exact, &prefix, &star] {
        let rows = wait_deliveries(&app, hook.id, |r| {
            r.len() == 1 && r[0].status == "succeeded"
        })
        .await?;
        assert_eq!(rows[0].attempts, 1);
        assert_eq!(rows[0].last_status_code, Some(200));
    }
    // A second event proves the first has been fully handled; nothing else arrived.
    publish(
        &app,
        "alice",
        json!({"type": "order.created", "data": {"n": 2}, "idempotencyKey": "k2"}),
    )
    .await?;
    wait_received(&sink, "/star", 2).await?;
    wait_received(&sink, "/exact", 2).await?;
    wait_received(&sink, "/prefix", 2).await?;
    for path in ["/other", "/inactive", "/bob"] {
        assert!(
            sink.received_at(path).is_empty(),
            "{path} must receive nothing"
        );
    }
    for hook in [&other, &inactive, &bobs] {
        assert!(deliveries_of(&app, hook.id).await?.is_empty());
    }
    // Publishing the same idempotency key again delivers nothing new.
    publish(
        &app,
        "alice",
        json!({"type": "order.created", "data": {"n": 1}, "idempotencyKey": "k1"}),
    )
    .await?;
    publish(
        &app,
        "alice",
        json!({"type": "order.created", "data": {"n": 3}, "idempotencyKey": "k3"}),
    )
    .await?;
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
    let app =
        TestApp::spawn_with(&[], &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher]).await?;
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
        .body(format!(
            r#"{{"type":"order.created","data":{raw},"idempotencyKey":"exact-1"}}"#
        ))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let event: Uuid = res.json::<Value>().await?["id"]
        .as_str()
        .unwrap_or_default()
        .parse()?;
    let got = wait_received(&sink, "/hook", 1).await?;
    let r = &got[0];
    let body = std::str::from_utf8(&r.body)?;
    let (accepted_at,): (chrono::DateTime<chrono::Utc>,) =
        sqlx::query_as("SELECT accepted_at FROM events WHERE id = $1")
            .bind(event)
            .fetch_one(&app.pool)
            .await?;
    let timestamp = accepted_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    assert_eq!(
        body,
        format!(
            r#"{{"id":"{event}","type":"order.created","timestamp":"{timestamp}","data":{raw}}}"#
        )
    );
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(
        r.header("user-agent"),
        format!("Portico-Webhooks/{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(r.header("webhook-id"), event.to_string());
    let ts: i64 = r.header("webhook-timestamp").parse()?;
    assert!(
        ts >= before - 1 && ts <= chrono::Utc::now().timestamp() + 1,
        "{ts}"
    );
    assert!(r.header("webhook-signature").starts_with("v1,"));
    assert_eq!(r.header("webhook-signature").split(' ').count(), 1);
    assert_eq!(r.header("x-partner-token"), "abc123");
    assert_eq!(r.header("x-env"), "test");
    verify_ours(&created.secret, r)?;
    // Another secret does not verify it.
    let stranger = WebhookSecret::generate()?.to_whsec();
    assert!(verify_ours(&stranger, r).is_err());
    // The attempt records every header that was sent; a custom header's value (often
    // the receiver's own key) is recorded as *** (redacted from attempt history).
    let rows = wait_deliveries(&app, created.id, |r| {
        r.len() == 1 && r[0].status == "succeeded"
    })
    .await?;
    let attempts = attempts_of(&app, rows[0].id).await?;
    assert_eq!(attempts.len(), 1);
    let sent = &attempts[0].request_headers;
    for name in [
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "content-type",
        "user-agent",
    ] {
        assert_eq!(sent[name], r.header(name), "{name}");
    }
    assert_eq!(r.header("x-partner-token"), "abc123");
    assert_eq!(sent["x-partner-token"], "***");
    assert_eq!(attempts[0].response_status, Some(200));
    app.cleanup().await;
    Ok(())
}

// ---------------------------------------------------------------------------------
// Independent verifiers: the Standard Webhooks libraries for Python and Node, and the
// examples of docs/webhook-verification.md, run against real deliveries.

// Nested `if`s keep the partner-facing example valid on the 2021 edition.
#[allow(clippy::collapsible_if)]
#[path = "webhook_verification_example.rs"]
mod doc_rust_example;

/// Pinned versions of the independent verifiers.
const PY_STANDARDWEBHOOKS: &str = "1.1.0";
const NPM_STANDARDWEBHOOKS: &str = "1.1.1";

/// One installer at a time inside this test binary.
static INSTALL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn cache_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/tmp".into()))
        .join(".cache/portico")
}

async fn run_ok(cmd: &mut tokio::process::Command, what: &str) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .await
        .map_err(|e| anyhow::anyhow!("{what}: cannot run: {e}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The venv's python with `standardwebhooks` installed (installed on first use).
async fn python_with_standardwebhooks() -> anyhow::Result<std::path::PathBuf> {
    let _guard = INSTALL.lock().await;
    let venv = cache_dir().join("venv-webhooks");
    let python = venv.join("bin/python");
    let probe = format!(
        "import importlib.metadata as m; assert m.version('standardwebhooks') == '{PY_STANDARDWEBHOOKS}'"
    );
    if run_ok(
        tokio::process::Command::new(&python).args(["-c", &probe]),
        "probe",
    )
    .await
    .is_ok()
    {
        return Ok(python);
    }
    std::fs::create_dir_all(cache_dir())?;
    run_ok(
        tokio::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv),
        "creating the Python venv for standardwebhooks (python3 -m venv)",
    )
    .await?;
    run_ok(
        tokio::process::Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            &format!("standardwebhooks=={PY_STANDARDWEBHOOKS}"),
        ]),
        "installing the Python package standardwebhooks with pip",
    )
    .await?;
    Ok(python)
}

/// The `node_modules` holding `standardwebhooks` (installed on first use).
async fn node_modules_with_standardwebhooks() -> anyhow::Result<std::path::PathBuf> {
    let _guard = INSTALL.lock().await;
    let prefix = cache_dir().join("node-webhooks");
    let package = prefix.join("node_modules/standardwebhooks/package.json");
    let installed = std::fs::read_to_string(&package)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .is_some_and(|v| v["version"] == NPM_STANDARDWEBHOOKS);
    if !installed {
        std::fs::create_dir_all(&prefix)?;
        run_ok(
            tokio::process::Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--prefix"])
                .arg(&prefix)
                .arg(format!("standardwebhooks@{NPM_STANDARDWEBHOOKS}")),
            "installing the npm package standardwebhooks",
        )
        .await?;
    }
    Ok(prefix.join("node_modules"))
}

/// Runs a script with `input` (JSON) on stdin; returns stdout.
async fn run_script(
    program: &std::path::Path,
    source: &str,
    extension: &str,
    env: &[(&str, &std::path::Path)],
    input: &Value,
) -> anyhow::Result<String> {
    use tokio::io::AsyncWriteExt;
    let path = std::env::temp_dir().join(format!("portico-verify-{}.{extension}", Uuid::new_v4()));
    std::fs::write(&path, source)?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.arg(&path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.to_string().as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    let _ = std::fs::remove_file(&path);
    anyhow::ensure!(
        out.status.success(),
        "{} failed:\n{}\n{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The captured delivery as the scripts read it.
fn capture(secret: &str, r: &Received) -> Value {
    use base64::Engine;
    json!({
        "secret": secret,
        "headers": {
            "webhook-id": r.header("webhook-id"),
            "webhook-timestamp": r.header("webhook-timestamp"),
            "webhook-signature": r.header("webhook-signature"),
            "content-type": r.header("content-type"),
        },
        "body": base64::engine::general_purpose::STANDARD.encode(&r.body),
    })
}

/// Python: verifies with the `standardwebhooks` package; a tampered body must fail.
const PY_LIBRARY_CHECK: &str = r#"
import base64, json, sys
from standardwebhooks.webhooks import Webhook
case = json.load(sys.stdin)
body = base64.b64decode(case["body"])
event = Webhook(case["secret"]).verify(body, case["headers"])
try:
    Webhook(case["secret"]).verify(body + b" ", case["headers"])
    raise SystemExit("a tampered body verified")
except SystemExit:
    raise
except Exception:
    pass
print(event["id"])
"#;

/// Node: verifies with the `standardwebhooks` package; a tampered body must fail.
const NODE_LIBRARY_CHECK: &str = r#"
const { Webhook } = require("standardwebhooks");
const chunks = [];
process.stdin.on("data", (c) => chunks.push(c));
process.stdin.on("end", () => {
  const c = JSON.parse(Buffer.concat(chunks).toString());
  const body = Buffer.from(c.body, "base64").toString("utf8");
  const event = new Webhook(c.secret).verify(body, c.headers);
  let tampered = false;
  try { new Webhook(c.secret).verify(body + " ", c.headers); tampered = true; } catch (e) {}
  if (tampered) { console.error("a tampered body verified"); process.exit(1); }
  console.log(event.id);
});
"#;

async fn verify_with_libraries(secret: &str, r: &Received) -> anyhow::Result<()> {
    let input = capture(secret, r);
    let python = python_with_standardwebhooks().await?;
    let out = run_script(&python, PY_LIBRARY_CHECK, "py", &[], &input).await?;
    assert_eq!(
        out.trim(),
        r.header("webhook-id"),
        "python standardwebhooks"
    );
    let modules = node_modules_with_standardwebhooks().await?;
    let out = run_script(
        std::path::Path::new("node"),
        NODE_LIBRARY_CHECK,
        "js",
        &[("NODE_PATH", modules.as_path())],
        &input,
    )
    .await?;
    assert_eq!(out.trim(), r.header("webhook-id"), "node standardwebhooks");
    Ok(())
}

/// During a secret rotation every delivery carries two signatures (new first), and a
/// receiver holding either secret verifies it, with our verifier and with the
/// independent Standard Webhooks libraries for Python and Node; a stranger's secret
/// does not. Before the rotation there is one signature, also verified by all three.
#[tokio::test]
async fn signatures_verify_with_independent_libraries_through_a_rotation() -> anyhow::Result<()> {
    let app =
        TestApp::spawn_with(&[], &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher]).await?;
    let sink = Sink::start().await?;
    let hook = create_webhook(&app, "dave", &Hook::new(sink.url("/hook"), &["*"])).await?;
    publish(
        &app,
        "dave",
        json!({"type": "order.created", "data": {"before": true}}),
    )
    .await?;
    let first = wait_received(&sink, "/hook", 1).await?.remove(0);
    assert_eq!(first.header("webhook-signature").split(' ').count(), 1);
    verify_ours(&hook.secret, &first)?;
    verify_with_libraries(&hook.secret, &first).await?;

    let (status, rotated) = user_call(
        &app,
        "dave",
        reqwest::Method::POST,
        &format!("/webhooks/{}/secret/rotate", hook.id),
        Some(json!({"gracePeriodSeconds": 3600})),
    )
    .await?;
    assert!(status.is_success(), "{status} {rotated}");
    let new_secret = rotated["secret"].as_str().unwrap_or_default().to_owned();
    assert!(new_secret.starts_with("whsec_") && new_secret != hook.secret);
    publish(
        &app,
        "dave",
        json!({"type": "order.created", "data": {"after": true}}),
    )
    .await?;
    let second = wait_received(&sink, "/hook", 2).await?.remove(1);
    let entries: Vec<&str> = second.header("webhook-signature").split(' ').collect();
    assert_eq!(entries.len(), 2, "{entries:?}");
    let new_key = WebhookSecret::parse(&new_secret)?;
    let ts: i64 = second.header("webhook-timestamp").parse()?;
    assert_eq!(
        entries[0],
        new_key.sign(second.header("webhook-id"), ts, &second.body),
        "newest first"
    );
    for secret in [&hook.secret, &new_secret] {
        verify_ours(secret, &second)?;
        verify_with_libraries(secret, &second).await?;
    }
    assert!(verify_ours(&WebhookSecret::generate()?.to_whsec(), &second).is_err());
    app.cleanup().await;
    Ok(())
}

/// The fenced code block of `language` in docs/webhook-verification.md.
fn doc_block(language: &str) -> anyhow::Result<String> {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/webhook-verification.md"
    ))?;
    let fence = format!("```{language}\n");
    let start = doc
        .find(&fence)
        .ok_or_else(|| anyhow::anyhow!("no {language} block in the verification doc"))?
        + fence.len();
    let end = doc[start..]
        .find("\n```")
        .ok_or_else(|| anyhow::anyhow!("unterminated {language} block"))?;
    Ok(doc[start..start + end + 1].to_owned())
}

/// The Rust, Python and Node examples of docs/webhook-verification.md verify a real
/// captured delivery and refuse a tampered one. The Rust example is compiled into
/// this test from a file that must equal the doc's block; the Python and Node blocks
/// are read out of the doc and run as they are.
#[tokio::test]
async fn documentation_examples_verify_a_real_delivery() -> anyhow::Result<()> {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/e2e/webhook_verification_example.rs"
    ))?;
    assert_eq!(
        doc_block("rust")?,
        example,
        "the doc's Rust example must equal the tested file"
    );

    let app =
        TestApp::spawn_with(&[], &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher]).await?;
    let sink = Sink::start().await?;
    let hook = create_webhook(&app, "erin", &Hook::new(sink.url("/hook"), &["invoice.*"])).await?;
    publish(
        &app,
        "erin",
        json!({"type": "invoice.paid", "data": {"invoiceId": "i-9", "amount": 12.5}}),
    )
    .await?;
    let r = wait_received(&sink, "/hook", 1).await?.remove(0);

    let verified = doc_rust_example::verify_webhook(
        &hook.secret,
        r.header("webhook-id"),
        r.header("webhook-timestamp"),
        r.header("webhook-signature"),
        &r.body,
    );
    assert_eq!(verified, Ok(&r.body[..]));
    let mut tampered = r.body.to_vec();
    tampered.push(b' ');
    assert!(
        doc_rust_example::verify_webhook(
            &hook.secret,
            r.header("webhook-id"),
            r.header("webhook-timestamp"),
            r.header("webhook-signature"),
            &tampered
        )
        .is_err()
    );

    let input = capture(&hook.secret, &r);
    let python = python_with_standardwebhooks().await?;
    let py = format!(
        "{}\n\nimport base64, json, sys\ncase = json.load(sys.stdin)\nbody = base64.b64decode(case['body'])\nevent = verify_webhook(case['secret'], case['headers'], body)\ntry:\n    verify_webhook(case['secret'], case['headers'], body + b' ')\n    raise SystemExit('a tampered body verified')\nexcept WebhookVerificationError:\n    pass\nprint(event['id'])\n",
        doc_block("python")?
    );
    assert_eq!(
        run_script(&python, &py, "py", &[], &input).await?.trim(),
        r.header("webhook-id")
    );

    let modules = node_modules_with_standardwebhooks().await?;
    let js = format!(
        "{}\nconst chunks = [];\nprocess.stdin.on('data', (c) => chunks.push(c));\nprocess.stdin.on('end', () => {{\n  const c = JSON.parse(Buffer.concat(chunks).toString());\n  const body = Buffer.from(c.body, 'base64').toString('utf8');\n  const event = verifyWebhook(c.secret, c.headers, body);\n  let tampered = false;\n  try {{ verifyWebhook(c.secret, c.headers, body + ' '); tampered = true; }} catch (e) {{}}\n  if (tampered) {{ process.exit(1); }}\n  console.log(event.id);\n}});\n",
        doc_block("javascript")?
    );
    let out = run_script(
        std::path::Path::new("node"),
        &js,
        "js",
        &[("NODE_PATH", modules.as_path())],
        &input,
    )
    .await?;
    assert_eq!(out.trim(), r.header("webhook-id"));
    app.cleanup().await;
    Ok(())
}

// ---------------------------------------------------------------------------------
// Retries and HTTP etiquette.

/// The deliveries API's view of one delivery (with its attempts).
async fn api_delivery(
    app: &TestApp,
    user: &str,
    webhook: Uuid,
    delivery: Uuid,
) -> anyhow::Result<Value> {
    let (status, body) = user_call(
        app,
        user,
        reqwest::Method::GET,
        &format!("/webhooks/{webhook}/deliveries/{delivery}"),
        None,
    )
    .await?;
    anyhow::ensure!(status == StatusCode::OK, "{status} {body}");
    Ok(body)
}

/// A failing endpoint is retried on the exponential schedule (each gap at least
/// `baseDelay * 2^(n-1)`), the next attempt time is visible through the deliveries API
/// while it waits, every attempt carries the same `webhook-id` (and body) with a fresh
/// signature, every attempt is recorded, and after `1 + maxRetries` attempts the
/// delivery is failed and nothing more is sent.
#[tokio::test]
async fn retries_back_off_exponentially_until_exhausted() -> anyhow::Result<()> {
    let app =
        TestApp::spawn_with(&[], &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher]).await?;
    let sink = Sink::start().await?;
    sink.set_default(Reply::status(500));
    let hook = create_webhook(
        &app,
        "frank",
        &Hook::new(sink.url("/hook"), &["*"]).retries(3, 300, 10_000),
    )
    .await?;
    let event = publish(
        &app,
        "frank",
        json!({"type": "order.created", "data": {"x": 1}}),
    )
    .await?;
    let rows = wait_deliveries(&app, hook.id, |r| r.len() == 1).await?;
    let delivery = rows[0].id;
    // While waiting between attempts the API shows `retrying` and when the next one is due.
    let until = tokio::time::Instant::now() + PATIENCE;
    loop {
        let d = api_delivery(&app, "frank", hook.id, delivery).await?;
        if d["status"] == "retrying" {
            assert!(d["nextAttemptAt"].is_string(), "{d}");
            assert_eq!(d["lastStatusCode"], 500);
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < until,
            "never saw retrying: {d}"
        );
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let rows = wait_deliveries(&app, hook.id, |r| r[0].status == "failed").await?;
    assert_eq!(rows[0].attempts, 4);
    assert_eq!(rows[0].next_attempt_at, None);
    assert_eq!(rows[0].last_status_code, Some(500));
    let got = sink.received_at("/hook");
    assert_eq!(got.len(), 4);
    for (i, pair) in got.windows(2).enumerate() {
        let gap = pair[1].at.duration_since(pair[0].at);
        let policy = Duration::from_millis(300 << i);
        assert!(gap >= policy, "gap {i} was {gap:?}, policy {policy:?}");
    }
    for r in &got {
        assert_eq!(r.header("webhook-id"), event.to_string());
        assert_eq!(r.body, got[0].body);
        verify_ours(&hook.secret, r)?;
    }
    let d = api_delivery(&app, "frank", hook.id, delivery).await?;
    let attempts = d["attempts"].as_array().cloned().unwrap_or_default();
    assert_eq!(attempts.len(), 4, "{d}");
    for (i, a) in attempts.iter().enumerate() {
        assert_eq!(a["attemptNumber"], i as u64 + 1);
        assert_eq!(a["responseStatus"], 500);
        assert_eq!(a["errorKind"], "http_status");
        assert_eq!(a["requestHeaders"]["webhook-id"], event.to_string());
    }
    // Nothing more is attempted after exhaustion.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(sink.received_at("/hook").len(), 4);
    app.cleanup().await;
    Ok(())
}

/// `Retry-After` on 429 and 503 is honoured (in seconds; a value beyond the webhook's
/// `maxDelay` is clamped to it), instead of the much shorter exponential schedule.
#[tokio::test]
async fn retry_after_is_honoured_within_bounds() -> anyhow::Result<()> {
    let app =
        TestApp::spawn_with(&[], &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher]).await?;
    let sink = Sink::start().await?;
    sink.script([
        Reply::status(429).header("retry-after", "2"),
        Reply::status(503).header("retry-after", "3600"),
    ]);
    let hook = create_webhook(
        &app,
        "gina",
        &Hook::new(sink.url("/hook"), &["*"]).retries(5, 200, 2500),
    )
    .await?;
    publish(&app, "gina", json!({"type": "a.b", "data": {}})).await?;
    let got = wait_received(&sink, "/hook", 3).await?;
    let gap1 = got[1].at.duration_since(got[0].at);
    let gap2 = got[2].at.duration_since(got[1].at);
    assert!(
        gap1 >= Duration::from_secs(2),
        "429 Retry-After: 2 gave {gap1:?}"
    );
    assert!(
        gap2 >= Duration::from_millis(2500) && gap2 < Duration::from_secs(4),
        "clamped to maxDelay, got {gap2:?}"
    );
    let rows = wait_deliveries(&app, hook.id, |r| {
        r.len() == 1 && r[0].status == "succeeded"
    })
    .await?;
    assert_eq!(rows[0].attempts, 3);
    let attempts = attempts_of(&app, rows[0].id).await?;
    let statuses: Vec<Option<i32>> = attempts.iter().map(|a| a.response_status).collect();
    assert_eq!(statuses, [Some(429), Some(503), Some(200)]);
    app.cleanup().await;
    Ok(())
}

/// With `PORTICO_RETRY_JITTER=0.5` the dispatcher schedules each failed delivery's
/// next attempt within `[0.5·d, d]` after its attempt (`d` = the schedule's delay, here
/// the 60 s base delay), the draws differ between deliveries (no synchronised retry
/// storm), and a jitter outside `0.0..=1.0` stops the dispatcher at start.
#[tokio::test]
async fn retry_jitter_spreads_next_attempts_within_the_window() -> anyhow::Result<()> {
    let mut app = TestApp::spawn_with(
        &[("PORTICO_RETRY_JITTER", "0.5")],
        &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher],
    )
    .await?;
    let sink = Sink::start().await?;
    sink.set_default(Reply::status(500));
    let hook = create_webhook(
        &app,
        "jules",
        &Hook::new(sink.url("/hook"), &["*"]).retries(1, 60_000, 60_000),
    )
    .await?;
    let events = (0..8)
        .map(|i| json!({"type": "a.b", "data": {"i": i}}))
        .collect();
    publish_many(&app, "jules", events).await?;
    wait_deliveries(&app, hook.id, |r| {
        r.len() == 8 && r.iter().all(|d| d.status == "retrying")
    })
    .await?;
    // The next attempt time against the first attempt's start: the attempt's latency
    // (a local 500, milliseconds) plus the drawn delay.
    let offsets: Vec<i64> = sqlx::query_scalar(
        "SELECT (EXTRACT(EPOCH FROM d.next_attempt_at - a.started_at) * 1000)::bigint
         FROM webhook_deliveries d
         JOIN webhook_delivery_attempts a ON a.delivery_id = d.id AND a.attempt_number = 1
         WHERE d.webhook_id = $1",
    )
    .bind(hook.id)
    .fetch_all(&app.pool)
    .await?;
    assert_eq!(offsets.len(), 8, "{offsets:?}");
    for ms in &offsets {
        assert!(
            (29_999..=65_000).contains(ms),
            "next attempt {ms} ms after the first, outside [30 s, 60 s + latency]"
        );
    }
    let spread = offsets.iter().max().unwrap_or(&0) - offsets.iter().min().unwrap_or(&0);
    // Eight uniform draws over 30 s all within one second of each other: never.
    assert!(spread > 1_000, "no jitter visible: {offsets:?}");

    let mut broken = app.spawn_unready(
        ServiceKind::WebhookDispatcher,
        &[("PORTICO_RETRY_JITTER", "1.5")],
    )?;
    let exit = tokio::time::timeout(Duration::from_secs(30), broken.wait()).await??;
    assert!(!exit.success(), "a jitter of 1.5 must stop the dispatcher");
    app.cleanup().await;
    Ok(())
}

/// `410 Gone` fails the delivery at once and disables the endpoint (its owner sees
/// `active: false` and `disabledReason: gone`); later events are not sent to it.
#[tokio::test]
async fn gone_disables_the_endpoint() -> anyhow::Result<()> {
    let app =
        TestApp::spawn_with(&[], &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher]).await?;
    let sink = Sink::start().await?;
    sink.set_default(Reply::status(410));
    let other = Sink::start().await?;
    let gone = create_webhook(&app, "hank", &Hook::new(sink.url("/gone"), &["*"])).await?;
    let alive = create_webhook(&app, "hank", &Hook::new(other.url("/alive"), &["*"])).await?;
    publish(&app, "hank", json!({"type": "a.b", "data": {"n": 1}})).await?;
    let rows = wait_deliveries(&app, gone.id, |r| r.len() == 1 && r[0].status == "failed").await?;
    assert_eq!(rows[0].attempts, 1);
    assert_eq!(rows[0].last_status_code, Some(410));
    let (_, webhook) = user_call(
        &app,
        "hank",
        reqwest::Method::GET,
        &format!("/webhooks/{}", gone.id),
        None,
    )
    .await?;
    assert_eq!(webhook["active"], false, "{webhook}");
    assert_eq!(webhook["disabledReason"], "gone");
    wait_received(&other, "/alive", 1).await?;
    publish(&app, "hank", json!({"type": "a.b", "data": {"n": 2}})).await?;
    wait_received(&other, "/alive", 2).await?;
    wait_deliveries(&app, alive.id, |r| {
        r.len() == 2 && r.iter().all(|d| d.status == "succeeded")
    })
    .await?;
    assert_eq!(sink.received_at("/gone").len(), 1);
    assert_eq!(deliveries_of(&app, gone.id).await?.len(), 1);
    app.cleanup().await;
    Ok(())
}

/// A 302 is a failed attempt (recorded as `redirect`), the redirect target is never
/// requested, and the delivery is retried at the registered URL.
#[tokio::test]
async fn redirects_are_failures_and_never_followed() -> anyhow::Result<()> {
    let app =
        TestApp::spawn_with(&[], &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher]).await?;
    let sink = Sink::start().await?;
    sink.script([Reply::status(302).header("location", &sink.url("/target"))]);
    let hook = create_webhook(
        &app,
        "ivy",
        &Hook::new(sink.url("/hook"), &["*"]).retries(2, 200, 1000),
    )
    .await?;
    publish(&app, "ivy", json!({"type": "a.b", "data": {}})).await?;
    let rows = wait_deliveries(&app, hook.id, |r| {
        r.len() == 1 && r[0].status == "succeeded"
    })
    .await?;
    let attempts = attempts_of(&app, rows[0].id).await?;
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].response_status, Some(302));
    assert_eq!(attempts[0].error_kind.as_deref(), Some("redirect"));
    assert!(
        attempts[0]
            .error_message
            .as_deref()
            .unwrap_or("")
            .contains("/target")
    );
    assert_eq!(attempts[1].error_kind, None);
    assert_eq!(sink.received_at("/hook").len(), 2);
    assert!(
        sink.received_at("/target").is_empty(),
        "the redirect was followed"
    );
    app.cleanup().await;
    Ok(())
}

/// An endpoint slower than `PORTICO_DELIVERY_TIMEOUT_MS` fails the attempt as a
/// timeout (no status, latency about the timeout), and the retry succeeds.
#[tokio::test]
async fn slow_endpoints_time_out() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(
        &[("PORTICO_DELIVERY_TIMEOUT_MS", "500")],
        &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher],
    )
    .await?;
    let sink = Sink::start().await?;
    sink.script([Reply::status(200).delayed(Duration::from_secs(3))]);
    let hook = create_webhook(
        &app,
        "jack",
        &Hook::new(sink.url("/hook"), &["*"]).retries(2, 200, 1000),
    )
    .await?;
    publish(&app, "jack", json!({"type": "a.b", "data": {}})).await?;
    let rows = wait_deliveries(&app, hook.id, |r| {
        r.len() == 1 && r[0].status == "succeeded"
    })
    .await?;
    let d = api_delivery(&app, "jack", hook.id, rows[0].id).await?;
    let first = &d["attempts"][0];
    assert_eq!(first["errorKind"], "timeout", "{d}");
    assert!(first["responseStatus"].is_null());
    let latency = first["latencyMs"].as_u64().unwrap_or(0);
    assert!((450..2500).contains(&latency), "latency {latency}");
    assert_eq!(d["attempts"][1]["responseStatus"], 200);
    app.cleanup().await;
    Ok(())
}

/// The SSRF guard holds at connect time: with an empty allowlist in the dispatcher
/// (while the gateway allowed loopback at create time), a delivery to a loopback IP
/// literal and one to `localhost` (resolved by the guarded resolver) are both recorded
/// as `blocked`, and the loopback endpoint receives nothing.
#[tokio::test]
async fn forbidden_addresses_are_blocked_at_connect_time() -> anyhow::Result<()> {
    let mut app = TestApp::spawn_with(&[], &[ServiceKind::Gateway]).await?;
    app.start_with(
        ServiceKind::WebhookDispatcher,
        &[("PORTICO_WEBHOOK_ALLOWLIST", "")],
    )
    .await?;
    let sink = Sink::start().await?;
    let literal = create_webhook(
        &app,
        "kim",
        &Hook::new(sink.url("/literal"), &["*"]).retries(0, 200, 1000),
    )
    .await?;
    let named_url = format!("http://localhost:{}/named", sink.addr.port());
    let named = create_webhook(
        &app,
        "kim",
        &Hook::new(named_url, &["*"]).retries(0, 200, 1000),
    )
    .await?;
    publish(&app, "kim", json!({"type": "a.b", "data": {}})).await?;
    for hook in [&literal, &named] {
        refused_attempt(&app, hook.id, "blocked").await?;
    }
    assert_eq!(sink.count(), 0, "a forbidden address was contacted");
    app.cleanup().await;
    Ok(())
}

/// An `https` endpoint whose certificate no trust store holds (a self-signed one,
/// tests/fixtures/tls) fails its attempt as `tls`, naming the certificate, and the
/// server never receives a request: the dispatcher speaks TLS to `https` URLs and
/// verifies the certificate before sending anything.
#[tokio::test]
async fn untrusted_certificates_fail_as_tls_and_nothing_is_sent() -> anyhow::Result<()> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::AsyncReadExt;

    let certs = vec![CertificateDer::from_pem_slice(include_bytes!(
        "../fixtures/tls/untrusted-cert.pem"
    ))?];
    let key = PrivateKeyDer::from_pem_slice(include_bytes!("../fixtures/tls/untrusted-key.pem"))?;
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = requests.clone();
    let server = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let mut buf = [0u8; 1024];
                    if matches!(tls.read(&mut buf).await, Ok(n) if n > 0) {
                        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            });
        }
    });

    let app =
        TestApp::spawn_with(&[], &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher]).await?;
    let hook = create_webhook(
        &app,
        "tess",
        &Hook::new(format!("https://127.0.0.1:{port}/hook"), &["*"]).retries(0, 200, 1000),
    )
    .await?;
    publish(&app, "tess", json!({"type": "a.b", "data": {}})).await?;
    let attempt = refused_attempt(&app, hook.id, "tls").await?;
    assert!(
        attempt
            .error_message
            .as_deref()
            .is_some_and(|m| m.contains("certificate")),
        "{attempt:?}"
    );
    assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 0);
    server.abort();
    app.cleanup().await;
    Ok(())
}

// ---------------------------------------------------------------------------------
// Crash safety, retry-failed jobs, ordering, operational events, limits.

/// Publishes many events in batches of up to 1,000 through `POST /api/events/batch`.
async fn publish_many(app: &TestApp, user: &str, events: Vec<Value>) -> anyhow::Result<Vec<Uuid>> {
    let mut ids = Vec::new();
    for chunk in events.chunks(1000) {
        let res = app
            .http
            .post(app.api("/events/batch"))
            .bearer_auth(SERVICE_TOKEN)
            .header("x-portico-user-id", user)
            .json(&json!({"events": chunk}))
            .send()
            .await?;
        anyhow::ensure!(res.status().is_success(), "batch publish: {}", res.status());
        let body: Value = res.json().await?;
        for e in body["data"].as_array().cloned().unwrap_or_default() {
            ids.push(e["id"].as_str().unwrap_or_default().parse()?);
        }
    }
    Ok(ids)
}

async fn count(app: &TestApp, sql: &str, webhook: Uuid) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(webhook)
        .fetch_one(&app.pool)
        .await
        .unwrap_or(-1)
}

/// A dispatcher killed (SIGKILL) while a chunk of deliveries is in flight loses
/// nothing and duplicates nothing: after a restart every event has exactly one
/// delivery row, all succeeded, and the endpoint saw every event at least once (a
/// redelivered event may reach it again, with the same `webhook-id`).
#[tokio::test]
async fn a_killed_dispatcher_leaves_no_duplicate_deliveries() -> anyhow::Result<()> {
    let mut app = TestApp::spawn_with(
        &[
            ("PORTICO_DELIVERY_TIMEOUT_MS", "2000"),
            ("PORTICO_ACK_WAIT_SECS", "3"),
        ],
        &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher],
    )
    .await?;
    let sink = Sink::start().await?;
    sink.set_default(Reply::status(200).delayed(Duration::from_millis(400)));
    let hook = create_webhook(&app, "liam", &Hook::new(sink.url("/hook"), &["*"])).await?;
    let first: Vec<Value> = (0..200)
        .map(|i| json!({"type": "a.b", "data": {"i": i}}))
        .collect();
    let mut ids = publish_many(&app, "liam", first).await?;
    wait_received(&sink, "/hook", 20).await?;
    app.take(ServiceKind::WebhookDispatcher).kill().await?;
    let second: Vec<Value> = (200..400)
        .map(|i| json!({"type": "a.b", "data": {"i": i}}))
        .collect();
    ids.extend(publish_many(&app, "liam", second).await?);
    sink.set_default(Reply::status(200));
    app.start(ServiceKind::WebhookDispatcher).await?;
    let total = ids.len() as i64;
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    while count(
        &app,
        "SELECT count(*) FROM webhook_deliveries WHERE webhook_id = $1 AND status = 'succeeded'",
        hook.id,
    )
    .await
        < total
    {
        anyhow::ensure!(
            tokio::time::Instant::now() < until,
            "not all deliveries succeeded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM webhook_deliveries WHERE webhook_id = $1",
            hook.id
        )
        .await,
        total
    );
    assert_eq!(
        count(
            &app,
            "SELECT count(DISTINCT event_id) FROM webhook_deliveries WHERE webhook_id = $1",
            hook.id
        )
        .await,
        total
    );
    let seen: std::collections::HashSet<String> = sink
        .received_at("/hook")
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    for id in &ids {
        assert!(
            seen.contains(&id.to_string()),
            "event {id} never reached the endpoint"
        );
    }
    app.cleanup().await;
    Ok(())
}

/// A retry-failed job re-queues every failed delivery in chunks of 1,000; when the
/// dispatcher dies right after a chunk commits, a restarted dispatcher resumes the job
/// without counting or re-queueing anything twice, completes it, and the re-queued
/// deliveries are delivered.
#[tokio::test]
async fn a_retry_failed_job_resumes_after_a_crash_and_completes() -> anyhow::Result<()> {
    // Endpoints are never disabled here: 1,200 failures in a row are the point.
    let mut app = TestApp::spawn_with(
        &[
            ("PORTICO_DISABLE_AFTER_FAILURES", "0"),
            ("PORTICO_ACK_WAIT_SECS", "5"),
        ],
        &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher],
    )
    .await?;
    let sink = Sink::start().await?;
    sink.set_default(Reply::status(500));
    let hook = create_webhook(
        &app,
        "mia",
        &Hook::new(sink.url("/hook"), &["*"]).retries(0, 200, 1000),
    )
    .await?;
    let total = 1200i64;
    publish_many(
        &app,
        "mia",
        (0..total)
            .map(|i| json!({"type": "a.b", "data": {"i": i}}))
            .collect(),
    )
    .await?;
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    while count(
        &app,
        "SELECT count(*) FROM webhook_deliveries WHERE webhook_id = $1 AND status = 'failed'",
        hook.id,
    )
    .await
        < total
    {
        anyhow::ensure!(
            tokio::time::Instant::now() < until,
            "deliveries did not all fail"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sink.set_default(Reply::status(200));
    // Restart the dispatcher armed to crash right after the job's first chunk commits.
    app.take(ServiceKind::WebhookDispatcher)
        .terminate(Duration::from_secs(20))
        .await?;
    app.start_with(
        ServiceKind::WebhookDispatcher,
        &[("PORTICO_FAILPOINT", "retry_job_after_chunk")],
    )
    .await?;
    let (status, job) = user_call(
        &app,
        "mia",
        reqwest::Method::POST,
        &format!("/webhooks/{}/retry-failed", hook.id),
        Some(json!({"maxRetries": 1})),
    )
    .await?;
    assert!(status.is_success(), "{status} {job}");
    let job_id = job["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(job["total"], total, "{job}");
    let crashed = app.take(ServiceKind::WebhookDispatcher);
    crashed.wait_exit(Duration::from_secs(30)).await?;
    let job_path = format!("/webhooks/{}/retry-jobs/{job_id}", hook.id);
    let (_, mid) = user_call(&app, "mia", reqwest::Method::GET, &job_path, None).await?;
    assert_eq!(mid["status"], "running", "{mid}");
    assert_eq!(mid["processed"], 1000, "{mid}");
    app.start(ServiceKind::WebhookDispatcher).await?;
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    let done = loop {
        let (_, j) = user_call(&app, "mia", reqwest::Method::GET, &job_path, None).await?;
        if j["status"] == "completed" {
            break j;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < until,
            "job never completed: {j}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done["processed"], total, "{done}");
    assert_eq!(done["total"], total);
    let job_uuid: Uuid = job_id.parse()?;
    let marked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM webhook_deliveries WHERE webhook_id = $1 AND last_retry_job_id = $2 AND max_retries = 2",
    )
    .bind(hook.id)
    .bind(job_uuid)
    .fetch_one(&app.pool)
    .await?;
    assert_eq!(marked, total);
    // The re-queued deliveries are delivered (a row claimed by the crashed process
    // waits for its two-minute lease; every other one succeeds now).
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    while count(&app, "SELECT count(*) FROM webhook_deliveries WHERE webhook_id = $1 AND status IN ('succeeded', 'delivering')", hook.id).await < total {
        anyhow::ensure!(tokio::time::Instant::now() < until, "re-queued deliveries were not delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM webhook_deliveries WHERE webhook_id = $1 AND attempts > 2",
            hook.id
        )
        .await,
        0
    );
    app.cleanup().await;
    Ok(())
}

/// A loopback endpoint that answers per event: it fails the first `fail_first`
/// attempts of events whose data has `"fail": true`, and records the order of
/// successful deliveries.
#[derive(Clone, Default)]
struct KeyedLog {
    inner: std::sync::Arc<std::sync::Mutex<Vec<KeyedRequest>>>,
}

/// Key, sequence number, whether it was answered 2xx, and when it arrived.
type KeyedRequest = (String, u64, bool, std::time::Instant);

async fn keyed_sink(fail_first: usize) -> anyhow::Result<(String, KeyedLog)> {
    use axum::body::Bytes;
    let log = KeyedLog::default();
    let state = log.clone();
    let app = axum::Router::new().fallback(move |body: Bytes| {
        let state = state.clone();
        async move {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let key = v["data"]["key"].as_str().unwrap_or("").to_owned();
            let seq = v["data"]["seq"].as_u64().unwrap_or(0);
            let mut log = state.inner.lock().unwrap_or_else(|p| p.into_inner());
            let tries = log
                .iter()
                .filter(|(k, s, _, _)| *k == key && *s == seq)
                .count();
            let ok = !(v["data"]["fail"] == true && tries < fail_first);
            log.push((key, seq, ok, std::time::Instant::now()));
            if ok {
                StatusCode::OK
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/ordered", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, log))
}

/// With ordering enabled, events with the same ordering key reach the endpoint in the
/// order they were accepted, each only after the previous one succeeded, while a key
/// whose head keeps failing does not hold back the other key.
#[tokio::test]
async fn ordering_per_key_without_blocking_other_keys() -> anyhow::Result<()> {
    let app =
        TestApp::spawn_with(&[], &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher]).await?;
    let (url, log) = keyed_sink(3).await?;
    let mut hook = Hook::new(url, &["*"]).retries(5, 400, 2000);
    hook.ordering = true;
    let created = create_webhook(&app, "nora", &hook).await?;
    for seq in 1..=3u64 {
        for key in ["A", "B"] {
            let fail = key == "A" && seq == 1;
            publish(
                &app,
                "nora",
                json!({"type": "order.updated", "orderingKey": key, "data": {"key": key, "seq": seq, "fail": fail}}),
            )
            .await?;
        }
    }
    wait_deliveries(&app, created.id, |r| {
        r.len() == 6 && r.iter().all(|d| d.status == "succeeded")
    })
    .await?;
    let log = log.inner.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for key in ["A", "B"] {
        let requests: Vec<(u64, bool)> = log
            .iter()
            .filter(|(k, ..)| k == key)
            .map(|(_, s, ok, _)| (*s, *ok))
            .collect();
        let expected: Vec<(u64, bool)> = if key == "A" {
            vec![
                (1, false),
                (1, false),
                (1, false),
                (1, true),
                (2, true),
                (3, true),
            ]
        } else {
            vec![(1, true), (2, true), (3, true)]
        };
        assert_eq!(requests, expected, "key {key}: {log:?}");
    }
    let at = |key: &str, seq: u64| {
        log.iter()
            .find(|(k, s, ok, _)| k == key && *s == seq && *ok)
            .map(|(.., t)| *t)
    };
    assert!(at("B", 3) < at("A", 1), "key B waited for key A");
    app.cleanup().await;
    Ok(())
}

/// The owner hears about their endpoints through their own `portico.*` webhook: a
/// delivery failing, exhausted and recovered, the endpoint nearing and reaching the
/// disabling threshold (then disabled, `disabledReason: failing`). Deliveries of
/// operational events never cause delivery-level operational events themselves.
#[tokio::test]
async fn operational_events_reach_the_owner() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(
        &[("PORTICO_DISABLE_AFTER_FAILURES", "5")],
        &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher],
    )
    .await?;
    let failing_sink = Sink::start().await?;
    failing_sink.set_default(Reply::status(500));
    let ops_sink = Sink::start().await?;
    let flaky_sink = Sink::start().await?;
    flaky_sink.script([Reply::status(502)]);
    let failing = create_webhook(
        &app,
        "olga",
        &Hook::new(failing_sink.url("/f"), &["order.*"]).retries(1, 200, 1000),
    )
    .await?;
    let flaky = create_webhook(
        &app,
        "olga",
        &Hook::new(flaky_sink.url("/r"), &["order.*"]).retries(1, 200, 1000),
    )
    .await?;
    let ops = create_webhook(
        &app,
        "olga",
        &Hook::new(ops_sink.url("/ops"), &["portico.*"]),
    )
    .await?;
    let loud = create_webhook(
        &app,
        "olga",
        &Hook::new(failing_sink.url("/p"), &["portico.*"]).retries(0, 200, 1000),
    )
    .await?;
    let _ = ops;

    for n in 1..=3 {
        publish(
            &app,
            "olga",
            json!({"type": "order.created", "data": {"n": n}}),
        )
        .await?;
        wait_deliveries(&app, failing.id, |r| {
            r.len() == n && r.iter().all(|d| d.status == "failed")
        })
        .await?;
    }
    let (_, w) = user_call(
        &app,
        "olga",
        reqwest::Method::GET,
        &format!("/webhooks/{}", failing.id),
        None,
    )
    .await?;
    assert_eq!(w["active"], false, "{w}");
    assert_eq!(w["disabledReason"], "failing");

    let wanted = [
        ("portico.delivery.failing", failing.id),
        ("portico.delivery.exhausted", failing.id),
        ("portico.delivery.recovered", flaky.id),
        ("portico.webhook.disabling_soon", failing.id),
        ("portico.webhook.disabled", failing.id),
    ];
    let events = || -> Vec<Value> {
        ops_sink
            .received_at("/ops")
            .iter()
            .map(|r| r.json())
            .collect()
    };
    let until = tokio::time::Instant::now() + PATIENCE;
    loop {
        let got = events();
        let missing: Vec<_> = wanted
            .iter()
            .filter(|(t, id)| {
                !got.iter()
                    .any(|e| e["type"] == *t && e["data"]["webhookId"] == id.to_string())
            })
            .collect();
        if missing.is_empty() {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < until,
            "missing {missing:?} in {got:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = events();
    let disabled = got
        .iter()
        .find(|e| {
            e["type"] == "portico.webhook.disabled"
                && e["data"]["webhookId"] == failing.id.to_string()
        })
        .cloned()
        .unwrap_or_default();
    assert_eq!(disabled["data"]["reason"], "failing");
    assert_eq!(disabled["data"]["consecutiveFailures"], 5);
    assert_eq!(disabled["data"]["lastStatusCode"], 500);
    assert_eq!(disabled["data"]["eventType"], "order.created");
    let exhausted = got
        .iter()
        .find(|e| e["type"] == "portico.delivery.exhausted")
        .cloned()
        .unwrap_or_default();
    assert_eq!(exhausted["data"]["attempts"], 2, "{exhausted}");
    assert!(
        exhausted["data"]["deliveryId"].is_string() && exhausted["data"]["eventId"].is_string()
    );
    // The failing `portico.*` endpoint produced no delivery-level events about itself.
    assert!(
        !got.iter().any(|e| e["type"]
            .as_str()
            .unwrap_or("")
            .starts_with("portico.delivery.")
            && e["data"]["webhookId"] == loud.id.to_string()),
        "an operational event was raised about a delivery of an operational event"
    );
    // Each operational event was delivered once, even though several replicas'
    // worth of batches could have produced it.
    let ids: Vec<&str> = got.iter().filter_map(|e| e["id"].as_str()).collect();
    let unique: std::collections::HashSet<&&str> = ids.iter().collect();
    assert_eq!(
        ids.len(),
        unique.len(),
        "{:#?}",
        ops_sink
            .received_at("/ops")
            .iter()
            .map(|r| (
                r.header("webhook-id").to_owned(),
                r.header("webhook-timestamp").to_owned(),
                r.json()["type"].clone(),
                r.json()["data"]["deliveryId"].clone()
            ))
            .collect::<Vec<_>>()
    );
    app.cleanup().await;
    Ok(())
}

/// Per-endpoint limits: with `rateLimitPerSecond: 5` a burst of 12 events is spread
/// over more than a second (5 at once, then 5 per second); with `maxConcurrency: 1`
/// a slow endpoint never has two requests in flight. Everything is delivered once.
#[tokio::test]
async fn per_endpoint_rate_limit_and_concurrency_cap() -> anyhow::Result<()> {
    let app =
        TestApp::spawn_with(&[], &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher]).await?;
    let paced_sink = Sink::start().await?;
    let mut paced = Hook::new(paced_sink.url("/paced"), &["paced.*"]);
    paced.rate_limit = Some(5);
    let paced = create_webhook(&app, "pia", &paced).await?;
    let serial_sink = Sink::start().await?;
    serial_sink.set_default(Reply::status(200).delayed(Duration::from_millis(200)));
    let mut serial = Hook::new(serial_sink.url("/serial"), &["serial.*"]);
    serial.max_concurrency = Some(1);
    let serial = create_webhook(&app, "pia", &serial).await?;

    publish_many(
        &app,
        "pia",
        (0..12)
            .map(|i| json!({"type": "paced.tick", "data": {"i": i}}))
            .collect(),
    )
    .await?;
    publish_many(
        &app,
        "pia",
        (0..4)
            .map(|i| json!({"type": "serial.tick", "data": {"i": i}}))
            .collect(),
    )
    .await?;
    let paced_got = wait_received(&paced_sink, "/paced", 12).await?;
    let span = paced_got[11].at.duration_since(paced_got[0].at);
    assert!(
        span >= Duration::from_millis(1300),
        "12 requests at 5/s took only {span:?}"
    );
    let in_first_second = paced_got
        .iter()
        .filter(|r| r.at.duration_since(paced_got[0].at) < Duration::from_millis(990))
        .count();
    assert!(
        in_first_second <= 10,
        "{in_first_second} requests in the first second"
    );
    let serial_got = wait_received(&serial_sink, "/serial", 4).await?;
    for pair in serial_got.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(
            gap >= Duration::from_millis(195),
            "two requests overlapped: gap {gap:?}"
        );
    }
    wait_deliveries(&app, paced.id, |r| {
        r.len() == 12 && r.iter().all(|d| d.status == "succeeded")
    })
    .await?;
    wait_deliveries(&app, serial.id, |r| {
        r.len() == 4 && r.iter().all(|d| d.status == "succeeded")
    })
    .await?;
    assert_eq!(paced_sink.count(), 12);
    assert_eq!(serial_sink.count(), 4);
    app.cleanup().await;
    Ok(())
}

/// Every endpoint has a default cap on requests (and so HTTP/1.1 connections) in
/// flight, `PORTICO_ENDPOINT_CONCURRENCY`, here 3: a burst of 20 events to a slow
/// endpoint that sets no `maxConcurrency` never has more than 3 requests open at once,
/// while a webhook's own `maxConcurrency` (6) overrides the default upwards. Everything
/// is delivered once.
#[tokio::test]
async fn endpoints_get_a_default_concurrency_cap_a_webhook_may_override() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(
        &[("PORTICO_ENDPOINT_CONCURRENCY", "3")],
        &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher],
    )
    .await?;
    let slow = Reply::status(200).delayed(Duration::from_millis(150));
    let default_sink = Sink::start().await?;
    default_sink.set_default(slow.clone());
    let defaulted = create_webhook(
        &app,
        "cora",
        &Hook::new(default_sink.url("/default"), &["capped.*"]),
    )
    .await?;
    let own_sink = Sink::start().await?;
    own_sink.set_default(slow);
    let mut own = Hook::new(own_sink.url("/own"), &["own.*"]);
    own.max_concurrency = Some(6);
    let own = create_webhook(&app, "cora", &own).await?;

    for kind in ["capped.tick", "own.tick"] {
        publish_many(
            &app,
            "cora",
            (0..20)
                .map(|i| json!({"type": kind, "data": {"i": i}}))
                .collect(),
        )
        .await?;
    }
    wait_deliveries(&app, defaulted.id, |r| {
        r.len() == 20 && r.iter().all(|d| d.status == "succeeded")
    })
    .await?;
    wait_deliveries(&app, own.id, |r| {
        r.len() == 20 && r.iter().all(|d| d.status == "succeeded")
    })
    .await?;
    let (default_peak, own_peak) = (default_sink.peak_in_flight(), own_sink.peak_in_flight());
    println!("peak requests in flight: default cap {default_peak}, own cap {own_peak}");
    assert!(
        (1..=3).contains(&default_peak),
        "default cap 3, peak {default_peak}"
    );
    assert!(
        own_peak > 3 && own_peak <= 6,
        "maxConcurrency 6 overrides the default of 3, peak {own_peak}"
    );
    assert_eq!(default_sink.count(), 20);
    assert_eq!(own_sink.count(), 20);
    app.cleanup().await;
    Ok(())
}

/// `POST /webhooks/{id}/test` delivers a signed `webhook.test` event to that webhook
/// only (whatever its filter), and a failed delivery retried by hand
/// (`POST .../deliveries/{id}/retry`) is attempted again with the same `webhook-id`
/// and succeeds. The dispatcher's metrics count the attempts.
#[tokio::test]
async fn test_events_and_manual_retries_are_delivered() -> anyhow::Result<()> {
    let app =
        TestApp::spawn_with(&[], &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher]).await?;
    let sink = Sink::start().await?;
    let target = create_webhook(
        &app,
        "quinn",
        &Hook::new(sink.url("/target"), &["order.created"]),
    )
    .await?;
    let bystander =
        create_webhook(&app, "quinn", &Hook::new(sink.url("/bystander"), &["*"])).await?;
    let (status, body) = user_call(
        &app,
        "quinn",
        reqwest::Method::POST,
        &format!("/webhooks/{}/test", target.id),
        None,
    )
    .await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let got = wait_received(&sink, "/target", 1).await?;
    assert_eq!(got[0].json()["type"], "webhook.test");
    assert_eq!(
        got[0].header("webhook-id"),
        body["eventId"].as_str().unwrap_or_default()
    );
    verify_ours(&target.secret, &got[0])?;
    wait_deliveries(&app, target.id, |r| {
        r.len() == 1 && r[0].status == "succeeded"
    })
    .await?;
    assert!(deliveries_of(&app, bystander.id).await?.is_empty());
    assert!(sink.received_at("/bystander").is_empty());

    // Exhaust a delivery, then retry it by hand.
    let failing_sink = Sink::start().await?;
    failing_sink.script([Reply::status(500)]);
    let once = create_webhook(
        &app,
        "quinn",
        &Hook::new(failing_sink.url("/once"), &["invoice.*"]).retries(0, 200, 1000),
    )
    .await?;
    let event = publish(&app, "quinn", json!({"type": "invoice.paid", "data": {}})).await?;
    let rows = wait_deliveries(&app, once.id, |r| r.len() == 1 && r[0].status == "failed").await?;
    let (status, body) = user_call(
        &app,
        "quinn",
        reqwest::Method::POST,
        &format!("/webhooks/{}/deliveries/{}/retry", once.id, rows[0].id),
        Some(json!({"maxRetries": 2})),
    )
    .await?;
    assert!(status.is_success(), "{status} {body}");
    let rows = wait_deliveries(&app, once.id, |r| r[0].status == "succeeded").await?;
    assert_eq!(rows[0].attempts, 2);
    let got = failing_sink.received_at("/once");
    assert_eq!(got.len(), 2);
    assert!(
        got.iter()
            .all(|r| r.header("webhook-id") == event.to_string())
    );

    let metrics = app
        .http
        .get(format!(
            "http://{}/metrics",
            app.addr(ServiceKind::WebhookDispatcher, "http")
        ))
        .send()
        .await?
        .text()
        .await?;
    for name in [
        "portico_deliveries_total{",
        "portico_delivery_attempt_duration_seconds_bucket",
        "portico_event_to_delivery_seconds_bucket",
        // Healthy: the events consumer is not ahead of its stream.
        r#"portico_queue_consumer_ahead_of_stream{consumer="webhook-dispatcher.events"} 0"#,
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    assert!(metrics.contains(r#"outcome="failed""#) && metrics.contains(r#"status_class="5xx""#));
    app.cleanup().await;
    Ok(())
}

/// With tracing on, a delivery carries a W3C `traceparent` in the trace of the request
/// that published the event: same trace id, a span of its own.
#[tokio::test]
async fn deliveries_continue_the_publishers_trace() -> anyhow::Result<()> {
    // An OTLP endpoint turns tracing on; nothing listens there (loopback, port 9), so
    // the exporters just fail quietly.
    let app = TestApp::spawn_with(
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")],
        &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher],
    )
    .await?;
    let sink = Sink::start().await?;
    create_webhook(&app, "rita", &Hook::new(sink.url("/hook"), &["*"])).await?;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let res = app
        .http
        .post(app.api("/events"))
        .bearer_auth(SERVICE_TOKEN)
        .header("x-portico-user-id", "rita")
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&json!({"type": "a.b", "data": {}}))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let got = wait_received(&sink, "/hook", 1).await?;
    let traceparent = got[0].header("traceparent");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {traceparent:?}");
    assert_eq!(parts[1], trace_id);
    assert_ne!(parts[2], "00f067aa0ba902b7");
    app.cleanup().await;
    Ok(())
}
