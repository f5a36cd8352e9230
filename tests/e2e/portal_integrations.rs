//! The portal's integration and events pages in a real browser (Debian's `chromium`
//! over WebDriver, `portico_e2e::browser`), against a real gateway:
//! - a user creates an integration from a template, sees its API key, secret and the
//!   webhook's signing secret once, the secret works, and after a reload they are gone;
//! - a published event appears on the events page, and the catalogue shows an
//!   example delivery.
//!
//! Screenshots go to `target/<profile>/portal-screenshots/`. Without chromium and
//! chromedriver the tests say so loudly and pass without running.

use std::time::Duration;

use portico_e2e::browser::{Browser, driver_path, login_url};
use portico_e2e::{SERVICE_TOKEN, ServiceKind, TestApp, wait_for};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A user creates an integration from the ERP template in the browser; the
/// credentials screen shows the API key, the secret and the webhook's signing secret
/// once, with copy buttons; the secret verifies and a partner call with it succeeds;
/// a reload shows them gone.
#[tokio::test]
async fn an_integration_from_a_template_shows_its_secret_once() -> anyhow::Result<()> {
    let Some(driver) = driver_path() else {
        return Ok(());
    };
    let app = TestApp::spawn_with(&[], &[ServiceKind::Gateway]).await?;
    let login = login_url(&app, "alice").await?;
    let browser = Browser::start(&driver).await?;
    let result = async {
        browser.goto(&login).await?;
        browser.wait_text("main h1", |t| t == "Webhooks").await?;
        browser.click("nav a[href='/portal/integrations']").await?;
        browser
            .wait_text("main h1", |t| t == "Integrations")
            .await?;
        browser
            .wait_text("main p.empty", |t| t.starts_with("No integrations yet"))
            .await?;
        browser
            .click("#tpl-key option[value='erp-read-only']")
            .await?;
        browser
            .send_keys("#tpl-webhook-url", "http://127.0.0.1:9/erp")
            .await?;
        browser.send_keys("#tpl-name", "Acme ERP").await?;
        browser.screenshot("integrations-new").await?;
        browser.click("#template-form button[type=submit]").await?;
        browser
            .wait_text("main h1", |t| t == "Credentials of Acme ERP")
            .await?;
        let key = browser.text("#api-key").await?;
        let secret = browser.text("#api-secret").await?;
        let webhook_secret = browser.text("#webhook-secret").await?;
        assert!(key.starts_with("ptk_"), "{key}");
        assert!(!secret.is_empty() && !webhook_secret.is_empty());
        browser.click("button[data-copy='api-secret']").await?;
        browser
            .wait_text("button[data-copy='api-secret']", |t| t != "Copy")
            .await?;
        browser.screenshot("integration-credentials").await?;

        // The secret is real: the owner's verify call and a partner call accept it.
        let verdict: Value = app
            .http
            .post(app.api("/integrations/verify"))
            .bearer_auth(app.user_token("alice"))
            .json(&json!({"apiKey": key, "apiSecret": secret}))
            .send()
            .await?
            .json()
            .await?;
        assert_eq!(verdict["valid"], json!(true), "{verdict}");
        let me = app
            .http
            .get(app.api("/integrations/me"))
            .basic_auth(&key, Some(&secret))
            .send()
            .await?;
        assert_eq!(me.status(), StatusCode::OK);

        // A reload shows nothing: the sealed cookie was cleared by the first render.
        browser.refresh().await?;
        browser
            .wait_text("#credentials-gone", |t| t.contains("shown once"))
            .await?;
        let source = browser.source().await?;
        assert!(!source.contains(&secret) && !source.contains(&webhook_secret));
        browser.screenshot("integration-credentials-gone").await?;

        // The integration's page: scopes and limits from the template, no secret.
        browser
            .click("main a[href^='/portal/integrations/']")
            .await?;
        browser.wait_text("main h1", |t| t == "Acme ERP").await?;
        let status = browser.text("dd.status").await?;
        assert_eq!(status, "active");
        assert!(!browser.source().await?.contains(&secret));
        browser.screenshot("integration-detail").await?;
        anyhow::Ok(())
    }
    .await;
    browser.quit().await;
    result?;
    app.cleanup().await;
    Ok(())
}

/// An event published for the user appears on the events page once the dispatcher
/// recorded it, and the catalogue shows an example delivery of its type.
#[tokio::test]
async fn the_events_page_lists_a_published_event_and_the_catalogue() -> anyhow::Result<()> {
    let Some(driver) = driver_path() else {
        return Ok(());
    };
    let app =
        TestApp::spawn_with(&[], &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher]).await?;
    let res = app
        .http
        .post(app.api("/events"))
        .bearer_auth(SERVICE_TOKEN)
        .header("x-portico-user-id", "alice")
        .json(
            &json!({"type": "order.created", "data": {"orderId": "ord_42", "total": "9.99"},
                      "idempotencyKey": "order:ord_42:created"}),
        )
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let published: Value = res.json().await?;
    let event_id: uuid::Uuid = published["id"].as_str().unwrap_or_default().parse()?;
    wait_for(Duration::from_secs(20), || {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events WHERE id = $1")
                .bind(event_id)
                .fetch_one(&pool)
                .await
                .is_ok_and(|n| n == 1)
        }
    })
    .await?;

    let login = login_url(&app, "alice").await?;
    let browser = Browser::start(&driver).await?;
    let result = async {
        browser.goto(&login).await?;
        browser.wait_text("main h1", |t| t == "Webhooks").await?;
        browser.click("nav a[href='/portal/events']").await?;
        browser.wait_text("main h1", |t| t == "Events").await?;
        let row = format!("tr[data-event-id='{event_id}']");
        browser
            .wait_text(&format!("{row} td.type"), |t| t == "order.created")
            .await?;
        let data = browser.text(&format!("{row} code.excerpt")).await?;
        assert!(data.contains("ord_42"), "{data}");
        browser.screenshot("events").await?;
        // The type links to its catalogue entry, whose example opens on request.
        browser.click(&format!("{row} td.type a")).await?;
        browser.click("[id='type-order.created'] summary").await?;
        let example = browser
            .wait_text("[id='type-order.created'] code.example", |t| {
                t.contains("\"type\": \"order.created\"")
            })
            .await?;
        assert!(example.contains("\"data\""), "{example}");
        browser.screenshot("event-catalogue").await?;
        anyhow::Ok(())
    }
    .await;
    browser.quit().await;
    result?;
    app.cleanup().await;
    Ok(())
}
