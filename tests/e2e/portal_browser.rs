//! The portal in a real browser: Debian's `chromium` driven by `chromedriver` over the
//! W3C WebDriver protocol (plain JSON over HTTP with reqwest, no WebDriver crate), against
//! a real gateway. A user opens a login link, sees the webhook, opens it, clicks retry
//! on a failed delivery and sees its status change. Screenshots are saved under
//! `target/portal-screenshots/`.
//!
//! `deploy/local/test.sh` installs `chromium` and `chromium-driver` when missing; when
//! the driver cannot be found (`PORTICO_CHROMEDRIVER`, default `/usr/bin/chromedriver`)
//! the test says so loudly and passes without running.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use portico_e2e::{ServiceKind, TestApp, wait_for};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52f-4ae735e5f1f3";

/// A chromedriver process and one browser session on it.
struct Browser {
    driver: tokio::process::Child,
    base: String,
    session: String,
    http: reqwest::Client,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless chromium session.
    async fn start(driver_path: &str) -> anyhow::Result<Self> {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let driver = tokio::process::Command::new(driver_path)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {driver_path}"))?;
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let status_url = format!("{base}/status");
        wait_for(Duration::from_secs(20), || {
            let http = http.clone();
            let url = status_url.clone();
            async move {
                match http.get(url).send().await {
                    Ok(r) => r
                        .json::<Value>()
                        .await
                        .is_ok_and(|v| v["value"]["ready"] == true),
                    Err(_) => false,
                }
            }
        })
        .await
        .context("chromedriver did not become ready")?;
        let binary =
            std::env::var("PORTICO_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": binary,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1200,1000",
                         "--no-first-run", "--disable-extensions"]
            }
        }}});
        let res: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await?
            .json()
            .await?;
        let session = res["value"]["sessionId"]
            .as_str()
            .with_context(|| format!("no session: {res}"))?
            .to_owned();
        Ok(Self {
            driver,
            base,
            session,
            http,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/session/{}{path}", self.base, self.session)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> anyhow::Result<Value> {
        let mut req = self.http.request(method.clone(), self.url(path));
        if method != reqwest::Method::GET {
            req = req.json(&body);
        }
        let res = req.send().await?;
        let status = res.status();
        let value: Value = res.json().await?;
        if status != StatusCode::OK {
            bail!("WebDriver {method} {path}: {status} {value}");
        }
        Ok(value["value"].clone())
    }

    async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.call(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await
            .map(|_| ())
    }

    async fn current_url(&self) -> anyhow::Result<String> {
        let v = self.call(reqwest::Method::GET, "/url", json!({})).await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    async fn find(&self, css: &str) -> anyhow::Result<String> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await?;
        let id = v[ELEMENT]
            .as_str()
            .or_else(|| {
                v.as_object()
                    .and_then(|o| o.values().find_map(Value::as_str))
            })
            .with_context(|| format!("{css}: no element reference in {v}"))?;
        Ok(id.to_owned())
    }

    async fn text(&self, css: &str) -> anyhow::Result<String> {
        let id = self.find(css).await?;
        let v = self
            .call(
                reqwest::Method::GET,
                &format!("/element/{id}/text"),
                json!({}),
            )
            .await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    async fn click(&self, css: &str) -> anyhow::Result<()> {
        let id = self.find(css).await?;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            json!({}),
        )
        .await
        .map(|_| ())
    }

    /// Waits until the element's text satisfies `ok` (the page may be reloading).
    async fn wait_text(&self, css: &str, ok: impl Fn(&str) -> bool) -> anyhow::Result<String> {
        let until = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let last = match self.text(css).await {
                Ok(t) if ok(&t) => return Ok(t),
                Ok(t) => format!("text {t:?}"),
                Err(e) => format!("{e:#}"),
            };
            if tokio::time::Instant::now() > until {
                let url = self.current_url().await.unwrap_or_default();
                let source = self
                    .call(reqwest::Method::GET, "/source", json!({}))
                    .await
                    .unwrap_or_default();
                let source = source.as_str().unwrap_or_default();
                bail!(
                    "{css} never showed the expected text ({last}) at {url}: {}",
                    &source[..source.len().min(2000)]
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Types `text` into an element (for a file input: the file's path).
    async fn send_keys(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let id = self.find(css).await?;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            json!({ "text": text }),
        )
        .await
        .map(|_| ())
    }

    /// Runs `script` in the page and returns its value.
    async fn execute(&self, script: &str) -> anyhow::Result<Value> {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
        .await
    }

    async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let v = self
            .call(reqwest::Method::GET, "/screenshot", json!({}))
            .await?;
        let png =
            base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or_default())?;
        let dir = portico_e2e::bin_dir().join("portal-screenshots");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }

    async fn quit(mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send()
            .await;
        let _ = self.driver.kill().await;
    }
}

/// The driver to use, or `None` (with a loud message) when it is not installed.
fn driver_path() -> Option<String> {
    let path = std::env::var("PORTICO_CHROMEDRIVER")
        .unwrap_or_else(|_| "/usr/bin/chromedriver".to_owned());
    if std::path::Path::new(&path).exists() {
        Some(path)
    } else {
        eprintln!(
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !! SKIPPED: the portal browser test needs chromium and chromedriver     !!\n\
             !! ({path} not found). Install: apt-get install chromium chromium-driver !!\n\
             !! (deploy/local/test.sh does this when it can).                         !!\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
        None
    }
}

/// A user opens the login link in chromium, sees the webhook in the list, opens it,
/// clicks Retry on the failed delivery, and the delivery's status changes from
/// `failed` without anything but the browser.
#[tokio::test]
async fn a_user_signs_in_by_link_and_retries_a_failed_delivery_in_a_browser() -> anyhow::Result<()>
{
    let Some(driver) = driver_path() else {
        return Ok(());
    };
    let app = TestApp::spawn_with(&[], &[ServiceKind::Gateway]).await?;
    let hook: Value = app
        .http
        .post(app.api("/webhooks"))
        .bearer_auth(app.user_token("alice"))
        .json(
            &json!({"url": "http://127.0.0.1:9/orders", "events": ["order.created"],
                      "description": "Order sync"}),
        )
        .send()
        .await?
        .json()
        .await?;
    let hook_id: uuid::Uuid = hook["id"].as_str().unwrap_or_default().parse()?;
    let event_id = uuid::Uuid::now_v7();
    let delivery_id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO events (id, user_id, event_type, payload, idempotency_key, accepted_at)
         VALUES ($1, 'alice', 'order.created', '{}'::jsonb, $2, now())",
    )
    .bind(event_id)
    .bind(event_id.to_string())
    .execute(&app.pool)
    .await?;
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, webhook_id, event_id, user_id, event_type, status,
             attempts, max_retries, last_status_code, last_error)
         VALUES ($1, $2, $3, 'alice', 'order.created', 'failed', 6, 5, 500, 'HTTP 500')",
    )
    .bind(delivery_id)
    .bind(hook_id)
    .bind(event_id)
    .execute(&app.pool)
    .await?;
    let link: Value = app
        .http
        .post(app.api("/portal/sessions"))
        .bearer_auth(app.user_token("alice"))
        .send()
        .await?
        .json()
        .await?;
    let login = format!(
        "{}{}",
        app.base_url(),
        link["loginUrl"].as_str().unwrap_or_default()
    );

    let browser = Browser::start(&driver).await?;
    let result = async {
        browser.goto(&login).await?;
        let list = browser.wait_text("main h1", |t| t == "Webhooks").await?;
        assert_eq!(list, "Webhooks");
        assert!(browser.current_url().await?.ends_with("/portal/webhooks"));
        browser.screenshot("webhooks").await?;
        browser
            .click(&format!("a[href='/portal/webhooks/{hook_id}']"))
            .await?;
        let row = format!("tr[data-delivery-id='{delivery_id}'] td.status");
        browser.wait_text(&row, |t| t == "failed").await?;
        browser.screenshot("webhook-failed-delivery").await?;
        browser
            .click(&format!("tr[data-delivery-id='{delivery_id}'] form button"))
            .await?;
        let notice = browser
            .wait_text(".notice", |t| t.contains("scheduled"))
            .await?;
        assert!(notice.contains("new attempt"), "{notice}");
        let status = browser.wait_text(&row, |t| t != "failed").await?;
        assert!(
            ["pending", "delivering", "retrying"].contains(&status.as_str()),
            "{status}"
        );
        browser.screenshot("webhook-retried").await?;
        anyhow::Ok(())
    }
    .await;
    browser.quit().await;
    result?;
    let stored: String = sqlx::query_scalar("SELECT status FROM webhook_deliveries WHERE id = $1")
        .bind(delivery_id)
        .fetch_one(&app.pool)
        .await?;
    assert_ne!(stored, "failed");
    app.cleanup().await;
    Ok(())
}

/// With the dispatcher running, a test event sent while the webhook's page is open
/// appears in its delivery log as `succeeded` without the page reloading: the portal's
/// script takes a live ticket and listens on the live WebSocket.
#[tokio::test]
async fn a_new_delivery_appears_live_without_reloading() -> anyhow::Result<()> {
    let Some(driver) = driver_path() else {
        return Ok(());
    };
    let app =
        TestApp::spawn_with(&[], &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher]).await?;
    let sink = portico_e2e::sink::Sink::start().await?;
    let hook: Value = app
        .http
        .post(app.api("/webhooks"))
        .bearer_auth(app.user_token("alice"))
        .json(&json!({"url": sink.url("/hook"), "events": ["order.created"]}))
        .send()
        .await?
        .json()
        .await?;
    let hook_id = hook["id"].as_str().unwrap_or_default().to_owned();
    let link: Value = app
        .http
        .post(app.api("/portal/sessions"))
        .bearer_auth(app.user_token("alice"))
        .send()
        .await?
        .json()
        .await?;
    let login = format!(
        "{}{}",
        app.base_url(),
        link["loginUrl"].as_str().unwrap_or_default()
    );
    let browser = Browser::start(&driver).await?;
    let result = async {
        browser.goto(&login).await?;
        browser.wait_text("main h1", |t| t == "Webhooks").await?;
        browser
            .goto(&format!("{}/portal/webhooks/{hook_id}", app.base_url()))
            .await?;
        // The page is listening once the live socket confirmed the subscription.
        let until = tokio::time::Instant::now() + Duration::from_secs(15);
        while browser.execute("return document.body.dataset.live").await? != json!("on") {
            if tokio::time::Instant::now() > until {
                bail!("the live socket never subscribed");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        browser.execute("window.portalMarker = 42").await?;
        let res = app
            .http
            .post(app.api(&format!("/webhooks/{hook_id}/test")))
            .bearer_auth(app.user_token("alice"))
            .send()
            .await?;
        assert!(res.status().is_success(), "{}", res.status());
        let status = browser
            .wait_text("#deliveries tbody tr[data-delivery-id] td.status", |t| {
                t == "succeeded"
            })
            .await?;
        assert_eq!(status, "succeeded");
        assert_eq!(
            browser.execute("return window.portalMarker").await?,
            json!(42),
            "the page reloaded"
        );
        browser.screenshot("webhook-live").await?;
        anyhow::Ok(())
    }
    .await;
    browser.quit().await;
    result?;
    assert_eq!(sink.count(), 1);
    app.cleanup().await;
    Ok(())
}

/// A user uploads a 10,000-order NDJSON file from the batches page; the upload opens
/// the batch's page, whose progress bar reaches 100 % and whose status becomes
/// `completed`.
#[tokio::test]
async fn a_ten_thousand_order_upload_reaches_one_hundred_percent() -> anyhow::Result<()> {
    let Some(driver) = driver_path() else {
        return Ok(());
    };
    let app =
        TestApp::spawn_with(&[], &[ServiceKind::Gateway, ServiceKind::BatchProcessor]).await?;
    let dir = portico_e2e::bin_dir().join(format!("portal-upload-{}", app.id));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("orders.ndjson");
    let mut ndjson = String::new();
    for i in 0..10_000 {
        ndjson.push_str(
            &json!({"clientOrderRef": format!("U-{i}"), "currency": "EUR",
                "customer": {"email": "ada@example.com", "name": "Ada"},
                "shippingAddress": {"line1": "1 Main St", "city": "Berlin", "postalCode": "10115", "country": "DE"},
                "lineItems": [{"sku": "SKU-1", "quantity": 1, "unitPrice": "1.00"}]})
            .to_string(),
        );
        ndjson.push('\n');
    }
    std::fs::write(&file, ndjson)?;
    let link: Value = app
        .http
        .post(app.api("/portal/sessions"))
        .bearer_auth(app.user_token("alice"))
        .send()
        .await?
        .json()
        .await?;
    let login = format!(
        "{}{}",
        app.base_url(),
        link["loginUrl"].as_str().unwrap_or_default()
    );
    let browser = Browser::start(&driver).await?;
    let result = async {
        browser.goto(&login).await?;
        browser.wait_text("main h1", |t| t == "Webhooks").await?;
        browser
            .goto(&format!("{}/portal/batches", app.base_url()))
            .await?;
        browser
            .send_keys("#batch-file", &file.to_string_lossy())
            .await?;
        browser.click("#upload-form button[type=submit]").await?;
        browser.wait_text("main h1", |t| t == "Batch").await?;
        let until = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            let v = browser
                .execute("const p = document.querySelector('progress[data-batch-id]'); return p ? [p.value, p.max] : null")
                .await
                // The page reloads itself once the batch is final.
                .unwrap_or(Value::Null);
            if v == json!([10000, 10000]) {
                break;
            }
            if tokio::time::Instant::now() > until {
                bail!("the progress bar stopped at {v}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        browser.wait_text("dd.status", |t| t == "completed").await?;
        // After the reload, the counts are the final ones.
        browser
            .wait_text("main dl.facts dd:nth-of-type(3)", |t| t == "10000")
            .await?;
        browser.screenshot("batch-complete").await?;
        anyhow::Ok(())
    }
    .await;
    browser.quit().await;
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    let (total, succeeded): (i32, i32) =
        sqlx::query_as("SELECT total, succeeded FROM bulk_order_batches")
            .fetch_one(&app.pool)
            .await?;
    assert_eq!((total, succeeded), (10_000, 10_000));
    app.cleanup().await;
    Ok(())
}
