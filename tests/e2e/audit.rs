//! The audit log against the real gateway: REST and gRPC changes each write one record
//! with the right actor, action and fields, and no secret anywhere in the row (signing
//! secrets, API secrets, custom header values); another user sees none of them; a
//! partner is refused; a refused call writes nothing; verification holds over REST and
//! gRPC until one row is edited with SQL, and then names that record.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use portico_e2e::{SERVICE_TOKEN, ServiceKind, TestApp, assert_problem};
use portico_proto::v1::audit_service_client::AuditServiceClient;
use portico_proto::v1::webhook_service_client::WebhookServiceClient;
use portico_proto::v1::{CreateWebhookRequest, ListAuditLogRequest, VerifyAuditLogRequest};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ALICE: &str = "user-audit-alice";
const BOB: &str = "user-audit-bob";

/// A gRPC request as an internal service acting for `user`.
fn as_service<T>(message: T, user: &str) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {SERVICE_TOKEN}").parse()?);
    request
        .metadata_mut()
        .insert("x-portico-user-id", user.parse()?);
    request
        .metadata_mut()
        .insert("x-request-id", "grpc-audit-1".parse()?);
    Ok(request)
}

async fn audit_log(app: &TestApp, user: &str, query: &str) -> anyhow::Result<Value> {
    let res = app
        .http
        .get(app.api(&format!("/audit-log{query}")))
        .bearer_auth(app.user_token(user))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    Ok(res.json().await?)
}

async fn verify(app: &TestApp, user: &str) -> anyhow::Result<Value> {
    let res = app
        .http
        .get(app.api("/audit-log/verify"))
        .bearer_auth(app.user_token(user))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    Ok(res.json().await?)
}

/// Records written: linked into a chain, or committed and waiting to be linked.
async fn rows(app: &TestApp) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM audit_log) + (SELECT count(*) FROM audit_pending)",
    )
    .fetch_one(&app.pool)
    .await?)
}

/// The whole flow, gateway only (nothing here needs a worker).
#[tokio::test]
async fn changes_are_audited_without_secrets_and_tampering_is_found() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(&[], &[ServiceKind::Gateway]).await?;
    let token = app.user_token(ALICE);
    let header_1 = "hdr-value-one-0c5e1f";
    let header_2 = "hdr-value-two-9a7b2d";
    let grpc_header = "hdr-value-grpc-51e3aa";

    // REST: create, update (headers and description), rotate the secret.
    let res = app
        .http
        .post(app.api("/webhooks"))
        .bearer_auth(&token)
        .header("x-request-id", "rest-audit-1")
        .json(&json!({
            "url": "http://127.0.0.1:9/hook",
            "events": ["order.*"],
            "headers": {"x-receiver-key": header_1},
        }))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = res.json().await?;
    let webhook_id = created["id"].as_str().unwrap_or_default().to_owned();
    let mut secrets = vec![created["secret"].as_str().unwrap_or_default().to_owned()];

    let res = app
        .http
        .patch(app.api(&format!("/webhooks/{webhook_id}")))
        .bearer_auth(&token)
        .json(&json!({"headers": {"x-receiver-key": header_2}, "description": "moved"}))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);

    // Refused: an invalid URL changes nothing and writes no record.
    let before = rows(&app).await?;
    let res = app
        .http
        .patch(app.api(&format!("/webhooks/{webhook_id}")))
        .bearer_auth(&token)
        .json(&json!({"url": "not a url"}))
        .send()
        .await?;
    assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await?;
    assert_eq!(rows(&app).await?, before, "a refused call writes no record");

    let res = app
        .http
        .post(app.api(&format!("/webhooks/{webhook_id}/secret/rotate")))
        .bearer_auth(&token)
        .json(&json!({"gracePeriodSeconds": 0}))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    let rotated: Value = res.json().await?;
    secrets.push(rotated["secret"].as_str().unwrap_or_default().to_owned());

    // REST: an integration and new credentials.
    let res = app
        .http
        .post(app.api("/integrations"))
        .bearer_auth(&token)
        .json(&json!({"name": "Acme ERP", "type": "erp", "scopes": ["webhooks:read"]}))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::CREATED);
    let integration: Value = res.json().await?;
    let integration_id = integration["id"].as_str().unwrap_or_default().to_owned();
    let api_key = integration["credentials"]["apiKey"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    secrets.push(
        integration["credentials"]["apiSecret"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    );
    let res = app
        .http
        .post(app.api(&format!(
            "/integrations/{integration_id}/regenerate-credentials"
        )))
        .bearer_auth(&token)
        .json(&json!({"gracePeriodSeconds": 60}))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    let regenerated: Value = res.json().await?;
    let new_key = regenerated["credentials"]["apiKey"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let new_secret = regenerated["credentials"]["apiSecret"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    secrets.push(new_secret.clone());

    // gRPC: a webhook created by an internal service for alice.
    let mut webhooks = WebhookServiceClient::connect(app.grpc_url()).await?;
    let grpc_created = webhooks
        .create_webhook(as_service(
            CreateWebhookRequest {
                url: "http://127.0.0.1:9/grpc-hook".into(),
                events: vec!["order.created".into()],
                headers: [("x-partner-token".to_owned(), grpc_header.to_owned())].into(),
                ..Default::default()
            },
            ALICE,
        )?)
        .await?
        .into_inner();
    secrets.push(grpc_created.secret.clone());
    assert!(secrets.iter().all(|s| s.len() > 10), "{secrets:?}");

    // One record per change, newest first, with who and what.
    let log = audit_log(&app, ALICE, "").await?;
    let data = log["data"].as_array().cloned().unwrap_or_default();
    let actions: Vec<&str> = data.iter().filter_map(|r| r["action"].as_str()).collect();
    assert_eq!(
        actions,
        vec![
            "webhook.created",
            "integration.credentials_regenerated",
            "integration.created",
            "webhook.secret_rotated",
            "webhook.updated",
            "webhook.created",
        ],
        "{log:#}"
    );
    let seqs: Vec<i64> = data.iter().filter_map(|r| r["seq"].as_i64()).collect();
    assert_eq!(seqs, vec![6, 5, 4, 3, 2, 1]);
    let first = &data[5];
    assert_eq!(first["actor"]["kind"], "user");
    assert_eq!(first["actor"]["id"], ALICE);
    assert_eq!(first["actor"]["requestId"], "rest-audit-1");
    assert_eq!(first["actor"]["clientAddr"], "127.0.0.1");
    assert_eq!(first["resourceType"], "webhook");
    assert_eq!(first["resourceId"], webhook_id.as_str());
    assert_eq!(first["changes"]["headerNames"], json!(["x-receiver-key"]));
    let updated = &data[4];
    assert_eq!(
        updated["changes"]["fields"],
        json!(["description", "headers"])
    );
    assert!(
        updated["actor"]["requestId"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "the gateway's own request id: {updated}"
    );
    assert_eq!(data[1]["resourceId"], integration_id.as_str());
    assert_eq!(
        data[1]["changes"]["apiKey"],
        new_key.as_str(),
        "the public key only"
    );
    assert_ne!(new_key, api_key);
    let by_grpc = &data[0];
    assert_eq!(by_grpc["actor"]["kind"], "service");
    assert_eq!(by_grpc["actor"]["id"], ALICE);
    assert_eq!(by_grpc["actor"]["requestId"], "grpc-audit-1");
    assert_eq!(
        by_grpc["resourceId"],
        grpc_created
            .webhook
            .map(|w| w.id)
            .unwrap_or_default()
            .as_str()
    );

    // Filters narrow; no secret in any row, as stored or as served.
    let only = audit_log(&app, ALICE, "?resourceType=integration&actorKind=user").await?;
    assert_eq!(only["data"].as_array().map(Vec::len), Some(2));
    let stored: Vec<Value> = sqlx::query_scalar("SELECT to_jsonb(a) FROM audit_log a")
        .fetch_all(&app.pool)
        .await?;
    let everything = format!("{stored:?} {log}");
    for secret in secrets
        .iter()
        .map(String::as_str)
        .chain([header_1, header_2, grpc_header])
    {
        assert!(
            !everything.contains(secret),
            "{secret} leaked: {everything}"
        );
    }

    // Another user sees none of it; a partner is refused.
    let bobs = audit_log(&app, BOB, "").await?;
    assert_eq!(bobs["data"], json!([]));
    assert_eq!(verify(&app, BOB).await?["records"], 0);
    let res = app
        .http
        .get(app.api("/audit-log"))
        .header(
            "authorization",
            format!(
                "Basic {}",
                STANDARD.encode(format!("{new_key}:{new_secret}"))
            ),
        )
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    // The chain holds, over both doors.
    let verified = verify(&app, ALICE).await?;
    assert_eq!(verified["valid"], true, "{verified}");
    assert_eq!(verified["records"], 6);
    assert_eq!(verified["head"], data[0]["hash"]);
    let mut audit = AuditServiceClient::connect(app.grpc_url()).await?;
    let grpc_verified = audit
        .verify_audit_log(as_service(VerifyAuditLogRequest::default(), ALICE)?)
        .await?
        .into_inner();
    assert!(grpc_verified.valid);
    assert_eq!(grpc_verified.records, 6);
    let listed = audit
        .list_audit_log(as_service(
            ListAuditLogRequest {
                action: "webhook.created".into(),
                ..Default::default()
            },
            ALICE,
        )?)
        .await?
        .into_inner();
    assert_eq!(listed.records.len(), 2);
    let err = audit
        .list_audit_log(as_service(
            ListAuditLogRequest {
                actor_kind: "robot".into(),
                ..Default::default()
            },
            ALICE,
        )?)
        .await
        .expect_err("unknown actor kind");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // Someone with database access edits record 2: verification names it.
    sqlx::query(
        "UPDATE audit_log SET changes = '{\"fields\": [\"description\"]}'
          WHERE owner_id = $1 AND seq = 2",
    )
    .bind(ALICE)
    .execute(&app.pool)
    .await?;
    let broken = verify(&app, ALICE).await?;
    assert_eq!(broken["valid"], false, "{broken}");
    assert_eq!(broken["brokenAt"], 2);
    assert_eq!(broken["reason"], "edited");
    assert_eq!(broken["records"], 1);
    let grpc_broken = audit
        .verify_audit_log(as_service(VerifyAuditLogRequest::default(), ALICE)?)
        .await?
        .into_inner();
    assert_eq!((grpc_broken.valid, grpc_broken.broken_at), (false, 2));

    app.cleanup().await;
    Ok(())
}
