//! Recovery after kill -9: a killed dispatcher's events come back within the short ack
//! wait, while a live dispatcher stuck on a slow endpoint keeps its events (in-progress
//! acks); a restarted dispatcher takes back the retries it had claimed at once. Each
//! test prints what it measured (time from the kill to the first redelivery, and
//! duplicates per kill); docs/operations.md records the figures. No time is asserted.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use portico_e2e::sink::{Reply, Sink};
use portico_e2e::{SERVICE_TOKEN, ServiceKind, TestApp, wait_for};
use reqwest::StatusCode;
use serde_json::json;

/// How long a scenario waits for something asynchronous to happen.
const PATIENCE: Duration = Duration::from_secs(60);

/// The ack wait the test runs with: the default unless `PORTICO_RECOVERY_ACK_WAIT_SECS`
/// says otherwise (to measure the old 30-second setting for comparison).
fn ack_wait() -> String {
    std::env::var("PORTICO_RECOVERY_ACK_WAIT_SECS").unwrap_or_else(|_| "5".into())
}

async fn create_webhook(
    app: &TestApp,
    user: &str,
    url: String,
    base_delay_ms: u64,
) -> anyhow::Result<()> {
    let res = app
        .http
        .post(app.api("/webhooks"))
        .bearer_auth(app.user_token(user))
        .json(&json!({
            "url": url,
            "events": ["order.*"],
            "retryPolicy": {"maxRetries": 5, "baseDelayMs": base_delay_ms, "maxDelayMs": 1000},
        }))
        .send()
        .await?;
    anyhow::ensure!(res.status() == StatusCode::CREATED, "{}", res.text().await?);
    Ok(())
}

async fn publish(app: &TestApp, user: &str, n: usize, tag: &str) -> anyhow::Result<()> {
    let events: Vec<_> = (0..n)
        .map(|i| json!({"type": "order.created", "data": {"tag": tag, "i": i}}))
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
        "{}",
        res.text().await?
    );
    Ok(())
}

/// Requests per `webhook-id` among those the sink received for `tag`.
fn by_webhook_id(sink: &Sink, tag: &str) -> HashMap<String, Vec<Instant>> {
    let mut seen: HashMap<String, Vec<Instant>> = HashMap::new();
    for r in sink.received() {
        if r.json()["data"]["tag"] == tag {
            seen.entry(r.header("webhook-id").to_owned())
                .or_default()
                .push(r.at);
        }
    }
    seen
}

/// A live dispatcher waiting on an endpoint slower than the ack wait keeps its events
/// (nothing is sent twice); a killed one's events are redelivered after the ack wait,
/// each only under its own webhook-id, and all are delivered.
#[tokio::test]
async fn killed_dispatcher_events_come_back_within_the_ack_wait() -> anyhow::Result<()> {
    let ack_wait = ack_wait();
    let mut app = TestApp::spawn_with(
        &[("PORTICO_ACK_WAIT_SECS", ack_wait.as_str())],
        &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher],
    )
    .await?;
    let sink = Sink::start().await?;
    let user = "user-recovery";
    create_webhook(&app, user, sink.url("/hook"), 1000).await?;
    const N: usize = 20;

    // Alive but slow: each answer takes longer than the ack wait.
    // (Capped below the 15 s attempt timeout when a long ack wait is measured.)
    let slow = Duration::from_secs((ack_wait.parse::<u64>().unwrap_or(5) + 3).min(12));
    sink.set_default(Reply::status(200).delayed(slow));
    publish(&app, user, N, "slow").await?;
    let pool = app.pool.clone();
    wait_for(PATIENCE, || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM webhook_deliveries WHERE status = 'succeeded'",
            )
            .fetch_one(&pool)
            .await
            .unwrap_or(0)
                == N as i64
        }
    })
    .await?;
    let slow_seen = by_webhook_id(&sink, "slow");
    assert_eq!(slow_seen.len(), N);
    assert!(
        slow_seen.values().all(|v| v.len() == 1),
        "a live dispatcher's events were redelivered: {:?}",
        slow_seen.values().map(Vec::len).collect::<Vec<_>>()
    );

    // Killed mid-attempt: the attempts in flight are never answered.
    sink.set_default(Reply::status(200).delayed(Duration::from_secs(120)));
    publish(&app, user, N, "killed").await?;
    let s = sink.clone();
    wait_for(PATIENCE, move || {
        let s = s.clone();
        async move { by_webhook_id(&s, "killed").len() == N }
    })
    .await?;
    let dispatcher = app.take(ServiceKind::WebhookDispatcher);
    let killed_at = Instant::now();
    dispatcher.kill().await?;
    sink.set_default(Reply::status(200));
    app.start(ServiceKind::WebhookDispatcher).await?;
    let s = sink.clone();
    wait_for(PATIENCE, move || {
        let s = s.clone();
        async move { by_webhook_id(&s, "killed").values().all(|v| v.len() >= 2) }
    })
    .await?;
    let seen = by_webhook_id(&sink, "killed");
    assert_eq!(seen.len(), N, "every event under its own webhook-id");
    let first_redelivery = seen
        .values()
        .filter_map(|v| v.get(1))
        .min()
        .map(|t| t.duration_since(killed_at))
        .unwrap_or_default();
    let duplicates: usize = seen.values().map(|v| v.len() - 1).sum();
    println!(
        "recovery (ack wait {ack_wait} s): kill -9 to first redelivery {} ms; {duplicates} duplicate requests for {N} events in flight (same webhook-id)",
        first_redelivery.as_millis()
    );
    let pool = app.pool.clone();
    wait_for(PATIENCE, || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM webhook_deliveries WHERE status = 'succeeded'",
            )
            .fetch_one(&pool)
            .await
            .unwrap_or(0)
                == 2 * N as i64
        }
    })
    .await?;
    app.cleanup().await;
    Ok(())
}

/// A dispatcher killed while a retry it claimed is in flight, and restarted under the
/// same replica name, attempts that delivery again at once instead of after its lease;
/// the delivery ends succeeded, the lost attempt leaves no record.
#[tokio::test]
async fn restarted_dispatcher_takes_back_its_claimed_retries() -> anyhow::Result<()> {
    let mut app =
        TestApp::spawn_with(&[], &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher]).await?;
    let sink = Sink::start().await?;
    let user = "user-lease";
    create_webhook(&app, user, sink.url("/hook"), 100).await?;
    // The first attempt fails; the retry (claimed by the retry poller) hangs.
    sink.script([Reply::status(500)]);
    sink.set_default(Reply::status(200).delayed(Duration::from_secs(120)));
    publish(&app, user, 1, "lease").await?;
    let s = sink.clone();
    wait_for(PATIENCE, move || {
        let s = s.clone();
        async move { s.received().len() >= 2 }
    })
    .await?;
    let claimed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM webhook_deliveries WHERE status = 'delivering' AND lease_owner IS NOT NULL",
    )
    .fetch_one(&app.pool)
    .await?;
    assert_eq!(claimed, 1, "the retry is claimed under a lease");

    let dispatcher = app.take(ServiceKind::WebhookDispatcher);
    let killed_at = Instant::now();
    dispatcher.kill().await?;
    sink.set_default(Reply::status(200));
    app.start(ServiceKind::WebhookDispatcher).await?;
    let s = sink.clone();
    wait_for(PATIENCE, move || {
        let s = s.clone();
        async move { s.received().len() >= 3 }
    })
    .await?;
    let received = sink.received();
    let again = received[2].at.duration_since(killed_at);
    println!(
        "lease recovery: kill -9 to the claimed retry attempted again {} ms (restart under the same replica name)",
        again.as_millis()
    );
    let ids: Vec<&str> = received.iter().map(|r| r.header("webhook-id")).collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one webhook-id: {ids:?}"
    );
    let pool = app.pool.clone();
    wait_for(PATIENCE, || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT status FROM webhook_deliveries")
                .fetch_one(&pool)
                .await
                .is_ok_and(|s| s == "succeeded")
        }
    })
    .await?;
    app.cleanup().await;
    Ok(())
}
