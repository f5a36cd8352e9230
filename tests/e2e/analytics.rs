//! Delivery analytics against the real gateway and dispatcher: a known workload (some
//! deliveries succeed at once, some fail then succeed, some exhaust their retries) is
//! delivered to real HTTP sinks, and the REST and gRPC figures must equal what the
//! delivery history says, exactly; other users see none of it.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use portico_e2e::sink::{Reply, Sink};
use portico_e2e::{SERVICE_TOKEN, ServiceKind, TestApp, assert_problem, wait_for};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

/// How long the workload may take to settle (retries of 200 ms, 400 ms, ...).
const PATIENCE: Duration = Duration::from_secs(60);

const ALICE: &str = "analytics-alice";
const BOB: &str = "analytics-bob";

async fn create_webhook(
    app: &TestApp,
    user: &str,
    url: String,
    events: &[&str],
    max_retries: u32,
) -> anyhow::Result<Uuid> {
    let res = app
        .http
        .post(app.api("/webhooks"))
        .bearer_auth(app.user_token(user))
        .json(&json!({
            "url": url,
            "events": events,
            "retryPolicy": {"maxRetries": max_retries, "baseDelayMs": 200, "maxDelayMs": 1000},
        }))
        .send()
        .await?;
    let status = res.status();
    let body: Value = res.json().await?;
    anyhow::ensure!(status == StatusCode::CREATED, "create: {status} {body}");
    Ok(body["id"].as_str().unwrap_or_default().parse()?)
}

async fn publish(app: &TestApp, user: &str, event_type: &str) -> anyhow::Result<()> {
    let res = app
        .http
        .post(app.api("/events"))
        .bearer_auth(SERVICE_TOKEN)
        .header("x-portico-user-id", user)
        .json(&json!({"type": event_type, "data": {"n": 1}}))
        .send()
        .await?;
    anyhow::ensure!(
        res.status() == StatusCode::ACCEPTED,
        "publish: {}",
        res.status()
    );
    Ok(())
}

async fn get(app: &TestApp, user: &str, path: &str) -> anyhow::Result<(StatusCode, Value)> {
    let res = app
        .http
        .get(app.api(path))
        .bearer_auth(app.user_token(user))
        .send()
        .await?;
    let status = res.status();
    Ok((status, res.json().await?))
}

/// The figures the delivery history implies for `webhooks` (all of them when empty):
/// attempts, succeeded, retrying, failed, exhausted, and the summed attempt duration.
async fn history(app: &TestApp, webhooks: &[Uuid]) -> anyhow::Result<[i64; 6]> {
    let row: (i64, i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT
            (SELECT count(*) FROM webhook_delivery_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id
              WHERE d.webhook_id = ANY($1)),
            (SELECT count(*) FROM webhook_deliveries WHERE webhook_id = ANY($1) AND status = 'succeeded'),
            (SELECT count(*) FROM webhook_delivery_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id
              WHERE d.webhook_id = ANY($1) AND NOT (COALESCE(a.response_status, 0) BETWEEN 200 AND 299)
                AND a.attempt_number < d.attempts),
            (SELECT count(*) FROM webhook_deliveries WHERE webhook_id = ANY($1) AND status = 'failed'),
            (SELECT count(*) FROM webhook_deliveries WHERE webhook_id = ANY($1) AND status = 'failed'
                AND attempts = max_retries + 1),
            (SELECT COALESCE(sum(a.latency_ms), 0)::int8 FROM webhook_delivery_attempts a
               JOIN webhook_deliveries d ON d.id = a.delivery_id WHERE d.webhook_id = ANY($1))",
    )
    .bind(webhooks)
    .fetch_one(&app.pool)
    .await?;
    Ok([row.0, row.1, row.2, row.3, row.4, row.5])
}

fn figures(v: &Value) -> [i64; 5] {
    ["attempts", "succeeded", "retrying", "failed", "exhausted"]
        .map(|k| v[k].as_i64().unwrap_or(-1))
}

/// A known workload: `ok` answers every attempt (slowly), `flaky` fails its first two
/// requests then answers, `dead` always fails and exhausts a budget of two retries.
/// Per-webhook stats, the owner-wide series (totals, per webhook, per event type, per
/// minute) and the endpoint rankings all equal the delivery history exactly; the gRPC
/// twin says the same; another user sees nothing and gets 404 for these webhooks; bad
/// ranges are 400 with field errors.
#[tokio::test]
async fn figures_match_the_delivery_history_exactly() -> anyhow::Result<()> {
    let app =
        TestApp::spawn_with(&[], &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher]).await?;
    let (ok_sink, flaky_sink, dead_sink) = (
        Sink::start().await?,
        Sink::start().await?,
        Sink::start().await?,
    );
    ok_sink.set_default(Reply::status(200).delayed(Duration::from_millis(120)));
    flaky_sink.script([Reply::status(500), Reply::status(500)]);
    flaky_sink.set_default(Reply::status(200));
    dead_sink.set_default(Reply::status(500));
    let ok = create_webhook(
        &app,
        ALICE,
        ok_sink.url("/ok"),
        &["order.created", "order.shipped"],
        5,
    )
    .await?;
    let flaky =
        create_webhook(&app, ALICE, flaky_sink.url("/flaky"), &["order.created"], 5).await?;
    let dead = create_webhook(&app, ALICE, dead_sink.url("/dead"), &["order.created"], 2).await?;
    // Bob has a webhook of his own and traffic of his own.
    let bob_sink = Sink::start().await?;
    let bob_hook = create_webhook(&app, BOB, bob_sink.url("/bob"), &["*"], 0).await?;

    let started = Utc::now();
    for _ in 0..3 {
        publish(&app, ALICE, "order.created").await?;
    }
    for _ in 0..2 {
        publish(&app, ALICE, "order.shipped").await?;
    }
    publish(&app, BOB, "order.created").await?;

    // Settled: 11 of Alice's deliveries and Bob's one are final.
    let pool = app.pool.clone();
    wait_for(PATIENCE, || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM webhook_deliveries WHERE status IN ('succeeded', 'failed')",
            )
            .fetch_one(&pool)
            .await
            .is_ok_and(|n| n == 12)
        }
    })
    .await?;

    let from = (started - chrono::Duration::hours(1)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let to = (Utc::now() + chrono::Duration::minutes(2)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let range = format!("from={from}&to={to}");

    // The known numbers, and the same from the history.
    let alice = [ok, flaky, dead];
    let h = history(&app, &alice).await?;
    assert_eq!(
        &h[..5],
        &[19, 8, 8, 3, 3],
        "the workload settled as designed"
    );
    let (status, all) = get(
        &app,
        ALICE,
        &format!("/analytics/deliveries?{range}&bucket=hour"),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(figures(&all["totals"]), [19, 8, 8, 3, 3], "{all}");
    let mean = all["totals"]["meanLatencyMs"].as_f64().unwrap_or(-1.0);
    assert!(
        (mean - h[5] as f64 / 19.0).abs() < 0.001,
        "mean {mean} vs history {}",
        h[5]
    );
    assert!((all["totals"]["successRate"].as_f64().unwrap_or(-1.0) - 8.0 / 11.0).abs() < 0.001);

    // Per webhook, through its own route and grouped owner-wide.
    let (_, grouped) = get(
        &app,
        ALICE,
        &format!("/analytics/deliveries?{range}&bucket=day&groupBy=webhook"),
    )
    .await?;
    for (id, want) in [
        (ok, [5, 5, 0, 0, 0]),
        (flaky, [5, 3, 2, 0, 0]),
        (dead, [9, 0, 6, 3, 3]),
    ] {
        let h = history(&app, &[id]).await?;
        assert_eq!(&h[..5], &want, "history of {id}");
        let (status, one) = get(&app, ALICE, &format!("/webhooks/{id}/stats?{range}")).await?;
        assert_eq!(status, StatusCode::OK, "{one}");
        assert_eq!(figures(&one["totals"]), want, "{id}: {one}");
        let mut summed = [0i64; 5];
        for point in grouped["series"].as_array().into_iter().flatten() {
            if point["webhookId"] == id.to_string() {
                for (s, v) in summed.iter_mut().zip(figures(point)) {
                    *s += v;
                }
            }
        }
        assert_eq!(summed, want, "grouped by webhook: {grouped}");
    }

    // Per event type, and per minute: the series adds up to the totals.
    let (_, by_type) = get(
        &app,
        ALICE,
        &format!("/analytics/deliveries?{range}&groupBy=eventType"),
    )
    .await?;
    let shipped: i64 = by_type["series"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["eventType"] == "order.shipped")
        .map(|p| p["succeeded"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(shipped, 2, "{by_type}");
    let minute_from =
        (started - chrono::Duration::minutes(5)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let (status, minutes) = get(
        &app,
        ALICE,
        &format!("/analytics/deliveries?from={minute_from}&to={to}&bucket=minute"),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{minutes}");
    let mut summed = [0i64; 5];
    for point in minutes["series"].as_array().into_iter().flatten() {
        for (s, v) in summed.iter_mut().zip(figures(point)) {
            *s += v;
        }
    }
    assert_eq!(summed, [19, 8, 8, 3, 3], "{minutes}");

    // Rankings: dead fails every attempt, flaky two in five; ok is the slow one.
    let (_, failing) = get(
        &app,
        ALICE,
        &format!("/analytics/endpoints?sort=failing&minAttempts=1&{range}"),
    )
    .await?;
    let order: Vec<&str> = failing["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["webhookId"].as_str())
        .collect();
    assert_eq!(
        order,
        [dead.to_string(), flaky.to_string(), ok.to_string()],
        "{failing}"
    );
    assert_eq!(failing["data"][0]["attemptFailureRate"], 1.0);
    let (_, slowest) = get(
        &app,
        ALICE,
        &format!("/analytics/endpoints?sort=slowest&minAttempts=1&{range}"),
    )
    .await?;
    assert_eq!(slowest["data"][0]["webhookId"], ok.to_string(), "{slowest}");
    assert!(
        slowest["data"][0]["p95LatencyMs"].as_f64().unwrap_or(0.0) >= 100.0,
        "{slowest}"
    );
    let (_, few) = get(
        &app,
        ALICE,
        &format!("/analytics/endpoints?sort=failing&minAttempts=6&{range}"),
    )
    .await?;
    assert_eq!(
        few["data"].as_array().map(Vec::len),
        Some(1),
        "only dead has 6 attempts: {few}"
    );

    // gRPC says the same.
    {
        use portico_proto::v1::{self as pb, analytics_service_client::AnalyticsServiceClient};
        let mut client = AnalyticsServiceClient::connect(app.grpc_url()).await?;
        let mut request = tonic::Request::new(pb::GetDeliveryStatsRequest {
            // No range: the last seven days, which hold the whole workload.
            query: Some(pb::StatsQuery {
                bucket: pb::StatsBucket::Day as i32,
                ..Default::default()
            }),
            webhook_id: String::new(),
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", app.user_token(ALICE)).parse()?,
        );
        let totals = client
            .get_delivery_stats(request)
            .await?
            .into_inner()
            .totals
            .unwrap_or_default();
        assert_eq!(
            [
                totals.attempts,
                totals.succeeded,
                totals.retrying,
                totals.failed,
                totals.exhausted
            ],
            [19, 8, 8, 3, 3]
        );
        let mut request = tonic::Request::new(pb::GetWebhookStatsRequest {
            webhook_id: ok.to_string(),
            query: None,
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", app.user_token(BOB)).parse()?,
        );
        let err = client
            .get_webhook_stats(request)
            .await
            .expect_err("not bob's");
        assert_eq!(err.code(), tonic::Code::NotFound);
    }

    // Bob: his own one delivery, none of Alice's figures, 404 for her webhooks.
    let (_, bob) = get(
        &app,
        BOB,
        &format!("/analytics/deliveries?{range}&groupBy=webhook"),
    )
    .await?;
    assert_eq!(figures(&bob["totals"]), [1, 1, 0, 0, 0], "{bob}");
    assert!(
        bob["series"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|p| p["webhookId"] == bob_hook.to_string()),
        "{bob}"
    );
    let (_, bob_top) = get(
        &app,
        BOB,
        &format!("/analytics/endpoints?sort=failing&minAttempts=1&{range}"),
    )
    .await?;
    assert_eq!(
        bob_top["data"].as_array().map(Vec::len),
        Some(1),
        "{bob_top}"
    );
    for path in [
        format!("/webhooks/{ok}/stats?{range}"),
        format!("/analytics/deliveries?{range}&webhookId={dead}"),
    ] {
        let res = app
            .http
            .get(app.api(&path))
            .bearer_auth(app.user_token(BOB))
            .send()
            .await?;
        assert_problem(res, StatusCode::NOT_FOUND, "not_found").await?;
    }

    // Bad ranges: 400 with the field that is wrong.
    let two_days = (started + chrono::Duration::days(2)).to_rfc3339_opts(SecondsFormat::Secs, true);
    for (query, field) in [
        (format!("from={to}&to={from}"), "/to"),
        (format!("from={from}&to={from}"), "/to"),
        (
            "from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z".to_owned(),
            "/from",
        ),
        (
            format!("from={from}&to={two_days}&bucket=minute"),
            "/bucket",
        ),
        (format!("{range}&bucket=week"), "/bucket"),
        ("from=yesterday".to_owned(), "/from"),
        (format!("{range}&groupBy=planet"), "/groupBy"),
    ] {
        let res = app
            .http
            .get(app.api(&format!("/webhooks/{ok}/stats?{query}")))
            .bearer_auth(app.user_token(ALICE))
            .send()
            .await?;
        let body = assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await?;
        let fields: Vec<&str> = body["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["path"].as_str())
            .collect();
        assert!(fields.contains(&field), "{query}: {body}");
    }
    app.cleanup().await;
    Ok(())
}
