//! The partner portal over HTTP against a real gateway, PostgreSQL and JetStream:
//! login links (once, expiring, revocable), the session cookie's flags, CSRF refusals,
//! the security headers and pages without inline script, isolation between users, a
//! narrowed session and a partner's session, and the signing secret shown only on
//! reveal. The pages are read as HTML; the browser test is `portal_browser.rs`.

use std::time::Duration;

use portico_e2e::{ServiceKind, TestApp, wait_for};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

const FRAME_ANCESTORS: &str = "'self' https://app.example.com";

async fn gateway() -> anyhow::Result<TestApp> {
    TestApp::spawn_with(
        &[("PORTICO_PORTAL_FRAME_ANCESTORS", FRAME_ANCESTORS)],
        &[ServiceKind::Gateway],
    )
    .await
}

/// A browser-like client that does not follow redirects (the tests read them).
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client")
}

async fn create_webhook(app: &TestApp, user: &str, url: &str) -> anyhow::Result<String> {
    let res = app
        .http
        .post(app.api("/webhooks"))
        .bearer_auth(app.user_token(user))
        .json(&json!({"url": url, "events": ["order.created"]}))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await?;
    Ok(body["id"].as_str().unwrap_or_default().to_owned())
}

async fn login_link(app: &TestApp, user: &str, body: Option<Value>) -> anyhow::Result<Value> {
    let mut req = app
        .http
        .post(app.api("/portal/sessions"))
        .bearer_auth(app.user_token(user));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await?;
    assert_eq!(res.status(), StatusCode::CREATED);
    Ok(res.json().await?)
}

fn set_cookie_value(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

/// Opens the login link and returns the `portico_portal=...` cookie pair.
async fn sign_in(app: &TestApp, user: &str, body: Option<Value>) -> anyhow::Result<String> {
    let link = login_link(app, user, body).await?;
    let url = format!(
        "{}{}",
        app.base_url(),
        link["loginUrl"].as_str().unwrap_or_default()
    );
    let res = browser().get(url).send().await?;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let cookie = set_cookie_value(&res, "portico_portal").expect("a session cookie");
    Ok(cookie.split(';').next().unwrap_or_default().to_owned())
}

async fn page(app: &TestApp, cookie: &str, path: &str) -> anyhow::Result<(StatusCode, String)> {
    let res = browser()
        .get(format!("{}{path}", app.base_url()))
        .header(COOKIE, cookie)
        .send()
        .await?;
    Ok((res.status(), res.text().await?))
}

/// `application/x-www-form-urlencoded` text of `pairs`.
fn encode_form(pairs: &[(&str, &str)]) -> String {
    let enc = |v: &str| {
        v.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    char::from(b).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The value of the first hidden `csrf` input of a page.
fn csrf_of(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("a form with a CSRF token") + marker.len();
    html[start..]
        .split('"')
        .next()
        .unwrap_or_default()
        .to_owned()
}

async fn post_form(
    app: &TestApp,
    cookie: &str,
    path: &str,
    form: &[(&str, &str)],
) -> anyhow::Result<reqwest::Response> {
    Ok(browser()
        .post(format!("{}{path}", app.base_url()))
        .header(COOKIE, cookie)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(encode_form(form))
        .send()
        .await?)
}

async fn webhook_active(app: &TestApp, user: &str, id: &str) -> anyhow::Result<bool> {
    let body: Value = app
        .http
        .get(app.api(&format!("/webhooks/{id}")))
        .bearer_auth(app.user_token(user))
        .send()
        .await?
        .json()
        .await?;
    Ok(body["active"].as_bool().unwrap_or(false))
}

/// A login link signs in once: the cookie is HttpOnly, SameSite and scoped to
/// /portal, the redirect drops the token from the URL, and opening the link again
/// shows "not valid" without a cookie.
#[tokio::test]
async fn a_login_link_works_once_and_sets_a_safe_cookie() -> anyhow::Result<()> {
    let app = gateway().await?;
    let hook = create_webhook(&app, "alice", "http://127.0.0.1:9/alice").await?;
    let link = login_link(&app, "alice", None).await?;
    let url = format!(
        "{}{}",
        app.base_url(),
        link["loginUrl"].as_str().unwrap_or_default()
    );
    assert!(url.contains("/portal/login?token="), "{link}");
    let expires: chrono::DateTime<chrono::Utc> =
        link["expiresAt"].as_str().unwrap_or_default().parse()?;
    assert!(expires <= chrono::Utc::now() + chrono::Duration::minutes(15));

    let first = browser().get(&url).send().await?;
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    assert_eq!(first.headers()[LOCATION], "/portal/home");
    let cookie = set_cookie_value(&first, "portico_portal").expect("a session cookie");
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/portal"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP without TLS: {cookie}"
    );
    let pair = cookie.split(';').next().unwrap_or_default().to_owned();

    let (status, html) = page(&app, &pair, "/portal/webhooks").await?;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("http://127.0.0.1:9/alice"), "{html}");
    assert!(html.contains(&hook));

    let again = browser().get(&url).send().await?;
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie_value(&again, "portico_portal").is_none());

    // Only a hash of the token is stored.
    let token = url.split("token=").nth(1).unwrap_or_default();
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM portal_sessions WHERE position($1::bytea in coalesce(login_token_hash, ''::bytea)) > 0",
    )
    .bind(token.as_bytes())
    .fetch_one(&app.pool)
    .await?;
    assert_eq!(stored, 0);
    app.cleanup().await;
    Ok(())
}

/// Behind a TLS proxy (trusted X-Forwarded-Proto: https) the cookie is also Secure.
#[tokio::test]
async fn the_cookie_is_secure_behind_tls() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(
        &[("PORTICO_TRUST_FORWARDED_FOR", "true")],
        &[ServiceKind::Gateway],
    )
    .await?;
    let link = login_link(&app, "alice", None).await?;
    let res = browser()
        .get(format!(
            "{}{}",
            app.base_url(),
            link["loginUrl"].as_str().unwrap_or_default()
        ))
        .header("x-forwarded-proto", "https")
        .send()
        .await?;
    let cookie = set_cookie_value(&res, "portico_portal").expect("a session cookie");
    assert!(cookie.contains("; Secure"), "{cookie}");
    app.cleanup().await;
    Ok(())
}

/// A link past its expiry signs nobody in; a revoked session's cookie stops working.
#[tokio::test]
async fn expired_links_and_revoked_sessions_do_not_sign_in() -> anyhow::Result<()> {
    let app = gateway().await?;
    let link = login_link(&app, "alice", None).await?;
    sqlx::query("UPDATE portal_sessions SET login_expires_at = now() - interval '1 second'")
        .execute(&app.pool)
        .await?;
    let res = browser()
        .get(format!(
            "{}{}",
            app.base_url(),
            link["loginUrl"].as_str().unwrap_or_default()
        ))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    let link = login_link(&app, "alice", None).await?;
    let res = browser()
        .get(format!(
            "{}{}",
            app.base_url(),
            link["loginUrl"].as_str().unwrap_or_default()
        ))
        .send()
        .await?;
    let cookie = set_cookie_value(&res, "portico_portal").expect("a cookie");
    let pair = cookie.split(';').next().unwrap_or_default().to_owned();
    assert_eq!(
        page(&app, &pair, "/portal/webhooks").await?.0,
        StatusCode::OK
    );
    // Another user cannot revoke it.
    let id = link["id"].as_str().unwrap_or_default();
    let res = app
        .http
        .delete(app.api(&format!("/portal/sessions/{id}")))
        .bearer_auth(app.user_token("bob"))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = app
        .http
        .delete(app.api(&format!("/portal/sessions/{id}")))
        .bearer_auth(app.user_token("alice"))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = browser()
        .get(format!("{}/portal/webhooks", app.base_url()))
        .header(COOKIE, &pair)
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()[LOCATION], "/portal/sign-in");
    app.cleanup().await;
    Ok(())
}

/// A POST without the session's CSRF token (or with another's) is refused with 403
/// and changes nothing; with it, the action happens. Logout needs it too.
#[tokio::test]
async fn forms_without_the_csrf_token_are_refused() -> anyhow::Result<()> {
    let app = gateway().await?;
    let hook = create_webhook(&app, "alice", "http://127.0.0.1:9/a").await?;
    let cookie = sign_in(&app, "alice", None).await?;
    let other = sign_in(&app, "alice", None).await?;
    let (_, other_html) = page(&app, &other, "/portal/webhooks").await?;
    let path = format!("/portal/webhooks/{hook}/disable");

    let res = post_form(&app, &cookie, &path, &[]).await?;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = post_form(&app, &cookie, &path, &[("csrf", &csrf_of(&other_html))]).await?;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(webhook_active(&app, "alice", &hook).await?);
    let res = post_form(&app, &cookie, "/portal/logout", &[]).await?;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    let (_, html) = page(&app, &cookie, &format!("/portal/webhooks/{hook}")).await?;
    let res = post_form(&app, &cookie, &path, &[("csrf", &csrf_of(&html))]).await?;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(!webhook_active(&app, "alice", &hook).await?);

    // The sign-in form's double-submit token: a POST without the cookie is refused.
    let res = browser()
        .post(format!("{}/portal/sign-in", app.base_url()))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(encode_form(&[
            ("csrf", "x"),
            ("api_key", "k"),
            ("api_secret", "s"),
        ]))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    // Logout with the token ends the session.
    let res = post_form(
        &app,
        &cookie,
        "/portal/logout",
        &[("csrf", &csrf_of(&html))],
    )
    .await?;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        page(&app, &cookie, "/portal/webhooks").await?.0,
        StatusCode::SEE_OTHER
    );
    app.cleanup().await;
    Ok(())
}

/// Checks one served page: the security headers, and markup without inline script,
/// inline style or event-handler attributes.
fn assert_safe_page(path: &str, headers: &reqwest::header::HeaderMap, html: &str) {
    let csp = headers
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("{path}: no CSP"));
    for part in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        &format!("frame-ancestors {FRAME_ANCESTORS}"),
    ] {
        assert!(csp.contains(part), "{path}: {csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
    assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
    let lower = html.to_ascii_lowercase();
    let mut rest = lower.as_str();
    while let Some(i) = rest.find("<script") {
        let tag_end = rest[i..].find('>').map_or(rest.len(), |e| i + e);
        let tag = &rest[i..tag_end];
        assert!(tag.contains(" src=\""), "{path}: inline script {tag}");
        assert!(
            rest[tag_end..].starts_with("></script>"),
            "{path}: script with a body"
        );
        rest = &rest[tag_end..];
    }
    assert!(!lower.contains("<style"), "{path}: a style element");
    // Inside tags (escaped text has no '<'): no style or event-handler attributes and
    // no javascript: URLs.
    for tag in lower.split('<').skip(1).filter_map(|t| t.split('>').next()) {
        assert!(
            !tag.contains("javascript:"),
            "{path}: javascript: in <{tag}>"
        );
        // Attribute names only: quoted values are text (escaped).
        let tag: String = tag.split('"').step_by(2).collect::<Vec<_>>().join("\"\"");
        assert!(!tag.contains(" style="), "{path}: inline style in <{tag}>");
        assert!(
            !tag.contains("javascript:"),
            "{path}: javascript: in <{tag}>"
        );
        for (i, _) in tag.match_indices(" on") {
            let name: String = tag[i + 3..]
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            assert!(
                name.is_empty() || !tag[i + 3 + name.len()..].starts_with('='),
                "{path}: event handler on{name} in <{tag}>"
            );
        }
    }
}

/// Every page carries the strict CSP with the configured frame-ancestors, nosniff and
/// no-referrer, and none has inline script or style, including a page showing
/// hostile text from the database (escaped).
#[tokio::test]
async fn pages_have_a_strict_csp_and_no_inline_script() -> anyhow::Result<()> {
    let app = gateway().await?;
    let hook = create_webhook(&app, "alice", "http://127.0.0.1:9/x").await?;
    app.http
        .patch(app.api(&format!("/webhooks/{hook}")))
        .bearer_auth(app.user_token("alice"))
        .json(&json!({"description": "<script>alert(1)</script><img src=x onerror=alert(2)>"}))
        .send()
        .await?;
    let cookie = sign_in(&app, "alice", None).await?;
    for path in [
        "/portal/webhooks".to_owned(),
        format!("/portal/webhooks/{hook}"),
        "/portal/batches".to_owned(),
        "/portal/sign-in".to_owned(),
        "/portal/no-such-page".to_owned(),
        "/portal/login?token=nope".to_owned(),
    ] {
        let res = browser()
            .get(format!("{}{path}", app.base_url()))
            .header(COOKIE, &cookie)
            .send()
            .await?;
        let headers = res.headers().clone();
        let html = res.text().await?;
        assert_safe_page(&path, &headers, &html);
    }
    let (_, html) = page(&app, &cookie, &format!("/portal/webhooks/{hook}")).await?;
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    // The delivery charts are inline SVG from the analytics API.
    assert!(
        html.contains("Last 24 hours") && html.contains("<svg"),
        "{html}"
    );
    // The assets are served with their types.
    for (path, ty) in [
        ("/portal/assets/portal.js", "text/javascript"),
        ("/portal/assets/portal.css", "text/css"),
    ] {
        let res = browser()
            .get(format!("{}{path}", app.base_url()))
            .send()
            .await?;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers()[CONTENT_TYPE].to_str()?.starts_with(ty));
    }
    app.cleanup().await;
    Ok(())
}

/// User B's session cannot see or act on user A's webhook (404, nothing changes); a
/// session narrowed to one webhook sees only that one.
#[tokio::test]
async fn sessions_see_only_their_users_webhooks() -> anyhow::Result<()> {
    let app = gateway().await?;
    let a1 = create_webhook(&app, "alice", "http://127.0.0.1:9/a1").await?;
    let a2 = create_webhook(&app, "alice", "http://127.0.0.1:9/a2").await?;
    let bob = sign_in(&app, "bob", None).await?;
    let (status, html) = page(&app, &bob, &format!("/portal/webhooks/{a1}")).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!html.contains("127.0.0.1:9/a1"));
    let (_, list) = page(&app, &bob, "/portal/webhooks").await?;
    assert!(!list.contains("127.0.0.1:9/a1"));
    let csrf = csrf_of(&list);
    let res = post_form(
        &app,
        &bob,
        &format!("/portal/webhooks/{a1}/disable"),
        &[("csrf", &csrf)],
    )
    .await?;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(webhook_active(&app, "alice", &a1).await?);
    let res = post_form(
        &app,
        &bob,
        &format!("/portal/webhooks/{a1}/secret/reveal"),
        &[("csrf", &csrf)],
    )
    .await?;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    // Narrowed to a1: a2 is not there.
    let narrowed = sign_in(&app, "alice", Some(json!({"webhookIds": [a1]}))).await?;
    let (_, list) = page(&app, &narrowed, "/portal/webhooks").await?;
    assert!(
        list.contains("127.0.0.1:9/a1") && !list.contains("127.0.0.1:9/a2"),
        "{list}"
    );
    assert_eq!(
        page(&app, &narrowed, &format!("/portal/webhooks/{a2}"))
            .await?
            .0,
        StatusCode::NOT_FOUND
    );
    // A link cannot be narrowed to someone else's webhook.
    let res = app
        .http
        .post(app.api("/portal/sessions"))
        .bearer_auth(app.user_token("bob"))
        .json(&json!({"webhookIds": [a2]}))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    app.cleanup().await;
    Ok(())
}

/// The signing secret is not in the page until the user asks to reveal it; the
/// revealed secret is the API's.
#[tokio::test]
async fn the_secret_is_shown_only_on_reveal() -> anyhow::Result<()> {
    let app = gateway().await?;
    let hook = create_webhook(&app, "alice", "http://127.0.0.1:9/s").await?;
    let secret: Value = app
        .http
        .get(app.api(&format!("/webhooks/{hook}/secret")))
        .bearer_auth(app.user_token("alice"))
        .send()
        .await?
        .json()
        .await?;
    let secret = secret["secret"].as_str().unwrap_or_default().to_owned();
    assert!(secret.starts_with("whsec_"));
    let cookie = sign_in(&app, "alice", None).await?;
    let (_, html) = page(&app, &cookie, &format!("/portal/webhooks/{hook}")).await?;
    assert!(!html.contains(&secret) && !html.contains("whsec_"));
    let res = post_form(
        &app,
        &cookie,
        &format!("/portal/webhooks/{hook}/secret/reveal"),
        &[("csrf", &csrf_of(&html))],
    )
    .await?;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await?.contains(&secret));
    let (_, again) = page(&app, &cookie, &format!("/portal/webhooks/{hook}")).await?;
    assert!(!again.contains("whsec_"));
    app.cleanup().await;
    Ok(())
}

/// A failed delivery is retried from the portal: the button posts, the delivery is
/// scheduled again (no longer failed), as the API shows.
#[tokio::test]
async fn a_failed_delivery_is_retried_from_the_portal() -> anyhow::Result<()> {
    let app = gateway().await?;
    let hook = create_webhook(&app, "alice", "http://127.0.0.1:9/r").await?;
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
    .bind(hook.parse::<uuid::Uuid>()?)
    .bind(event_id)
    .execute(&app.pool)
    .await?;
    let cookie = sign_in(&app, "alice", None).await?;
    let (_, html) = page(
        &app,
        &cookie,
        &format!("/portal/webhooks/{hook}?status=failed"),
    )
    .await?;
    let retry = format!("/portal/webhooks/{hook}/deliveries/{delivery_id}/retry");
    assert!(html.contains(&retry), "{html}");
    let res = post_form(&app, &cookie, &retry, &[("csrf", &csrf_of(&html))]).await?;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let pool = app.pool.clone();
    wait_for(Duration::from_secs(5), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT status FROM webhook_deliveries WHERE id = $1")
                .bind(delivery_id)
                .fetch_one(&pool)
                .await
                .is_ok_and(|s| s != "failed")
        }
    })
    .await?;
    app.cleanup().await;
    Ok(())
}

/// A partner signs in with its integration's key and secret and sees its integration
/// and its own batches only: the owner's webhooks and a batch the owner submitted are
/// 404; a wrong secret does not sign in.
#[tokio::test]
async fn a_partner_sees_only_its_integrations_data() -> anyhow::Result<()> {
    let app = gateway().await?;
    let hook = create_webhook(&app, "alice", "http://127.0.0.1:9/p").await?;
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
        .unwrap_or_default();
    let secret = created["credentials"]["apiSecret"]
        .as_str()
        .unwrap_or_default();
    let order = json!({"clientOrderRef": "P-1", "currency": "EUR",
        "customer": {"email": "ada@example.com", "name": "Ada"},
        "shippingAddress": {"line1": "1 Main St", "city": "Berlin", "postalCode": "10115", "country": "DE"},
        "lineItems": [{"sku": "SKU-1", "quantity": 1, "unitPrice": "1.00"}]});
    let mine: Value = app
        .http
        .post(app.api("/bulk-orders"))
        .basic_auth(key, Some(secret))
        .json(&json!({"orders": [order]}))
        .send()
        .await?
        .json()
        .await?;
    let owners: Value = app
        .http
        .post(app.api("/bulk-orders"))
        .bearer_auth(app.user_token("alice"))
        .json(&json!({"orders": [order]}))
        .send()
        .await?
        .json()
        .await?;
    let mine = mine["id"].as_str().unwrap_or_default();
    let owners = owners["id"].as_str().unwrap_or_default();
    assert!(!mine.is_empty() && !owners.is_empty());

    // The sign-in form sets its double-submit cookie.
    let form = browser()
        .get(format!("{}/portal/sign-in", app.base_url()))
        .send()
        .await?;
    let pre = set_cookie_value(&form, "portico_portal_signin").expect("a form cookie");
    let pre = pre.split(';').next().unwrap_or_default().to_owned();
    let csrf = csrf_of(&form.text().await?);
    let wrong = browser()
        .post(format!("{}/portal/sign-in", app.base_url()))
        .header(COOKIE, &pre)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(encode_form(&[
            ("csrf", csrf.as_str()),
            ("api_key", key),
            ("api_secret", "pk_wrong"),
        ]))
        .send()
        .await?;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie_value(&wrong, "portico_portal").is_none());
    let res = browser()
        .post(format!("{}/portal/sign-in", app.base_url()))
        .header(COOKIE, &pre)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(encode_form(&[
            ("csrf", csrf.as_str()),
            ("api_key", key),
            ("api_secret", secret),
        ]))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()[LOCATION], "/portal/partner");
    let cookie = set_cookie_value(&res, "portico_portal").expect("a session");
    let cookie = cookie.split(';').next().unwrap_or_default().to_owned();

    let (status, html) = page(&app, &cookie, "/portal/partner").await?;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Acme ERP") && !html.contains(secret));
    let (_, batches) = page(&app, &cookie, "/portal/batches").await?;
    assert!(
        batches.contains(mine) && !batches.contains(owners),
        "{batches}"
    );
    assert_eq!(
        page(&app, &cookie, &format!("/portal/batches/{mine}"))
            .await?
            .0,
        StatusCode::OK
    );
    assert_eq!(
        page(&app, &cookie, &format!("/portal/batches/{owners}"))
            .await?
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        page(
            &app,
            &cookie,
            &format!("/portal/batches/{owners}/download?format=csv")
        )
        .await?
        .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        page(&app, &cookie, &format!("/portal/webhooks/{hook}"))
            .await?
            .0,
        StatusCode::NOT_FOUND
    );
    // The partner's own download is the API's CSV.
    let res = browser()
        .get(format!(
            "{}/portal/batches/{mine}/download?format=csv",
            app.base_url()
        ))
        .header(COOKIE, &cookie)
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()[CONTENT_TYPE]
            .to_str()?
            .starts_with("text/csv")
    );
    // A partner cannot ask for login links.
    let res = app
        .http
        .post(app.api("/portal/sessions"))
        .basic_auth(key, Some(secret))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    app.cleanup().await;
    Ok(())
}

/// Inserts a delivery of `hook` (and its event) in `status`, created `age_minutes`
/// ago, as the dispatcher would have recorded it; returns its id.
async fn insert_delivery(
    app: &TestApp,
    hook: &str,
    event_type: &str,
    status: &str,
    age_minutes: i32,
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
             attempts, max_retries, last_status_code, last_error, created_at)
         VALUES ($1, $2, $3, 'alice', $4, $5, 1, 5, 500, 'HTTP 500',
                 now() - make_interval(mins => $6))",
    )
    .bind(delivery_id)
    .bind(hook.parse::<uuid::Uuid>()?)
    .bind(event_id)
    .bind(event_type)
    .bind(status)
    .bind(age_minutes)
    .execute(&app.pool)
    .await?;
    Ok(delivery_id)
}

/// One start tag of a page: its name and attributes (the portal's builder writes
/// every value double-quoted and escaped, so `<`, `>` and `"` never occur inside).
#[derive(Debug)]
struct Tag {
    name: String,
    attrs: Vec<(String, String)>,
}

impl Tag {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The start and end tags of a page, in order (end tags as `/name`).
fn tags(html: &str) -> Vec<Tag> {
    let mut out = Vec::new();
    for chunk in html.split('<').skip(1) {
        let Some(inner) = chunk.split('>').next() else {
            continue;
        };
        let (name, rest) = match inner.strip_prefix('/') {
            Some(end) => (format!("/{}", end.trim().to_ascii_lowercase()), ""),
            None => {
                let len = inner
                    .find(|c: char| c.is_whitespace() || c == '/')
                    .unwrap_or(inner.len());
                (inner[..len].to_ascii_lowercase(), &inner[len..])
            }
        };
        let mut attrs = Vec::new();
        let mut rest = rest.trim_start();
        while !rest.is_empty() && rest != "/" {
            let key: String = rest
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '=')
                .collect();
            if key.is_empty() {
                break;
            }
            rest = &rest[key.len()..];
            let value = if let Some(after) = rest.strip_prefix("=\"") {
                let end = after.find('"').unwrap_or(after.len());
                let v = after[..end].to_owned();
                rest = after.get(end + 1..).unwrap_or("");
                v
            } else {
                String::new()
            };
            attrs.push((key.to_ascii_lowercase(), value));
            rest = rest.trim_start();
        }
        out.push(Tag { name, attrs });
    }
    out
}

/// The accessibility rules every portal page keeps: one `h1` and one `main`
/// landmark, a language, every control labelled (a `label for`, an enclosing label
/// or `aria-label`), unique ids, table headers with a scope, and progress bars with
/// `role="progressbar"` and a current value.
fn assert_accessible(path: &str, html: &str) {
    let tags = tags(html);
    let count = |name: &str| tags.iter().filter(|t| t.name == name).count();
    assert_eq!(count("h1"), 1, "{path}: one h1");
    assert_eq!(count("main"), 1, "{path}: one main landmark");
    assert!(
        tags.iter()
            .any(|t| t.name == "html" && t.attr("lang").is_some_and(|l| !l.is_empty())),
        "{path}: <html lang>"
    );
    let labelled_ids: Vec<&str> = tags
        .iter()
        .filter(|t| t.name == "label")
        .filter_map(|t| t.attr("for"))
        .collect();
    let mut ids = std::collections::HashSet::new();
    let mut in_label = 0usize;
    for t in &tags {
        if let Some(id) = t.attr("id") {
            assert!(ids.insert(id.to_owned()), "{path}: id {id} twice");
        }
        match t.name.as_str() {
            "label" => in_label += 1,
            "/label" => in_label = in_label.saturating_sub(1),
            "input" | "select" | "textarea" => {
                let kind = t.attr("type").unwrap_or("text");
                if t.name == "input" && matches!(kind, "hidden" | "submit" | "button" | "reset") {
                    continue;
                }
                let labelled = in_label > 0
                    || t.attr("aria-label").is_some_and(|l| !l.is_empty())
                    || t.attr("aria-labelledby").is_some()
                    || t.attr("id").is_some_and(|id| labelled_ids.contains(&id));
                assert!(labelled, "{path}: an unlabelled control {t:?}");
            }
            "th" => assert!(t.attr("scope").is_some(), "{path}: <th> without scope"),
            "progress" => {
                assert_eq!(t.attr("role"), Some("progressbar"), "{path}: {t:?}");
                assert!(t.attr("aria-valuenow").is_some(), "{path}: {t:?}");
            }
            _ => {}
        }
    }
    // Every label points at a control of the page.
    for id in labelled_ids {
        assert!(ids.contains(id), "{path}: a label for the missing id {id}");
    }
}

/// The portal's own links of a page (no assets, downloads, or the login link).
fn portal_links(html: &str) -> Vec<String> {
    tags(html)
        .iter()
        .filter(|t| t.name == "a")
        .filter_map(|t| t.attr("href"))
        .map(|h| h.replace("&amp;", "&"))
        .filter(|h| h.starts_with("/portal/"))
        .filter(|h| {
            !h.starts_with("/portal/assets")
                && !h.contains("/download")
                && !h.starts_with("/portal/login")
        })
        .collect()
}

/// Opens every page reachable by links from `start` (up to `limit` pages) and checks
/// each for its accessibility rules and security headers; returns the paths seen.
async fn crawl(
    app: &TestApp,
    cookie: &str,
    start: &[&str],
    limit: usize,
) -> anyhow::Result<Vec<String>> {
    let mut queue: std::collections::VecDeque<String> =
        start.iter().map(|s| (*s).to_owned()).collect();
    let mut seen: Vec<String> = Vec::new();
    while let Some(path) = queue.pop_front() {
        if seen.contains(&path) || seen.len() >= limit {
            continue;
        }
        let res = browser()
            .get(format!("{}{path}", app.base_url()))
            .header(COOKIE, cookie)
            .send()
            .await?;
        if res.status().is_redirection() {
            seen.push(path);
            if let Some(to) = res.headers().get(LOCATION).and_then(|v| v.to_str().ok()) {
                queue.push_back(to.to_owned());
            }
            continue;
        }
        let headers = res.headers().clone();
        let html = res.text().await?;
        assert_safe_page(&path, &headers, &html);
        assert_accessible(&path, &html);
        queue.extend(portal_links(&html));
        seen.push(path);
    }
    Ok(seen)
}

/// Signs a partner in through the sign-in form; returns its session cookie pair.
async fn partner_cookie(app: &TestApp, key: &str, secret: &str) -> anyhow::Result<String> {
    let form = browser()
        .get(format!("{}/portal/sign-in", app.base_url()))
        .send()
        .await?;
    let pre = set_cookie_value(&form, "portico_portal_signin").expect("a form cookie");
    let pre = pre.split(';').next().unwrap_or_default().to_owned();
    let csrf = csrf_of(&form.text().await?);
    let res = browser()
        .post(format!("{}/portal/sign-in", app.base_url()))
        .header(COOKIE, &pre)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(encode_form(&[
            ("csrf", csrf.as_str()),
            ("api_key", key),
            ("api_secret", secret),
        ]))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let cookie = set_cookie_value(&res, "portico_portal").expect("a partner session");
    Ok(cookie.split(';').next().unwrap_or_default().to_owned())
}

/// Every page a user or a partner can reach, and the pages of refused forms and
/// errors, has one h1 and one main landmark, and every input on it has a label
/// (plus unique ids, scoped table headers and labelled progress bars).
#[tokio::test]
async fn every_page_is_labelled_and_has_one_h1_and_main() -> anyhow::Result<()> {
    let app = gateway().await?;
    let hook = create_webhook(&app, "alice", "http://127.0.0.1:9/a11y").await?;
    let res = app
        .http
        .patch(app.api(&format!("/webhooks/{hook}")))
        .bearer_auth(app.user_token("alice"))
        .json(&json!({"headers": {"X-Api-Key": "k1", "X-Tenant": "t1"}}))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    insert_delivery(&app, &hook, "order.created", "failed", 5).await?;
    insert_delivery(&app, &hook, "order.created", "succeeded", 1).await?;
    let created: Value = app
        .http
        .post(app.api("/integrations"))
        .bearer_auth(app.user_token("alice"))
        .json(&json!({"name": "Acme ERP", "type": "erp",
                      "scopes": ["bulk_orders:read", "bulk_orders:write"]}))
        .send()
        .await?
        .json()
        .await?;
    let key = created["credentials"]["apiKey"]
        .as_str()
        .unwrap_or_default();
    let secret = created["credentials"]["apiSecret"]
        .as_str()
        .unwrap_or_default();
    let order = json!({"clientOrderRef": "A-1", "currency": "EUR",
        "customer": {"email": "ada@example.com", "name": "Ada"},
        "shippingAddress": {"line1": "1 Main St", "city": "Berlin", "postalCode": "10115", "country": "DE"},
        "lineItems": [{"sku": "SKU-1", "quantity": 1, "unitPrice": "1.00"}]});
    let res = app
        .http
        .post(app.api("/bulk-orders"))
        .basic_auth(key, Some(secret))
        .json(&json!({"orders": [order]}))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::ACCEPTED);

    let cookie = sign_in(&app, "alice", None).await?;
    let seen = crawl(&app, &cookie, &["/portal/home", "/portal/batches"], 40).await?;
    for must in [
        "/portal/webhooks".to_owned(),
        format!("/portal/webhooks/{hook}"),
        "/portal/batches".to_owned(),
    ] {
        assert!(seen.contains(&must), "{must} not reached: {seen:?}");
    }
    assert!(
        seen.iter().any(|p| p.contains("/deliveries/")),
        "a delivery page: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|p| p.starts_with("/portal/batches/") && p.len() > 20),
        "a batch page: {seen:?}"
    );
    // Pages without a session, error pages and refused forms.
    for path in [
        "/portal/sign-in",
        "/portal/login?token=nope",
        "/portal/no-such-page",
    ] {
        let (_, html) = page(&app, &cookie, path).await?;
        assert_accessible(path, &html);
    }
    let (_, html) = page(
        &app,
        &cookie,
        &format!("/portal/webhooks/{hook}?from=yesterday"),
    )
    .await?;
    assert_accessible("a refused filter", &html);
    let csrf = csrf_of(&html);
    let res = post_form(
        &app,
        &cookie,
        &format!("/portal/webhooks/{hook}/edit"),
        &[
            ("csrf", &csrf),
            ("url", "nope"),
            ("events", ""),
            ("max_retries", "x"),
        ],
    )
    .await?;
    assert_accessible("refused settings", &res.text().await?);
    let res = post_form(
        &app,
        &cookie,
        "/portal/webhooks",
        &[("csrf", &csrf), ("url", "")],
    )
    .await?;
    assert_accessible("a refused create form", &res.text().await?);

    let partner = partner_cookie(&app, key, secret).await?;
    let seen = crawl(&app, &partner, &["/portal/home"], 20).await?;
    assert!(seen.contains(&"/portal/partner".to_owned()), "{seen:?}");
    app.cleanup().await;
    Ok(())
}

async fn webhook_json(app: &TestApp, id: &str) -> anyhow::Result<Value> {
    Ok(app
        .http
        .get(app.api(&format!("/webhooks/{id}")))
        .bearer_auth(app.user_token("alice"))
        .send()
        .await?
        .json()
        .await?)
}

/// The settings form changes the retry policy and throughput limits through the
/// application layer; refused values come back next to their fields and change
/// nothing. Header values are never rendered (only `***`), can be replaced (in any
/// letter case) and removed; a reserved name is refused next to the name field and
/// the typed value is not put back into the page. The list page creates a webhook.
#[tokio::test]
async fn settings_headers_and_create_forms_show_errors_beside_their_fields() -> anyhow::Result<()> {
    let app = gateway().await?;
    let hook = create_webhook(&app, "alice", "http://127.0.0.1:9/settings").await?;
    let cookie = sign_in(&app, "alice", None).await?;
    let detail = format!("/portal/webhooks/{hook}");
    let (_, html) = page(&app, &cookie, &detail).await?;
    let csrf = csrf_of(&html);
    let edit = format!("{detail}/edit");
    let settings = |retries: &'static str, base: &'static str, max: &'static str| {
        vec![
            ("url", "http://127.0.0.1:9/settings"),
            ("events", "order.created, order.*"),
            ("description", ""),
            ("max_retries", retries),
            ("base_delay_ms", base),
            ("max_delay_ms", max),
            ("rate_limit", "5"),
            ("max_concurrency", ""),
        ]
    };
    let before = webhook_json(&app, &hook).await?["retryPolicy"].clone();

    let mut form = settings("99", "abc", "60000");
    form.push(("csrf", &csrf));
    let res = post_form(&app, &cookie, &edit, &form).await?;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let html = res.text().await?;
    assert!(
        html.contains("id=\"max-retries\"") && html.contains("value=\"99\""),
        "{html}"
    );
    let err = |id: &str| {
        let marker = format!("id=\"{id}-error\">");
        html.find(&marker).map(|i| {
            html[i + marker.len()..]
                .split('<')
                .next()
                .unwrap_or("")
                .to_owned()
        })
    };
    assert!(
        err("max-retries").is_some_and(|m| m.contains("between 0 and 20")),
        "{html}"
    );
    assert!(
        err("base-delay").is_some_and(|m| m.contains("whole number")),
        "{html}"
    );
    assert!(html.contains("aria-invalid=\"true\""));
    assert_eq!(webhook_json(&app, &hook).await?["retryPolicy"], before);

    let mut form = settings("3", "2000", "1000");
    form.push(("csrf", &csrf));
    let res = post_form(&app, &cookie, &edit, &form).await?;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let html = res.text().await?;
    assert!(html.contains("id=\"max-delay-error\""), "{html}");

    let mut form = settings("3", "1000", "60000");
    form.push(("csrf", &csrf));
    let res = post_form(&app, &cookie, &edit, &form).await?;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let saved = webhook_json(&app, &hook).await?;
    assert_eq!(
        saved["retryPolicy"],
        json!({"maxRetries": 3, "baseDelayMs": 1000, "maxDelayMs": 60000})
    );
    assert_eq!(saved["rateLimitPerSecond"], 5);
    assert_eq!(saved["events"], json!(["order.created", "order.*"]));

    // Headers: values never in a page.
    let headers = format!("{detail}/headers");
    let set = |name: &'static str, value: &'static str| {
        vec![("op", "set"), ("name", name), ("value", value)]
    };
    let mut form = set("X-Api-Key", "s3cr3t-value-1");
    form.push(("csrf", &csrf));
    assert_eq!(
        post_form(&app, &cookie, &headers, &form).await?.status(),
        StatusCode::SEE_OTHER
    );
    let (_, html) = page(&app, &cookie, &detail).await?;
    assert!(html.contains("X-Api-Key") && html.contains("***"), "{html}");
    assert!(!html.contains("s3cr3t-value-1"));
    assert_eq!(
        webhook_json(&app, &hook).await?["headers"],
        json!({"X-Api-Key": "s3cr3t-value-1"})
    );
    let mut form = set("x-api-key", "s3cr3t-value-2");
    form.push(("csrf", &csrf));
    post_form(&app, &cookie, &headers, &form).await?;
    assert_eq!(
        webhook_json(&app, &hook).await?["headers"],
        json!({"x-api-key": "s3cr3t-value-2"})
    );
    let mut form = set("Host", "leak-me-not");
    form.push(("csrf", &csrf));
    let res = post_form(&app, &cookie, &headers, &form).await?;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let html = res.text().await?;
    assert!(
        html.contains("id=\"header-name-error\"") && html.contains("reserved"),
        "{html}"
    );
    assert!(!html.contains("leak-me-not") && !html.contains("s3cr3t-value-2"));
    let res = post_form(
        &app,
        &cookie,
        &headers,
        &[("csrf", &csrf), ("op", "remove"), ("name", "x-api-key")],
    )
    .await?;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(webhook_json(&app, &hook).await?["headers"], json!({}));
    // Without the CSRF token nothing changes.
    let res = post_form(&app, &cookie, &headers, &set("X-Other", "v")).await?;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    // Create: refused with messages beside the fields, then created.
    let res = post_form(
        &app,
        &cookie,
        "/portal/webhooks",
        &[("csrf", &csrf), ("url", "ftp://nope"), ("events", "")],
    )
    .await?;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let html = res.text().await?;
    assert!(
        html.contains("id=\"new-url-error\"") && html.contains("id=\"new-events-error\""),
        "{html}"
    );
    assert!(html.contains("value=\"ftp://nope\""));
    let res = post_form(
        &app,
        &cookie,
        "/portal/webhooks",
        &[
            ("csrf", &csrf),
            ("url", "http://127.0.0.1:9/created"),
            ("events", "order.created"),
        ],
    )
    .await?;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let location = res.headers()[LOCATION].to_str()?.to_owned();
    assert!(location.ends_with("?done=created"), "{location}");
    let (status, html) = page(&app, &cookie, &location).await?;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("http://127.0.0.1:9/created"));
    app.cleanup().await;
    Ok(())
}

/// The delivery log filters by status, event type and a time range given in the
/// query string; the filter is kept in the form and in the table's data for live
/// rows; an unreadable time is refused next to its field.
#[tokio::test]
async fn the_delivery_log_filters_by_status_event_type_and_time() -> anyhow::Result<()> {
    let app = gateway().await?;
    let hook = create_webhook(&app, "alice", "http://127.0.0.1:9/log").await?;
    let old_created = insert_delivery(&app, &hook, "order.created", "failed", 120).await?;
    let shipped = insert_delivery(&app, &hook, "order.shipped", "succeeded", 60).await?;
    let new_created = insert_delivery(&app, &hook, "order.created", "succeeded", 1).await?;
    let cookie = sign_in(&app, "alice", None).await?;
    let base = format!("/portal/webhooks/{hook}");
    let shows = |html: &str, id: uuid::Uuid| html.contains(&format!("data-delivery-id=\"{id}\""));

    let (_, html) = page(&app, &cookie, &format!("{base}?event_type=order.created")).await?;
    assert!(shows(&html, old_created) && shows(&html, new_created) && !shows(&html, shipped));
    assert!(
        html.contains("data-filter-event-type=\"order.created\""),
        "{html}"
    );

    let (_, html) = page(
        &app,
        &cookie,
        &format!("{base}?status=succeeded&event_type=order.created"),
    )
    .await?;
    assert!(!shows(&html, old_created) && shows(&html, new_created) && !shows(&html, shipped));

    let now = chrono::Utc::now();
    let from = (now - chrono::Duration::minutes(90))
        .format("%Y-%m-%dT%H:%M")
        .to_string();
    let to = (now - chrono::Duration::minutes(30))
        .format("%Y-%m-%dT%H:%M")
        .to_string();
    let (status, html) = page(&app, &cookie, &format!("{base}?from={from}&to={to}")).await?;
    assert_eq!(status, StatusCode::OK);
    assert!(!shows(&html, old_created) && shows(&html, shipped) && !shows(&html, new_created));
    assert!(html.contains(&format!("value=\"{from}:00\"")), "{html}");

    let (_, html) = page(&app, &cookie, &format!("{base}?event_type=order.refunded")).await?;
    assert!(html.contains("No delivery matches this filter"), "{html}");

    let (status, html) = page(&app, &cookie, &format!("{base}?from=yesterday")).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("id=\"from-error\""), "{html}");
    let (status, html) = page(&app, &cookie, &format!("{base}?from={to}&to={from}")).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("id=\"to-error\""), "{html}");
    app.cleanup().await;
    Ok(())
}

/// An integration created over the API for `user`: its id and credentials.
async fn api_integration(app: &TestApp, user: &str) -> anyhow::Result<(String, String, String)> {
    let res = app
        .http
        .post(app.api("/integrations"))
        .bearer_auth(app.user_token(user))
        .json(&json!({"name": "Acme ERP", "type": "erp",
                      "scopes": ["bulk_orders:read", "webhooks:read"]}))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = res.json().await?;
    let field = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    Ok((
        field(&created["id"]),
        field(&created["credentials"]["apiKey"]),
        field(&created["credentials"]["apiSecret"]),
    ))
}

/// Another user's integration is 404 on every integration page and action, as over
/// the API; a partner signed in with an integration's credentials reaches none of
/// the user's integration pages, nor the account's events (the catalogue only).
#[tokio::test]
async fn integration_pages_are_the_owners_alone() -> anyhow::Result<()> {
    let app = gateway().await?;
    let (id, key, secret) = api_integration(&app, "alice").await?;
    let alice = sign_in(&app, "alice", None).await?;
    let (status, html) = page(&app, &alice, "/portal/integrations").await?;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains(&format!("href=\"/portal/integrations/{id}\"")),
        "{html}"
    );
    let (status, html) = page(&app, &alice, &format!("/portal/integrations/{id}")).await?;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(&key) && !html.contains(&secret), "{html}");

    let bob = sign_in(&app, "bob", None).await?;
    let (status, html) = page(&app, &bob, "/portal/integrations").await?;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !html.contains(&id) && html.contains("No integrations yet"),
        "{html}"
    );
    let bob_csrf = csrf_of(&html);
    for path in [
        format!("/portal/integrations/{id}"),
        format!("/portal/integrations/{id}/credentials"),
    ] {
        let (status, html) = page(&app, &bob, &path).await?;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(!html.contains(&key), "{path}");
    }
    let res = post_form(
        &app,
        &bob,
        &format!("/portal/integrations/{id}/regenerate"),
        &[("csrf", &bob_csrf), ("grace_seconds", "0")],
    )
    .await?;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = post_form(
        &app,
        &bob,
        &format!("/portal/integrations/{id}/active"),
        &[("csrf", &bob_csrf), ("active", "false")],
    )
    .await?;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    let partner = partner_cookie(&app, &key, &secret).await?;
    for path in [
        "/portal/integrations".to_owned(),
        format!("/portal/integrations/{id}"),
        format!("/portal/integrations/{id}/credentials"),
    ] {
        let (status, _) = page(&app, &partner, &path).await?;
        assert_eq!(status, StatusCode::NOT_FOUND, "partner: {path}");
    }
    let (status, html) = page(&app, &partner, "/portal/events").await?;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("does not show the account") && html.contains("id=\"type-order.created\"")
    );
    assert!(
        !html.contains("href=\"/portal/integrations\""),
        "no nav link for partners"
    );

    // Nothing of alice's changed.
    let verdict: Value = app
        .http
        .post(app.api("/integrations/verify"))
        .bearer_auth(app.user_token("alice"))
        .json(&json!({"apiKey": key, "apiSecret": secret}))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(verdict["valid"], json!(true));
    app.cleanup().await;
    Ok(())
}

/// Every integration POST without the session's CSRF token is refused with 403 and
/// changes nothing: no integration is created, no credentials are regenerated.
#[tokio::test]
async fn integration_forms_without_the_csrf_token_are_refused() -> anyhow::Result<()> {
    let app = gateway().await?;
    let (id, key, secret) = api_integration(&app, "alice").await?;
    let alice = sign_in(&app, "alice", None).await?;
    let base = format!("/portal/integrations/{id}");
    let attempts: [(String, Vec<(&str, &str)>); 5] = [
        (
            "/portal/integrations".to_owned(),
            vec![
                ("name", "Forged"),
                ("type", "custom"),
                ("scope", "orders:read"),
            ],
        ),
        (
            "/portal/integrations/from-template".to_owned(),
            vec![
                ("template", "erp-read-only"),
                ("webhook_url", "http://127.0.0.1:9/x"),
            ],
        ),
        (
            format!("{base}/edit"),
            vec![
                ("name", "Forged"),
                ("rate_limit_per_second", "1"),
                ("daily_quota", "1"),
            ],
        ),
        (format!("{base}/active"), vec![("active", "false")]),
        (format!("{base}/regenerate"), vec![("grace_seconds", "0")]),
    ];
    for (path, form) in &attempts {
        for csrf in [None, Some("forged-token")] {
            let mut fields = form.clone();
            if let Some(c) = csrf {
                fields.push(("csrf", c));
            }
            let res = post_form(&app, &alice, path, &fields).await?;
            assert_eq!(res.status(), StatusCode::FORBIDDEN, "{path} with {csrf:?}");
        }
    }
    let list: Value = app
        .http
        .get(app.api("/integrations"))
        .bearer_auth(app.user_token("alice"))
        .send()
        .await?
        .json()
        .await?;
    let items = list["data"].as_array();
    assert_eq!(items.map(Vec::len), Some(1), "{list}");
    assert_eq!(items.and_then(|i| i[0]["name"].as_str()), Some("Acme ERP"));
    assert_eq!(items.and_then(|i| i[0]["active"].as_bool()), Some(true));
    let verdict: Value = app
        .http
        .post(app.api("/integrations/verify"))
        .bearer_auth(app.user_token("alice"))
        .json(&json!({"apiKey": key, "apiSecret": secret}))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(verdict["valid"], json!(true), "the old secret still works");
    app.cleanup().await;
    Ok(())
}

/// Created from scratch in the portal (two scopes ticked), the credentials page shows
/// the secret once: the redirect carries it only sealed in a cookie that the page
/// clears, so the same page opened again says they are gone. The secret works.
/// Regenerating shows a new secret once, and the old one keeps working for the
/// chosen grace period.
#[tokio::test]
async fn new_credentials_are_shown_once_and_work() -> anyhow::Result<()> {
    let app = gateway().await?;
    let alice = sign_in(&app, "alice", None).await?;
    let (_, html) = page(&app, &alice, "/portal/integrations").await?;
    let csrf = csrf_of(&html);
    let res = post_form(
        &app,
        &alice,
        "/portal/integrations",
        &[
            ("csrf", &csrf),
            ("name", "Warehouse"),
            ("type", "shipping"),
            ("scope", "orders:read"),
            ("scope", "bulk_orders:read"),
            ("rate_limit_per_second", ""),
            ("daily_quota", "5000"),
        ],
    )
    .await?;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let location = res.headers()[LOCATION].to_str()?.to_owned();
    assert!(location.ends_with("/credentials"), "{location}");
    let reveal = set_cookie_value(&res, "portico_portal_credentials").expect("a sealed cookie");
    assert!(
        reveal.contains("HttpOnly") && reveal.contains("Max-Age=120"),
        "{reveal}"
    );
    let reveal = reveal.split(';').next().unwrap_or_default().to_owned();
    assert!(
        !reveal.contains("ptk_"),
        "the cookie holds the credentials sealed: {reveal}"
    );

    let both = format!("{alice}; {reveal}");
    let res = browser()
        .get(format!("{}{location}", app.base_url()))
        .header(COOKIE, &both)
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    let cleared = set_cookie_value(&res, "portico_portal_credentials").expect("cleared");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let html = res.text().await?;
    let code = |id: &str| {
        let marker = format!("<code id=\"{id}\">");
        html.split(&marker)
            .nth(1)
            .and_then(|rest| rest.split('<').next())
            .unwrap_or_default()
            .to_owned()
    };
    let (key, secret) = (code("api-key"), code("api-secret"));
    assert!(!key.is_empty() && !secret.is_empty(), "{html}");
    assert!(html.contains("data-copy=\"api-secret\""));

    // The browser honours the cleared cookie: the page now says they are gone.
    let (status, again) = page(&app, &alice, &location).await?;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !again.contains(&secret) && again.contains("credentials-gone"),
        "{again}"
    );
    // A sealed cookie opens only for its session: alice's other session gets nothing.
    let other = sign_in(&app, "alice", None).await?;
    let stolen = browser()
        .get(format!("{}{location}", app.base_url()))
        .header(COOKIE, format!("{other}; {reveal}"))
        .send()
        .await?;
    assert_eq!(stolen.status(), StatusCode::OK);
    let stolen = stolen.text().await?;
    assert!(!stolen.contains(&secret) && stolen.contains("credentials-gone"));

    let verify = |key: String, secret: String| {
        let app = &app;
        async move {
            let v: Value = app
                .http
                .post(app.api("/integrations/verify"))
                .bearer_auth(app.user_token("alice"))
                .json(&json!({"apiKey": key, "apiSecret": secret}))
                .send()
                .await?
                .json()
                .await?;
            anyhow::Ok(v)
        }
    };
    let verdict = verify(key.clone(), secret.clone()).await?;
    assert_eq!(verdict["valid"], json!(true), "{verdict}");
    let scopes = verdict["scopes"].as_array().cloned().unwrap_or_default();
    assert_eq!(scopes.len(), 2, "{verdict}");
    assert!(scopes.contains(&json!("orders:read")) && scopes.contains(&json!("bulk_orders:read")));

    // Regenerate with a one-hour grace: a new secret, once; the old one still works.
    let id = location
        .trim_start_matches("/portal/integrations/")
        .trim_end_matches("/credentials")
        .to_owned();
    let res = post_form(
        &app,
        &alice,
        &format!("/portal/integrations/{id}/regenerate"),
        &[("csrf", &csrf), ("grace_seconds", "3600")],
    )
    .await?;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let reveal = set_cookie_value(&res, "portico_portal_credentials").expect("a sealed cookie");
    let reveal = reveal.split(';').next().unwrap_or_default().to_owned();
    let html = browser()
        .get(format!("{}{location}", app.base_url()))
        .header(COOKIE, format!("{alice}; {reveal}"))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        html.contains("previous credentials keep working until"),
        "{html}"
    );
    assert!(!html.contains(&secret), "the old secret is not shown");
    let new_secret = html
        .split("<code id=\"api-secret\">")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .unwrap_or_default()
        .to_owned();
    let new_key = html
        .split("<code id=\"api-key\">")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(verify(new_key, new_secret).await?["valid"], json!(true));
    assert_eq!(
        verify(key, secret).await?["valid"],
        json!(true),
        "in its grace period"
    );
    app.cleanup().await;
    Ok(())
}
