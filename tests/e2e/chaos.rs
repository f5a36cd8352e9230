//! Chaos: events and a bulk batch in flight while each service is killed -9 and
//! restarted, NATS is killed and restarted, and PostgreSQL crashes and restarts. On
//! private servers (other tests never see them restart). Nothing accepted is lost:
//! every event answered 202 reaches the endpoint, repeated only under its own
//! webhook-id, and every order of the batch gets exactly one result, none created twice.
//!
//! Should an event be missing, the test prints, for each one, the round and fault it was
//! published in and what the system knows of it (its `events` row, deliveries and
//! attempts, dead letter, whether its job is still in JetStream, the consumer's state;
//! [`portico_e2e::diagnose`]), and keeps the services', NATS's and PostgreSQL's logs.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use portico_e2e::servers::{PrivateNats, PrivatePostgres};
use portico_e2e::sink::{Reply, Sink};
use portico_e2e::{ServiceKind, TestApp, wait_for};
use portico_e2e::{checks, diagnose};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// How long the system may take to catch up once the chaos is over. One run on a
/// loaded machine still missed 10 of 680 events after 120 s (a rerun delivered all in
/// 69 s); 300 s tells a slow recovery (jobs in nak backoff after the PostgreSQL crash)
/// from a loss, which still fails here.
const CATCH_UP: Duration = Duration::from_secs(300);
/// Events per publish request.
const PER_REQUEST: usize = 10;
/// Orders in the batch (submitted just before the batch-processor is killed, so it is
/// mid-run then).
const ORDERS: usize = 20_000;

/// One step of the chaos schedule.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill(ServiceKind),
    Nats,
    Postgres,
}

/// Publishes one request of events; returns the ids of those accepted (202).
async fn publish(app: &TestApp, user: &str, round: usize) -> Vec<String> {
    let events: Vec<Value> = (0..PER_REQUEST)
        .map(|i| json!({"type": "order.created", "data": {"round": round, "i": i}}))
        .collect();
    checks::publish_batch(app, &app.api(""), user, events).await
}

/// Prints the slowest events from acceptance to first arrival at the endpoint, with
/// where they were published (which fault a slow recovery comes from), and returns the
/// ids of the `n` slowest.
fn slowest(sink: &Sink, published: &HashMap<String, (String, Instant)>, n: usize) -> Vec<String> {
    let mut first: HashMap<String, Instant> = HashMap::new();
    for r in sink.received() {
        let at = first
            .entry(r.header("webhook-id").to_owned())
            .or_insert(r.at);
        *at = (*at).min(r.at);
    }
    let mut latencies: Vec<(Duration, &str, &str)> = published
        .iter()
        .filter_map(|(id, (when, accepted))| {
            let arrived = first.get(id)?;
            let latency = arrived.saturating_duration_since(*accepted);
            Some((latency, when.as_str(), id.as_str()))
        })
        .collect();
    latencies.sort_by_key(|l| std::cmp::Reverse(l.0));
    for (latency, when, id) in latencies.iter().take(5) {
        println!(
            "chaos: slowest: {:.1} s from 202 to arrival (event {id}, published {when})",
            latency.as_secs_f64()
        );
    }
    latencies
        .iter()
        .take(n)
        .map(|(_, _, id)| (*id).to_owned())
        .collect()
}

#[tokio::test]
async fn nothing_accepted_is_lost_while_everything_restarts() -> anyhow::Result<()> {
    let pg = PrivatePostgres::start().await?;
    let mut nats = PrivateNats::start().await?;
    let mut app = TestApp::prepare_on(&pg.url(), &nats.url()).await?;
    app.env = vec![("PORTICO_RETRY_POLL_MS".into(), "100".into())];
    for kind in [
        ServiceKind::Gateway,
        ServiceKind::WebhookDispatcher,
        ServiceKind::BatchProcessor,
    ] {
        app.start(kind).await?;
    }
    let sink = Sink::start().await?;
    let user = "user-chaos";
    let token = app.user_token(user);
    let res = app
        .http
        .post(app.api("/webhooks"))
        .bearer_auth(&token)
        .json(&json!({
            "url": sink.url("/hook"),
            "events": ["order.*"],
            "retryPolicy": {"maxRetries": 20, "baseDelayMs": 200, "maxDelayMs": 2000},
        }))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::CREATED);
    let schedule = [
        Fault::Kill(ServiceKind::WebhookDispatcher),
        Fault::Kill(ServiceKind::BatchProcessor),
        Fault::Kill(ServiceKind::Gateway),
        Fault::Nats,
        Fault::Postgres,
        Fault::Kill(ServiceKind::WebhookDispatcher),
    ];
    let mut accepted: HashSet<String> = HashSet::new();
    // Where and when each accepted event was published: its round and the fault under
    // way, and the instant it was accepted.
    let mut published: HashMap<String, (String, Instant)> = HashMap::new();
    let mut note = |ids: Vec<String>, when: String, at: Instant, accepted: &mut HashSet<_>| {
        for id in ids {
            published.insert(id.clone(), (when.clone(), at));
            accepted.insert(id);
        }
    };
    let mut round = 0;
    let mut batch_id = String::new();
    for fault in schedule {
        if matches!(fault, Fault::Kill(ServiceKind::BatchProcessor)) {
            let res = app
                .http
                .post(app.api("/bulk-orders"))
                .bearer_auth(&token)
                .header("content-type", "application/x-ndjson")
                .body(
                    (0..ORDERS)
                        .map(|i| format!("{}\n", checks::order("C", i)))
                        .collect::<String>(),
                )
                .send()
                .await?;
            assert_eq!(res.status(), StatusCode::ACCEPTED);
            batch_id = res.json::<Value>().await?["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
        }
        // Some traffic before each fault, paced at about 100 events/s.
        for _ in 0..10 {
            let ids = publish(&app, user, round).await;
            note(
                ids,
                format!("round {round}, before {fault:?}"),
                Instant::now(),
                &mut accepted,
            );
            round += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let progress: Option<i32> =
            sqlx::query_scalar("SELECT processed FROM bulk_order_batches LIMIT 1")
                .fetch_optional(&app.pool)
                .await
                .ok()
                .flatten();
        println!(
            "chaos: {fault:?} after {} accepted events (batch: {progress:?} of {ORDERS} orders processed)",
            accepted.len()
        );
        match fault {
            Fault::Kill(kind) => {
                app.take(kind).kill().await?;
                // Traffic while it is down (refused or queued, never lost); nothing can
                // be published while the gateway itself is down.
                if kind != ServiceKind::Gateway {
                    let ids = publish(&app, user, round).await;
                    note(
                        ids,
                        format!("round {round}, while {fault:?}"),
                        Instant::now(),
                        &mut accepted,
                    );
                    round += 1;
                }
                app.start(kind).await?;
            }
            Fault::Nats => {
                nats.kill().await?;
                let ids = publish(&app, user, round).await;
                note(
                    ids,
                    format!("round {round}, while {fault:?}"),
                    Instant::now(),
                    &mut accepted,
                );
                round += 1;
                nats.restart().await?;
            }
            Fault::Postgres => {
                // Events go to JetStream first: they are still accepted while PostgreSQL
                // is down, and must be recorded and delivered once it is back.
                let down = pg.crash_and_restart(Duration::from_secs(3));
                let during = async {
                    let mut ids = Vec::new();
                    for request in 0..5 {
                        let got = publish(&app, user, round + 1000).await;
                        ids.push((request, got, Instant::now()));
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    ids
                };
                let (restarted, ids) = tokio::join!(down, during);
                restarted?;
                for (request, got, at) in ids {
                    let when = format!("round {}, request {request} while {fault:?}", round + 1000);
                    note(got, when, at, &mut accepted);
                }
                round += 1;
            }
        }
        // Every service serves again before the next fault.
        for kind in [
            ServiceKind::Gateway,
            ServiceKind::WebhookDispatcher,
            ServiceKind::BatchProcessor,
        ] {
            let url = format!("http://{}/readyz", app.addr(kind, "http"));
            let http = app.http.clone();
            wait_for(CATCH_UP, || {
                let (http, url) = (http.clone(), url.clone());
                async move {
                    http.get(url)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success())
                }
            })
            .await
            .map_err(|e| anyhow::anyhow!("{kind:?} not ready again after {fault:?}: {e}"))?;
        }
    }
    println!("chaos: {} events accepted in all", accepted.len());
    assert!(accepted.len() > 300, "the load ran: {}", accepted.len());

    // Every accepted event arrives; repeats only under the same webhook-id.
    let chaos_over = Instant::now();
    let s = sink.clone();
    let wanted = accepted.clone();
    let caught_up = wait_for(CATCH_UP, move || {
        let s = s.clone();
        let wanted = wanted.clone();
        async move {
            let got: HashSet<String> = s
                .received()
                .iter()
                .map(|r| r.header("webhook-id").to_owned())
                .collect();
            wanted.is_subset(&got)
        }
    })
    .await;
    if let Err(e) = caught_up {
        let got: HashSet<String> = sink
            .received()
            .iter()
            .map(|r| r.header("webhook-id").to_owned())
            .collect();
        let missing: HashMap<String, String> = accepted
            .difference(&got)
            .map(|id| {
                let when = published.get(id).map(|p| p.0.clone()).unwrap_or_default();
                (id.clone(), when)
            })
            .collect();
        println!("{}", diagnose::missing_events(&app, &missing).await);
        nats.keep_log();
        println!("chaos: nats-server log: {}", nats.log_path().display());
        println!("chaos: postgres log: {}", pg.log_path().display());
        anyhow::bail!(
            "accepted events lost: {e}; {} of {} missing",
            missing.len(),
            accepted.len()
        );
    }
    println!(
        "chaos: every accepted event delivered {:.1} s after the chaos ended",
        chaos_over.elapsed().as_secs_f64()
    );
    // The slowest events' stories, and the dispatcher's retried chunks: what a slow
    // recovery waited on.
    for id in slowest(&sink, &published, 3) {
        println!(
            "chaos: slow event {id}:\n{}",
            diagnose::event_in_database(&app, &id).await
        );
    }
    let dispatcher_log = &app.services[&ServiceKind::WebhookDispatcher].log_path;
    println!(
        "chaos: webhook-dispatcher, chunks handed back: {}",
        diagnose::problems_matching(dispatcher_log, "will retry", 10)
    );
    println!(
        "chaos: webhook-dispatcher, all: {}",
        diagnose::problems_in_log(dispatcher_log, 5)
    );
    let mut per_id: HashMap<String, Vec<Value>> = HashMap::new();
    for r in sink.received() {
        per_id
            .entry(r.header("webhook-id").to_owned())
            .or_default()
            .push(r.json());
    }
    let duplicates = checks::repeats_unchanged(&per_id);
    println!(
        "chaos: {} events delivered, {duplicates} repeated deliveries (same webhook-id)",
        per_id.len()
    );

    // The batch completes with exactly one result per order and no order twice.
    checks::batch_completed_once(&app, &token, &batch_id, ORDERS as i64, CATCH_UP).await?;

    app.cleanup().await;
    drop(nats);
    pg.remove().await;
    Ok(())
}

/// PostgreSQL crashes while the first attempt of a just-recorded event is in flight
/// (the endpoint answers 500, slowly), and is back before the dispatcher commits the
/// delivery. The event's row must survive the crash: the delivery's retries read the
/// payload from it. (Events recorded without waiting for the WAL flush were lost in
/// such a crash while their deliveries, committed after the restart, were kept, so the
/// retry could never be made; one chaos run lost 244 accepted events that way, the
/// 512 orphaned deliveries also stalling the retry poller.) The WAL writer is slowed
/// to 10 s so that an unflushed commit is reliably still unflushed when the crash
/// comes, as it was for 200 ms in the chaos run.
#[tokio::test]
async fn an_event_recorded_just_before_postgres_crashes_is_retried() -> anyhow::Result<()> {
    let pg = PrivatePostgres::start().await?;
    let nats = PrivateNats::start().await?;
    {
        let admin = sqlx::PgPool::connect(&pg.url()).await?;
        sqlx::query("ALTER SYSTEM SET wal_writer_delay = '10s'")
            .execute(&admin)
            .await?;
        sqlx::query("SELECT pg_reload_conf()")
            .execute(&admin)
            .await?;
        admin.close().await;
    }
    let mut app = TestApp::prepare_on(&pg.url(), &nats.url()).await?;
    app.env = vec![("PORTICO_RETRY_POLL_MS".into(), "100".into())];
    app.start(ServiceKind::Gateway).await?;
    app.start(ServiceKind::WebhookDispatcher).await?;
    let sink = Sink::start().await?;
    // The first attempt fails after 8 s: long enough for PostgreSQL to crash and come
    // back while it is in flight. Every later attempt succeeds at once.
    sink.script((0..PER_REQUEST).map(|_| Reply::status(500).delayed(Duration::from_secs(8))));
    let user = "user-pg-crash";
    let res = app
        .http
        .post(app.api("/webhooks"))
        .bearer_auth(app.user_token(user))
        .json(&json!({
            "url": sink.url("/hook"),
            "events": ["order.*"],
            "retryPolicy": {"maxRetries": 5, "baseDelayMs": 200, "maxDelayMs": 1000},
        }))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::CREATED);
    let ids = publish(&app, user, 0).await;
    assert_eq!(ids.len(), PER_REQUEST, "the events were accepted");
    // The events are recorded and their first attempts are in flight: crash now.
    let s = sink.clone();
    wait_for(Duration::from_secs(30), move || {
        let s = s.clone();
        async move { s.count() >= PER_REQUEST }
    })
    .await?;
    pg.crash_and_restart(Duration::from_millis(500)).await?;

    // Every event is tried again (its first attempt failed) and arrives.
    let s = sink.clone();
    let wanted: HashSet<String> = ids.iter().cloned().collect();
    let retried = wait_for(Duration::from_secs(60), move || {
        let s = s.clone();
        let wanted = wanted.clone();
        async move {
            let mut seen: HashMap<String, usize> = HashMap::new();
            for r in s.received() {
                *seen.entry(r.header("webhook-id").to_owned()).or_default() += 1;
            }
            wanted
                .iter()
                .all(|id| seen.get(id).is_some_and(|n| *n >= 2))
        }
    })
    .await;
    if let Err(e) = retried {
        let missing: HashMap<String, String> = ids
            .iter()
            .map(|id| (id.clone(), "before the crash".to_owned()))
            .collect();
        println!("{}", diagnose::missing_events(&app, &missing).await);
        anyhow::bail!("events not retried after the crash: {e}");
    }
    app.cleanup().await;
    drop(nats);
    pg.remove().await;
    Ok(())
}

/// nats-server killed -9 and restarted over and over, each time right after a consumer
/// acknowledged what it held (half the kills before the server confirmed the acks,
/// half after): every job JetStream acknowledged, before a kill or after a restart,
/// reaches the durable consumer of the work-queue stream, with Portico's own stream and
/// consumer settings and without the services' timing in the way. This is the server's
/// half of "nothing accepted is lost": nats-server writes a message to its file before
/// acknowledging the publish, and a killed process loses nothing the kernel holds.
///
/// Ignored: nats-server 2.9.10 fails it in about one run in five on a loaded machine. A
/// stream emptied by acks can come back from a kill at a lower sequence (even 0) while
/// the durable consumer's stored state is further on, and the consumer then skips the
/// jobs published after the restart: stored and acknowledged, never delivered. The
/// test prints, per restart, the jobs published so far, the stream's last sequence and
/// the consumer's delivered sequence. Run it with `--ignored` against another server.
#[tokio::test]
#[ignore = "nats-server 2.9.10 skips jobs published after a kill -9 (see the doc comment)"]
async fn jetstream_keeps_acknowledged_jobs_across_kills() -> anyhow::Result<()> {
    use async_nats::jetstream;
    use futures::StreamExt;
    use portico_queue::setup::{ConsumerSettings, ensure_consumer};
    use portico_queue::topology::{JobKind, Topology};

    let mut nats = PrivateNats::start().await?;
    let topology = Topology::new("CHAOSJS", 1)?;
    let settings = ConsumerSettings {
        ack_wait: Duration::from_secs(5),
        ..Default::default()
    };
    let subject = topology.subject(JobKind::EventDispatch);
    let mut next = 0u64;
    let mut lost = Vec::new();
    let mut restarted_at = Vec::new();
    for kill in 0..20 {
        let client = async_nats::connect(&nats.url()).await?;
        let js = jetstream::new(client.clone());
        let consumer = ensure_consumer(&js, &topology, JobKind::EventDispatch, &settings)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let last = js
            .get_stream(topology.jobs_stream())
            .await?
            .info()
            .await?
            .state
            .last_sequence;
        let delivered = consumer.clone().info().await?.delivered.stream_sequence;
        restarted_at.push((next, last, delivered));
        // A request's worth of jobs, each acknowledged by JetStream; then every one
        // back from the consumer, and acknowledged.
        let mut wanted: HashSet<u64> = HashSet::new();
        for _ in 0..PER_REQUEST {
            js.publish(subject.clone(), next.to_string().into())
                .await?
                .await?;
            wanted.insert(next);
            next += 1;
        }
        let until = Instant::now() + Duration::from_secs(15);
        while !wanted.is_empty() && Instant::now() < until {
            let mut batch = consumer
                .fetch()
                .max_messages(100)
                .expires(Duration::from_secs(1))
                .messages()
                .await?;
            while let Some(m) = batch.next().await {
                let m = m.map_err(|e| anyhow::anyhow!("{e}"))?;
                let n: u64 = String::from_utf8_lossy(&m.payload).parse()?;
                wanted.remove(&n);
                if kill % 2 == 0 {
                    m.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
                } else {
                    m.double_ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
                }
            }
        }
        if !wanted.is_empty() {
            let info = consumer.clone().info().await?.clone();
            let stream = js
                .get_stream(topology.jobs_stream())
                .await?
                .info()
                .await?
                .state
                .messages;
            println!(
                "chaos: then the stream holds {stream} messages; consumer num_pending {}, num_ack_pending {}",
                info.num_pending, info.num_ack_pending
            );
            println!(
                "chaos: after kill {kill} (stream restarted at sequence {last}): never delivered {wanted:?}"
            );
        }
        lost.extend(wanted);
        client.flush().await?;
        nats.kill().await?;
        nats.restart().await?;
    }
    println!(
        "chaos: (jobs published so far, the stream's last sequence, the consumer's delivered sequence) at each restart: {restarted_at:?}"
    );
    assert!(
        lost.is_empty(),
        "acknowledged jobs never delivered: {lost:?}"
    );
    Ok(())
}
