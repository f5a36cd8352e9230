//! Integration templates against the real gateway, PostgreSQL and JetStream: the
//! built-in templates and each user's own are listed in key order with cursor pages;
//! saved templates are isolated per user; creating an integration from a template
//! makes the integration, its credentials and its webhook subscription at once, shows
//! both secrets once, applies the overrides, and creates nothing when the template is
//! unknown, a field is forbidden or the webhook URL is refused.

use std::collections::BTreeSet;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use portico_e2e::{ServiceKind, TestApp, assert_problem};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ALICE: &str = "user-alice";
const BOB: &str = "user-bob";
const BUILTIN_KEYS: [&str; 5] = [
    "accounting-sync",
    "analytics-export",
    "erp-read-only",
    "fulfilment-3pl",
    "marketplace-order-sync",
];

async fn gateway_only() -> anyhow::Result<TestApp> {
    TestApp::spawn_with(&[], &[ServiceKind::Gateway]).await
}

fn as_user(app: &TestApp, req: reqwest::RequestBuilder, user: &str) -> reqwest::RequestBuilder {
    req.bearer_auth(app.user_token(user))
}

async fn get(app: &TestApp, user: &str, path: &str) -> anyhow::Result<reqwest::Response> {
    Ok(as_user(app, app.http.get(app.api(path)), user)
        .send()
        .await?)
}

async fn send(
    app: &TestApp,
    user: &str,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> anyhow::Result<reqwest::Response> {
    Ok(as_user(app, app.http.request(method, app.api(path)), user)
        .json(&body)
        .send()
        .await?)
}

fn user_template(name: &str) -> Value {
    json!({
        "name": name,
        "description": "Our own ERP connector",
        "integrationType": "erp",
        "scopes": ["orders:read"],
        "allowedScopes": ["orders:read", "bulk_orders:read"],
        "rateLimitPerSecond": 7,
        "dailyQuota": 700,
        "events": ["order.created"],
        "overridable": ["name", "events"]
    })
}

/// Every key of the caller's template list, walking the pages of `limit`.
async fn all_keys(app: &TestApp, user: &str, limit: u32) -> anyhow::Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut cursor = String::new();
    for _ in 0..50 {
        let res = get(
            app,
            user,
            &format!("/integration-templates?limit={limit}&cursor={cursor}"),
        )
        .await?;
        assert_eq!(res.status(), StatusCode::OK);
        let page: Value = res.json().await?;
        let data = page["data"].as_array().cloned().unwrap_or_default();
        assert!(data.len() <= limit as usize);
        keys.extend(
            data.iter()
                .map(|t| t["key"].as_str().unwrap_or_default().to_owned()),
        );
        match page["nextCursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => return Ok(keys),
        }
    }
    anyhow::bail!("the pages never ended")
}

/// What the user owns: (integrations, webhooks), as the API lists them and as the
/// database holds them (credentials and secrets included).
async fn owned(app: &TestApp, user: &str) -> anyhow::Result<(usize, usize, i64)> {
    let integrations: Value = get(app, user, "/integrations").await?.json().await?;
    let webhooks: Value = get(app, user, "/webhooks").await?.json().await?;
    let rows: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM integrations WHERE user_id = $1)
              + (SELECT count(*) FROM integration_credentials c JOIN integrations i
                   ON i.id = c.integration_id WHERE i.user_id = $1)
              + (SELECT count(*) FROM webhooks WHERE user_id = $1)
              + (SELECT count(*) FROM webhook_secrets s JOIN webhooks w
                   ON w.id = s.webhook_id WHERE w.user_id = $1)",
    )
    .bind(user)
    .fetch_one(&app.pool)
    .await?;
    Ok((
        integrations["data"].as_array().map_or(0, Vec::len),
        webhooks["data"].as_array().map_or(0, Vec::len),
        rows,
    ))
}

/// The built-in templates are listed for everyone with their defaults; a user's own
/// templates join their list (not anyone else's) in key order, and cursor pages of
/// any size walk the whole list exactly once.
#[tokio::test]
async fn lists_builtin_and_own_templates_in_pages() -> anyhow::Result<()> {
    let app = gateway_only().await?;
    let res = get(&app, ALICE, "/integration-templates").await?;
    assert_eq!(res.status(), StatusCode::OK);
    let page: Value = res.json().await?;
    let data = page["data"].as_array().cloned().unwrap_or_default();
    let keys: Vec<&str> = data.iter().filter_map(|t| t["key"].as_str()).collect();
    assert_eq!(keys, BUILTIN_KEYS);
    assert!(page["nextCursor"].is_null());
    let erp = &data[2];
    assert_eq!(erp["builtin"], true);
    assert_eq!(erp["integrationType"], "erp");
    assert_eq!(erp["scopes"], json!(["orders:read", "bulk_orders:read"]));
    assert!(
        !erp["allowedScopes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s.as_str().is_some_and(|s| s.ends_with(":write"))),
        "{erp}"
    );
    assert_eq!(
        erp["overridable"],
        json!(["name", "scopes", "expiresAt", "events"])
    );
    assert!(erp["createdAt"].is_null());

    for key in ["zz-last", "aa-first", "mid-template"] {
        let res = send(
            &app,
            ALICE,
            reqwest::Method::POST,
            &format!("/integration-templates/{key}"),
            user_template("Mine"),
        )
        .await?;
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    let mut expected: Vec<String> = BUILTIN_KEYS.iter().map(|k| (*k).to_owned()).collect();
    expected.extend(["zz-last", "aa-first", "mid-template"].map(str::to_owned));
    expected.sort();
    for limit in [1, 2, 3, 50] {
        assert_eq!(
            all_keys(&app, ALICE, limit).await?,
            expected,
            "limit {limit}"
        );
    }
    assert_eq!(all_keys(&app, BOB, 2).await?, BUILTIN_KEYS);

    let res = get(&app, ALICE, "/integration-templates?cursor=not-a-cursor").await?;
    let body = assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await?;
    assert_eq!(body["errors"][0]["code"], "invalid_cursor");
    app.cleanup().await;
    Ok(())
}

/// Saved templates belong to their owner: another user gets 404 on read, change and
/// delete, and may use the same key for their own. Built-in keys are reserved and
/// read only; a repeated key is a conflict; an invalid template is a 400 with field
/// errors.
#[tokio::test]
async fn saved_templates_are_isolated_per_user() -> anyhow::Result<()> {
    let app = gateway_only().await?;
    let path = "/integration-templates/team-erp";
    let res = send(
        &app,
        ALICE,
        reqwest::Method::POST,
        path,
        user_template("Alice's"),
    )
    .await?;
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = res.json().await?;
    assert_eq!(created["key"], "team-erp");
    assert_eq!(created["builtin"], false);
    assert_eq!(created["rateLimitPerSecond"], 7);
    assert!(created["createdAt"].is_string());

    // Bob sees nothing of it.
    for res in [
        get(&app, BOB, path).await?,
        send(
            &app,
            BOB,
            reqwest::Method::PATCH,
            path,
            json!({"name": "Stolen"}),
        )
        .await?,
        as_user(&app, app.http.delete(app.api(path)), BOB)
            .send()
            .await?,
        send(
            &app,
            BOB,
            reqwest::Method::POST,
            &format!("{path}/integrations"),
            json!({"webhookUrl": "http://127.0.0.1:9/hook"}),
        )
        .await?,
    ] {
        assert_problem(res, StatusCode::NOT_FOUND, "template_not_found").await?;
    }
    // The same key is free for Bob.
    let res = send(
        &app,
        BOB,
        reqwest::Method::POST,
        path,
        user_template("Bob's"),
    )
    .await?;
    assert_eq!(res.status(), StatusCode::CREATED);
    let alice: Value = get(&app, ALICE, path).await?.json().await?;
    assert_eq!(alice["name"], "Alice's");

    // Alice changes hers; the merged template must still pass every rule.
    let res = send(
        &app,
        ALICE,
        reqwest::Method::PATCH,
        path,
        json!({"dailyQuota": 900, "allowedScopes": null}),
    )
    .await?;
    assert_eq!(res.status(), StatusCode::OK);
    let changed: Value = res.json().await?;
    assert_eq!(changed["dailyQuota"], 900);
    assert!(changed["allowedScopes"].is_null());
    assert_eq!(changed["name"], "Alice's");
    let res = send(
        &app,
        ALICE,
        reqwest::Method::PATCH,
        path,
        json!({"scopes": ["orders:delete"]}),
    )
    .await?;
    let body = assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await?;
    assert_eq!(body["errors"][0]["path"], "/scopes/0", "{body}");

    // Conflicts: a repeated key, a built-in key; built-ins are read only.
    let res = send(
        &app,
        ALICE,
        reqwest::Method::POST,
        path,
        user_template("Again"),
    )
    .await?;
    assert_problem(res, StatusCode::CONFLICT, "template_exists").await?;
    let builtin = "/integration-templates/erp-read-only";
    let res = send(
        &app,
        ALICE,
        reqwest::Method::POST,
        builtin,
        user_template("Shadow"),
    )
    .await?;
    assert_problem(res, StatusCode::CONFLICT, "template_key_reserved").await?;
    let res = send(
        &app,
        ALICE,
        reqwest::Method::PATCH,
        builtin,
        json!({"name": "x"}),
    )
    .await?;
    assert_problem(res, StatusCode::CONFLICT, "template_read_only").await?;
    let res = as_user(&app, app.http.delete(app.api(builtin)), ALICE)
        .send()
        .await?;
    assert_problem(res, StatusCode::CONFLICT, "template_read_only").await?;

    // Invalid: a bad key, and several bad fields reported at once.
    let res = send(
        &app,
        ALICE,
        reqwest::Method::POST,
        "/integration-templates/Bad_Key",
        user_template("x"),
    )
    .await?;
    let body = assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await?;
    assert_eq!(body["errors"][0]["code"], "invalid_template_key");
    let mut bad = user_template("ok");
    bad["scopes"] = json!(["webhooks:write"]);
    bad["overridable"] = json!(["name", "colour"]);
    bad["events"] = json!([]);
    let res = send(
        &app,
        ALICE,
        reqwest::Method::POST,
        "/integration-templates/bad-one",
        bad,
    )
    .await?;
    let body = assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await?;
    let codes: BTreeSet<&str> = body["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["code"].as_str())
        .collect();
    assert_eq!(
        codes,
        BTreeSet::from([
            "scope_not_allowed",
            "invalid_template_field",
            "empty_events"
        ]),
        "{body}"
    );

    // Alice deletes hers; Bob's stays.
    let res = as_user(&app, app.http.delete(app.api(path)), ALICE)
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_problem(
        get(&app, ALICE, path).await?,
        StatusCode::NOT_FOUND,
        "template_not_found",
    )
    .await?;
    let bob: Value = get(&app, BOB, path).await?.json().await?;
    assert_eq!(bob["name"], "Bob's");
    app.cleanup().await;
    Ok(())
}

/// Creating from a built-in template makes the integration (the template's type,
/// scopes and limits, with the request's overrides) and its webhook subscription (the
/// template's events) at once. The API credentials work for a partner call, the
/// signing secret is the webhook's, and neither secret is ever shown again.
#[tokio::test]
async fn creates_integration_and_webhook_from_a_template() -> anyhow::Result<()> {
    let app = gateway_only().await?;
    let res = send(
        &app,
        ALICE,
        reqwest::Method::POST,
        "/integration-templates/marketplace-order-sync/integrations",
        json!({
            "webhookUrl": "http://127.0.0.1:9/market-hooks",
            "name": "Acme Marketplace",
            "dailyQuota": 1234
        }),
    )
    .await?;
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = res.json().await?;
    assert_eq!(created["template"], "marketplace-order-sync");
    let integration = &created["integration"];
    assert_eq!(integration["name"], "Acme Marketplace", "override");
    assert_eq!(integration["dailyQuota"], 1234, "override");
    assert_eq!(integration["rateLimitPerSecond"], 50, "template default");
    assert_eq!(integration["type"], "marketplace");
    assert_eq!(
        integration["scopes"],
        json!(["bulk_orders:write", "bulk_orders:read", "orders:read"])
    );
    assert_eq!(integration["webhookUrl"], "http://127.0.0.1:9/market-hooks");
    let webhook = &created["webhook"];
    assert_eq!(
        webhook["events"],
        json!(["order.*", "bulk_order.completed"])
    );
    assert_eq!(webhook["url"], "http://127.0.0.1:9/market-hooks");
    let secret = webhook["secret"].as_str().unwrap_or_default();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let key = created["credentials"]["apiKey"]
        .as_str()
        .unwrap_or_default();
    let api_secret = created["credentials"]["apiSecret"]
        .as_str()
        .unwrap_or_default();
    assert!(key.starts_with("ptk_") && api_secret.starts_with("pts_"));

    // The credentials work: the partner reads its own integration.
    let res = app
        .http
        .get(app.api("/integrations/me"))
        .header(
            "authorization",
            format!("Basic {}", STANDARD.encode(format!("{key}:{api_secret}"))),
        )
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    let me: Value = res.json().await?;
    assert_eq!(me["id"], integration["id"]);

    // The webhook is a normal webhook of the owner, signing with the returned secret.
    let webhook_id = webhook["id"].as_str().unwrap_or_default();
    let stored: Value = get(&app, ALICE, &format!("/webhooks/{webhook_id}"))
        .await?
        .json()
        .await?;
    assert_eq!(stored["events"], webhook["events"]);
    assert_eq!(stored["active"], true);
    let signing: Value = get(&app, ALICE, &format!("/webhooks/{webhook_id}/secret"))
        .await?
        .json()
        .await?;
    assert_eq!(signing["secret"], secret);

    // The API secret is shown once: reading the integration never returns it.
    let id = integration["id"].as_str().unwrap_or_default();
    let read = get(&app, ALICE, &format!("/integrations/{id}"))
        .await?
        .text()
        .await?;
    assert!(!read.contains(api_secret), "{read}");
    assert_eq!(owned(&app, ALICE).await?, (1, 1, 4));
    assert_eq!(owned(&app, BOB).await?, (0, 0, 0));

    // A user's own template works the same way, with its events override.
    let res = send(
        &app,
        BOB,
        reqwest::Method::POST,
        "/integration-templates/bob-erp",
        user_template("Bob ERP"),
    )
    .await?;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = send(
        &app,
        BOB,
        reqwest::Method::POST,
        "/integration-templates/bob-erp/integrations",
        json!({"webhookUrl": "http://127.0.0.1:9/bob", "events": ["order.cancelled"]}),
    )
    .await?;
    assert_eq!(res.status(), StatusCode::CREATED);
    let bob: Value = res.json().await?;
    assert_eq!(bob["integration"]["name"], "Bob ERP");
    assert_eq!(bob["integration"]["rateLimitPerSecond"], 7);
    assert_eq!(bob["integration"]["scopes"], json!(["orders:read"]));
    assert_eq!(bob["webhook"]["events"], json!(["order.cancelled"]));
    assert_eq!(owned(&app, BOB).await?, (1, 1, 4));
    app.cleanup().await;
    Ok(())
}

/// An unknown template, a field the template forbids, a scope outside its allowed
/// ones, a missing or refused webhook URL and an invalid override each get a clear
/// problem+json answer, and none of them creates anything.
#[tokio::test]
async fn refused_requests_create_nothing() -> anyhow::Result<()> {
    let app = gateway_only().await?;
    let url = "http://127.0.0.1:9/hook";
    let erp = "/integration-templates/erp-read-only/integrations";
    let post =
        |path: &'static str, body: Value| send(&app, ALICE, reqwest::Method::POST, path, body);

    let res = post(
        "/integration-templates/no-such-template/integrations",
        json!({"webhookUrl": url}),
    )
    .await?;
    assert_problem(res, StatusCode::NOT_FOUND, "template_not_found").await?;

    // The ERP read-only template pins its limits and refuses write scopes.
    let res = post(
        erp,
        json!({"webhookUrl": url, "rateLimitPerSecond": 500, "scopes": ["orders:read", "bulk_orders:write"]}),
    )
    .await?;
    let body = assert_problem(
        res,
        StatusCode::UNPROCESSABLE_ENTITY,
        "template_field_forbidden",
    )
    .await?;
    let errors: Vec<(String, String)> = body["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["code"].as_str().unwrap_or_default().to_owned(),
                e["path"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        errors,
        [
            (
                "field_not_overridable".to_owned(),
                "/rateLimitPerSecond".to_owned()
            ),
            ("scope_not_allowed".to_owned(), "/scopes/1".to_owned()),
        ],
        "{body}"
    );

    // The webhook URL is required and goes through the SSRF guard.
    let res = post(erp, json!({})).await?;
    assert_problem(res, StatusCode::BAD_REQUEST, "malformed_body").await?;
    let res = post(erp, json!({"webhookUrl": "http://169.254.169.254/latest"})).await?;
    let body = assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await?;
    assert_eq!(body["errors"][0]["code"], "forbidden_address", "{body}");
    assert_eq!(body["errors"][0]["path"], "/webhookUrl", "{body}");

    // Allowed overrides are still validated: an expiry in the past, a bad filter.
    let res = post(
        erp,
        json!({"webhookUrl": url, "expiresAt": "2000-01-01T00:00:00Z"}),
    )
    .await?;
    let body = assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await?;
    assert_eq!(body["errors"][0]["code"], "invalid_expiry", "{body}");
    let res = post(erp, json!({"webhookUrl": url, "events": ["order..x"]})).await?;
    let body = assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await?;
    assert_eq!(body["errors"][0]["path"], "/events/0", "{body}");

    assert_eq!(owned(&app, ALICE).await?, (0, 0, 0), "nothing was created");
    app.cleanup().await;
    Ok(())
}

/// The gRPC twin: templates listed and saved, an integration created from a template
/// with its webhook and both secrets, NOT_FOUND for an unknown template and
/// INVALID_ARGUMENT (`template_field_forbidden`) for a forbidden field, creating
/// nothing.
#[tokio::test]
async fn grpc_creates_from_templates_like_rest() -> anyhow::Result<()> {
    use portico_e2e::SERVICE_TOKEN;
    use portico_proto::v1::integration_template_service_client::IntegrationTemplateServiceClient;
    use portico_proto::v1::{
        CreateIntegrationFromTemplateRequest, CreateTemplateRequest, GetTemplateRequest,
        IntegrationType, ListTemplatesRequest, StringList, UpdateTemplateRequest,
    };
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
    fn error_code(status: &tonic::Status) -> &str {
        status
            .metadata()
            .get("x-portico-error-code")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
    let app = gateway_only().await?;
    let mut client = IntegrationTemplateServiceClient::connect(app.grpc_url()).await?;

    let listed = client
        .list_templates(authed(ListTemplatesRequest { page: None }, ALICE))
        .await?
        .into_inner();
    let keys: Vec<&str> = listed.templates.iter().map(|t| t.key.as_str()).collect();
    assert_eq!(keys, BUILTIN_KEYS);
    let saved = client
        .create_template(authed(
            CreateTemplateRequest {
                key: "grpc-3pl".into(),
                name: "gRPC 3PL".into(),
                description: String::new(),
                r#type: IntegrationType::Shipping as i32,
                scopes: vec!["orders:read".into()],
                allowed_scopes: Vec::new(),
                rate_limit_per_second: 3,
                daily_quota: 30,
                events: vec!["order.created".into()],
                overridable: vec!["name".into()],
            },
            ALICE,
        ))
        .await?
        .into_inner();
    assert!(saved.any_scope_allowed && !saved.builtin);
    // Only the fields that are set change.
    let updated = client
        .update_template(authed(
            UpdateTemplateRequest {
                key: "grpc-3pl".into(),
                rate_limit_per_second: Some(4),
                allowed_scopes: Some(StringList {
                    values: vec!["orders:read".into(), "bulk_orders:read".into()],
                }),
                ..Default::default()
            },
            ALICE,
        ))
        .await?
        .into_inner();
    assert_eq!(updated.rate_limit_per_second, 4);
    assert!(!updated.any_scope_allowed);
    assert_eq!(updated.allowed_scopes, ["orders:read", "bulk_orders:read"]);
    assert_eq!(
        (updated.name.as_str(), updated.daily_quota),
        ("gRPC 3PL", 30)
    );
    let err = client
        .update_template(authed(
            UpdateTemplateRequest {
                key: "erp-read-only".into(),
                name: Some("mine now".into()),
                ..Default::default()
            },
            ALICE,
        ))
        .await
        .expect_err("built-in templates are read only");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert_eq!(error_code(&err), "template_read_only");
    let err = client
        .get_template(authed(
            GetTemplateRequest {
                key: "grpc-3pl".into(),
            },
            BOB,
        ))
        .await
        .expect_err("another user's template");
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(error_code(&err), "template_not_found");

    let created = client
        .create_integration_from_template(authed(
            CreateIntegrationFromTemplateRequest {
                template_key: "grpc-3pl".into(),
                webhook_url: "http://127.0.0.1:9/grpc".into(),
                name: Some("Via gRPC".into()),
                ..Default::default()
            },
            ALICE,
        ))
        .await?
        .into_inner();
    let integration = created.integration.unwrap_or_default();
    assert_eq!(integration.name, "Via gRPC");
    assert_eq!(integration.r#type, IntegrationType::Shipping as i32);
    assert_eq!(integration.rate_limit_per_second, 4);
    assert!(
        created
            .credentials
            .is_some_and(|c| c.api_secret.starts_with("pts_"))
    );
    assert!(created.webhook_secret.starts_with("whsec_"));
    assert_eq!(created.webhook_events, ["order.created"]);
    assert_eq!(owned(&app, ALICE).await?, (1, 1, 4));

    let err = client
        .create_integration_from_template(authed(
            CreateIntegrationFromTemplateRequest {
                template_key: "grpc-3pl".into(),
                webhook_url: "http://127.0.0.1:9/grpc".into(),
                daily_quota: Some(1),
                ..Default::default()
            },
            ALICE,
        ))
        .await
        .expect_err("dailyQuota is not overridable");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(error_code(&err), "template_field_forbidden");
    let err = client
        .create_integration_from_template(authed(
            CreateIntegrationFromTemplateRequest {
                template_key: "nope-nope".into(),
                webhook_url: "http://127.0.0.1:9/grpc".into(),
                ..Default::default()
            },
            ALICE,
        ))
        .await
        .expect_err("unknown template");
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(owned(&app, ALICE).await?, (1, 1, 4), "nothing more created");
    app.cleanup().await;
    Ok(())
}
