//! The foundation: three real services over real PostgreSQL and JetStream come up,
//! pass jobs along, refuse bad input without side effects, and stop gracefully.

use std::time::Duration;

use portico_e2e::{SERVICE_TOKEN, ServiceKind, TestApp, assert_problem, wait_for};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn events_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap_or(-1)
}

fn service(req: reqwest::RequestBuilder, user: &str) -> reqwest::RequestBuilder {
    req.bearer_auth(SERVICE_TOKEN)
        .header("x-portico-user-id", user)
}

/// Every service answers its liveness, readiness and metrics endpoints, and the gateway
/// reports SERVING over gRPC health and serves its OpenAPI document on both prefixes.
#[tokio::test]
async fn services_come_up_ready_with_health_metrics_and_openapi() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    for kind in portico_e2e::ALL_SERVICES {
        let base = format!("http://{}", app.addr(kind, "http"));
        for path in ["/healthz", "/readyz", "/metrics"] {
            let res = app.http.get(format!("{base}{path}")).send().await?;
            assert_eq!(res.status(), StatusCode::OK, "{kind:?} {path}");
        }
    }
    let channel = tonic::transport::Endpoint::from_shared(app.grpc_url())?
        .connect()
        .await?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    for prefix in ["/api", "/api/v1"] {
        let yaml = app
            .http
            .get(format!("{}{prefix}/openapi.yaml", app.base_url()))
            .send()
            .await?;
        assert_eq!(yaml.status(), StatusCode::OK);
        let text = yaml.text().await?;
        assert!(text.contains("openapi: 3.1"), "{text:.200}");
        assert!(text.contains("/events"));
        let json: Value = app
            .http
            .get(format!("{}{prefix}/openapi.json", app.base_url()))
            .send()
            .await?
            .json()
            .await?;
        assert!(json["paths"]["/events"]["post"].is_object());
    }
    app.cleanup().await;
    Ok(())
}

/// An event published through the gateway is consumed by the dispatcher and committed
/// in PostgreSQL; publishing it again with the same idempotency key is a duplicate with
/// the same id and never a second row.
#[tokio::test]
async fn a_published_event_is_consumed_and_recorded_once() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let body =
        json!({"type": "order.created", "data": {"orderId": "o-1"}, "idempotencyKey": "k-1"});
    let first = service(app.http.post(app.api("/events")), "user-a")
        .json(&body)
        .send()
        .await?;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first: Value = first.json().await?;
    assert_eq!(first["duplicate"], false);
    let id: uuid::Uuid = first["id"].as_str().unwrap_or_default().parse()?;

    let pool = app.pool.clone();
    wait_for(Duration::from_secs(15), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap_or(0)
                == 1
        }
    })
    .await?;
    let (user, event_type, payload): (String, String, Value) =
        sqlx::query_as("SELECT user_id, event_type, payload FROM events WHERE id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await?;
    assert_eq!(
        (user.as_str(), event_type.as_str()),
        ("user-a", "order.created")
    );
    assert_eq!(payload, json!({"orderId": "o-1"}));

    let again: Value = service(app.http.post(app.api("/v1/events")), "user-a")
        .json(&body)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["duplicate"], true);
    assert_eq!(events_count(&app).await, 1);
    app.cleanup().await;
    Ok(())
}

/// Concurrent publishes leave the gateway together (coalesced into one write to NATS)
/// but stay separate messages: 100 keys each published twice at once give 100 ids,
/// exactly one non-duplicate answer per key with the same id in both answers, and 100
/// recorded events.
#[tokio::test]
async fn concurrent_publishes_stay_separate_messages() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let requests = (0..200).map(|i| {
        let key = format!("c-{}", i % 100);
        let body = json!({"type": "order.created", "data": {"n": i % 100}, "idempotencyKey": key});
        let request = service(app.http.post(app.api("/events")), "user-c").json(&body);
        async move {
            let response = request.send().await?;
            anyhow::ensure!(
                response.status() == StatusCode::ACCEPTED,
                "status {}",
                response.status()
            );
            let answer: Value = response.json().await?;
            Ok::<_, anyhow::Error>((key, answer))
        }
    });
    let answers = futures::future::try_join_all(requests).await?;
    let mut by_key: std::collections::HashMap<String, Vec<Value>> = Default::default();
    for (key, answer) in answers {
        by_key.entry(key).or_default().push(answer);
    }
    assert_eq!(by_key.len(), 100);
    for (key, pair) in &by_key {
        assert_eq!(pair.len(), 2, "{key}");
        assert_eq!(pair[0]["id"], pair[1]["id"], "{key}: one event id per key");
        let fresh = pair.iter().filter(|a| a["duplicate"] == false).count();
        assert_eq!(
            fresh, 1,
            "{key}: exactly one publish stored, one deduplicated"
        );
    }
    let pool = app.pool.clone();
    wait_for(Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events WHERE user_id = 'user-c'")
                .fetch_one(&pool)
                .await
                .unwrap_or(0)
                == 100
        }
    })
    .await?;
    app.cleanup().await;
    Ok(())
}

/// Malformed JSON, a wrong content type, an oversize body, a missing, malformed,
/// expired or wrongly signed token, and an unknown route each get a problem+json error
/// with a stable code, and none of them records anything.
#[tokio::test]
async fn bad_input_gets_problem_json_and_changes_nothing() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(
        &[("PORTICO_MAX_BODY_BYTES", "4096")],
        &portico_e2e::ALL_SERVICES,
    )
    .await?;
    let url = app.api("/events");
    let res = service(app.http.post(&url), "u")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await?;
    assert_problem(res, StatusCode::BAD_REQUEST, "malformed_body").await?;

    let res = service(app.http.post(&url), "u")
        .header("content-type", "application/json")
        .body(r#"{"type": 5, "data": {}}"#)
        .send()
        .await?;
    assert_problem(res, StatusCode::BAD_REQUEST, "malformed_body").await?;

    let res = service(app.http.post(&url), "u")
        .header("content-type", "text/plain")
        .body(r#"{"type":"a.b","data":{}}"#)
        .send()
        .await?;
    assert_problem(
        res,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await?;

    let big = json!({"type": "a.b", "data": {"blob": "x".repeat(10_000)}});
    let res = service(app.http.post(&url), "u").json(&big).send().await?;
    assert_problem(res, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await?;

    let res = service(app.http.post(&url), "u")
        .json(&json!({"type": "bad type!", "data": {}}))
        .send()
        .await?;
    let body = assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await?;
    assert_eq!(body["errors"][0]["path"], "/type");
    assert_eq!(body["errors"][0]["code"], "invalid_event_type");

    let ok_body = json!({"type": "a.b", "data": {}});
    let res = app.http.post(&url).json(&ok_body).send().await?;
    assert_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await?;
    let res = app
        .http
        .post(&url)
        .bearer_auth("not-a-jwt")
        .json(&ok_body)
        .send()
        .await?;
    assert_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await?;
    let expired = portico_signing::jwt::JwtVerifier::new(portico_e2e::JWT_SECRET.as_bytes()).issue(
        &portico_signing::jwt::Claims {
            sub: "u".into(),
            exp: chrono::Utc::now().timestamp() - 10,
            nbf: None,
        },
    );
    let res = app
        .http
        .post(&url)
        .bearer_auth(expired)
        .json(&ok_body)
        .send()
        .await?;
    assert_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await?;
    let forged = portico_signing::jwt::JwtVerifier::new(b"someone-else").issue(
        &portico_signing::jwt::Claims {
            sub: "u".into(),
            exp: chrono::Utc::now().timestamp() + 60,
            nbf: None,
        },
    );
    let res = app
        .http
        .post(&url)
        .bearer_auth(forged)
        .json(&ok_body)
        .send()
        .await?;
    assert_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await?;
    // A valid user token is authenticated but may not publish events.
    let res = app
        .http
        .post(&url)
        .bearer_auth(app.user_token("u"))
        .json(&ok_body)
        .send()
        .await?;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await?;
    // The service token without the user it acts for.
    let res = app
        .http
        .post(&url)
        .bearer_auth(SERVICE_TOKEN)
        .json(&ok_body)
        .send()
        .await?;
    assert_problem(res, StatusCode::UNAUTHORIZED, "missing_user_id").await?;

    let res = app.http.get(app.api("/no-such-thing")).send().await?;
    assert_problem(res, StatusCode::NOT_FOUND, "route_not_found").await?;
    let res = app.http.delete(app.api("/events")).send().await?;
    assert_problem(res, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await?;

    // Nothing was accepted: a real event published now is the only row.
    let res = service(app.http.post(&url), "u")
        .json(&ok_body)
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let pool = app.pool.clone();
    wait_for(Duration::from_secs(15), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events")
                .fetch_one(&pool)
                .await
                .unwrap_or(0)
                >= 1
        }
    })
    .await?;
    assert_eq!(events_count(&app).await, 1);
    app.cleanup().await;
    Ok(())
}

/// gRPC uses the same domain code: an authenticated publish works, a missing token is
/// UNAUTHENTICATED, invalid input is INVALID_ARGUMENT, and a capability that is not
/// built answers UNIMPLEMENTED rather than pretending.
#[tokio::test]
async fn grpc_publishes_events_with_proper_status_codes() -> anyhow::Result<()> {
    use portico_proto::v1::PublishEventRequest;
    use portico_proto::v1::event_service_client::EventServiceClient;
    let app = TestApp::spawn().await?;
    let mut client = EventServiceClient::connect(app.grpc_url()).await?;
    let request = |ty: &str, auth: bool| {
        let mut r = tonic::Request::new(PublishEventRequest {
            r#type: ty.into(),
            data_json: r#"{"n":1}"#.into(),
            idempotency_key: "g-1".into(),
            ordering_key: String::new(),
        });
        if auth {
            r.metadata_mut().insert(
                "authorization",
                format!("Bearer {SERVICE_TOKEN}").parse().unwrap(),
            );
            r.metadata_mut()
                .insert("x-portico-user-id", "grpc-user".parse().unwrap());
        }
        r
    };
    let ok = client
        .publish_event(request("order.paid", true))
        .await?
        .into_inner();
    assert!(!ok.duplicate);
    let err = client
        .publish_event(request("order.paid", false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let err = client
        .publish_event(request("bad type", true))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("invalid_event_type"),
        "{}",
        err.message()
    );
    let pool = app.pool.clone();
    let id: uuid::Uuid = ok.event_id.parse()?;
    wait_for(Duration::from_secs(15), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM events WHERE id = $1 AND user_id = 'grpc-user'",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap_or(0)
                == 1
        }
    })
    .await?;
    app.cleanup().await;
    Ok(())
}

/// SIGTERM stops each service cleanly (exit 0) without losing accepted work: events
/// published while the dispatcher is stopping are all recorded once it (or a
/// successor) runs again. A short ack_wait bounds how long a job pulled by the
/// stopping process can wait before it is handed out again.
#[tokio::test]
async fn sigterm_drains_and_nothing_accepted_is_lost() -> anyhow::Result<()> {
    let mut app = TestApp::spawn_with(
        &[("PORTICO_ACK_WAIT_SECS", "3")],
        &portico_e2e::ALL_SERVICES,
    )
    .await?;
    let total = 300;
    let mut requests = Vec::new();
    for i in 0..total {
        let req = service(app.http.post(app.api("/events")), "drain-user").json(
            &json!({"type": "order.created", "data": {"i": i}, "idempotencyKey": format!("d-{i}")}),
        );
        requests.push(req.send());
    }
    let dispatcher = app.take(ServiceKind::WebhookDispatcher);
    let (responses, status) = tokio::join!(
        futures::future::join_all(requests),
        dispatcher.terminate(Duration::from_secs(20))
    );
    assert!(status?.success(), "dispatcher must exit 0 on SIGTERM");
    for r in responses {
        assert_eq!(r?.status(), StatusCode::ACCEPTED);
    }
    app.start(ServiceKind::WebhookDispatcher).await?;
    let pool = app.pool.clone();
    wait_for(Duration::from_secs(30), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events WHERE user_id = 'drain-user'")
                .fetch_one(&pool)
                .await
                .unwrap_or(0)
                == total
        }
    })
    .await?;
    for kind in [ServiceKind::Gateway, ServiceKind::BatchProcessor] {
        let status = app.take(kind).terminate(Duration::from_secs(20)).await?;
        assert!(status.success(), "{kind:?} must exit 0 on SIGTERM");
    }
    app.cleanup().await;
    Ok(())
}
