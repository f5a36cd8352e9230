//! Rotating the secrets key and the API key pepper with the real binaries.
//!
//! A webhook whose signing secret and custom header were stored the way Portico stored
//! them before key rotation (version-0 ciphertext, header in clear) keeps delivering;
//! after a new key is added, `portico-gateway reseal` moves both to it (and a second
//! run has nothing to do); a dispatcher that knows only the new key still signs with
//! the same secret and sends the same header. Header values are masked for a partner
//! with `webhooks:read` only and redacted from attempt history. Credentials issued
//! under one pepper keep working after a newer pepper is added.
//!
//! Servers: `PORTICO_TEST_DATABASE_URL`, `PORTICO_TEST_NATS_URL`; binaries from
//! `cargo build --workspace --bins`.

use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use portico_e2e::sink::{Received, Sink};
use portico_e2e::{
    API_KEY_PEPPER, SECRETS_KEY, SERVICE_TOKEN, ServiceKind, TestApp, bin_dir, wait_for,
};
use portico_signing::seal::{self, Keyring};
use portico_signing::standard_webhooks::{self, WebhookSecret};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

const PATIENCE: Duration = Duration::from_secs(30);
/// The key added by the rotation.
const NEW_KEY: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

fn new_keys() -> String {
    format!("k2:{NEW_KEY}")
}

async fn publish(app: &TestApp, n: u32) -> anyhow::Result<()> {
    let res = app
        .http
        .post(app.api("/events"))
        .bearer_auth(SERVICE_TOKEN)
        .header("x-portico-user-id", "alice")
        .json(
            &json!({"type": "order.created", "data": {"n": n}, "idempotencyKey": format!("k{n}")}),
        )
        .send()
        .await?;
    anyhow::ensure!(
        res.status() == StatusCode::ACCEPTED,
        "publish: {}",
        res.status()
    );
    Ok(())
}

async fn wait_received(sink: &Sink, n: usize) -> anyhow::Result<Vec<Received>> {
    let s = sink.clone();
    wait_for(PATIENCE, move || {
        let s = s.clone();
        async move { s.received_at("/hook").len() >= n }
    })
    .await?;
    Ok(sink.received_at("/hook"))
}

fn verify(secret: &str, r: &Received) -> anyhow::Result<()> {
    standard_webhooks::verify(
        &WebhookSecret::parse(secret)?,
        r.header("webhook-id"),
        r.header("webhook-timestamp"),
        r.header("webhook-signature"),
        &r.body,
        chrono::Utc::now().timestamp(),
        standard_webhooks::DEFAULT_TOLERANCE_SECS,
    )?;
    Ok(())
}

/// Runs `portico-gateway reseal` against this app's database with `keys` and returns
/// its JSON report.
async fn reseal(app: &TestApp, keys: &str) -> anyhow::Result<Value> {
    let out = tokio::process::Command::new(bin_dir().join(ServiceKind::Gateway.binary()))
        .arg("reseal")
        .arg("--batch")
        .arg("1")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &app.database_url)
        .env("NATS_URL", &app.nats_url)
        .env("PORTICO_SECRETS_KEY", SECRETS_KEY)
        .env("PORTICO_SECRETS_KEYS", keys)
        .env("PORTICO_API_KEY_PEPPER", API_KEY_PEPPER)
        .env("PORTICO_LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "reseal failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout)?;
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("{}");
    Ok(serde_json::from_str(line)?)
}

async fn stored(app: &TestApp, id: Uuid) -> anyhow::Result<(Vec<u8>, Value)> {
    let secret: Vec<u8> =
        sqlx::query_scalar("SELECT ciphertext FROM webhook_secrets WHERE webhook_id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await?;
    let headers: Value = sqlx::query_scalar("SELECT headers FROM webhooks WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await?;
    Ok((secret, headers))
}

/// The version-1 key id of a sealed value, if it has one.
fn key_id(sealed: &[u8]) -> Option<String> {
    let rest = sealed.strip_prefix(b"PSK1")?;
    let (&len, rest) = rest.split_first()?;
    Some(String::from_utf8_lossy(rest.get(..usize::from(len))?).into_owned())
}

async fn partner(app: &TestApp, scopes: &[&str]) -> anyhow::Result<String> {
    let res = app
        .http
        .post(app.api("/integrations"))
        .bearer_auth(app.user_token("alice"))
        .json(&json!({"name": "p", "type": "erp", "scopes": scopes}))
        .send()
        .await?;
    anyhow::ensure!(
        res.status() == StatusCode::CREATED,
        "integration: {}",
        res.status()
    );
    let body: Value = res.json().await?;
    let (key, secret) = (
        body["credentials"]["apiKey"].as_str().unwrap_or_default(),
        body["credentials"]["apiSecret"]
            .as_str()
            .unwrap_or_default(),
    );
    Ok(format!(
        "Basic {}",
        STANDARD.encode(format!("{key}:{secret}"))
    ))
}

async fn me(app: &TestApp, auth: &str) -> anyhow::Result<StatusCode> {
    let res = app
        .http
        .get(app.api("/integrations/me"))
        .header("authorization", auth)
        .send()
        .await?;
    Ok(res.status())
}

async fn headers_seen_by(app: &TestApp, auth: &str, id: Uuid) -> anyhow::Result<Value> {
    let res = app
        .http
        .get(app.api(&format!("/webhooks/{id}")))
        .header("authorization", auth)
        .send()
        .await?;
    anyhow::ensure!(
        res.status() == StatusCode::OK,
        "get webhook: {}",
        res.status()
    );
    let body: Value = res.json().await?;
    Ok(body["headers"].clone())
}

/// The whole rotation, from a pre-rotation database to a dispatcher without the old key.
#[tokio::test]
async fn secrets_survive_a_key_rotation_and_reseal() -> anyhow::Result<()> {
    let mut app =
        TestApp::spawn_with(&[], &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher]).await?;
    let sink = Sink::start().await?;
    let res = app
        .http
        .post(app.api("/webhooks"))
        .bearer_auth(app.user_token("alice"))
        .json(&json!({"url": sink.url("/hook"), "events": ["order.*"],
                      "headers": {"X-Api-Key": "sk_live_1"}}))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = res.json().await?;
    let id: Uuid = created["id"].as_str().unwrap_or_default().parse()?;
    let whsec = created["secret"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        created["headers"]["X-Api-Key"], "sk_live_1",
        "the owner sees the value"
    );

    // Sealed at rest: neither the value nor the secret is in the row; bound to this webhook.
    let (secret_row, headers_row) = stored(&app, id).await?;
    assert_eq!(key_id(&secret_row).as_deref(), Some(seal::LEGACY_KEY_ID));
    let stored_header = headers_row["X-Api-Key"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        stored_header.starts_with(seal::SEALED_HEADER_PREFIX),
        "{stored_header}"
    );
    assert!(!stored_header.contains("sk_live_1"));

    // Masked for a partner with webhooks:read only, opened for one with webhooks:write.
    let reader = partner(&app, &["webhooks:read"]).await?;
    assert_eq!(
        headers_seen_by(&app, &reader, id).await?,
        json!({"X-Api-Key": "***"})
    );
    let writer = partner(&app, &["webhooks:read", "webhooks:write"]).await?;
    assert_eq!(
        headers_seen_by(&app, &writer, id).await?,
        json!({"X-Api-Key": "sk_live_1"})
    );

    // Rewind to how Portico stored them before key ids: a version-0 secret, a header in
    // clear. They still deliver.
    let raw = STANDARD.decode(&whsec["whsec_".len()..])?;
    let v0 = portico_signing::secret_box::SecretsKey::from_base64(SECRETS_KEY)?.seal(&raw)?;
    sqlx::query("UPDATE webhook_secrets SET ciphertext = $2 WHERE webhook_id = $1")
        .bind(id)
        .bind(&v0)
        .execute(&app.pool)
        .await?;
    sqlx::query("UPDATE webhooks SET headers = $2 WHERE id = $1")
        .bind(id)
        .bind(json!({"X-Api-Key": "sk_live_1"}))
        .execute(&app.pool)
        .await?;
    // A fresh dispatcher has no cached copy of the old rows.
    app.take(ServiceKind::WebhookDispatcher).kill().await?;
    app.start(ServiceKind::WebhookDispatcher).await?;
    publish(&app, 1).await?;
    let got = wait_received(&sink, 1).await?;
    verify(&whsec, &got[0])?;
    assert_eq!(got[0].header("x-api-key"), "sk_live_1");

    // Attempt history never holds the value. The attempt is committed just after the
    // receiver answered, so wait for it.
    let attempts = || {
        sqlx::query_scalar::<_, Value>(
            "SELECT a.request_headers FROM webhook_delivery_attempts a
               JOIN webhook_deliveries d ON d.id = a.delivery_id WHERE d.webhook_id = $1",
        )
        .bind(id)
        .fetch_all(&app.pool)
    };
    wait_for(Duration::from_secs(20), || async {
        attempts().await.is_ok_and(|rows| !rows.is_empty())
    })
    .await?;
    let recorded: Vec<Value> = attempts().await?;
    assert!(!recorded.is_empty());
    for r in &recorded {
        assert_eq!(r["x-api-key"], "***", "{r}");
        assert!(!r.to_string().contains("sk_live_1"));
    }

    // Rotate: k2 first, the old key still configured. Re-seal moves both values; a
    // second run has nothing left to do.
    let first = reseal(&app, &new_keys()).await?;
    assert_eq!(first["secretsResealed"], 1, "{first}");
    assert_eq!(first["webhooksResealed"], 1, "{first}");
    assert_eq!(first["secretsUnreadable"], 0, "{first}");
    let again = reseal(&app, &new_keys()).await?;
    assert_eq!(again["secretsResealed"], 0, "{again}");
    assert_eq!(again["secretsCurrent"], 1, "{again}");
    assert_eq!(again["webhooksResealed"], 0, "{again}");
    assert_eq!(again["webhooksCurrent"], 1, "{again}");
    let (secret_row, headers_row) = stored(&app, id).await?;
    assert_eq!(key_id(&secret_row).as_deref(), Some("k2"));
    let keys = Keyring::from_config(Some(&new_keys()), None)?;
    let opened = keys.open(&seal::webhook_secret_context(id.as_bytes()), &secret_row)?;
    assert_eq!(opened.plaintext, raw, "the same secret, under k2");
    let header = headers_row["X-Api-Key"].as_str().unwrap_or_default();
    assert_eq!(
        seal::open_header_value(&keys, id.as_bytes(), "X-Api-Key", header)?,
        ("sk_live_1".to_owned(), true)
    );

    // The old key removed: a dispatcher and a gateway with k2 only keep working.
    app.take(ServiceKind::WebhookDispatcher).kill().await?;
    app.take(ServiceKind::Gateway).kill().await?;
    let keys_text = new_keys();
    let only_new = [
        ("PORTICO_SECRETS_KEY", ""),
        ("PORTICO_SECRETS_KEYS", keys_text.as_str()),
    ];
    app.start_with(ServiceKind::Gateway, &only_new).await?;
    app.start_with(ServiceKind::WebhookDispatcher, &only_new)
        .await?;
    publish(&app, 2).await?;
    let got = wait_received(&sink, 2).await?;
    for r in &got {
        verify(&whsec, r)?;
        assert_eq!(r.header("x-api-key"), "sk_live_1");
    }
    let shown: Value = app
        .http
        .get(app.api(&format!("/webhooks/{id}/secret")))
        .bearer_auth(app.user_token("alice"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(shown["secret"], whsec.as_str());
    assert_eq!(
        headers_seen_by(&app, &format!("Bearer {}", app.user_token("alice")), id).await?,
        json!({"X-Api-Key": "sk_live_1"})
    );
    app.cleanup().await;
    Ok(())
}

/// Credentials issued under the single pepper keep verifying after a newer pepper is
/// added; new credentials are hashed with the newer one and name it.
#[tokio::test]
async fn credentials_survive_a_pepper_rotation() -> anyhow::Result<()> {
    let mut app = TestApp::spawn_with(&[], &[ServiceKind::Gateway]).await?;
    let old = partner(&app, &["orders:read"]).await?;
    assert_eq!(me(&app, &old).await?, StatusCode::OK);
    let tagged_len: i32 =
        sqlx::query_scalar("SELECT length(secret_hash) FROM integration_credentials")
            .fetch_one(&app.pool)
            .await?;
    assert_eq!(
        tagged_len,
        2 + 7 + 32,
        "hashed under PORTICO_API_KEY_PEPPER, id 'default'"
    );

    app.take(ServiceKind::Gateway).kill().await?;
    app.start_with(
        ServiceKind::Gateway,
        &[("PORTICO_API_KEY_PEPPERS", "p2:a-newer-pepper")],
    )
    .await?;
    assert_eq!(
        me(&app, &old).await?,
        StatusCode::OK,
        "the old pepper still verifies"
    );
    let new = partner(&app, &["orders:read"]).await?;
    assert_eq!(me(&app, &new).await?, StatusCode::OK);
    let ids: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT substring(secret_hash FROM 3 FOR get_byte(secret_hash, 1))
           FROM integration_credentials ORDER BY created_at",
    )
    .fetch_all(&app.pool)
    .await?;
    assert_eq!(ids, vec![b"default".to_vec(), b"p2".to_vec()]);
    // Without the old pepper the old credential no longer verifies: the pepper must stay
    // configured until its credentials are regenerated.
    app.take(ServiceKind::Gateway).kill().await?;
    app.start_with(
        ServiceKind::Gateway,
        &[
            ("PORTICO_API_KEY_PEPPER", ""),
            ("PORTICO_API_KEY_PEPPERS", "p2:a-newer-pepper"),
        ],
    )
    .await?;
    assert_eq!(me(&app, &old).await?, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&app, &new).await?, StatusCode::OK);
    app.cleanup().await;
    Ok(())
}
