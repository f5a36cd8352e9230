//! gRPC errors over a real gateway carry the richer error model (google.rpc.Status
//! details), decoded by a stock client with `tonic_types::StatusExt`: the same code and
//! the same fields at fault as REST's problem+json, so a gRPC client can show every bad
//! field at once like a REST one.

use std::collections::HashSet;

use portico_e2e::{ServiceKind, TestApp, assert_problem};
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

/// A gateway alone: the errors are the gateway's.
async fn gateway() -> anyhow::Result<TestApp> {
    TestApp::spawn_with(&[], &[ServiceKind::Gateway]).await
}

/// A request with a user's JWT, as internal callers send it.
fn authed<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// A gRPC validation failure carries the richer error model, decoded by a stock client
/// (`tonic_types::StatusExt`): a `google.rpc.BadRequest` with one violation per bad
/// field, at the same paths and with the same codes as REST's problem+json `errors`,
/// and a `google.rpc.ErrorInfo` whose reason is REST's `code`.
#[tokio::test]
async fn grpc_validation_failures_carry_field_violations_and_the_rest_code() -> anyhow::Result<()> {
    use portico_proto::v1 as pb;
    use portico_proto::v1::webhook_service_client::WebhookServiceClient;
    use tonic_types::StatusExt;
    let app = gateway().await?;
    let mut client = WebhookServiceClient::connect(app.grpc_url()).await?;
    let ivy = app.user_token("ivy");

    // Two bad fields: an invalid URL and an empty events list.
    let err = client
        .create_webhook(authed(
            &ivy,
            pb::CreateWebhookRequest {
                url: "nope".into(),
                events: Vec::new(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("two invalid fields");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let details = err.check_error_details()?;
    let violations: Vec<(String, String)> = details
        .bad_request()
        .expect("a google.rpc.BadRequest in the status details")
        .field_violations
        .iter()
        .map(|v| {
            assert!(!v.description.is_empty(), "{v:?}");
            (v.field.clone(), v.reason.clone())
        })
        .collect();
    let info = details
        .error_info()
        .expect("a google.rpc.ErrorInfo in the status details");
    assert_eq!(info.domain, "portico.dev");

    // The same body over REST: the same code, the same fields at fault.
    let res = app
        .http
        .post(app.api("/webhooks"))
        .bearer_auth(&ivy)
        .json(&json!({"url": "nope", "events": []}))
        .send()
        .await?;
    let problem = assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await?;
    assert_eq!(info.reason, problem["code"], "{problem}");
    let rest_errors: Vec<(String, String)> = problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    (
                        e["path"].as_str().unwrap_or_default().to_owned(),
                        e["code"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(violations.len(), 2, "{violations:?}");
    assert_eq!(violations, rest_errors);
    let fields: HashSet<&str> = violations.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(fields, HashSet::from(["/url", "/events"]));
    // The metadata code that predates the details is still sent.
    assert_eq!(
        err.metadata()
            .get("x-portico-error-code")
            .and_then(|v| v.to_str().ok()),
        Some("validation_failed")
    );

    // Not only validation: every error names its code in ErrorInfo.
    let err = client
        .get_webhook(authed(
            &ivy,
            pb::GetWebhookRequest {
                id: Uuid::now_v7().to_string(),
            },
        ))
        .await
        .expect_err("no such webhook");
    assert_eq!(err.code(), tonic::Code::NotFound);
    let details = err.check_error_details()?;
    assert_eq!(
        details.error_info().map(|i| i.reason.as_str()),
        Some("not_found")
    );
    assert!(details.bad_request().is_none());
    app.cleanup().await;
    Ok(())
}
