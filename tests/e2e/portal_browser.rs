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
