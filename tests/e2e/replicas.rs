//! Two replicas of every service on one database and one stream, with one replica of
//! each kind killed -9 and restarted while events and a batch are in flight: nothing
//! accepted is lost, no order is written twice, a repeated delivery keeps its
//! webhook-id and body, and events with one ordering key reach an ordering endpoint in
//! publish order.
//!
//! Scaled to run in about two minutes in a debug build on two cores: 1,000 events
//! (100 requests of 10 on ten ordering keys, alternating between the two gateways) and
//! a 5,000-order batch whose orders also emit events to the same endpoint.
//! `PORTICO_TEST_REPLICAS_FULL=1` runs the full scale instead: 20,000 events
//! (2,000 requests, over 100 ordering keys) and a 50,000-order batch, several minutes
//! there.
//!
//! Per-endpoint limits hold as documented (docs/operations.md, "What is per replica"):
//! a slow endpoint with `maxConcurrency: 2`, fed throughout the run, never has more than
//! 2 requests in flight per dispatcher replica, 4 with two.
//!
//! Servers: `PORTICO_TEST_DATABASE_URL`, `PORTICO_TEST_NATS_URL`; binaries from
//! `cargo build --workspace --bins`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use portico_e2e::checks;
use portico_e2e::sink::{Reply, Sink};
use portico_e2e::{ServiceKind, TestApp, wait_for};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// How long the system may take to catch up after the load (full scale: 600 s).
fn catch_up() -> Duration {
    if std::env::var_os("PORTICO_TEST_REPLICAS_FULL").is_some() {
        Duration::from_secs(600)
    } else {
        Duration::from_secs(120)
    }
}
const PER_REQUEST: usize = 10;
const USER: &str = "user-replicas";
/// The capped endpoint's `maxConcurrency`, and the dispatcher replicas running.
const CAP: usize = 2;
const DISPATCHERS: usize = 2;

/// Requests of [`PER_REQUEST`] events and orders in the batch: the default scale, or
/// the full one with `PORTICO_TEST_REPLICAS_FULL=1`.
/// The third figure is the key groups of [`publish`].
fn scale() -> (usize, usize, usize) {
    if std::env::var_os("PORTICO_TEST_REPLICAS_FULL").is_some() {
        (2_000, 50_000, 10)
    } else {
        (100, 5_000, 1)
    }
}

/// Publishes one request of events through `base` (a gateway's `/api`), one event per
/// ordering key, each carrying the round; returns the accepted ids. The keys are
/// `k0..k9`, or with `key_groups` > 1 the request's ten keys rotate through
/// `10 x key_groups` keys: each key's deliveries run one after another (the next is
/// released when the previous has finished), so the full scale spreads its 20,000
/// events over 100 keys.
async fn publish(app: &TestApp, base: &str, round: usize, key_groups: usize) -> Vec<String> {
    let group = round % key_groups.max(1);
    let events: Vec<Value> = (0..PER_REQUEST)
        .map(|i| {
            let key = group * PER_REQUEST + i;
            json!({"type": "order.created", "orderingKey": format!("k{key}"), "data": {"round": round, "key": key}})
        })
        .collect();
    checks::publish_batch(app, base, USER, events).await
}

#[tokio::test]
async fn two_replicas_of_everything_lose_nothing() -> anyhow::Result<()> {
    let (rounds, orders, key_groups) = scale();
    let mut app = TestApp::prepare().await?;
    // Two replicas of everything share the test server's `max_connections` (100):
    // at 16 pooled connections each (the dispatcher holds 16 more for recording
    // events) two full sets would need 128, and at the full scale, where every pool
    // fills, new connections were refused and a restarted replica could not start.
    // Sized as docs/operations.md says: every replica's pools fit the server.
    app.env = vec![
        ("PORTICO_RETRY_POLL_MS".into(), "100".into()),
        ("PORTICO_DB_MAX_CONNECTIONS".into(), "8".into()),
    ];
    for kind in [
        ServiceKind::Gateway,
        ServiceKind::WebhookDispatcher,
        ServiceKind::BatchProcessor,
    ] {
        app.start(kind).await?;
    }
    // The second replica of each kind, each under its own replica id. A killed replica
    // comes back under the same id, as a container restarted in its pod does (its pod
    // name is its PORTICO_REPLICA_ID): it takes back its claims at once. Under a new id
    // its claimed deliveries, and behind them every later event of their ordering
    // keys, wait for the claim's lease to expire.
    let mut gateway_b = app
        .start_extra(ServiceKind::Gateway, &[("PORTICO_REPLICA_ID", "gateway-b")])
        .await?;
    let mut dispatcher_b = app
        .start_extra(
            ServiceKind::WebhookDispatcher,
            &[("PORTICO_REPLICA_ID", "dispatcher-b")],
        )
        .await?;
    let mut processor_b = app
        .start_extra(
            ServiceKind::BatchProcessor,
            &[("PORTICO_REPLICA_ID", "processor-b")],
        )
        .await?;
    let base_a = app.api("");
    let base_b = |s: &portico_e2e::Service| {
        format!(
            "http://{}/api",
            s.addrs.get("http").cloned().unwrap_or_default()
        )
    };

    let sink = Sink::start().await?;
    let token = app.user_token(USER);
    let res = app
        .http
        .post(app.api("/webhooks"))
        .bearer_auth(&token)
        .json(&json!({
            "url": sink.url("/hook"),
            "events": ["order.*"],
            "orderingEnabled": true,
            "retryPolicy": {"maxRetries": 20, "baseDelayMs": 200, "maxDelayMs": 2000},
        }))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::CREATED);
    // A slow endpoint with a concurrency cap, fed a few events every tenth round.
    let capped_sink = Sink::start().await?;
    capped_sink.set_default(Reply::status(200).delayed(Duration::from_millis(40)));
    let res = app
        .http
        .post(app.api("/webhooks"))
        .bearer_auth(&token)
        .json(&json!({
            "url": capped_sink.url("/capped"),
            "events": ["capped.*"],
            "maxConcurrency": CAP,
        }))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::CREATED);
    let mut capped: Vec<String> = Vec::new();

    let res = app
        .http
        .post(app.api("/bulk-orders"))
        .bearer_auth(&token)
        .header("content-type", "application/x-ndjson")
        .body(
            (0..orders)
                .map(|i| format!("{}\n", checks::order("R", i)))
                .collect::<String>(),
        )
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let batch_id = res.json::<Value>().await?["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let mut accepted: Vec<String> = Vec::new();
    let mut refused_requests = 0usize;
    // PORTICO_TEST_REPLICAS_NO_KILLS=1 runs the same load without the kills, to tell a
    // two-replica problem from a restart problem.
    let kills = std::env::var("PORTICO_TEST_REPLICAS_NO_KILLS").is_err();
    for round in 0..rounds {
        // Kill -9 one replica of each kind at a quarter, half and three quarters.
        if kills && round == rounds / 4 {
            dispatcher_b.kill().await?;
            dispatcher_b = app
                .start_extra(
                    ServiceKind::WebhookDispatcher,
                    &[("PORTICO_REPLICA_ID", "dispatcher-b")],
                )
                .await?;
        } else if kills && round == rounds / 2 {
            processor_b.kill().await?;
            processor_b = app
                .start_extra(
                    ServiceKind::BatchProcessor,
                    &[("PORTICO_REPLICA_ID", "processor-b")],
                )
                .await?;
        } else if kills && round == rounds * 3 / 4 {
            gateway_b.kill().await?;
            // Requests meant for it go to the surviving gateway meanwhile.
            let ids = publish(&app, &base_a, round, key_groups).await;
            refused_requests += usize::from(ids.is_empty());
            accepted.extend(ids);
            gateway_b = app
                .start_extra(ServiceKind::Gateway, &[("PORTICO_REPLICA_ID", "gateway-b")])
                .await?;
            continue;
        }
        let base = if round % 2 == 0 {
            base_a.clone()
        } else {
            base_b(&gateway_b)
        };
        let ids = publish(&app, &base, round, key_groups).await;
        refused_requests += usize::from(ids.is_empty());
        accepted.extend(ids);
        if round % 10 == 0 {
            let ticks = (0..PER_REQUEST)
                .map(|i| json!({"type": "capped.tick", "data": {"round": round, "i": i}}))
                .collect();
            capped.extend(checks::publish_batch(&app, &base, USER, ticks).await);
        }
    }
    println!(
        "replicas: {} events accepted, {refused_requests} of {rounds} requests refused",
        accepted.len()
    );
    assert!(
        accepted.len() >= (rounds - 5) * PER_REQUEST,
        "the load ran: {}",
        accepted.len()
    );

    // Every accepted event arrives.
    let wanted: HashSet<String> = accepted.iter().cloned().collect();
    {
        let (sink2, wanted2) = (sink.clone(), wanted.clone());
        let waited = wait_for(catch_up(), move || {
            let (sink, wanted) = (sink2.clone(), wanted2.clone());
            async move {
                let got: HashSet<String> = sink
                    .received()
                    .iter()
                    .map(|r| r.header("webhook-id").to_owned())
                    .collect();
                wanted.is_subset(&got)
            }
        })
        .await;
        if let Err(e) = waited {
            let got: HashSet<String> = sink
                .received()
                .iter()
                .map(|r| r.header("webhook-id").to_owned())
                .collect();
            let statuses: Vec<(String, i64)> =
                sqlx::query_as("SELECT status::text, count(*) FROM webhook_deliveries GROUP BY 1")
                    .fetch_all(&app.pool)
                    .await?;
            let owners: Vec<(Option<String>, i64)> = sqlx::query_as(
                "SELECT split_part(lease_owner, '/', 1), count(*) FROM webhook_deliveries
                  WHERE status = 'delivering' GROUP BY 1",
            )
            .fetch_all(&app.pool)
            .await?;
            anyhow::bail!(
                "accepted events not delivered: {e}; {} of {} missing; deliveries by status {statuses:?}; delivering leased by {owners:?}",
                wanted.difference(&got).count(),
                wanted.len()
            );
        }
    }
    // Repeats only under the same webhook-id with the same body; per key, first
    // arrivals in publish (round) order.
    let mut per_id: HashMap<String, Vec<Value>> = HashMap::new();
    let mut per_key: HashMap<i64, Vec<i64>> = HashMap::new();
    for r in sink.received() {
        let id = r.header("webhook-id").to_owned();
        let body = r.json();
        let entry = per_id.entry(id.clone()).or_default();
        // Only the keyed events count for ordering (the batch's order events, which
        // reach the same endpoint, carry no key).
        if entry.is_empty()
            && let Some(key) = body["data"]["key"].as_i64()
        {
            per_key
                .entry(key)
                .or_default()
                .push(body["data"]["round"].as_i64().unwrap_or(-1));
        }
        entry.push(body);
    }
    let repeats = checks::repeats_unchanged(&per_id);
    for (key, rounds) in &per_key {
        assert!(
            rounds.windows(2).all(|w| w[0] < w[1]),
            "key k{key} delivered out of publish order: {rounds:?}"
        );
    }
    println!(
        "replicas: {} events delivered, {repeats} repeated deliveries (same webhook-id)",
        per_id.len()
    );

    // The capped endpoint got every event, never more than its cap per replica at once.
    {
        let (sink2, wanted) = (capped_sink.clone(), capped.len());
        wait_for(catch_up(), move || {
            let sink = sink2.clone();
            async move {
                let got: HashSet<String> = sink
                    .received()
                    .iter()
                    .map(|r| r.header("webhook-id").to_owned())
                    .collect();
                got.len() >= wanted
            }
        })
        .await?;
    }
    let peak = capped_sink.peak_in_flight();
    println!(
        "replicas: capped endpoint ({CAP} per replica): {} events, peak {peak} requests in flight",
        capped.len()
    );
    assert!(
        peak <= CAP * DISPATCHERS,
        "maxConcurrency {CAP} on {DISPATCHERS} replicas, but {peak} requests were in flight at once"
    );

    // The batch completes with exactly one result per order and no order twice.
    checks::batch_completed_once(&app, &token, &batch_id, orders as i64, catch_up()).await?;

    gateway_b.kill().await?;
    dispatcher_b.kill().await?;
    processor_b.kill().await?;
    app.cleanup().await;
    Ok(())
}
