//! The contract and the code agree: the served OpenAPI document holds against
//! Schemathesis' generated requests (no 5xx, every answer's status, media type and
//! body as documented), gRPC reflection answers in both versions clients speak, the
//! identities callers name are checked alike over REST and gRPC, and a keep-alive
//! connection stays usable (or is announced closed) after a body the gateway refused.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use portico_e2e::{JWT_SECRET, SERVICE_TOKEN, ServiceKind, TestApp, assert_problem};
use portico_signing::jwt::{Claims, JwtVerifier};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Gateway only: the contract is the gateway's.
async fn gateway(env: &[(&str, &str)]) -> anyhow::Result<TestApp> {
    TestApp::spawn_with(env, &[ServiceKind::Gateway]).await
}

fn token_for(sub: &str) -> String {
    JwtVerifier::new(JWT_SECRET.as_bytes()).issue(&Claims {
        sub: sub.to_owned(),
        exp: chrono::Utc::now().timestamp() + 3600,
        nbf: None,
    })
}

// ---------------------------------------------------------------------------
// Schemathesis
// ---------------------------------------------------------------------------

/// The Schemathesis executable: `PORTICO_SCHEMATHESIS` (deploy/local/test.sh installs
/// it into a virtualenv and sets this), else the virtualenv test.sh makes, else
/// `schemathesis` on PATH.
fn schemathesis() -> PathBuf {
    if let Some(path) = std::env::var_os("PORTICO_SCHEMATHESIS") {
        return PathBuf::from(path);
    }
    if let Some(home) = std::env::var_os("HOME") {
        let venv = PathBuf::from(home).join(".cache/portico/venv/bin/schemathesis");
        if venv.is_file() {
            return venv;
        }
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("schemathesis"))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_default();
    on_path.unwrap_or_else(|| {
        panic!(
            "Schemathesis is not installed. Run ./deploy/local/test.sh (it installs it into \
             ~/.cache/portico/venv), or: python3 -m venv ~/.cache/portico/venv && \
             ~/.cache/portico/venv/bin/pip install 'schemathesis==4.32.5' && \
             export PORTICO_SCHEMATHESIS=~/.cache/portico/venv/bin/schemathesis"
        )
    })
}

/// Runs Schemathesis against the gateway's served document with a configuration file
/// (`config`, TOML: per-operation parameter values) and extra arguments
/// (authentication, operation filters); panics with its report unless every check
/// passed.
async fn run_schemathesis(app: &TestApp, label: &str, seed: u32, config: &str, args: &[String]) {
    let binary = schemathesis();
    let work_dir = std::env::temp_dir().join(format!("portico-schemathesis-{}-{label}", app.id));
    std::fs::create_dir_all(&work_dir).expect("a scratch directory");
    let config_path = work_dir.join("schemathesis.toml");
    std::fs::write(&config_path, config).expect("the configuration file");
    let mut command = tokio::process::Command::new(&binary);
    command
        .current_dir(&work_dir)
        .arg("--config-file")
        .arg(&config_path)
        .arg("run")
        .arg(app.api("/openapi.json"))
        .arg("--url")
        .arg(app.api(""))
        .arg("--checks")
        .arg(
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance",
        )
        .arg("--seed")
        .arg(seed.to_string())
        .arg("--max-examples")
        .arg("25")
        // One worker: Hypothesis' lambda descriptions are not thread-safe on Python 3.11.
        .arg("--workers")
        .arg("1")
        .arg("--request-timeout")
        .arg("10")
        .arg("--generation-database")
        .arg("none")
        .arg("--no-color")
        .args(args)
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let started = std::time::Instant::now();
    let output = tokio::time::timeout(Duration::from_secs(240), command.output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis ({label}) ran longer than 240 s"))
        .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
    let _ = std::fs::remove_dir_all(&work_dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!(
        "schemathesis ({label}) took {:.0?}; summary:\n{}",
        started.elapsed(),
        stdout
            .lines()
            .rev()
            .take(12)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        output.status.success(),
        "schemathesis ({label}) found contract violations (exit {}):\n{stdout}\n{stderr}",
        output.status
    );
}

/// Creates a resource for `user` and returns its id.
async fn create_id(app: &TestApp, user: &str, path: &str, body: Value) -> anyhow::Result<String> {
    let res = app
        .http
        .post(app.api(path))
        .bearer_auth(token_for(user))
        .json(&body)
        .send()
        .await?;
    anyhow::ensure!(
        res.status().is_success(),
        "creating {path}: {}",
        res.status()
    );
    let created: Value = res.json().await?;
    Ok(created["id"].as_str().unwrap_or_default().to_owned())
}

/// Every operation of the served OpenAPI document, called with generated valid and
/// invalid input by a partner, a user and an internal service: no 5xx, and every
/// answer has a documented status, media type and schema. The id routes are also
/// called with the ids of a real webhook, integration and batch, so their success
/// answers are checked too. Fixed seeds and a bounded number of examples keep it
/// reproducible and at about a minute.
#[tokio::test]
async fn the_served_openapi_document_holds_under_schemathesis() -> anyhow::Result<()> {
    let app = gateway(&[("PORTICO_DEFAULT_PARTNER_RATE_LIMIT", "0")]).await?;
    let owner = "contract-user";
    let webhook = create_id(
        &app,
        owner,
        "/webhooks",
        json!({"url": "http://127.0.0.1:9/hook", "events": ["order.created"]}),
    )
    .await?;
    let res = app
        .http
        .post(app.api("/integrations"))
        .bearer_auth(token_for(owner))
        .json(&json!({"name": "contract", "type": "erp",
                      "scopes": ["bulk_orders:write", "bulk_orders:read", "orders:read",
                                 "webhooks:read", "webhooks:write"]}))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = res.json().await?;
    let integration = created["id"].as_str().unwrap_or_default().to_owned();
    let key = created["credentials"]["apiKey"]
        .as_str()
        .unwrap_or_default();
    let secret = created["credentials"]["apiSecret"]
        .as_str()
        .unwrap_or_default();
    let partner = format!(
        "Authorization: Basic {}",
        STANDARD.encode(format!("{key}:{secret}"))
    );
    let batch = create_id(
        &app,
        owner,
        "/bulk-orders",
        json!({"orders": [{"clientOrderRef": "PO-1", "currency": "EUR",
            "customer": {"email": "a@example.com", "name": "A"},
            "shippingAddress": {"line1": "1 Main St", "city": "Berlin", "postalCode": "10115", "country": "DE"},
            "lineItems": [{"sku": "SKU-1", "quantity": 1, "unitPrice": "1.00"}]}]}),
    )
    .await?;
    // The id routes get real ids; DELETE only in the last run, so nothing disappears
    // under the others.
    let real_ids = format!(
        r#"
[[operations]]
include-path-regex = "^/webhooks/\\{{id\\}}"
parameters = {{ "path.id" = "{webhook}" }}

[[operations]]
include-path-regex = "^/integrations/\\{{id\\}}"
parameters = {{ "path.id" = "{integration}" }}

[[operations]]
include-path-regex = "^/bulk-orders/\\{{id\\}}"
parameters = {{ "path.id" = "{batch}" }}
"#
    );

    // The partner first, with random ids: the user's run re-keys its integration.
    run_schemathesis(
        &app,
        "partner",
        13,
        "",
        &[
            "-H".into(),
            partner,
            "--include-path-regex".into(),
            "^/(bulk-orders|orders|webhooks|integrations/me)".into(),
        ],
    )
    .await;
    run_schemathesis(
        &app,
        "user",
        11,
        &real_ids,
        &[
            "-H".into(),
            format!("Authorization: Bearer {}", token_for(owner)),
            "--exclude-method".into(),
            "DELETE".into(),
        ],
    )
    .await;
    // Events (internal services only) and the deletes, for the same user.
    run_schemathesis(
        &app,
        "service",
        12,
        &real_ids,
        &[
            "-H".into(),
            format!("Authorization: Bearer {SERVICE_TOKEN}"),
            "-H".into(),
            format!("x-portico-user-id: {owner}"),
            "--include-tag".into(),
            "events".into(),
            "--include-method".into(),
            "DELETE".into(),
        ],
    )
    .await;
    app.cleanup().await;
    Ok(())
}

// ---------------------------------------------------------------------------
// gRPC reflection
// ---------------------------------------------------------------------------

/// Service names listed by the v1 reflection service.
async fn list_v1(channel: tonic::transport::Channel) -> anyhow::Result<Vec<String>> {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(channel)
        .server_reflection_info(futures::stream::iter([request]))
        .await?
        .into_inner();
    let answer: Option<ServerReflectionResponse> = answers.message().await?;
    match answer.and_then(|a| a.message_response) {
        Some(MessageResponse::ListServicesResponse(list)) => {
            Ok(list.service.into_iter().map(|s| s.name).collect())
        }
        other => anyhow::bail!("v1 reflection answered {other:?}"),
    }
}

/// Service names listed by the v1alpha reflection service, and whether it can hand out
/// the file describing `portico.v1.EventService`.
async fn list_v1alpha(channel: tonic::transport::Channel) -> anyhow::Result<(Vec<String>, bool)> {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    let requests = [
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "portico.v1.EventService".into(),
            )),
        },
    ];
    let mut answers = ServerReflectionClient::new(channel)
        .server_reflection_info(futures::stream::iter(requests))
        .await?
        .into_inner();
    let names = match answers.message().await?.and_then(|a| a.message_response) {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => anyhow::bail!("v1alpha reflection answered {other:?}"),
    };
    let has_file = match answers.message().await?.and_then(|a| a.message_response) {
        Some(MessageResponse::FileDescriptorResponse(files)) => {
            !files.file_descriptor_proto.is_empty()
        }
        other => anyhow::bail!("v1alpha reflection answered {other:?}"),
    };
    Ok((names, has_file))
}

/// Reflection answers as `grpc.reflection.v1` and as `grpc.reflection.v1alpha` (which
/// Python's grpcio-reflection and older grpcurl speak); both list Portico's services,
/// health and both reflection services.
#[tokio::test]
async fn grpc_reflection_answers_in_v1_and_v1alpha() -> anyhow::Result<()> {
    let app = gateway(&[]).await?;
    let channel = tonic::transport::Endpoint::from_shared(app.grpc_url())?
        .connect()
        .await?;
    let v1 = list_v1(channel.clone()).await?;
    let (v1alpha, v1alpha_has_file) = list_v1alpha(channel).await?;
    for names in [&v1, &v1alpha] {
        for expected in [
            "portico.v1.EventService",
            "portico.v1.WebhookService",
            "portico.v1.BulkOrderService",
            "portico.v1.IntegrationService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} missing from {names:?}"
            );
        }
    }
    assert!(
        v1alpha_has_file,
        "v1alpha must describe portico.v1.EventService"
    );
    app.cleanup().await;
    Ok(())
}

// ---------------------------------------------------------------------------
// Identities from outside
// ---------------------------------------------------------------------------

/// The service token without `x-portico-user-id` is 401 `missing_user_id` (gRPC
/// UNAUTHENTICATED); a user id that is not 1-255 bytes without control characters is
/// refused before it reaches a query: in `x-portico-user-id` with 400
/// `invalid_user_id` (INVALID_ARGUMENT), in a JWT `sub` with 401
/// `invalid_token_subject` (UNAUTHENTICATED); 255 bytes are fine.
#[tokio::test]
async fn identities_callers_name_are_bounded_and_checked_over_rest_and_grpc() -> anyhow::Result<()>
{
    use portico_proto::v1::ListWebhooksRequest;
    use portico_proto::v1::webhook_service_client::WebhookServiceClient;
    let app = gateway(&[]).await?;
    let event = json!({"type": "a.b", "data": {}});

    // REST: the service token alone.
    let res = app
        .http
        .post(app.api("/events"))
        .bearer_auth(SERVICE_TOKEN)
        .json(&event)
        .send()
        .await?;
    assert_problem(res, StatusCode::UNAUTHORIZED, "missing_user_id").await?;
    // A blank header is no user either.
    let res = app
        .http
        .get(app.api("/webhooks"))
        .bearer_auth(SERVICE_TOKEN)
        .header("x-portico-user-id", "  ")
        .send()
        .await?;
    assert_problem(res, StatusCode::UNAUTHORIZED, "missing_user_id").await?;
    // Too long, a control character, not UTF-8.
    let long = "u".repeat(256);
    for bad in [
        long.as_bytes(),
        b"a\tb".as_slice(),
        "c1\u{85}".as_bytes(),
        b"\xff\xfe".as_slice(),
    ] {
        let res = app
            .http
            .get(app.api("/webhooks"))
            .bearer_auth(SERVICE_TOKEN)
            .header(
                "x-portico-user-id",
                reqwest::header::HeaderValue::from_bytes(bad)?,
            )
            .send()
            .await?;
        let body = assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await?;
        assert_eq!(body["errors"][0]["code"], "invalid_user_id", "{body}");
        assert_eq!(body["errors"][0]["path"], "/headers/x-portico-user-id");
    }
    let at_limit = "u".repeat(255);
    let res = app
        .http
        .get(app.api("/webhooks"))
        .bearer_auth(SERVICE_TOKEN)
        .header("x-portico-user-id", &at_limit)
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);

    // REST: JWT subjects. A NUL once reached PostgreSQL and answered 500.
    for bad in ["a\0b", &"s".repeat(256), "line\nbreak"] {
        let res = app
            .http
            .get(app.api("/webhooks"))
            .bearer_auth(token_for(bad))
            .send()
            .await?;
        assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_token_subject").await?;
    }
    for good in [&"s".repeat(255), "ünïcødé user"] {
        let res = app
            .http
            .get(app.api("/webhooks"))
            .bearer_auth(token_for(good))
            .send()
            .await?;
        assert_eq!(res.status(), StatusCode::OK, "{good:?}");
    }

    // gRPC: the same rules, the same codes.
    let mut client = WebhookServiceClient::connect(app.grpc_url()).await?;
    let call = |auth: String, user: Option<&str>| {
        let mut request = tonic::Request::new(ListWebhooksRequest::default());
        if let Ok(v) = auth.parse() {
            request.metadata_mut().insert("authorization", v);
        }
        if let Some(user) = user
            && let Ok(v) = user.parse()
        {
            request.metadata_mut().insert("x-portico-user-id", v);
        }
        request
    };
    let service = format!("Bearer {SERVICE_TOKEN}");
    let err = client
        .list_webhooks(call(service.clone(), None))
        .await
        .expect_err("no user named");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert_eq!(
        err.metadata()
            .get("x-portico-error-code")
            .and_then(|v| v.to_str().ok()),
        Some("missing_user_id")
    );
    let err = client
        .list_webhooks(call(service.clone(), Some(&long)))
        .await
        .expect_err("too long");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("invalid_user_id"),
        "{}",
        err.message()
    );
    client.list_webhooks(call(service, Some(&at_limit))).await?;
    let err = client
        .list_webhooks(call(format!("Bearer {}", token_for("a\0b")), None))
        .await
        .expect_err("NUL in sub");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert_eq!(
        err.metadata()
            .get("x-portico-error-code")
            .and_then(|v| v.to_str().ok()),
        Some("invalid_token_subject")
    );
    app.cleanup().await;
    Ok(())
}

/// An event whose `data` is over PORTICO_MAX_EVENT_BYTES (while the body is within
/// PORTICO_MAX_BODY_BYTES) is invalid input, alike on both doors: REST 400
/// `validation_failed` with `payload_too_large` at `/data`, gRPC INVALID_ARGUMENT. A
/// body over the body limit is 413; a gRPC message over the transport's limit is
/// OUT_OF_RANGE.
#[tokio::test]
async fn an_oversized_event_is_invalid_argument_on_both_doors() -> anyhow::Result<()> {
    use portico_proto::v1::PublishEventRequest;
    use portico_proto::v1::event_service_client::EventServiceClient;
    let app = gateway(&[
        ("PORTICO_MAX_EVENT_BYTES", "1024"),
        ("PORTICO_MAX_BODY_BYTES", "8192"),
    ])
    .await?;
    let big = json!({"blob": "x".repeat(2000)});
    let res = app
        .http
        .post(app.api("/events"))
        .bearer_auth(SERVICE_TOKEN)
        .header("x-portico-user-id", "u")
        .json(&json!({"type": "a.b", "data": big}))
        .send()
        .await?;
    let body = assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await?;
    assert_eq!(body["errors"][0]["code"], "payload_too_large");
    assert_eq!(body["errors"][0]["path"], "/data");
    let res = app
        .http
        .post(app.api("/events"))
        .bearer_auth(SERVICE_TOKEN)
        .header("x-portico-user-id", "u")
        .json(&json!({"type": "a.b", "data": {"blob": "x".repeat(9000)}}))
        .send()
        .await?;
    assert_problem(res, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await?;

    let mut client = EventServiceClient::connect(app.grpc_url()).await?;
    let mut request = tonic::Request::new(PublishEventRequest {
        r#type: "a.b".into(),
        data_json: big.to_string(),
        idempotency_key: String::new(),
        ordering_key: String::new(),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {SERVICE_TOKEN}").parse()?);
    request
        .metadata_mut()
        .insert("x-portico-user-id", "u".parse()?);
    let err = client
        .publish_event(request)
        .await
        .expect_err("oversized data");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("payload_too_large"),
        "{}",
        err.message()
    );
    // A message over the transport's receive limit (4 MiB) never reaches Portico: the
    // gRPC library refuses it with OUT_OF_RANGE, as common.proto says.
    let mut request = tonic::Request::new(PublishEventRequest {
        r#type: "a.b".into(),
        data_json: format!("\"{}\"", "x".repeat(5 * 1024 * 1024)),
        idempotency_key: String::new(),
        ordering_key: String::new(),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {SERVICE_TOKEN}").parse()?);
    let err = client
        .publish_event(request)
        .await
        .expect_err("over the transport limit");
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");
    app.cleanup().await;
    Ok(())
}

// ---------------------------------------------------------------------------
// Keep-alive after a refused body
// ---------------------------------------------------------------------------

/// One answer read off a raw connection: its status and whether it announced
/// `Connection: close`.
struct RawAnswer {
    status: u16,
    closes: bool,
}

/// Reads one HTTP/1.1 response (head and Content-Length body) from `stream`.
async fn read_answer(stream: &mut tokio::net::tcp::OwnedReadHalf) -> anyhow::Result<RawAnswer> {
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "the connection closed before an answer");
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let header = |name: &str| {
        head.lines().find_map(|l| {
            l.strip_prefix(&format!("{name}:"))
                .map(|v| v.trim().to_owned())
        })
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut have = buffer.len() - head_end;
    while have < length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "the connection closed inside an answer");
        have += n;
    }
    Ok(RawAnswer {
        status,
        closes: header("connection").is_some_and(|v| v.contains("close")),
    })
}

/// Sends a request with a `size`-byte JSON body over a fresh keep-alive connection
/// (the body written concurrently, as a client streams it), reads the answer, then
/// asks `/healthz` on the same connection. Returns the first answer and, unless the
/// first announced `Connection: close`, the second status.
async fn refused_then_reused(
    addr: &str,
    path: &str,
    size: usize,
) -> anyhow::Result<(RawAnswer, Option<u16>)> {
    let stream = TcpStream::connect(addr).await?;
    let (mut reader, mut writer) = stream.into_split();
    let body = format!(
        r#"{{"type":"a.b","data":{{"blob":"{}"}}}}"#,
        "x".repeat(size.saturating_sub(30))
    );
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: portico\r\nAuthorization: Bearer {SERVICE_TOKEN}\r\n\
         x-portico-user-id: u\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let sender = tokio::spawn(async move {
        // The server may stop reading (and close) before all of it is sent.
        let _ = writer.write_all(head.as_bytes()).await;
        let _ = writer.write_all(body.as_bytes()).await;
        writer
    });
    let first = tokio::time::timeout(Duration::from_secs(10), read_answer(&mut reader)).await??;
    if first.closes {
        // Announced: the server closes; nothing more is read from this connection.
        let mut rest = [0u8; 1024];
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match reader.read(&mut rest).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => continue,
                }
            }
        })
        .await
        .unwrap_or(false);
        anyhow::ensure!(
            closed,
            "Connection: close was announced but the connection stayed open"
        );
        return Ok((first, None));
    }
    let mut writer = tokio::time::timeout(Duration::from_secs(10), sender).await??;
    writer
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: portico\r\n\r\n")
        .await?;
    let second = tokio::time::timeout(Duration::from_secs(10), read_answer(&mut reader))
        .await?
        .map_err(|e| anyhow::anyhow!("keep-alive promised, but the next request failed: {e}"))?;
    Ok((first, Some(second.status)))
}

/// After a 413 the connection is either still usable for the next request (the rest of
/// a body of up to 1 MiB is read and discarded) or the answer says `Connection: close`
/// (a larger body): never a keep-alive answer followed by a closed connection.
#[tokio::test]
async fn a_refused_body_leaves_a_usable_or_announced_closed_connection() -> anyhow::Result<()> {
    let app = gateway(&[("PORTICO_MAX_BODY_BYTES", "4096")]).await?;
    let addr = app.addr(ServiceKind::Gateway, "http");
    // Within the drain bound: kept alive, the next request works. Sizes around the
    // socket buffers, where hyper alone sometimes closed without saying so.
    for size in [5_000, 100_000, 600_000, 1_000_000] {
        let (first, second) = refused_then_reused(&addr, "/api/events", size).await?;
        assert_eq!(first.status, 413, "{size}");
        assert!(
            !first.closes,
            "{size}: a drainable body keeps the connection"
        );
        assert_eq!(second, Some(200), "{size}");
    }
    // Beyond it: closed, and said so.
    for size in [3_000_000, 8_000_000] {
        let (first, second) = refused_then_reused(&addr, "/api/events", size).await?;
        assert_eq!(first.status, 413, "{size}");
        assert!(first.closes, "{size}: Connection: close expected");
        assert_eq!(second, None);
    }
    // Not only 413: a body nobody reads (a method the route does not have).
    let (first, second) = refused_then_reused(&addr, "/api/integrations/me", 200_000).await?;
    assert_eq!(first.status, 405);
    assert!(!first.closes);
    assert_eq!(second, Some(200));
    app.cleanup().await;
    Ok(())
}
