//! `portico listen` against the real system: a listen endpoint's deliveries travel
//! from the dispatcher over NATS to the gateway holding the tool's WebSocket, the tool
//! forwards them unchanged to a loopback server, and the local answer is the attempt's
//! result (a 500 is retried, then a 200 succeeds); the endpoint is deleted when the
//! tool exits, and by the dispatcher's sweep when a tool never comes back. Only the
//! owner may create one. Dev mode opens loopback webhook URLs; nothing else does.
//!
//! The services run with an empty `PORTICO_WEBHOOK_ALLOWLIST`: the dispatcher could
//! not reach the loopback server over HTTP even if it tried, and the endpoint's URL is
//! the `listen:<id>` placeholder, which no HTTP client can call. What arrives at the
//! loopback server came through the tool.
//!
//! Run `cargo build --workspace --bins` first: the tests run `target/debug/portico`.

use std::process::Stdio;
use std::time::Duration;

use portico_e2e::sink::{Reply, Sink};
use portico_e2e::{SERVICE_TOKEN, ServiceKind, TestApp, bin_dir, wait_for};
use portico_signing::standard_webhooks::{WebhookSecret, verify};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

/// The services without any loopback allowlist (and without dev mode).
const NO_ALLOWLIST: &[(&str, &str)] = &[("PORTICO_WEBHOOK_ALLOWLIST", "")];

/// A running `portico listen -o json`, its output read line by line.
struct Listener {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    webhook_id: String,
    secret: String,
}

impl Listener {
    /// Starts the tool for `user` and waits for its `ready` line.
    async fn start(
        app: &TestApp,
        user: &str,
        events: &str,
        forward_to: &str,
    ) -> anyhow::Result<Self> {
        let config = std::env::temp_dir().join(format!("portico-listen-e2e-{}.json", app.id));
        let mut child = tokio::process::Command::new(bin_dir().join("portico"))
            .env_clear()
            .env("PORTICO_CONFIG", &config)
            .env("PORTICO_URL", app.base_url())
            .env("PORTICO_SERVICE_TOKEN", SERVICE_TOKEN)
            .env("PORTICO_USER_ID", user)
            .args([
                "-o",
                "json",
                "listen",
                "--events",
                events,
                "--forward-to",
                forward_to,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = next_json(&mut lines).await?;
        assert_eq!(ready["type"], "ready", "{ready}");
        Ok(Self {
            child,
            lines,
            webhook_id: ready["webhookId"].as_str().unwrap_or_default().to_owned(),
            secret: ready["secret"].as_str().unwrap_or_default().to_owned(),
        })
    }

    /// The next printed delivery line.
    async fn next_delivery(&mut self) -> anyhow::Result<Value> {
        let line = next_json(&mut self.lines).await?;
        assert_eq!(line["type"], "delivery", "{line}");
        Ok(line)
    }

    /// Sends SIGTERM and waits for the tool to exit.
    async fn terminate(mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self
            .child
            .id()
            .ok_or_else(|| anyhow::anyhow!("already exited"))?;
        let killed = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
        assert!(killed.success());
        Ok(tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await??)
    }
}

async fn next_json(lines: &mut Lines<BufReader<ChildStdout>>) -> anyhow::Result<Value> {
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await??
        .ok_or_else(|| anyhow::anyhow!("portico listen exited"))?;
    Ok(serde_json::from_str(&line)?)
}

async fn publish(app: &TestApp, user: &str, event_type: &str, key: &str) -> anyhow::Result<()> {
    let res = app
        .http
        .post(app.api("/events"))
        .bearer_auth(SERVICE_TOKEN)
        .header("x-portico-user-id", user)
        .json(&json!({"type": event_type, "data": {"orderId": key}, "idempotencyKey": key}))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    Ok(())
}

async fn get(app: &TestApp, user: &str, path: &str) -> anyhow::Result<(StatusCode, Value)> {
    let res = app
        .http
        .get(app.api(path))
        .bearer_auth(app.user_token(user))
        .send()
        .await?;
    let status = res.status();
    Ok((status, res.json().await.unwrap_or(Value::Null)))
}

/// A published event reaches the loopback server through `portico listen` with
/// headers that verify against the endpoint's secret; the local 500 is recorded and
/// retried, the local 200 then succeeds, and both attempts carry the local statuses.
/// After SIGTERM the tool exits 0 and the endpoint is gone.
#[tokio::test]
async fn listen_forwards_signed_deliveries_and_reports_the_local_answer() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(
        NO_ALLOWLIST,
        &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher],
    )
    .await?;
    let sink = Sink::start().await?;
    sink.script([Reply::status(500)]);
    sink.set_default(Reply::status(200));
    let mut listener = Listener::start(&app, "lena", "order.*", &sink.url("/hooks")).await?;
    assert!(listener.secret.starts_with("whsec_"));

    // The endpoint is an ordinary webhook of its owner, with no address to call.
    let (status, webhook) =
        get(&app, "lena", &format!("/webhooks/{}", listener.webhook_id)).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(webhook["url"], format!("listen:{}", listener.webhook_id));
    assert_eq!(webhook["events"], json!(["order.*"]));

    publish(&app, "lena", "order.created", "listen-1").await?;
    publish(&app, "lena", "invoice.paid", "listen-not-matching").await?;
    let first = listener.next_delivery().await?;
    assert_eq!(first["eventType"], "order.created");
    assert_eq!(first["status"], 500);
    let second = listener.next_delivery().await?;
    assert_eq!(second["status"], 200);
    assert_eq!(second["webhookId"], first["webhookId"]);

    let received = sink.received();
    assert_eq!(received.len(), 2);
    let secret = WebhookSecret::parse(&listener.secret)?;
    for r in &received {
        assert_eq!(r.path, "/hooks");
        verify(
            &secret,
            r.header("webhook-id"),
            r.header("webhook-timestamp"),
            r.header("webhook-signature"),
            &r.body,
            chrono::Utc::now().timestamp(),
            300,
        )?;
        assert_eq!(r.json()["type"], "order.created");
        assert_eq!(r.json()["data"], json!({"orderId": "listen-1"}));
    }
    assert_eq!(
        received[0].header("webhook-id"),
        received[1].header("webhook-id")
    );

    // The delivery history holds both attempts with the local statuses.
    let deliveries_path = format!("/webhooks/{}/deliveries", listener.webhook_id);
    wait_for(Duration::from_secs(30), || async {
        matches!(get(&app, "lena", &deliveries_path).await, Ok((_, list)) if list["data"][0]["status"] == "succeeded")
    })
    .await?;
    let (_, list) = get(&app, "lena", &deliveries_path).await?;
    let delivery_id = list["data"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (_, detail) = get(&app, "lena", &format!("{deliveries_path}/{delivery_id}")).await?;
    let statuses: Vec<Value> = detail["attempts"]
        .as_array()
        .map(|a| a.iter().map(|x| x["responseStatus"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(statuses, vec![json!(500), json!(200)], "{detail}");
    assert_eq!(detail["eventType"], "order.created");

    let exit = listener.terminate().await?;
    assert!(exit.success(), "{exit:?}");
    let (status, _) = get(
        &app,
        "lena",
        &format!("/webhooks/{}", webhook["id"].as_str().unwrap_or_default()),
    )
    .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = get(&app, "lena", "/webhooks").await?;
    assert_eq!(list["data"], json!([]));
    app.cleanup().await;
    Ok(())
}

/// Only the owner creates a listen endpoint: partner credentials are refused even with
/// `webhooks:write`; another user cannot attach to it (404); its URL cannot be changed
/// into an address (409); and with no tool attached a delivery attempt fails without
/// any HTTP request, to be retried.
#[tokio::test]
async fn listen_endpoints_belong_to_their_owner() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(
        NO_ALLOWLIST,
        &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher],
    )
    .await?;
    let res = app
        .http
        .post(app.api("/integrations"))
        .bearer_auth(app.user_token("olga"))
        .json(
            &json!({"name": "Shop", "type": "erp", "scopes": ["webhooks:read", "webhooks:write"]}),
        )
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::CREATED);
    let integration: Value = res.json().await?;
    let key = integration["credentials"]["apiKey"]
        .as_str()
        .unwrap_or_default();
    let secret = integration["credentials"]["apiSecret"]
        .as_str()
        .unwrap_or_default();
    let res = app
        .http
        .post(app.api("/listen"))
        .basic_auth(key, Some(secret))
        .json(&json!({"events": ["order.*"]}))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    let res = app
        .http
        .post(app.api("/listen"))
        .bearer_auth(app.user_token("olga"))
        .json(&json!({"events": []}))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = app
        .http
        .post(app.api("/listen"))
        .bearer_auth(app.user_token("olga"))
        .json(&json!({"events": ["order.*"]}))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = res.json().await?;
    let id = created["id"].as_str().unwrap_or_default().to_owned();

    // Another user's attach is refused before the upgrade, as not found.
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "{}/api/v1/listen/{id}",
            app.base_url().replacen("http://", "ws://", 1)
        ))?;
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", app.user_token("mallory")).parse()?,
    );
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 404);
        }
        other => panic!("expected 404, got {other:?}"),
    }

    let res = app
        .http
        .patch(app.api(&format!("/webhooks/{id}")))
        .bearer_auth(app.user_token("olga"))
        .json(&json!({"url": "https://example.com/hooks"}))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::CONFLICT);

    // No tool attached: the attempt fails (no responder) and is scheduled again.
    publish(&app, "olga", "order.created", "nobody-listens").await?;
    let path = format!("/webhooks/{id}/deliveries");
    wait_for(Duration::from_secs(30), || async {
        matches!(get(&app, "olga", &path).await, Ok((_, list)) if list["data"][0]["status"] == "retrying")
    })
    .await?;
    let (_, list) = get(&app, "olga", &path).await?;
    let error = list["data"][0]["lastError"].as_str().unwrap_or_default();
    assert!(error.contains("portico listen"), "{error}");
    app.cleanup().await;
    Ok(())
}

/// A listen endpoint whose tool never (re)connects is deleted by the dispatcher's
/// sweep once `PORTICO_LISTEN_TIMEOUT_SECS` has passed.
#[tokio::test]
async fn an_abandoned_listen_endpoint_is_swept() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(
        &[
            ("PORTICO_WEBHOOK_ALLOWLIST", ""),
            ("PORTICO_LISTEN_TIMEOUT_SECS", "1"),
        ],
        &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher],
    )
    .await?;
    let res = app
        .http
        .post(app.api("/listen"))
        .bearer_auth(SERVICE_TOKEN)
        .header("x-portico-user-id", "sam")
        .json(&json!({"events": ["*"]}))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::CREATED);
    let id = res.json::<Value>().await?["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    wait_for(Duration::from_secs(30), || async {
        matches!(
            get(&app, "sam", &format!("/webhooks/{id}")).await,
            Ok((StatusCode::NOT_FOUND, _))
        )
    })
    .await?;
    app.cleanup().await;
    Ok(())
}

/// Dev mode accepts a loopback webhook URL without any allowlist; outside dev mode the
/// same URL is refused as a forbidden address.
#[tokio::test]
async fn dev_mode_alone_opens_loopback_urls() -> anyhow::Result<()> {
    let body = json!({"url": "http://127.0.0.1:9/hooks", "events": ["order.*"]});
    let dev = TestApp::spawn_with(
        &[
            ("PORTICO_WEBHOOK_ALLOWLIST", ""),
            ("PORTICO_DEV_MODE", "true"),
        ],
        &[ServiceKind::Gateway],
    )
    .await?;
    let res = dev
        .http
        .post(dev.api("/webhooks"))
        .bearer_auth(dev.user_token("dev"))
        .json(&body)
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::CREATED);
    dev.cleanup().await;

    let prod = TestApp::spawn_with(NO_ALLOWLIST, &[ServiceKind::Gateway]).await?;
    let res = prod
        .http
        .post(prod.api("/webhooks"))
        .bearer_auth(prod.user_token("dev"))
        .json(&body)
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let problem: Value = res.json().await?;
    assert_eq!(
        problem["errors"][0]["code"], "forbidden_address",
        "{problem}"
    );
    prod.cleanup().await;
    Ok(())
}
