//! Partner integrations and API credentials: owners manage integrations over REST and
//! gRPC; partners authenticate with HTTP Basic `apiKey:apiSecret`, within scopes,
//! rate limits and quotas; every partner call lands in the usage log; rotations take
//! effect on every gateway replica at once.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use portico_e2e::{SERVICE_TOKEN, ServiceKind, TestApp, assert_problem, wait_for};
use reqwest::StatusCode;
use serde_json::{Value, json};

const OWNER: &str = "user-owner";
const STRANGER: &str = "user-stranger";

fn as_user(app: &TestApp, req: reqwest::RequestBuilder, user: &str) -> reqwest::RequestBuilder {
    req.bearer_auth(app.user_token(user))
}

fn basic(key: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{key}:{secret}")))
}

/// Gateway only: most scenarios need no worker.
async fn gateway_only() -> anyhow::Result<TestApp> {
    TestApp::spawn_with(&[], &[ServiceKind::Gateway]).await
}

/// Creates an integration for `user` and returns the 201 body.
async fn create(app: &TestApp, user: &str, body: Value) -> anyhow::Result<Value> {
    let res = as_user(app, app.http.post(app.api("/integrations")), user)
        .json(&body)
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::CREATED);
    Ok(res.json().await?)
}

fn keys(created: &Value) -> (String, String) {
    (
        created["credentials"]["apiKey"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        created["credentials"]["apiSecret"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// A partner call to `GET {base}/api/integrations/me`.
async fn partner_me(
    app: &TestApp,
    base: &str,
    key: &str,
    secret: &str,
) -> anyhow::Result<reqwest::Response> {
    Ok(app
        .http
        .get(format!("{base}/api/integrations/me"))
        .header("authorization", basic(key, secret))
        .send()
        .await?)
}

/// A 400 whose single field error has `code` at `path`.
async fn assert_field_error(res: reqwest::Response, code: &str, path: &str) -> anyhow::Result<()> {
    let body = assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await?;
    assert_eq!(body["errors"][0]["code"], code, "{body}");
    assert_eq!(body["errors"][0]["path"], path, "{body}");
    Ok(())
}

async fn usage_rows(app: &TestApp, integration_id: &str) -> i64 {
    let Ok(id) = integration_id.parse::<uuid::Uuid>() else {
        return -1;
    };
    sqlx::query_scalar("SELECT count(*) FROM integration_usage_logs WHERE integration_id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap_or(-1)
}

async fn wait_for_usage_rows(app: &TestApp, integration_id: &str, n: i64) -> anyhow::Result<()> {
    wait_for(Duration::from_secs(10), || async {
        usage_rows(app, integration_id).await == n
    })
    .await
}

/// A valid integration is created with prefixed credentials shown once: the key is
/// `ptk_` + 24 characters, the secret `pts_` + 38, the defaults are filled in, and
/// PostgreSQL holds only a 32-byte keyed hash, never the secret itself.
#[tokio::test]
async fn creates_an_integration_whose_secret_is_shown_once_and_stored_hashed() -> anyhow::Result<()>
{
    let app = gateway_only().await?;
    let created = create(
        &app,
        OWNER,
        json!({"name": "Acme ERP", "type": "erp", "webhookUrl": "http://127.0.0.1:9/erp-hooks"}),
    )
    .await?;
    assert_eq!(created["name"], "Acme ERP");
    assert_eq!(created["type"], "erp");
    assert_eq!(created["webhookUrl"], "http://127.0.0.1:9/erp-hooks");
    assert_eq!(
        created["scopes"],
        json!(["bulk_orders:write", "bulk_orders:read", "orders:read"])
    );
    assert_eq!(created["active"], true);
    assert_eq!(created["rateLimitPerSecond"], 50);
    assert_eq!(created["dailyQuota"], 0);
    assert!(created["expiresAt"].is_null() && created["lastUsedAt"].is_null());
    assert!(created["createdAt"].is_string() && created["updatedAt"].is_string());
    let (key, secret) = keys(&created);
    assert!(key.starts_with("ptk_") && key.len() == 28, "{key}");
    assert!(secret.starts_with("pts_") && secret.len() == 42, "{secret}");
    assert!(key[4..].chars().all(|c| c.is_ascii_alphanumeric()));
    assert!(secret[4..].chars().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(created["apiKey"], key.as_str());

    let id = created["id"].as_str().unwrap_or_default().to_owned();
    let fetched: Value = as_user(
        &app,
        app.http.get(app.api(&format!("/integrations/{id}"))),
        OWNER,
    )
    .send()
    .await?
    .json()
    .await?;
    assert_eq!(fetched["apiKey"], key.as_str());
    assert!(fetched.get("credentials").is_none() && !fetched.to_string().contains(&secret));

    // Stored as 'P', the pepper id's length, the pepper id, then the 32-byte
    // HMAC-SHA256 (portico_signing::keyed_hash::Peppers::hash).
    let (hash_len, leaks): (i32, i64) = sqlx::query_as(
        "SELECT length(c.secret_hash) - 2 - get_byte(c.secret_hash, 1),
                (SELECT count(*) FROM integrations i
                  WHERE position($2 in i::text) > 0 OR position($2 in c::text) > 0
                     OR position($2 in encode(c.secret_hash, 'escape')) > 0)
         FROM integration_credentials c WHERE c.api_key = $1",
    )
    .bind(&key)
    .bind(&secret)
    .fetch_one(&app.pool)
    .await?;
    assert_eq!((hash_len, leaks), (32, 0));
    app.cleanup().await;
    Ok(())
}

/// Bad input gets a clear error naming the field, and creates nothing: an invalid
/// webhook URL, an unknown type, an unknown scope, a blank name, a past expiry, an
/// unknown field, a non-UUID id.
#[tokio::test]
async fn invalid_input_is_refused_with_clear_errors() -> anyhow::Result<()> {
    let app = gateway_only().await?;
    let post = |body: Value| {
        as_user(&app, app.http.post(app.api("/integrations")), OWNER)
            .json(&body)
            .send()
    };
    for url in [
        "not a url",
        "ftp://example.com/x",
        "https://user:pw@example.com/",
    ] {
        let res = post(json!({"name": "x", "type": "erp", "webhookUrl": url})).await?;
        assert_field_error(res, "invalid_url", "/webhookUrl").await?;
    }
    let res = post(json!({"name": "x", "type": "crm"})).await?;
    assert_field_error(res, "invalid_type", "/type").await?;
    let res = post(json!({"name": "x", "type": "erp", "scopes": ["orders:read", "admin"]})).await?;
    assert_field_error(res, "invalid_scope", "/scopes/1").await?;
    let res = post(json!({"name": "  ", "type": "erp"})).await?;
    assert_field_error(res, "invalid_name", "/name").await?;
    let res =
        post(json!({"name": "x", "type": "erp", "expiresAt": "2001-01-01T00:00:00Z"})).await?;
    assert_field_error(res, "invalid_expiry", "/expiresAt").await?;
    let res = post(json!({"name": "x", "type": "erp", "colour": "red"})).await?;
    assert_problem(res, StatusCode::BAD_REQUEST, "malformed_body").await?;
    let res = as_user(
        &app,
        app.http.get(app.api("/integrations/not-a-uuid")),
        OWNER,
    )
    .send()
    .await?;
    assert_field_error(res, "invalid_id", "/id").await?;
    let res = as_user(
        &app,
        app.http
            .patch(app.api(&format!("/integrations/{}", uuid::Uuid::nil()))),
        OWNER,
    )
    .json(&json!({"type": "crm"}))
    .send()
    .await?;
    assert_field_error(res, "invalid_type", "/type").await?;

    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM integrations")
        .fetch_one(&app.pool)
        .await?;
    assert_eq!(count, 0);
    app.cleanup().await;
    Ok(())
}

/// A webhook URL passes the same SSRF guard as a webhook's, on create and on update:
/// with an empty allowlist, loopback (also as an IPv4-translated IPv6 address),
/// metadata, private and 6to4-wrapped private addresses are refused with
/// forbidden_address at /webhookUrl and nothing is written. (The test gateway, which
/// allowlists loopback, accepts loopback URLs in the other tests.)
#[tokio::test]
async fn webhook_url_passes_the_ssrf_guard_on_create_and_update() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(
        &[("PORTICO_WEBHOOK_ALLOWLIST", "")],
        &[ServiceKind::Gateway],
    )
    .await?;
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM integrations")
            .fetch_one(&app.pool)
            .await
            .unwrap_or(-1)
    };
    let forbidden = [
        ("http://127.0.0.1:9/x", "loopback"),
        ("http://[::ffff:0:127.0.0.1]/x", "loopback"),
        ("http://169.254.169.254/latest", "metadata"),
        ("http://10.0.0.1/", "private"),
        ("http://[2002:a00:1::1]/", "private"),
    ];
    for (url, reason) in forbidden {
        let res = as_user(&app, app.http.post(app.api("/integrations")), OWNER)
            .json(&json!({"name": "x", "type": "erp", "webhookUrl": url}))
            .send()
            .await?;
        let body = assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await?;
        assert_eq!(
            body["errors"][0]["code"], "forbidden_address",
            "{url}: {body}"
        );
        assert_eq!(body["errors"][0]["path"], "/webhookUrl", "{url}: {body}");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(reason),
            "{url}: {body}"
        );
    }
    assert_eq!(count().await, 0);

    let created = create(&app, OWNER, json!({"name": "no url", "type": "erp"})).await?;
    let url = app.api(&format!(
        "/integrations/{}",
        created["id"].as_str().unwrap_or_default()
    ));
    for (forbidden_url, _) in forbidden {
        let res = as_user(&app, app.http.patch(&url), OWNER)
            .json(&json!({"webhookUrl": forbidden_url, "name": "renamed"}))
            .send()
            .await?;
        assert_field_error(res, "forbidden_address", "/webhookUrl").await?;
    }
    let got: Value = as_user(&app, app.http.get(&url), OWNER)
        .send()
        .await?
        .json()
        .await?;
    assert!(got["webhookUrl"].is_null(), "{got}");
    assert_eq!(got["name"], "no url");
    app.cleanup().await;
    Ok(())
}

/// An owner lists (newest first, paginated), filters by type, reads, updates and
/// deletes integrations; a deactivated integration's credentials are refused at once,
/// and a deleted one's stop working.
#[tokio::test]
async fn lists_filters_gets_updates_and_deletes() -> anyhow::Result<()> {
    let app = gateway_only().await?;
    let first = create(&app, OWNER, json!({"name": "one", "type": "erp"})).await?;
    let second = create(&app, OWNER, json!({"name": "two", "type": "shipping"})).await?;
    let third = create(&app, OWNER, json!({"name": "three", "type": "erp"})).await?;
    let list = |query: &str| {
        as_user(
            &app,
            app.http.get(app.api(&format!("/integrations{query}"))),
            OWNER,
        )
        .send()
    };
    let all: Value = list("").await?.json().await?;
    let names: Vec<&str> = all["data"]
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["three", "two", "one"]);
    assert!(all["nextCursor"].is_null());
    let erp: Value = list("?type=erp").await?.json().await?;
    assert_eq!(erp["data"].as_array().map(Vec::len), Some(2));
    assert!(
        erp["data"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|i| i["type"] == "erp")
    );
    assert_field_error(list("?type=crm").await?, "invalid_type", "/type").await?;
    let page1: Value = list("?limit=2").await?.json().await?;
    assert_eq!(page1["data"].as_array().map(Vec::len), Some(2));
    let cursor = page1["nextCursor"].as_str().unwrap_or_default().to_owned();
    let page2: Value = list(&format!("?limit=2&cursor={cursor}"))
        .await?
        .json()
        .await?;
    assert_eq!(page2["data"][0]["id"], first["id"]);
    assert!(page2["nextCursor"].is_null());

    let id = second["id"].as_str().unwrap_or_default();
    let url = app.api(&format!("/integrations/{id}"));
    let got: Value = as_user(&app, app.http.get(&url), OWNER)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        (got["name"].as_str(), got["type"].as_str()),
        (Some("two"), Some("shipping"))
    );
    let updated = as_user(&app, app.http.patch(&url), OWNER)
        .json(&json!({"name": "two (renamed)", "type": "marketplace", "webhookUrl": "http://127.0.0.1:9/m",
                      "scopes": ["webhooks:read"], "rateLimitPerSecond": 7, "dailyQuota": 1000}))
        .send()
        .await?;
    assert_eq!(updated.status(), StatusCode::OK);
    let updated: Value = updated.json().await?;
    assert_eq!(updated["name"], "two (renamed)");
    assert_eq!(updated["type"], "marketplace");
    assert_eq!(updated["webhookUrl"], "http://127.0.0.1:9/m");
    assert_eq!(updated["scopes"], json!(["webhooks:read"]));
    assert_eq!(
        (
            updated["rateLimitPerSecond"].as_u64(),
            updated["dailyQuota"].as_u64()
        ),
        (Some(7), Some(1000))
    );
    let cleared: Value = as_user(&app, app.http.patch(&url), OWNER)
        .json(&json!({"webhookUrl": null}))
        .send()
        .await?
        .json()
        .await?;
    assert!(cleared["webhookUrl"].is_null());
    assert_eq!(cleared["name"], "two (renamed)");

    // Deactivation applies at once to credentials that were just used (and cached).
    let (key, secret) = keys(&second);
    assert_eq!(
        partner_me(&app, &app.base_url(), &key, &secret)
            .await?
            .status(),
        StatusCode::OK
    );
    as_user(&app, app.http.patch(&url), OWNER)
        .json(&json!({"active": false}))
        .send()
        .await?;
    let body = assert_problem(
        partner_me(&app, &app.base_url(), &key, &secret).await?,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await?;
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("deactivated"),
        "{body}"
    );

    // Delete: 204, then 404, and its credentials stop working.
    let (key3, secret3) = keys(&third);
    let third_url = app.api(&format!(
        "/integrations/{}",
        third["id"].as_str().unwrap_or("")
    ));
    assert_eq!(
        partner_me(&app, &app.base_url(), &key3, &secret3)
            .await?
            .status(),
        StatusCode::OK
    );
    let res = as_user(&app, app.http.delete(&third_url), OWNER)
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = as_user(&app, app.http.get(&third_url), OWNER)
        .send()
        .await?;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await?;
    let res = as_user(&app, app.http.delete(&third_url), OWNER)
        .send()
        .await?;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await?;
    assert_problem(
        partner_me(&app, &app.base_url(), &key3, &secret3).await?,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await?;
    app.cleanup().await;
    Ok(())
}

/// Another user's integration answers 404 on every route (never 403, never data),
/// never appears in their list, and its credentials do not verify for them.
#[tokio::test]
async fn another_users_integration_is_invisible() -> anyhow::Result<()> {
    let app = gateway_only().await?;
    let created = create(&app, OWNER, json!({"name": "mine", "type": "custom"})).await?;
    let id = created["id"].as_str().unwrap_or_default();
    let base = format!("/integrations/{id}");
    for req in [
        app.http.get(app.api(&base)),
        app.http
            .patch(app.api(&base))
            .json(&json!({"name": "stolen"})),
        app.http.delete(app.api(&base)),
        app.http
            .post(app.api(&format!("{base}/regenerate-credentials")))
            .json(&json!({})),
        app.http.get(app.api(&format!("{base}/usage"))),
    ] {
        let res = as_user(&app, req, STRANGER).send().await?;
        assert_problem(res, StatusCode::NOT_FOUND, "not_found").await?;
    }
    let list: Value = as_user(&app, app.http.get(app.api("/integrations")), STRANGER)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(list["data"], json!([]));
    let (key, secret) = keys(&created);
    let verdict: Value = as_user(
        &app,
        app.http.post(app.api("/integrations/verify")),
        STRANGER,
    )
    .json(&json!({"apiKey": key, "apiSecret": secret}))
    .send()
    .await?
    .json()
    .await?;
    assert_eq!(verdict, json!({"valid": false}));
    // Still intact for its owner.
    let mine: Value = as_user(&app, app.http.get(app.api(&base)), OWNER)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(mine["name"], "mine");
    app.cleanup().await;
    Ok(())
}

/// The verify endpoint says valid with the integration and its scopes for the
/// owner's current credentials, and `valid: false` for a wrong or garbage secret;
/// only a missing field is an error.
#[tokio::test]
async fn verify_endpoint_answers_valid_or_not() -> anyhow::Result<()> {
    let app = gateway_only().await?;
    let created = create(
        &app,
        OWNER,
        json!({"name": "v", "type": "accounting", "scopes": ["orders:read"]}),
    )
    .await?;
    let (key, secret) = keys(&created);
    let verify = |body: Value| {
        app.http
            .post(app.api("/integrations/verify"))
            .bearer_auth(SERVICE_TOKEN)
            .header("x-portico-user-id", OWNER)
            .json(&body)
            .send()
    };
    let ok: Value = verify(json!({"apiKey": key, "apiSecret": secret}))
        .await?
        .json()
        .await?;
    assert_eq!(
        ok,
        json!({"valid": true, "integrationId": created["id"], "scopes": ["orders:read"]})
    );
    let other = well_formed_foreign_secret();
    for wrong in [other.as_str(), "pts_garbage", "nonsense"] {
        let res: Value = verify(json!({"apiKey": key, "apiSecret": wrong}))
            .await?
            .json()
            .await?;
        assert_eq!(res, json!({"valid": false}), "{wrong}");
    }
    let res = verify(json!({"apiKey": key})).await?;
    assert_problem(res, StatusCode::BAD_REQUEST, "malformed_body").await?;
    let res = verify(json!({"apiKey": "", "apiSecret": ""})).await?;
    assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await?;
    app.cleanup().await;
    Ok(())
}

/// A well-formed secret (right prefix, length and checksum) that belongs to no one.
fn well_formed_foreign_secret() -> String {
    // CRC32 over the random part, base62, 6 characters: computed the documented way.
    let random = "A".repeat(32);
    let mut crc = 0xFFFF_FFFFu32;
    for b in random.bytes() {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                0xEDB8_8320 ^ (crc >> 1)
            } else {
                crc >> 1
            };
        }
    }
    let mut value = crc ^ 0xFFFF_FFFF;
    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut checksum = [b'0'; 6];
    for slot in checksum.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    format!("pts_{random}{}", String::from_utf8_lossy(&checksum))
}

/// A partner authenticates with HTTP Basic and acts for the integration's owner:
/// `GET /api/integrations/me` (and `/api/v1/...`) shows its integration and scopes.
/// It cannot manage integrations (403), and a route needing a scope it lacks is a
/// 403 too: a write-only integration cannot read even its own usage.
#[tokio::test]
async fn partners_act_within_their_scopes() -> anyhow::Result<()> {
    let app = gateway_only().await?;
    let created = create(&app, OWNER, json!({"name": "p", "type": "marketplace"})).await?;
    let (key, secret) = keys(&created);
    for prefix in ["/api", "/api/v1"] {
        let res = app
            .http
            .get(format!("{}{prefix}/integrations/me", app.base_url()))
            .header("authorization", basic(&key, &secret))
            .send()
            .await?;
        assert_eq!(res.status(), StatusCode::OK);
        let me: Value = res.json().await?;
        assert_eq!(me["id"], created["id"]);
        assert_eq!(me["scopes"], created["scopes"]);
        assert!(me["usageToday"]["total"].is_u64());
    }
    let res = app
        .http
        .get(app.api("/integrations"))
        .header("authorization", basic(&key, &secret))
        .send()
        .await?;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await?;
    let res = app
        .http
        .get(app.api("/integrations/me/usage"))
        .header("authorization", basic(&key, &secret))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);

    let write_only = create(
        &app,
        OWNER,
        json!({"name": "w", "type": "erp", "scopes": ["bulk_orders:write"]}),
    )
    .await?;
    let (wkey, wsecret) = keys(&write_only);
    let res = app
        .http
        .get(app.api("/integrations/me/usage"))
        .header("authorization", basic(&wkey, &wsecret))
        .send()
        .await?;
    let body = assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await?;
    assert!(
        body["detail"].as_str().unwrap_or("").contains("read scope"),
        "{body}"
    );
    assert_eq!(
        partner_me(&app, &app.base_url(), &wkey, &wsecret)
            .await?
            .status(),
        StatusCode::OK
    );
    // A user calling the partners-only route is refused too.
    let res = as_user(&app, app.http.get(app.api("/integrations/me")), OWNER)
        .send()
        .await?;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await?;
    // The 403s were partner calls: they are in the usage log.
    let wid = write_only["id"].as_str().unwrap_or_default();
    wait_for_usage_rows(&app, wid, 2).await?;
    app.cleanup().await;
    Ok(())
}

/// Malformed credentials headers get a 401 problem saying what is wrong, without a
/// database lookup: not base64, no colon, a malformed key, a secret with a bad
/// checksum. A wrong secret for a real key is a 401 too, and that attempt is logged
/// in the key's usage log.
#[tokio::test]
async fn bad_credentials_get_401_and_wrong_secrets_are_logged() -> anyhow::Result<()> {
    let app = gateway_only().await?;
    let created = create(&app, OWNER, json!({"name": "c", "type": "custom"})).await?;
    let (key, secret) = keys(&created);
    let mut tampered = secret.clone().into_bytes();
    tampered[10] = if tampered[10] == b'a' { b'b' } else { b'a' };
    let tampered = String::from_utf8(tampered)?;
    let call = |authorization: String| {
        app.http
            .get(app.api("/integrations/me"))
            .header("authorization", authorization)
            .send()
    };
    for (header, needle) in [
        ("Basic !!!not-base64!!!".to_owned(), "not base64"),
        (
            format!("Basic {}", STANDARD.encode("no-colon-here")),
            "no colon",
        ),
        (basic("key_123", &secret), "not a Portico key"),
        (basic(&key, "pts_short"), "not a Portico secret"),
        (basic(&key, &tampered), "checksum"),
    ] {
        let body = assert_problem(
            call(header.clone()).await?,
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        )
        .await?;
        assert!(
            body["detail"].as_str().unwrap_or("").contains(needle),
            "{header}: {body}"
        );
    }
    let wrong = well_formed_foreign_secret();
    let body = assert_problem(
        call(basic(&key, &wrong)).await?,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await?;
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("invalid API key or secret"),
        "{body}"
    );
    let id = created["id"].as_str().unwrap_or_default();
    wait_for_usage_rows(&app, id, 1).await?;
    let (status, route): (i32, String) = sqlx::query_as(
        "SELECT status, route FROM integration_usage_logs WHERE integration_id = $1",
    )
    .bind(id.parse::<uuid::Uuid>()?)
    .fetch_one(&app.pool)
    .await?;
    assert_eq!((status, route.as_str()), (401, "/api/integrations/me"));
    // A failed attempt does not count as use.
    let got: Value = as_user(
        &app,
        app.http.get(app.api(&format!("/integrations/{id}"))),
        OWNER,
    )
    .send()
    .await?
    .json()
    .await?;
    assert!(got["lastUsedAt"].is_null());
    app.cleanup().await;
    Ok(())
}

/// Regenerating issues new credentials that work at once; the old ones keep working
/// through the grace period (default 24 h), stop at once with a grace of 0, and stop
/// after a short grace has passed, each with a clear 401.
#[tokio::test]
async fn regenerated_credentials_honour_the_grace_period() -> anyhow::Result<()> {
    let app = gateway_only().await?;
    let created = create(&app, OWNER, json!({"name": "r", "type": "shipping"})).await?;
    let id = created["id"].as_str().unwrap_or_default();
    let regenerate = |body: Option<Value>| {
        let req = as_user(
            &app,
            app.http
                .post(app.api(&format!("/integrations/{id}/regenerate-credentials"))),
            OWNER,
        );
        match body {
            Some(b) => req.json(&b).send(),
            None => req.send(),
        }
    };
    let base = app.base_url();
    let (k0, s0) = keys(&created);
    assert_eq!(
        partner_me(&app, &base, &k0, &s0).await?.status(),
        StatusCode::OK
    );

    // Default grace: both work.
    let res = regenerate(None).await?;
    assert_eq!(res.status(), StatusCode::OK);
    let r1: Value = res.json().await?;
    let (k1, s1) = keys(&r1);
    assert!(k1.starts_with("ptk_") && s1.starts_with("pts_") && k1 != k0 && s1 != s0);
    assert_eq!(r1["apiKey"], k1.as_str());
    let until =
        chrono::DateTime::parse_from_rfc3339(r1["previousSecretExpiresAt"].as_str().unwrap_or(""))?;
    let grace = until
        .signed_duration_since(chrono::Utc::now())
        .num_seconds();
    assert!((86_000..=86_400).contains(&grace), "{grace}");
    assert_eq!(
        partner_me(&app, &base, &k1, &s1).await?.status(),
        StatusCode::OK
    );
    assert_eq!(
        partner_me(&app, &base, &k0, &s0).await?.status(),
        StatusCode::OK
    );

    // Grace 0: every previous secret is revoked at once.
    let r2: Value = regenerate(Some(json!({"gracePeriodSeconds": 0})))
        .await?
        .json()
        .await?;
    assert!(r2.get("previousSecretExpiresAt").is_none());
    let (k2, s2) = keys(&r2);
    assert_eq!(
        partner_me(&app, &base, &k2, &s2).await?.status(),
        StatusCode::OK
    );
    for (k, s) in [(&k1, &s1), (&k0, &s0)] {
        let body = assert_problem(
            partner_me(&app, &base, k, s).await?,
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        )
        .await?;
        assert!(
            body["detail"].as_str().unwrap_or("").contains("revoked"),
            "{body}"
        );
    }

    // A one-second grace: the old secret works now and is refused once it passed.
    let r3: Value = regenerate(Some(json!({"gracePeriodSeconds": 1})))
        .await?
        .json()
        .await?;
    let (k3, s3) = keys(&r3);
    assert_eq!(
        partner_me(&app, &base, &k3, &s3).await?.status(),
        StatusCode::OK
    );
    wait_for(Duration::from_secs(5), || async {
        partner_me(&app, &base, &k2, &s2)
            .await
            .map(|r| r.status() == StatusCode::UNAUTHORIZED)
            .unwrap_or(false)
    })
    .await?;
    let body = assert_problem(
        partner_me(&app, &base, &k2, &s2).await?,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await?;
    assert!(
        body["detail"].as_str().unwrap_or("").contains("expired"),
        "{body}"
    );
    assert_eq!(
        partner_me(&app, &base, &k3, &s3).await?.status(),
        StatusCode::OK
    );

    let res = regenerate(Some(json!({"gracePeriodSeconds": 99_999_999}))).await?;
    assert_field_error(res, "invalid_grace_period", "/gracePeriodSeconds").await?;
    app.cleanup().await;
    Ok(())
}

/// A rotation is announced to the owner: an `integration.credentials_rotated` event
/// with the integration id and the new key reaches the event log.
#[tokio::test]
async fn rotation_publishes_a_credentials_rotated_event() -> anyhow::Result<()> {
    let app =
        TestApp::spawn_with(&[], &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher]).await?;
    let created = create(&app, OWNER, json!({"name": "e", "type": "erp"})).await?;
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    let rotated: Value = as_user(
        &app,
        app.http
            .post(app.api(&format!("/integrations/{id}/regenerate-credentials"))),
        OWNER,
    )
    .json(&json!({"gracePeriodSeconds": 60}))
    .send()
    .await?
    .json()
    .await?;
    let pool = app.pool.clone();
    wait_for(Duration::from_secs(15), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM events WHERE event_type = 'integration.credentials_rotated' AND user_id = $1",
            )
            .bind(OWNER)
            .fetch_one(&pool)
            .await
            .unwrap_or(0)
                == 1
        }
    })
    .await?;
    let payload: Value = sqlx::query_scalar(
        "SELECT payload FROM events WHERE event_type = 'integration.credentials_rotated'",
    )
    .fetch_one(&app.pool)
    .await?;
    assert_eq!(payload["integrationId"], id.as_str());
    assert_eq!(payload["apiKey"], rotated["credentials"]["apiKey"]);
    assert!(payload["previousExpiresAt"].is_string());
    app.cleanup().await;
    Ok(())
}

/// An integration limited to 2 requests per second (burst 4) gets 429 `rate_limited`
/// with a Retry-After once it outruns its bucket, and the refusals are logged.
#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() -> anyhow::Result<()> {
    let app = gateway_only().await?;
    let created = create(
        &app,
        OWNER,
        json!({"name": "slow", "type": "erp", "rateLimitPerSecond": 2}),
    )
    .await?;
    let (key, secret) = keys(&created);
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..10 {
        let res = partner_me(&app, &app.base_url(), &key, &secret).await?;
        statuses.push(res.status());
        if res.status() == StatusCode::TOO_MANY_REQUESTS && limited.is_none() {
            limited = Some(res);
        }
    }
    assert!(
        statuses[..4].iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let res = limited.expect("no 429 among 10 quick calls at 2/s");
    let retry_after: u64 = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await?;
    let id = created["id"].as_str().unwrap_or_default();
    wait_for_usage_rows(&app, id, 10).await?;
    app.cleanup().await;
    Ok(())
}

/// An integration with a daily quota of 3 gets 429 on the fourth call, with a
/// Retry-After pointing at the next UTC midnight.
#[tokio::test]
async fn daily_quota_answers_429_until_midnight() -> anyhow::Result<()> {
    let app = gateway_only().await?;
    let created = create(
        &app,
        OWNER,
        json!({"name": "quota", "type": "erp", "dailyQuota": 3, "rateLimitPerSecond": 0}),
    )
    .await?;
    let (key, secret) = keys(&created);
    for _ in 0..3 {
        assert_eq!(
            partner_me(&app, &app.base_url(), &key, &secret)
                .await?
                .status(),
            StatusCode::OK
        );
    }
    let res = partner_me(&app, &app.base_url(), &key, &secret).await?;
    let retry_after: u64 = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!((1..=86_400).contains(&retry_after), "{retry_after}");
    let body = assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await?;
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("daily quota"),
        "{body}"
    );
    // The counter is persisted for other replicas.
    let id: uuid::Uuid = created["id"].as_str().unwrap_or_default().parse()?;
    wait_for(Duration::from_secs(10), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT calls FROM integration_daily_usage WHERE integration_id = $1",
        )
        .bind(id)
        .fetch_optional(&app.pool)
        .await
        .ok()
        .flatten()
            == Some(3)
    })
    .await?;
    app.cleanup().await;
    Ok(())
}

/// Every partner call is in the usage log with method, route template, status,
/// latency, client IP and time; the owner reads entries newest first, paginated and
/// filtered by time, with totals by status and route; `lastUsedAt` is set.
#[tokio::test]
async fn usage_log_has_entries_totals_and_last_used() -> anyhow::Result<()> {
    let app = gateway_only().await?;
    let created = create(&app, OWNER, json!({"name": "u", "type": "erp"})).await?;
    let (key, secret) = keys(&created);
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    let before = chrono::Utc::now();
    for _ in 0..2 {
        assert_eq!(
            partner_me(&app, &app.base_url(), &key, &secret)
                .await?
                .status(),
            StatusCode::OK
        );
    }
    let wrong = well_formed_foreign_secret();
    assert_eq!(
        partner_me(&app, &app.base_url(), &key, &wrong)
            .await?
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let res = app
        .http
        .get(app.api("/integrations"))
        .header("authorization", basic(&key, &secret))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = app
        .http
        .get(app.api(&format!("/v1/integrations/{id}")))
        .header("authorization", basic(&key, &secret))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    wait_for_usage_rows(&app, &id, 5).await?;

    let usage_url = app.api(&format!("/integrations/{id}/usage"));
    let usage: Value = as_user(&app, app.http.get(&usage_url), OWNER)
        .send()
        .await?
        .json()
        .await?;
    let entries = usage["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(entries.len(), 5);
    assert_eq!(entries[0]["route"], "/api/v1/integrations/{id}");
    assert_eq!(entries[4]["route"], "/api/integrations/me");
    assert_eq!(entries[4]["method"], "GET");
    assert_eq!(entries[4]["status"], 200);
    assert_eq!(entries[4]["clientIp"], "127.0.0.1");
    assert!(entries[4]["latencyUs"].as_u64().is_some_and(|l| l > 0));
    let times: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["occurredAt"].as_str())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    assert_eq!(
        usage["totals"],
        json!({"total": 5,
               "byStatus": {"200": 2, "401": 1, "403": 2},
               "byRoute": {"GET /api/integrations/me": 3, "GET /api/integrations": 1,
                           "GET /api/v1/integrations/{id}": 1}})
    );

    let page: Value = as_user(&app, app.http.get(format!("{usage_url}?limit=2")), OWNER)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(page["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(page["totals"]["total"], 5);
    let cursor = page["nextCursor"].as_str().unwrap_or_default().to_owned();
    let rest: Value = as_user(
        &app,
        app.http
            .get(format!("{usage_url}?limit=10&cursor={cursor}")),
        OWNER,
    )
    .send()
    .await?
    .json()
    .await?;
    assert_eq!(rest["data"].as_array().map(Vec::len), Some(3));
    assert!(rest["nextCursor"].is_null());

    let future = (chrono::Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let empty: Value = as_user(
        &app,
        app.http.get(format!("{usage_url}?from={future}")),
        OWNER,
    )
    .send()
    .await?
    .json()
    .await?;
    assert_eq!(empty["totals"]["total"], 0);
    assert_eq!(empty["data"], json!([]));
    let past =
        (before - chrono::Duration::seconds(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let all: Value = as_user(
        &app,
        app.http.get(format!("{usage_url}?from={past}&to={future}")),
        OWNER,
    )
    .send()
    .await?
    .json()
    .await?;
    assert_eq!(all["totals"]["total"], 5);
    let res = as_user(
        &app,
        app.http.get(format!("{usage_url}?from=yesterday")),
        OWNER,
    )
    .send()
    .await?;
    assert_field_error(res, "invalid_query", "/query").await?;

    let got: Value = as_user(
        &app,
        app.http.get(app.api(&format!("/integrations/{id}"))),
        OWNER,
    )
    .send()
    .await?
    .json()
    .await?;
    let last_used = chrono::DateTime::parse_from_rfc3339(got["lastUsedAt"].as_str().unwrap_or(""))?;
    assert!(last_used >= before - chrono::Duration::seconds(1));
    // The partner sees the same through its own door.
    let me: Value = partner_me(&app, &app.base_url(), &key, &secret)
        .await?
        .json()
        .await?;
    assert!(
        me["usageToday"]["total"].as_u64().is_some_and(|t| t >= 5),
        "{me}"
    );
    app.cleanup().await;
    Ok(())
}

/// Usage buffered in memory is not lost on graceful shutdown: with a flush interval
/// far longer than the test, calls made right before SIGTERM are all in the usage log
/// (and the quota counters) once the gateway has exited cleanly.
#[tokio::test]
async fn usage_survives_graceful_shutdown() -> anyhow::Result<()> {
    let mut app = TestApp::spawn_with(
        &[("PORTICO_USAGE_LOG_FLUSH_MS", "60000")],
        &[ServiceKind::Gateway],
    )
    .await?;
    let created = create(
        &app,
        OWNER,
        json!({"name": "s", "type": "erp", "rateLimitPerSecond": 0}),
    )
    .await?;
    let (key, secret) = keys(&created);
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    let calls = 60;
    let base = app.base_url();
    let responses =
        futures::future::join_all((0..calls).map(|_| partner_me(&app, &base, &key, &secret))).await;
    assert!(
        responses
            .iter()
            .all(|r| r.as_ref().is_ok_and(|r| r.status() == StatusCode::OK))
    );
    let gateway = app.take(ServiceKind::Gateway);
    let status = gateway.terminate(Duration::from_secs(20)).await?;
    assert!(status.success(), "{status}");
    assert_eq!(usage_rows(&app, &id).await, calls);
    let calls_today: i64 =
        sqlx::query_scalar("SELECT calls FROM integration_daily_usage WHERE integration_id = $1")
            .bind(id.parse::<uuid::Uuid>()?)
            .fetch_one(&app.pool)
            .await?;
    assert_eq!(calls_today, calls);
    app.cleanup().await;
    Ok(())
}

/// Two gateway replicas each cache a credential; revoking it (regenerate with grace
/// 0) on one is honoured by the other right away, through the NATS invalidation
/// subject rather than the cache TTL, and the new credentials work on both.
#[tokio::test]
async fn revocation_reaches_every_gateway_replica_at_once() -> anyhow::Result<()> {
    let mut app = gateway_only().await?;
    let replica = app.start_extra(ServiceKind::Gateway, &[]).await?;
    let base_b = format!(
        "http://{}",
        replica.addrs.get("http").cloned().unwrap_or_default()
    );
    let base_a = app.base_url();
    let created = create(&app, OWNER, json!({"name": "two replicas", "type": "erp"})).await?;
    let (key, secret) = keys(&created);
    let id = created["id"].as_str().unwrap_or_default();
    // Both replicas verify (and cache) the credential.
    assert_eq!(
        partner_me(&app, &base_a, &key, &secret).await?.status(),
        StatusCode::OK
    );
    assert_eq!(
        partner_me(&app, &base_b, &key, &secret).await?.status(),
        StatusCode::OK
    );
    let rotated: Value = as_user(
        &app,
        app.http
            .post(app.api(&format!("/integrations/{id}/regenerate-credentials"))),
        OWNER,
    )
    .json(&json!({"gracePeriodSeconds": 0}))
    .send()
    .await?
    .json()
    .await?;
    wait_for(Duration::from_secs(2), || async {
        partner_me(&app, &base_b, &key, &secret)
            .await
            .map(|r| r.status() == StatusCode::UNAUTHORIZED)
            .unwrap_or(false)
    })
    .await?;
    let (new_key, new_secret) = keys(&rotated);
    assert_eq!(
        partner_me(&app, &base_b, &new_key, &new_secret)
            .await?
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        partner_me(&app, &base_a, &key, &secret).await?.status(),
        StatusCode::UNAUTHORIZED
    );
    // Deactivation on A reaches B too.
    as_user(
        &app,
        app.http.patch(app.api(&format!("/integrations/{id}"))),
        OWNER,
    )
    .json(&json!({"active": false}))
    .send()
    .await?;
    wait_for(Duration::from_secs(2), || async {
        partner_me(&app, &base_b, &new_key, &new_secret)
            .await
            .map(|r| r.status() == StatusCode::UNAUTHORIZED)
            .unwrap_or(false)
    })
    .await?;
    replica.terminate(Duration::from_secs(20)).await?;
    app.cleanup().await;
    Ok(())
}

/// gRPC is the same domain: create (with the secret once), get, list filtered by
/// type, verify valid and invalid, usage; INVALID_ARGUMENT for an invalid webhook
/// URL or an unspecified type; NOT_FOUND for another user's integration.
#[tokio::test]
async fn grpc_manages_integrations_like_rest() -> anyhow::Result<()> {
    use portico_proto::v1::integration_service_client::IntegrationServiceClient;
    use portico_proto::v1::{
        CreateIntegrationRequest, GetIntegrationRequest, GetUsageRequest, IntegrationType,
        ListIntegrationsRequest, RegenerateCredentialsRequest, VerifyCredentialsRequest,
    };
    let app = gateway_only().await?;
    let mut client = IntegrationServiceClient::connect(app.grpc_url()).await?;
    fn authed<T>(message: T, user: &str) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {SERVICE_TOKEN}").parse().expect("ascii"),
        );
        r.metadata_mut()
            .insert("x-portico-user-id", user.parse().expect("ascii"));
        r
    }
    let new = |name: &str, ty: IntegrationType, url: &str| CreateIntegrationRequest {
        name: name.into(),
        r#type: ty as i32,
        webhook_url: url.into(),
        scopes: vec!["orders:read".into()],
        expires_at: None,
        rate_limit_per_second: Some(0),
        daily_quota: None,
    };
    let created = client
        .create_integration(authed(
            new("g1", IntegrationType::Shipping, "http://127.0.0.1:9/s"),
            OWNER,
        ))
        .await?
        .into_inner();
    let integration = created.integration.clone().unwrap_or_default();
    let credentials = created.credentials.clone().unwrap_or_default();
    assert_eq!(integration.r#type, IntegrationType::Shipping as i32);
    assert_eq!(integration.scopes, ["orders:read"]);
    assert_eq!(integration.rate_limit_per_second, 0);
    assert!(credentials.api_key.starts_with("ptk_") && credentials.api_secret.starts_with("pts_"));
    client
        .create_integration(authed(new("g2", IntegrationType::Erp, ""), OWNER))
        .await?;

    let got = client
        .get_integration(authed(
            GetIntegrationRequest {
                id: integration.id.clone(),
            },
            OWNER,
        ))
        .await?
        .into_inner();
    assert_eq!(
        (got.name.as_str(), got.api_key.as_str()),
        ("g1", credentials.api_key.as_str())
    );
    let listed = client
        .list_integrations(authed(
            ListIntegrationsRequest {
                r#type: IntegrationType::Erp as i32,
                page: None,
            },
            OWNER,
        ))
        .await?
        .into_inner();
    assert_eq!(listed.integrations.len(), 1);
    assert_eq!(listed.integrations[0].name, "g2");
    let all = client
        .list_integrations(authed(ListIntegrationsRequest::default(), OWNER))
        .await?
        .into_inner();
    assert_eq!(all.integrations.len(), 2);

    let verify = |secret: &str| VerifyCredentialsRequest {
        api_key: credentials.api_key.clone(),
        api_secret: secret.into(),
    };
    let ok = client
        .verify_credentials(authed(verify(&credentials.api_secret), OWNER))
        .await?
        .into_inner();
    assert!(ok.valid);
    assert_eq!(ok.integration_id, integration.id);
    assert_eq!(ok.scopes, ["orders:read"]);
    let bad = client
        .verify_credentials(authed(verify(&well_formed_foreign_secret()), OWNER))
        .await?
        .into_inner();
    assert!(!bad.valid && bad.integration_id.is_empty());
    let foreign = client
        .verify_credentials(authed(verify(&credentials.api_secret), STRANGER))
        .await?
        .into_inner();
    assert!(!foreign.valid);

    // A partner call through REST shows up in the gRPC usage read.
    assert_eq!(
        partner_me(
            &app,
            &app.base_url(),
            &credentials.api_key,
            &credentials.api_secret
        )
        .await?
        .status(),
        StatusCode::OK
    );
    wait_for_usage_rows(&app, &integration.id, 1).await?;
    let usage = client
        .get_usage(authed(
            GetUsageRequest {
                integration_id: integration.id.clone(),
                ..Default::default()
            },
            OWNER,
        ))
        .await?
        .into_inner();
    assert_eq!(usage.entries.len(), 1);
    assert_eq!(usage.entries[0].route, "/api/integrations/me");
    assert_eq!(
        usage.totals.unwrap_or_default().by_status.get("200"),
        Some(&1)
    );

    let err = client
        .create_integration(authed(new("bad", IntegrationType::Erp, "not a url"), OWNER))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("invalid_url"), "{}", err.message());
    let err = client
        .create_integration(authed(new("bad", IntegrationType::Unspecified, ""), OWNER))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("invalid_type"), "{}", err.message());
    let err = client
        .get_integration(authed(
            GetIntegrationRequest {
                id: integration.id.clone(),
            },
            STRANGER,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = client
        .regenerate_credentials(authed(
            RegenerateCredentialsRequest {
                id: integration.id.clone(),
                grace_period_seconds: Some(0),
            },
            STRANGER,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = client
        .get_integration(authed(GetIntegrationRequest { id: "nope".into() }, OWNER))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    app.cleanup().await;
    Ok(())
}

/// Partner calls over gRPC are written to the usage log like REST calls (route: the
/// gRPC method; status: the matching HTTP status), a wrong secret too, and a partner
/// without the scope is refused PERMISSION_DENIED and logged 403.
#[tokio::test]
async fn grpc_partner_calls_are_logged_like_rest() -> anyhow::Result<()> {
    use portico_proto::v1::bulk_order_service_client::BulkOrderServiceClient;
    use portico_proto::v1::webhook_service_client::WebhookServiceClient;
    let app = gateway_only().await?;
    let created = create(
        &app,
        OWNER,
        json!({"name": "gRPC partner", "type": "erp", "scopes": ["bulk_orders:read"]}),
    )
    .await?;
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    let (key, secret) = keys(&created);
    let authed = |message, secret: &str| {
        let mut r = tonic::Request::new(message);
        if let Ok(v) = basic(&key, secret).parse() {
            r.metadata_mut().insert("authorization", v);
        }
        r
    };
    let mut bulk = BulkOrderServiceClient::connect(app.grpc_url()).await?;
    bulk.list_batches(authed(Default::default(), &secret))
        .await?;
    // A well-formed secret that is not this key's (another integration's).
    let other = create(&app, OWNER, json!({"name": "other", "type": "erp"})).await?;
    let (_, other_secret) = keys(&other);
    let wrong = bulk
        .list_batches(authed(Default::default(), &other_secret))
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(wrong, Some(tonic::Code::Unauthenticated));
    let mut webhooks = WebhookServiceClient::connect(app.grpc_url()).await?;
    let mut request = tonic::Request::new(Default::default());
    if let Ok(v) = basic(&key, &secret).parse() {
        request.metadata_mut().insert("authorization", v);
    }
    let denied = webhooks
        .list_webhooks(request)
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(denied, Some(tonic::Code::PermissionDenied));

    wait_for_usage_rows(&app, &id, 3).await?;
    let rows: Vec<(String, i32)> = sqlx::query_as(
        "SELECT route, status FROM integration_usage_logs WHERE integration_id = $1 ORDER BY status",
    )
    .bind(id.parse::<uuid::Uuid>()?)
    .fetch_all(&app.pool)
    .await?;
    assert_eq!(
        rows,
        [
            ("/portico.v1.BulkOrderService/ListBatches".to_owned(), 200),
            ("/portico.v1.BulkOrderService/ListBatches".to_owned(), 401),
            ("/portico.v1.WebhookService/ListWebhooks".to_owned(), 403),
        ]
    );
    app.cleanup().await;
    Ok(())
}

/// Guessing secrets is throttled per (key, client) and per client, without locking the
/// partner out: a stranger's wrong secrets from one address get 401 ten times, then 429
/// with Retry-After and no usage row; the partner's own address still gets in, with
/// `RateLimit-*` headers; the verify route throttles a guessing user the same way.
#[tokio::test]
async fn guessing_secrets_is_throttled_without_locking_the_partner_out() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(
        &[("PORTICO_TRUST_FORWARDED_FOR", "true")],
        &[ServiceKind::Gateway],
    )
    .await?;
    let created = create(
        &app,
        OWNER,
        json!({"name": "guessed", "type": "erp", "rateLimitPerSecond": 5}),
    )
    .await?;
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    let (key, secret) = keys(&created);
    let other = create(&app, OWNER, json!({"name": "other", "type": "erp"})).await?;
    let (_, wrong) = keys(&other);
    let call = |secret: String, from: &'static str| {
        app.http
            .get(app.api("/integrations/me"))
            .header("authorization", basic(&key, &secret))
            .header("x-forwarded-for", from)
            .send()
    };
    let mut statuses = Vec::new();
    for _ in 0..30 {
        let res = call(wrong.clone(), "203.0.113.9").await?;
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(res.headers().get("retry-after").is_some());
        }
        statuses.push(res.status().as_u16());
    }
    assert_eq!(&statuses[..10], &[401; 10]);
    assert!(statuses[10..].iter().all(|s| *s == 429), "{statuses:?}");

    let res = call(secret.clone(), "198.51.100.7").await?;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "the partner is not locked out"
    );
    let header = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    assert_eq!(header("ratelimit-limit"), Some(10));
    assert_eq!(header("ratelimit-remaining"), Some(9));
    assert!(header("ratelimit-reset").is_some());
    // Only the answered attempts were logged: ten 401s and the partner's 200.
    wait_for_usage_rows(&app, &id, 11).await?;

    // The verify route, as a user guessing someone's secret.
    let mut verify = Vec::new();
    for _ in 0..12 {
        let res = as_user(
            &app,
            app.http.post(app.api("/integrations/verify")),
            STRANGER,
        )
        .json(&json!({"apiKey": key, "apiSecret": wrong}))
        .send()
        .await?;
        verify.push(res.status().as_u16());
    }
    assert_eq!(&verify[..10], &[200; 10], "answered valid: false");
    assert_eq!(&verify[10..], &[429, 429]);
    let metrics = app
        .http
        .get(format!("{}/metrics", app.base_url()))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("result=\"throttled\""),
        "throttled attempts are counted"
    );
    app.cleanup().await;
    Ok(())
}
