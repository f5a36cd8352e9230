//! The portal in a real browser: Debian's `chromium` driven by `chromedriver` over the
//! W3C WebDriver protocol (the shared `portico_e2e::browser` helper), against
//! a real gateway. A user opens a login link, sees the webhook, opens it, clicks retry
//! on a failed delivery and sees its status change. Screenshots are saved under
//! `target/portal-screenshots/`.
//!
//! `deploy/local/test.sh` installs `chromium` and `chromium-driver` when missing; when
//! the driver cannot be found (`PORTICO_CHROMEDRIVER`, default `/usr/bin/chromedriver`)
//! the test says so loudly and passes without running.

use std::time::Duration;

use anyhow::bail;
use portico_e2e::browser::{Browser, driver_path, login_url};
use portico_e2e::{ServiceKind, TestApp};
use serde_json::{Value, json};

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
    let login = login_url(&app, "alice").await?;

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
    let login = login_url(&app, "alice").await?;
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
    let login = login_url(&app, "alice").await?;
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

/// Empties a field and types `text` into it, as a user selecting its content and
/// typing over it would.
async fn retype(browser: &Browser, css: &str, text: &str) -> anyhow::Result<()> {
    let id = browser.find(css).await?;
    browser
        .call(
            reqwest::Method::POST,
            &format!("/element/{id}/clear"),
            json!({}),
        )
        .await?;
    browser.send_keys(css, text).await
}

/// Makes the page's viewport `width` x `height` CSS pixels, as on a phone (375 px
/// wide): chromium's device emulation, since a desktop window has a minimum width.
async fn phone_viewport(browser: &Browser, width: u32, height: u32) -> anyhow::Result<()> {
    browser
        .call(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            json!({"cmd": "Emulation.setDeviceMetricsOverride",
                   "params": {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": true}}),
        )
        .await
        .map(|_| ())
}

/// Inserts a delivery of `hook` (and its event) as the dispatcher would record it.
async fn insert_delivery(
    app: &TestApp,
    hook: &str,
    event_type: &str,
    status: &str,
) -> anyhow::Result<uuid::Uuid> {
    let event_id = uuid::Uuid::now_v7();
    let delivery_id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO events (id, user_id, event_type, payload, idempotency_key, accepted_at)
         VALUES ($1, 'alice', $2, '{}'::jsonb, $3, now())",
    )
    .bind(event_id)
    .bind(event_type)
    .bind(event_id.to_string())
    .execute(&app.pool)
    .await?;
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, webhook_id, event_id, user_id, event_type, status,
             attempts, max_retries, last_status_code, last_error)
         VALUES ($1, $2, $3, 'alice', $4, $5, 1, 5, 500, 'HTTP 500')",
    )
    .bind(delivery_id)
    .bind(hook.parse::<uuid::Uuid>()?)
    .bind(event_id)
    .bind(event_type)
    .bind(status)
    .execute(&app.pool)
    .await?;
    Ok(delivery_id)
}

/// In chromium, a user creates a webhook with the list page's form, changes its
/// retry policy, adds a custom header and replaces its value (the page shows only
/// `***`), and filters the delivery log by event type (kept in the URL). At phone
/// width (375 px) the page does not scroll sideways: its tables do, inside their
/// regions.
#[tokio::test]
async fn a_user_creates_and_edits_a_webhook_and_filters_its_log_in_a_browser() -> anyhow::Result<()>
{
    let Some(driver) = driver_path() else {
        return Ok(());
    };
    let app = TestApp::spawn_with(&[], &[ServiceKind::Gateway]).await?;
    let login = login_url(&app, "alice").await?;
    let browser = Browser::start(&driver).await?;
    let result = async {
        browser.goto(&login).await?;
        browser.wait_text("main h1", |t| t == "Webhooks").await?;
        browser
            .wait_text(".empty", |t| t.contains("Create one"))
            .await?;
        browser
            .send_keys("#new-url", "http://127.0.0.1:9/orders")
            .await?;
        browser.send_keys("#new-events", "order.*").await?;
        browser.send_keys("#new-description", "Order sync").await?;
        browser
            .click("form[action='/portal/webhooks'] button")
            .await?;
        browser
            .wait_text(".notice", |t| t.contains("Webhook created"))
            .await?;
        let url = browser.current_url().await?;
        let hook = url
            .split("/portal/webhooks/")
            .nth(1)
            .and_then(|rest| rest.split('?').next())
            .unwrap_or_default()
            .to_owned();
        assert_eq!(browser.text("main h1").await?, "Order sync");

        // The retry policy.
        retype(&browser, "#max-retries", "3").await?;
        retype(&browser, "#base-delay", "2000").await?;
        retype(&browser, "#max-delay", "1000").await?;
        browser
            .click("form[action$='/edit'] button[type=submit]")
            .await?;
        let message = browser
            .wait_text("#max-delay-error", |t| !t.is_empty())
            .await?;
        assert!(message.contains("must not be below"), "{message}");
        // The summary at the top of the page links to the field.
        let summary = browser
            .text("main > .error[role=alert] a[href='#max-delay']")
            .await?;
        assert_eq!(summary, message);
        browser.screenshot("webhook-settings-error").await?;
        retype(&browser, "#max-delay", "60000").await?;
        browser
            .click("form[action$='/edit'] button[type=submit]")
            .await?;
        browser.wait_text(".notice", |t| t == "Saved.").await?;
        browser
            .wait_text("#summary + dl", |t| {
                t.contains("3 retries, from 2000 ms to 60000 ms")
            })
            .await?;

        // A header: added, shown as ***, replaced.
        browser.send_keys("#header-name", "X-Api-Key").await?;
        browser
            .send_keys("#header-value", "first-secret-value")
            .await?;
        browser.click("form:has(#header-name) button").await?;
        browser
            .wait_text(".notice", |t| t.starts_with("Header saved"))
            .await?;
        let row = browser
            .text("section[aria-labelledby=headers] tbody tr")
            .await?;
        assert!(row.contains("X-Api-Key") && row.contains("***"), "{row}");
        browser
            .send_keys("#header-value-0", "second-secret-value")
            .await?;
        // The first save's notice is still on the page and says the same: remove it,
        // so the wait below sees the notice of the page this save leads to.
        browser
            .execute("document.querySelectorAll('.notice').forEach(n => n.remove())")
            .await?;
        browser
            .click("section[aria-labelledby=headers] tbody tr form button")
            .await?;
        browser
            .wait_text(".notice", |t| t.starts_with("Header saved"))
            .await?;
        let source = browser.source().await?;
        assert!(!source.contains("first-secret-value") && !source.contains("second-secret-value"));
        let api: Value = app
            .http
            .get(app.api(&format!("/webhooks/{hook}")))
            .bearer_auth(app.user_token("alice"))
            .send()
            .await?
            .json()
            .await?;
        assert_eq!(api["headers"], json!({"X-Api-Key": "second-secret-value"}));
        assert_eq!(api["retryPolicy"]["maxRetries"], 3);

        // The delivery log, filtered by event type.
        let created = insert_delivery(&app, &hook, "order.created", "failed").await?;
        let shipped = insert_delivery(&app, &hook, "order.shipped", "succeeded").await?;
        browser.refresh().await?;
        browser
            .wait_text(
                &format!("tr[data-delivery-id='{shipped}'] td.status"),
                |t| t == "succeeded",
            )
            .await?;
        browser.send_keys("#event-type", "order.created").await?;
        browser.click("form.filters button[type=submit]").await?;
        // The unfiltered page shows the same row: wait for the filtered page first.
        browser
            .wait_url(|u| u.contains("event_type=order.created"))
            .await?;
        browser
            .wait_text(
                &format!("tr[data-delivery-id='{created}'] td.status"),
                |t| t == "failed",
            )
            .await?;
        let shown = browser
            .execute(
                "return document.querySelectorAll('#deliveries tbody tr[data-delivery-id]').length",
            )
            .await?;
        assert_eq!(shown, json!(1));
        browser.screenshot("webhook-filtered").await?;

        // Phone width: nothing but the tables scrolls sideways.
        phone_viewport(&browser, 375, 812).await?;
        browser.refresh().await?;
        browser.wait_text("main h1", |t| t == "Order sync").await?;
        assert_eq!(
            browser.execute("return window.innerWidth").await?,
            json!(375)
        );
        let fits = browser
            .execute("return document.documentElement.scrollWidth <= window.innerWidth + 1")
            .await?;
        assert_eq!(fits, json!(true), "the page scrolls sideways at 375 px");
        browser
            .execute("document.getElementById('log').scrollIntoView()")
            .await?;
        browser.screenshot("webhook-phone").await?;
        anyhow::Ok(())
    }
    .await;
    browser.quit().await;
    result?;
    app.cleanup().await;
    Ok(())
}

/// A page on another origin (a loopback server of the test: same site by
/// `127.0.0.1`, cross-site by `localhost`) whose button posts a form to the portal,
/// as a forged cross-site request would.
async fn forging_site(target: String) -> anyhow::Result<(u16, tokio::task::JoinHandle<()>)> {
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><title>Win</title></head><body>\
         <form method=\"post\" action=\"{target}\"><input type=\"hidden\" name=\"csrf\" value=\"guessed\">\
         <button id=\"win\" type=\"submit\">Claim your prize</button></form></body></html>"
    );
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let page = page.clone();
            async move { axum::response::Html(page) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((port, task))
}

/// In chromium: a form on another site that posts to the portal (same-site from
/// another port, and cross-site) is refused and changes nothing; and a partner
/// signed in with its credentials cannot open the owner's webhook pages by URL.
#[tokio::test]
async fn forged_posts_are_refused_and_a_partner_cannot_reach_user_pages() -> anyhow::Result<()> {
    let Some(driver) = driver_path() else {
        return Ok(());
    };
    let app = TestApp::spawn_with(&[], &[ServiceKind::Gateway]).await?;
    let hook: Value = app
        .http
        .post(app.api("/webhooks"))
        .bearer_auth(app.user_token("alice"))
        .json(&json!({"url": "http://127.0.0.1:9/orders", "events": ["order.created"]}))
        .send()
        .await?
        .json()
        .await?;
    let hook = hook["id"].as_str().unwrap_or_default().to_owned();
    let created: Value = app
        .http
        .post(app.api("/integrations"))
        .bearer_auth(app.user_token("alice"))
        .json(&json!({"name": "Acme ERP", "type": "erp",
                      "scopes": ["bulk_orders:read", "bulk_orders:write", "webhooks:read"]}))
        .send()
        .await?
        .json()
        .await?;
    let key = created["credentials"]["apiKey"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let secret = created["credentials"]["apiSecret"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (port, server) =
        forging_site(format!("{}/portal/webhooks/{hook}/disable", app.base_url())).await?;
    let login = login_url(&app, "alice").await?;
    let active = || async {
        let body: Value = app
            .http
            .get(app.api(&format!("/webhooks/{hook}")))
            .bearer_auth(app.user_token("alice"))
            .send()
            .await?
            .json()
            .await?;
        anyhow::Ok(body["active"] == json!(true))
    };
    let browser = Browser::start(&driver).await?;
    let result = async {
        browser.goto(&login).await?;
        browser.wait_text("main h1", |t| t == "Webhooks").await?;
        // Same site (another port of 127.0.0.1): the cookie goes along, the token
        // does not match, 403.
        browser.goto(&format!("http://127.0.0.1:{port}/")).await?;
        browser.click("#win").await?;
        let message = browser
            .wait_text("main .error", |t| t.contains("CSRF"))
            .await?;
        assert!(message.contains("reload the page"), "{message}");
        browser.screenshot("forged-post-refused").await?;
        assert!(active().await?, "a forged POST disabled the webhook");
        // Cross-site (localhost): SameSite keeps the cookie home; no session, so the
        // portal asks to sign in and nothing changes.
        browser.goto(&format!("http://localhost:{port}/")).await?;
        browser.click("#win").await?;
        browser
            .wait_text("main h1", |t| {
                t == "Something needs fixing" || t == "Sign in"
            })
            .await?;
        assert!(active().await?, "a cross-site POST disabled the webhook");
        // Still signed in: the session was not disturbed.
        browser
            .goto(&format!("{}/portal/webhooks/{hook}", app.base_url()))
            .await?;
        browser.wait_text("#summary", |t| t == "Endpoint").await?;

        // A partner signs in with its credentials and cannot reach the user's pages.
        browser
            .goto(&format!("{}/portal/sign-in", app.base_url()))
            .await?;
        browser.send_keys("#api_key", &key).await?;
        browser.send_keys("#api_secret", &secret).await?;
        browser
            .click("form[action='/portal/sign-in'] button")
            .await?;
        // The sign-in page's own heading is there until the POST's answer replaces it:
        // wait for the partner's page itself.
        browser
            .wait_url(|at| at.ends_with("/portal/partner"))
            .await?;
        browser.wait_text("main h1", |t| !t.is_empty()).await?;
        browser
            .goto(&format!("{}/portal/webhooks/{hook}", app.base_url()))
            .await?;
        browser.wait_text("main h1", |t| t == "Not found").await?;
        let source = browser.source().await?;
        assert!(!source.contains("127.0.0.1:9/orders"));
        browser.screenshot("partner-refused").await?;
        browser
            .goto(&format!("{}/portal/webhooks", app.base_url()))
            .await?;
        assert!(browser.current_url().await?.ends_with("/portal/partner"));
        anyhow::Ok(())
    }
    .await;
    browser.quit().await;
    server.abort();
    result?;
    app.cleanup().await;
    Ok(())
}
