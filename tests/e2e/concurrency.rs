//! Safe concurrency over a real gateway, PostgreSQL and JetStream: entity tags and
//! conditional writes (`ETag`, `If-Match`, `If-None-Match`; the gRPC `etag`), and
//! idempotent creates (`Idempotency-Key`; the gRPC `idempotency-key` metadata).

use portico_e2e::{ServiceKind, TestApp, assert_problem};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A gateway alone, with the test allowlist (loopback).
async fn gateway() -> anyhow::Result<TestApp> {
    TestApp::spawn_with(&[], &[ServiceKind::Gateway]).await
}

fn as_user(app: &TestApp, req: reqwest::RequestBuilder, user: &str) -> reqwest::RequestBuilder {
    req.bearer_auth(app.user_token(user))
}

fn etag_of(res: &reqwest::Response) -> String {
    res.headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn replayed(res: &reqwest::Response) -> bool {
    res.headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true")
}

async fn webhook_count(app: &TestApp, user: &str) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM webhooks WHERE user_id = $1")
            .bind(user)
            .fetch_one(&app.pool)
            .await?,
    )
}

async fn create_webhook(app: &TestApp, user: &str) -> anyhow::Result<(String, String)> {
    let res = as_user(app, app.http.post(app.api("/webhooks")), user)
        .json(&json!({"url": "http://127.0.0.1:9/hook", "events": ["order.*"]}))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::CREATED);
    let etag = etag_of(&res);
    let body: Value = res.json().await?;
    Ok((body["id"].as_str().unwrap_or_default().to_owned(), etag))
}

/// Two clients read the same webhook and both write back with the ETag they read: the
/// first wins (200, a new ETag), the second gets 412 `precondition_failed` and its
/// change is not applied; a GET naming the current ETag answers 304; a delete with a
/// stale ETag is 412 and deletes nothing, with the current one it deletes.
#[tokio::test]
async fn stale_writes_are_refused_with_412() -> anyhow::Result<()> {
    let app = gateway().await?;
    let (id, created_tag) = create_webhook(&app, "ann").await?;
    assert!(created_tag.starts_with('"'), "{created_tag}");
    let url = app.api(&format!("/webhooks/{id}"));

    let first = as_user(&app, app.http.get(&url), "ann").send().await?;
    let second = as_user(&app, app.http.get(&url), "ann").send().await?;
    let read_tag = etag_of(&first);
    assert_eq!(read_tag, etag_of(&second));
    assert_eq!(read_tag, created_tag);

    let won = as_user(&app, app.http.patch(&url), "ann")
        .header("if-match", &read_tag)
        .json(&json!({"description": "first writer"}))
        .send()
        .await?;
    assert_eq!(won.status(), StatusCode::OK);
    let new_tag = etag_of(&won);
    assert_ne!(new_tag, read_tag);

    let lost = as_user(&app, app.http.patch(&url), "ann")
        .header("if-match", &read_tag)
        .json(&json!({"description": "second writer"}))
        .send()
        .await?;
    assert_problem(lost, StatusCode::PRECONDITION_FAILED, "precondition_failed").await?;

    let now = as_user(&app, app.http.get(&url), "ann").send().await?;
    assert_eq!(etag_of(&now), new_tag);
    let body: Value = now.json().await?;
    assert_eq!(body["description"], "first writer");

    // Conditional GET: the current tag answers 304 without a body, an old one 200.
    let cached = as_user(&app, app.http.get(&url), "ann")
        .header("if-none-match", &new_tag)
        .send()
        .await?;
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(etag_of(&cached), new_tag);
    let changed = as_user(&app, app.http.get(&url), "ann")
        .header("if-none-match", &read_tag)
        .send()
        .await?;
    assert_eq!(changed.status(), StatusCode::OK);

    // A malformed If-Match is a 400, not a silent unconditional write.
    let bad = as_user(&app, app.http.patch(&url), "ann")
        .header("if-match", "not-a-tag")
        .json(&json!({"description": "bad"}))
        .send()
        .await?;
    let problem = assert_problem(bad, StatusCode::BAD_REQUEST, "validation_failed").await?;
    assert_eq!(
        problem["errors"][0]["code"], "invalid_if_match",
        "{problem}"
    );

    // Another user's webhook is 404 whatever the tag.
    let foreign = as_user(&app, app.http.delete(&url), "bob")
        .header("if-match", "*")
        .send()
        .await?;
    assert_problem(foreign, StatusCode::NOT_FOUND, "not_found").await?;

    let stale_delete = as_user(&app, app.http.delete(&url), "ann")
        .header("if-match", &read_tag)
        .send()
        .await?;
    assert_problem(
        stale_delete,
        StatusCode::PRECONDITION_FAILED,
        "precondition_failed",
    )
    .await?;
    assert_eq!(webhook_count(&app, "ann").await?, 1);

    let deleted = as_user(&app, app.http.delete(&url), "ann")
        .header("if-match", &new_tag)
        .send()
        .await?;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(webhook_count(&app, "ann").await?, 0);
    let gone = as_user(&app, app.http.delete(&url), "ann")
        .header("if-match", "*")
        .send()
        .await?;
    assert_problem(gone, StatusCode::NOT_FOUND, "not_found").await?;
    app.cleanup().await;
    Ok(())
}

/// Integrations and saved templates follow the same rules: a stale If-Match is 412 and
/// changes nothing; the current one applies.
#[tokio::test]
async fn integrations_and_templates_take_if_match() -> anyhow::Result<()> {
    let app = gateway().await?;
    let res = as_user(&app, app.http.post(app.api("/integrations")), "ann")
        .json(&json!({"name": "Acme", "type": "erp"}))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::CREATED);
    let tag = etag_of(&res);
    let body: Value = res.json().await?;
    let url = app.api(&format!(
        "/integrations/{}",
        body["id"].as_str().unwrap_or_default()
    ));
    let renamed = as_user(&app, app.http.patch(&url), "ann")
        .header("if-match", &tag)
        .json(&json!({"name": "Acme 2"}))
        .send()
        .await?;
    assert_eq!(renamed.status(), StatusCode::OK);
    let stale = as_user(&app, app.http.patch(&url), "ann")
        .header("if-match", &tag)
        .json(&json!({"name": "Acme 3"}))
        .send()
        .await?;
    assert_problem(
        stale,
        StatusCode::PRECONDITION_FAILED,
        "precondition_failed",
    )
    .await?;
    let now: Value = as_user(&app, app.http.get(&url), "ann")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(now["name"], "Acme 2");

    let template = app.api("/integration-templates/my-erp");
    let saved = as_user(&app, app.http.post(&template), "ann")
        .json(&json!({
            "name": "My ERP",
            "description": "Ours",
            "integrationType": "erp",
            "scopes": ["orders:read"],
            "allowedScopes": ["orders:read"],
            "rateLimitPerSecond": 7,
            "dailyQuota": 700,
            "events": ["order.created"],
            "overridable": ["name"]
        }))
        .send()
        .await?;
    assert_eq!(
        saved.status(),
        StatusCode::CREATED,
        "{:?}",
        saved.text().await
    );
    let got = as_user(&app, app.http.get(&template), "ann").send().await?;
    let template_tag = etag_of(&got);
    assert!(!template_tag.is_empty());
    let changed = as_user(&app, app.http.patch(&template), "ann")
        .header("if-match", &template_tag)
        .json(&json!({"name": "My ERP 2"}))
        .send()
        .await?;
    assert_eq!(changed.status(), StatusCode::OK);
    let stale = as_user(&app, app.http.delete(&template), "ann")
        .header("if-match", &template_tag)
        .send()
        .await?;
    assert_problem(
        stale,
        StatusCode::PRECONDITION_FAILED,
        "precondition_failed",
    )
    .await?;
    app.cleanup().await;
    Ok(())
}

/// The same Idempotency-Key and body create one webhook: the retry gets the same
/// answer (same id, same signing secret) marked `Idempotent-Replayed: true`; the key
/// with another body is 409 `idempotency_key_reused`; another user's same key is
/// independent; a create that failed releases its key for a corrected retry.
#[tokio::test]
async fn idempotent_creates_replay_the_first_answer() -> anyhow::Result<()> {
    let app = gateway().await?;
    let body = json!({"url": "http://127.0.0.1:9/once", "events": ["order.*"]});
    let post = |user: &str, key: &str, body: &Value| {
        as_user(&app, app.http.post(app.api("/webhooks")), user)
            .header("idempotency-key", key)
            .json(body)
            .send()
    };
    let first = post("ann", "create-1", &body).await?;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(!replayed(&first));
    let first: Value = first.json().await?;
    let again = post("ann", "create-1", &body).await?;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert!(replayed(&again));
    let again: Value = again.json().await?;
    assert_eq!(again["id"], first["id"]);
    assert!(
        first["secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("whsec_"))
    );
    assert_eq!(again["secret"], first["secret"]);
    assert_eq!(webhook_count(&app, "ann").await?, 1);
    // The stored answer is sealed: the secret is not in the table in clear.
    let secret = first["secret"].as_str().unwrap_or_default();
    let in_clear: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM idempotency_keys WHERE position($1::bytea in response) > 0",
    )
    .bind(secret.as_bytes())
    .fetch_one(&app.pool)
    .await?;
    assert_eq!(in_clear, 0);

    let other_body = json!({"url": "http://127.0.0.1:9/other", "events": ["order.*"]});
    let reused = post("ann", "create-1", &other_body).await?;
    assert_problem(reused, StatusCode::CONFLICT, "idempotency_key_reused").await?;
    assert_eq!(webhook_count(&app, "ann").await?, 1);

    let bobs = post("bob", "create-1", &body).await?;
    assert_eq!(bobs.status(), StatusCode::CREATED);
    assert!(!replayed(&bobs));
    let bobs: Value = bobs.json().await?;
    assert_ne!(bobs["id"], first["id"]);
    assert_eq!(webhook_count(&app, "bob").await?, 1);

    let invalid = json!({"url": "not a url", "events": ["order.*"]});
    let refused = post("ann", "create-2", &invalid).await?;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let corrected = post("ann", "create-2", &other_body).await?;
    assert_eq!(corrected.status(), StatusCode::CREATED);
    assert!(!replayed(&corrected));
    assert_eq!(webhook_count(&app, "ann").await?, 2);

    let too_long = "k".repeat(256);
    let bad_key = post("ann", &too_long, &body).await?;
    let problem = assert_problem(bad_key, StatusCode::BAD_REQUEST, "validation_failed").await?;
    assert_eq!(
        problem["errors"][0]["code"], "invalid_idempotency_key",
        "{problem}"
    );
    assert_eq!(webhook_count(&app, "ann").await?, 2);
    app.cleanup().await;
    Ok(())
}

/// Ten concurrent creates with one key make one integration: every answer is either
/// that integration (with the same API secret) or 409 `idempotency_key_in_progress`.
#[tokio::test]
async fn concurrent_retries_with_one_key_create_once() -> anyhow::Result<()> {
    let app = gateway().await?;
    let body = json!({"name": "Once", "type": "erp"});
    let requests = (0..10).map(|_| {
        as_user(&app, app.http.post(app.api("/integrations")), "ann")
            .header("idempotency-key", "burst")
            .json(&body)
            .send()
    });
    let answers = futures::future::join_all(requests).await;
    let mut created = Vec::new();
    for res in answers {
        let res = res?;
        match res.status() {
            StatusCode::CREATED => created.push(res.json::<Value>().await?),
            StatusCode::CONFLICT => {
                assert_problem(res, StatusCode::CONFLICT, "idempotency_key_in_progress").await?;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(!created.is_empty());
    for c in &created {
        assert_eq!(c["id"], created[0]["id"]);
        assert_eq!(
            c["credentials"]["apiSecret"],
            created[0]["credentials"]["apiSecret"]
        );
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM integrations WHERE user_id = 'ann'")
        .fetch_one(&app.pool)
        .await?;
    assert_eq!(n, 1);
    app.cleanup().await;
    Ok(())
}

fn authed<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// The gRPC twin: `idempotency-key` metadata replays a create (same id and secret,
/// `idempotent-replayed: true`); an update with a stale `etag` is FAILED_PRECONDITION
/// and changes nothing, with the current one it applies.
#[tokio::test]
async fn grpc_twin_replays_creates_and_refuses_stale_etags() -> anyhow::Result<()> {
    use portico_proto::v1 as pb;
    use portico_proto::v1::webhook_service_client::WebhookServiceClient;
    let app = gateway().await?;
    let mut client = WebhookServiceClient::connect(app.grpc_url()).await?;
    let token = app.user_token("gina");
    let create = || {
        let mut request = authed(
            &token,
            pb::CreateWebhookRequest {
                url: "http://127.0.0.1:9/grpc".into(),
                events: vec!["order.*".into()],
                ..Default::default()
            },
        );
        if let Ok(key) = "grpc-1".parse() {
            request.metadata_mut().insert("idempotency-key", key);
        }
        request
    };
    let first = client.create_webhook(create()).await?;
    assert!(first.metadata().get("idempotent-replayed").is_none());
    let first = first.into_inner();
    let again = client.create_webhook(create()).await?;
    assert_eq!(
        again
            .metadata()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let again = again.into_inner();
    let hook = first.webhook.clone().unwrap_or_default();
    assert_eq!(again.webhook.unwrap_or_default().id, hook.id);
    assert_eq!(again.secret, first.secret);
    assert_eq!(webhook_count(&app, "gina").await?, 1);
    assert!(!hook.etag.is_empty());

    let updated = client
        .update_webhook(authed(
            &token,
            pb::UpdateWebhookRequest {
                id: hook.id.clone(),
                description: Some("first".into()),
                etag: Some(hook.etag.clone()),
                ..Default::default()
            },
        ))
        .await?
        .into_inner();
    assert_ne!(updated.etag, hook.etag);
    let err = client
        .update_webhook(authed(
            &token,
            pb::UpdateWebhookRequest {
                id: hook.id.clone(),
                description: Some("second".into()),
                etag: Some(hook.etag.clone()),
                ..Default::default()
            },
        ))
        .await
        .expect_err("a stale etag is refused");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    let err = client
        .delete_webhook(authed(
            &token,
            pb::DeleteWebhookRequest {
                id: hook.id.clone(),
                etag: Some(hook.etag.clone()),
            },
        ))
        .await
        .expect_err("a stale etag is refused");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    let now = client
        .get_webhook(authed(
            &token,
            pb::GetWebhookRequest {
                id: hook.id.clone(),
            },
        ))
        .await?
        .into_inner();
    assert_eq!(now.description, "first");
    assert_eq!(now.etag, updated.etag);
    app.cleanup().await;
    Ok(())
}
