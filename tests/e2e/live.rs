//! Live updates: a WebSocket client against the real gateway, dispatcher and
//! batch-processor sees what they commit, as it happens, and only its own.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use portico_e2e::sink::{Reply, Sink};
use portico_e2e::{JWT_SECRET, SERVICE_TOKEN, ServiceKind, TestApp, assert_problem, wait_for};
use portico_signing::jwt::{Claims, JwtVerifier};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

/// How long a scenario waits for something asynchronous to happen.
const PATIENCE: Duration = Duration::from_secs(30);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a live socket yielded.
#[derive(Debug)]
enum Got {
    Json(Value),
    Closed(Option<u16>),
}

fn ws_url(app: &TestApp, query: &str) -> String {
    format!(
        "ws://{}/api/v1/live{query}",
        app.addr(ServiceKind::Gateway, "http")
    )
}

/// Opens the live socket with `authorization` (or none).
async fn open(
    app: &TestApp,
    authorization: Option<&str>,
    query: &str,
) -> Result<Ws, tungstenite::Error> {
    let mut request = ws_url(app, query).into_client_request()?;
    if let Some(value) = authorization {
        request
            .headers_mut()
            .insert("authorization", value.parse().expect("header value"));
    }
    let (ws, _) = tokio_tungstenite::connect_async(request).await?;
    Ok(ws)
}

/// Opens the live socket as `user` (JWT).
async fn open_as(app: &TestApp, user: &str) -> anyhow::Result<Ws> {
    Ok(open(app, Some(&format!("Bearer {}", app.user_token(user))), "").await?)
}

/// The next JSON message or close, skipping pings; errors after `PATIENCE`.
async fn next(ws: &mut Ws) -> anyhow::Result<Got> {
    loop {
        let item = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .map_err(|_| anyhow::anyhow!("no live message within {PATIENCE:?}"))?;
        match item {
            None => return Ok(Got::Closed(None)),
            Some(Err(tungstenite::Error::ConnectionClosed)) => return Ok(Got::Closed(None)),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(Message::Text(t))) => return Ok(Got::Json(serde_json::from_str(t.as_str())?)),
            Some(Ok(Message::Close(frame))) => {
                return Ok(Got::Closed(frame.map(|f| u16::from(f.code))));
            }
            Some(Ok(_)) => continue,
        }
    }
}

/// The next JSON message; a close is an error.
async fn next_json(ws: &mut Ws) -> anyhow::Result<Value> {
    match next(ws).await? {
        Got::Json(v) => Ok(v),
        Got::Closed(code) => anyhow::bail!("socket closed ({code:?})"),
    }
}

/// Sends a subscribe message and expects `subscribed`.
async fn subscribe(ws: &mut Ws, message: Value) -> anyhow::Result<Value> {
    ws.send(Message::Text(message.to_string().into())).await?;
    let reply = next_json(ws).await?;
    anyhow::ensure!(reply["type"] == "subscribed", "subscribe refused: {reply}");
    Ok(reply)
}

/// Creates a webhook for `user`; returns its id.
async fn create_webhook(
    app: &TestApp,
    user: &str,
    url: &str,
    retries: u32,
) -> anyhow::Result<Uuid> {
    let res = app
        .http
        .post(app.api("/webhooks"))
        .bearer_auth(app.user_token(user))
        .json(&json!({
            "url": url,
            "events": ["*"],
            "retryPolicy": {"maxRetries": retries, "baseDelayMs": 200, "maxDelayMs": 1000},
        }))
        .send()
        .await?;
    anyhow::ensure!(
        res.status() == StatusCode::CREATED,
        "webhook: {}",
        res.status()
    );
    let body: Value = res.json().await?;
    Ok(body["id"].as_str().unwrap_or_default().parse()?)
}

/// Publishes events for `user` as the internal service; returns their ids.
async fn publish(
    app: &TestApp,
    user: &str,
    n: usize,
    event_type: &str,
) -> anyhow::Result<Vec<Uuid>> {
    let events: Vec<Value> = (0..n)
        .map(|i| json!({"type": event_type, "data": {"i": i}}))
        .collect();
    let res = app
        .http
        .post(app.api("/events/batch"))
        .bearer_auth(SERVICE_TOKEN)
        .header("x-portico-user-id", user)
        .json(&json!({"events": events}))
        .send()
        .await?;
    anyhow::ensure!(
        res.status() == StatusCode::ACCEPTED,
        "publish: {}",
        res.status()
    );
    let body: Value = res.json().await?;
    let list = body["data"]
        .as_array()
        .or(body["events"].as_array())
        .cloned()
        .unwrap_or_default();
    Ok(list
        .iter()
        .filter_map(|e| e["id"].as_str().and_then(|s| s.parse().ok()))
        .collect())
}

/// Every attempt of a delivery that fails twice and then succeeds reaches the client
/// in order, with the delivery's status after each, the endpoint's HTTP status, a
/// growing `seq` and a cursor.
#[tokio::test]
async fn every_attempt_of_a_failing_then_succeeding_delivery_arrives_in_order() -> anyhow::Result<()>
{
    let app =
        TestApp::spawn_with(&[], &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher]).await?;
    let sink = Sink::start().await?;
    sink.script([Reply::status(500), Reply::status(503)]);
    let hook = create_webhook(&app, "ada", &sink.url("/hook"), 5).await?;
    let mut ws = open_as(&app, "ada").await?;
    let reply = subscribe(
        &mut ws,
        json!({"op": "subscribe", "topics": ["deliveries"], "webhookId": hook}),
    )
    .await?;
    assert_eq!(reply["topics"], json!(["deliveries"]));
    let event = publish(&app, "ada", 1, "order.created").await?[0];

    let mut attempts = Vec::new();
    let mut last_seq = 0;
    while attempts.len() < 3 {
        let m = next_json(&mut ws).await?;
        let seq = m["seq"].as_u64().unwrap_or_default();
        assert!(seq > last_seq, "seq grows: {m}");
        last_seq = seq;
        assert!(
            m["cursor"].as_str().is_some_and(|c| !c.is_empty()),
            "cursor: {m}"
        );
        assert_eq!(m["type"], "delivery.attempt", "{m}");
        assert_eq!(m["owner"], "ada");
        assert_eq!(m["webhookId"], json!(hook));
        assert_eq!(m["eventId"], json!(event));
        assert_eq!(m["eventType"], "order.created");
        attempts.push(m);
    }
    let summary: Vec<(i64, &str, i64)> = attempts
        .iter()
        .map(|m| {
            (
                m["attempt"].as_i64().unwrap_or_default(),
                m["status"].as_str().unwrap_or_default(),
                m["httpStatus"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, "retrying", 500),
            (2, "retrying", 503),
            (3, "succeeded", 200)
        ]
    );
    assert!(attempts[0]["nextAttemptAt"].is_string());
    assert!(attempts[2].get("nextAttemptAt").is_none());
    assert_eq!(
        attempts
            .iter()
            .map(|m| m["deliveryId"].clone())
            .collect::<std::collections::HashSet<_>>()
            .len(),
        1
    );
    app.cleanup().await;
    Ok(())
}

/// A bulk-order batch reports its progress chunk by chunk up to `completed`, with
/// counts that only grow.
#[tokio::test]
async fn batch_progress_reaches_completed() -> anyhow::Result<()> {
    let app =
        TestApp::spawn_with(&[], &[ServiceKind::Gateway, ServiceKind::BatchProcessor]).await?;
    let mut ws = open_as(&app, "bea").await?;
    subscribe(&mut ws, json!({"op": "subscribe", "topics": ["batches"]})).await?;
    let orders: Vec<Value> = (0..2500)
        .map(|i| {
            json!({
                "clientOrderRef": format!("L-{i}"),
                "currency": "EUR",
                "customer": {"email": "ada@example.com", "name": "Ada Lovelace"},
                "shippingAddress": {"line1": "1 Main St", "city": "Berlin", "postalCode": "10115", "country": "DE"},
                "lineItems": [{"sku": "SKU-1", "quantity": 2, "unitPrice": "12.50"}]
            })
        })
        .collect();
    let res = app
        .http
        .post(app.api("/bulk-orders"))
        .bearer_auth(app.user_token("bea"))
        .json(&json!({"orders": orders}))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let batch: Value = res.json().await?;
    let id = batch["id"].clone();

    let mut processed = 0;
    let mut updates = 0;
    loop {
        let m = next_json(&mut ws).await?;
        assert_eq!(m["type"], "batch.progress", "{m}");
        assert_eq!(m["batchId"], id);
        assert_eq!(m["total"], 2500);
        let now = m["processed"].as_i64().unwrap_or_default();
        assert!(now >= processed, "counts only grow: {m}");
        processed = now;
        updates += 1;
        if m["status"] != "processing" {
            assert_eq!(m["status"], "completed", "{m}");
            assert_eq!(
                (m["processed"].clone(), m["succeeded"].clone()),
                (json!(2500), json!(2500))
            );
            break;
        }
    }
    assert!(
        updates >= 2,
        "one update per chunk and the final one: {updates}"
    );
    app.cleanup().await;
    Ok(())
}

/// Two users connected at once: each sees their own deliveries and nothing of the
/// other's, on the same gateway.
#[tokio::test]
async fn one_user_never_sees_another_users_updates() -> anyhow::Result<()> {
    let app =
        TestApp::spawn_with(&[], &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher]).await?;
    let sink = Sink::start().await?;
    let hook_a = create_webhook(&app, "alice", &sink.url("/a"), 0).await?;
    let hook_b = create_webhook(&app, "bob", &sink.url("/b"), 0).await?;
    let mut alice = open_as(&app, "alice").await?;
    let mut bob = open_as(&app, "bob").await?;
    subscribe(&mut alice, json!({"op": "subscribe"})).await?;
    subscribe(&mut bob, json!({"op": "subscribe"})).await?;

    // Alice's events first; bob's come after, so anything bob were to receive of
    // alice's would reach him before his own.
    let alice_events = publish(&app, "alice", 5, "a.private").await?;
    for _ in 0..5 {
        let m = next_json(&mut alice).await?;
        assert_eq!(m["owner"], "alice");
        assert_eq!(m["webhookId"], json!(hook_a));
    }
    let bob_event = publish(&app, "bob", 1, "b.private").await?[0];
    let m = next_json(&mut bob).await?;
    assert_eq!(m["owner"], "bob", "bob's first message is his own: {m}");
    assert_eq!(m["webhookId"], json!(hook_b));
    assert_eq!(m["eventId"], json!(bob_event));
    assert!(
        !alice_events
            .iter()
            .any(|e| m.to_string().contains(&e.to_string()))
    );
    app.cleanup().await;
    Ok(())
}

/// A client that stops reading: deliveries all complete on time, its queue stays
/// bounded (what did not fit is dropped and counted), and when it reads again it is
/// told how much it missed (`lagged`) or was closed as too slow (4008).
#[tokio::test]
async fn a_client_that_reads_nothing_does_not_slow_deliveries_or_grow_memory() -> anyhow::Result<()>
{
    let app = TestApp::spawn_with(
        &[
            ("PORTICO_LIVE_QUEUE", "4"),
            ("PORTICO_LIVE_STALL_SECS", "2"),
        ],
        &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher],
    )
    .await?;
    let sink = Sink::start().await?;
    create_webhook(&app, "carl", &sink.url("/hook"), 0).await?;
    // A tiny receive buffer, so the gateway's writes block as soon as the client
    // stops reading (instead of filling megabytes of kernel buffers).
    let addr: std::net::SocketAddr = app.addr(ServiceKind::Gateway, "http").parse()?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(2048)?;
    let stream = socket.connect(addr).await?;
    let mut request = ws_url(&app, "").into_client_request()?;
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", app.user_token("carl")).parse()?,
    );
    let (mut ws, _) =
        tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await?;
    subscribe(
        &mut ws,
        json!({"op": "subscribe", "topics": ["deliveries"]}),
    )
    .await?;
    let rss_before = rss_kib(&app);

    // 1,000 deliveries while the client reads nothing.
    let started = std::time::Instant::now();
    for _ in 0..2 {
        publish(&app, "carl", 500, "bulk.thing").await?;
    }
    let s = sink.clone();
    wait_for(PATIENCE, move || {
        let s = s.clone();
        async move { s.count() >= 1000 }
    })
    .await?;
    let took = started.elapsed();
    let rss_after = rss_kib(&app);

    // Now read: whatever was queued, then the lagged notice (or the close).
    let mut attempts = 0u64;
    let mut missed = 0u64;
    let mut closed = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), next(&mut ws)).await {
            Err(_) => break,
            Ok(Ok(Got::Closed(code))) => {
                closed = Some(code);
                break;
            }
            Ok(Err(_)) => {
                closed = Some(None);
                break;
            }
            Ok(Ok(Got::Json(m))) => match m["type"].as_str() {
                Some("delivery.attempt") => attempts += 1,
                Some("lagged") => missed += m["missed"].as_u64().unwrap_or_default(),
                _ => {}
            },
        }
    }
    eprintln!(
        "1000 deliveries in {took:?}; the stalled client read {attempts} attempts, was told of {missed} missed, closed: {closed:?}; gateway RSS {rss_before:?} -> {rss_after:?} KiB"
    );
    match closed {
        Some(code) => assert!(
            code.is_none() || code == Some(4008),
            "a stalled client is closed with 4008, got {code:?}"
        ),
        None => {
            assert!(missed > 0, "the client was told it lagged");
            assert_eq!(
                attempts + missed,
                1000,
                "every announcement was either delivered or counted"
            );
        }
    }
    assert!(
        attempts < 1000,
        "the stalled client did not get everything buffered for it"
    );
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        assert!(
            after.saturating_sub(before) < 32 * 1024,
            "gateway memory grew {} KiB",
            after.saturating_sub(before)
        );
    }
    app.cleanup().await;
    Ok(())
}

/// The gateway's resident memory, in KiB.
fn rss_kib(app: &TestApp) -> Option<u64> {
    let pid = app.services.get(&ServiceKind::Gateway)?.pid()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A client that was away reconnects and fills the gap from the REST list with the
/// cursor of the last message it saw.
#[tokio::test]
async fn reconnecting_and_listing_from_the_cursor_fills_the_gap() -> anyhow::Result<()> {
    let app =
        TestApp::spawn_with(&[], &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher]).await?;
    let sink = Sink::start().await?;
    let hook = create_webhook(&app, "dora", &sink.url("/hook"), 0).await?;
    let mut ws = open_as(&app, "dora").await?;
    subscribe(
        &mut ws,
        json!({"op": "subscribe", "topics": ["deliveries"]}),
    )
    .await?;
    let first = publish(&app, "dora", 1, "x.first").await?[0];
    let m = next_json(&mut ws).await?;
    assert_eq!(m["eventId"], json!(first));
    let cursor = m["cursor"].as_str().unwrap_or_default().to_owned();
    ws.close(None).await?;

    // Away: two more deliveries happen.
    let missed = publish(&app, "dora", 2, "x.missed").await?;
    let s = sink.clone();
    wait_for(PATIENCE, move || {
        let s = s.clone();
        async move { s.count() >= 3 }
    })
    .await?;

    // Back: reconnect, then list from the cursor (less the documented overlap).
    let mut ws = open_as(&app, "dora").await?;
    subscribe(
        &mut ws,
        json!({"op": "subscribe", "topics": ["deliveries"]}),
    )
    .await?;
    let since = chrono::DateTime::parse_from_rfc3339(&cursor)? - chrono::Duration::seconds(60);
    let res = app
        .http
        .get(app.api(&format!(
            "/webhooks/{hook}/deliveries?since={}",
            since
                .with_timezone(&chrono::Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        )))
        .bearer_auth(app.user_token("dora"))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    let page: Value = res.json().await?;
    let listed: Vec<Value> = page["data"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|d| d["eventId"].clone())
        .collect();
    for e in &missed {
        assert!(
            listed.contains(&json!(e)),
            "missed event {e} is listed: {listed:?}"
        );
    }
    // And the new connection receives what happens next (a missed delivery committed
    // just after the new subscription may be announced too: the overlap the client
    // de-duplicates by delivery id).
    let later = publish(&app, "dora", 1, "x.later").await?[0];
    loop {
        let m = next_json(&mut ws).await?;
        if missed.iter().any(|e| m["eventId"] == json!(e)) {
            continue;
        }
        assert_eq!(m["eventId"], json!(later));
        break;
    }
    app.cleanup().await;
    Ok(())
}

/// `?batch=true`: a WebSocket message holds one or more pushed messages, one JSON
/// object per line, numbered without a gap across messages; every delivery of a burst
/// is announced exactly once. A `batch` that is not a boolean is refused before the
/// upgrade with 400 `validation_failed` (`invalid_query`).
#[tokio::test]
async fn batched_framing_carries_every_message_once_in_order() -> anyhow::Result<()> {
    let app =
        TestApp::spawn_with(&[], &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher]).await?;
    let res = app
        .http
        .get(app.api("/live?batch=maybe"))
        .bearer_auth(app.user_token("erin"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await?;
    let problem = assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await?;
    assert_eq!(problem["errors"][0]["code"], "invalid_query", "{problem}");

    let sink = Sink::start().await?;
    let hook = create_webhook(&app, "erin", &sink.url("/hook"), 0).await?;
    let authorization = format!("Bearer {}", app.user_token("erin"));
    let mut ws = open(&app, Some(&authorization), "?batch=true").await?;
    subscribe(
        &mut ws,
        json!({"op": "subscribe", "topics": ["deliveries"]}),
    )
    .await?;
    let events = publish(&app, "erin", 40, "order.created").await?;
    assert_eq!(events.len(), 40);

    let mut seen = std::collections::HashSet::new();
    let mut seqs = Vec::new();
    let mut messages = 0;
    while seqs.len() < events.len() {
        let item = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .map_err(|_| anyhow::anyhow!("no live message within {PATIENCE:?}"))?;
        let text = match item {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => anyhow::bail!("unexpected {other:?}"),
        };
        messages += 1;
        for line in text.as_str().split('\n') {
            let m: Value = serde_json::from_str(line)?;
            assert_eq!(m["type"], "delivery.attempt", "{m}");
            assert_eq!(m["webhookId"], json!(hook));
            assert!(
                m["cursor"].as_str().is_some_and(|c| !c.is_empty()),
                "cursor: {m}"
            );
            seqs.push(m["seq"].as_u64().unwrap_or_default());
            let event: Uuid = m["eventId"].as_str().unwrap_or_default().parse()?;
            assert!(seen.insert(event), "announced once: {m}");
        }
    }
    assert_eq!(
        seqs,
        (1..=40).collect::<Vec<u64>>(),
        "in {messages} messages"
    );
    assert_eq!(
        seen,
        events.into_iter().collect::<std::collections::HashSet<_>>()
    );
    app.cleanup().await;
    Ok(())
}

/// Without a credential, with a bad one or a bad ticket, the gateway answers 401
/// problem+json and never upgrades; a ticket opens exactly one socket; an expiring JWT
/// closes its socket with 4001; a partner's socket closes with 4003 when its
/// credentials are revoked.
#[tokio::test]
async fn credentials_are_checked_before_the_upgrade_and_while_connected() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(&[], &[ServiceKind::Gateway]).await?;
    let upgrade = |req: reqwest::RequestBuilder| {
        req.header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
    };
    let res = upgrade(app.http.get(app.api("/v1/live"))).send().await?;
    assert_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await?;
    let res = upgrade(app.http.get(app.api("/live?ticket=nope")))
        .send()
        .await?;
    assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_ticket").await?;
    let res = upgrade(app.http.get(app.api("/live")).bearer_auth("not-a-jwt"))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    match open(&app, None, "").await {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("expected a refused upgrade, got {:?}", other.map(|_| ())),
    }

    // A ticket opens one socket, once.
    let res = app
        .http
        .post(app.api("/live/tickets"))
        .bearer_auth(app.user_token("erin"))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::CREATED);
    let ticket: Value = res.json().await?;
    let ticket = ticket["ticket"].as_str().unwrap_or_default().to_owned();
    let mut ws = open(&app, None, &format!("?ticket={ticket}")).await?;
    subscribe(&mut ws, json!({"op": "subscribe"})).await?;
    match open(&app, None, &format!("?ticket={ticket}")).await {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("a used ticket must be refused, got {:?}", other.map(|_| ())),
    }
    // A bad client message gets an error reply, not a close.
    ws.send(Message::Text(
        r#"{"op":"subscribe","topics":["nope"]}"#.into(),
    ))
    .await?;
    let m = next_json(&mut ws).await?;
    assert_eq!(
        (m["type"].as_str(), m["code"].as_str()),
        (Some("error"), Some("invalid_topic"))
    );

    // A JWT that expires in 2 s closes its socket with 4001.
    let short = JwtVerifier::new(JWT_SECRET.as_bytes()).issue(&Claims {
        sub: "erin".into(),
        exp: chrono::Utc::now().timestamp() + 2,
        nbf: None,
    });
    let mut ws = open(&app, Some(&format!("Bearer {short}")), "").await?;
    subscribe(&mut ws, json!({"op": "subscribe"})).await?;
    match next(&mut ws).await? {
        Got::Closed(code) => assert_eq!(code, Some(u16::from(CloseCode::Library(4001)))),
        Got::Json(m) => panic!("expected the close, got {m}"),
    }

    // A partner connected with its integration's credentials is closed (4003) when
    // its owner revokes them.
    let res = app
        .http
        .post(app.api("/integrations"))
        .bearer_auth(app.user_token("erin"))
        .json(&json!({"name": "Shop", "type": "erp", "scopes": ["webhooks:read"]}))
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
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{key}:{secret}"));
    let mut partner = open(&app, Some(&format!("Basic {basic}")), "").await?;
    subscribe(&mut partner, json!({"op": "subscribe"})).await?;
    let res = app
        .http
        .post(app.api(&format!(
            "/integrations/{integration}/regenerate-credentials"
        )))
        .bearer_auth(app.user_token("erin"))
        .json(&json!({"gracePeriodSeconds": 0}))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    loop {
        match next(&mut partner).await? {
            Got::Closed(code) => {
                assert_eq!(code, Some(4003));
                break;
            }
            // The revocation itself is announced first (credentials topic).
            Got::Json(m) => assert_eq!(m["type"], "credential.event", "{m}"),
        }
    }
    app.cleanup().await;
    Ok(())
}

/// The gRPC twin: an internal service acting for a user streams the same messages,
/// and a refused credential or topic fails before the stream starts.
#[tokio::test]
async fn the_grpc_stream_carries_the_same_messages() -> anyhow::Result<()> {
    use portico_proto::v1::SubscribeRequest;
    use portico_proto::v1::live_service_client::LiveServiceClient;
    let app =
        TestApp::spawn_with(&[], &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher]).await?;
    let sink = Sink::start().await?;
    let hook = create_webhook(&app, "gus", &sink.url("/hook"), 0).await?;
    let mut client = LiveServiceClient::connect(app.grpc_url()).await?;
    let request = |topics: Vec<String>, auth: &str| {
        let mut r = tonic::Request::new(SubscribeRequest {
            topics,
            webhook_id: hook.to_string(),
            ..Default::default()
        });
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {auth}").parse().expect("metadata"),
        );
        r.metadata_mut()
            .insert("x-portico-user-id", "gus".parse().expect("metadata"));
        r
    };
    let refused = client.subscribe(request(vec![], "wrong")).await;
    assert_eq!(
        refused.err().map(|s| s.code()),
        Some(tonic::Code::Unauthenticated)
    );
    let refused = client
        .subscribe(request(vec!["nope".into()], SERVICE_TOKEN))
        .await;
    assert_eq!(
        refused.err().map(|s| s.code()),
        Some(tonic::Code::InvalidArgument)
    );

    let mut stream = client
        .subscribe(request(vec!["deliveries".into()], SERVICE_TOKEN))
        .await?
        .into_inner();
    let event = publish(&app, "gus", 1, "g.one").await?[0];
    let message = tokio::time::timeout(PATIENCE, stream.message())
        .await??
        .ok_or_else(|| anyhow::anyhow!("stream ended"))?;
    assert_eq!(
        (message.seq, message.r#type.as_str()),
        (1, "delivery.attempt")
    );
    let json: Value = serde_json::from_str(&message.json)?;
    assert_eq!(json["eventId"], json!(event));
    assert_eq!(json["status"], "succeeded");
    assert_eq!(json["seq"], 1);
    app.cleanup().await;
    Ok(())
}
