//! One trace from the caller's request through JetStream to the outgoing delivery
//! attempt, exported over real OTLP/gRPC to a fake collector.

use std::time::Duration;

use portico_e2e::otlp::FakeCollector;
use portico_e2e::sink::Sink;
use portico_e2e::{SERVICE_TOKEN, ServiceKind, TestApp, wait_for};
use serde_json::json;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A REST event publish carrying the caller's `traceparent` yields a gateway span that
/// continues the caller's trace, and the dispatcher's delivery-attempt span continues
/// the same trace with a parent link back through the JetStream message; the gRPC door
/// continues callers' traces too.
#[tokio::test]
async fn one_trace_runs_from_request_through_jetstream_to_the_delivery() -> anyhow::Result<()> {
    let collector = FakeCollector::start().await?;
    let endpoint = collector.endpoint();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let app = TestApp::spawn_with(
        &env,
        &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher],
    )
    .await?;
    let sink = Sink::start().await?;
    let user = "trace-user";
    let created = app
        .http
        .post(app.api("/webhooks"))
        .bearer_auth(app.user_token(user))
        .json(&json!({"url": sink.url("/traced"), "events": ["order.created"]}))
        .send()
        .await?;
    assert_eq!(created.status(), 201, "{}", created.text().await?);

    let res = app
        .http
        .post(app.api("/events"))
        .bearer_auth(SERVICE_TOKEN)
        .header("x-portico-user-id", user)
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .json(&json!({"type": "order.created", "data": {"id": 1}, "idempotencyKey": "trace-1"}))
        .send()
        .await?;
    assert_eq!(res.status(), 202);
    wait_for(Duration::from_secs(20), || async { sink.count() == 1 }).await?;
    let delivered = &sink.received()[0];
    assert!(
        delivered.header("traceparent").contains(TRACE_ID),
        "the endpoint sees the same trace"
    );

    wait_for(Duration::from_secs(20), || async {
        let spans = collector.spans();
        spans
            .iter()
            .any(|s| s.service == "portico-gateway" && hex(&s.trace_id) == TRACE_ID)
            && spans
                .iter()
                .any(|s| s.service == "portico-webhook-dispatcher" && hex(&s.trace_id) == TRACE_ID)
    })
    .await?;
    let spans: Vec<_> = collector
        .spans()
        .into_iter()
        .filter(|s| hex(&s.trace_id) == TRACE_ID)
        .collect();
    let gateway_root = spans
        .iter()
        .find(|s| s.service == "portico-gateway" && hex(&s.parent_span_id) == CALLER_SPAN)
        .expect("the gateway's request span is a child of the caller's span");
    assert!(
        gateway_root.name.contains("/events"),
        "{}",
        gateway_root.name
    );
    let attempt = spans
        .iter()
        .find(|s| s.service == "portico-webhook-dispatcher" && s.name == "webhook.delivery_attempt")
        .expect("the dispatcher exports a delivery-attempt span in the same trace");
    // Walk up the attempt's ancestors: the chain reaches the gateway's request span.
    let mut current = attempt.parent_span_id.clone();
    let mut reached_gateway = false;
    for _ in 0..10 {
        if current == gateway_root.span_id {
            reached_gateway = true;
            break;
        }
        match spans.iter().find(|s| s.span_id == current) {
            Some(parent) => current = parent.parent_span_id.clone(),
            None => break,
        }
    }
    assert!(
        reached_gateway,
        "the delivery attempt descends from the gateway request: {spans:#?}"
    );

    // gRPC continues a caller's trace as well.
    use portico_proto::v1::PublishEventRequest;
    use portico_proto::v1::event_service_client::EventServiceClient;
    let grpc_trace = "0af7651916cd43dd8448eb211c80319c";
    let mut client = EventServiceClient::connect(app.grpc_url()).await?;
    let mut request = tonic::Request::new(PublishEventRequest {
        r#type: "order.created".into(),
        data_json: "{}".into(),
        idempotency_key: "trace-grpc".into(),
        ordering_key: String::new(),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {SERVICE_TOKEN}").parse()?);
    request
        .metadata_mut()
        .insert("x-portico-user-id", user.parse()?);
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{grpc_trace}-{CALLER_SPAN}-01").parse()?,
    );
    client.publish_event(request).await?;
    wait_for(Duration::from_secs(20), || async {
        collector.spans().iter().any(|s| {
            s.service == "portico-gateway"
                && hex(&s.trace_id) == grpc_trace
                && s.name.contains("PublishEvent")
        })
    })
    .await?;
    app.cleanup().await;
    Ok(())
}
