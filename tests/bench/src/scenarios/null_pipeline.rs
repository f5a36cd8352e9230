//! `null-pipeline`: the ceiling of Portico's own design on this machine, measured in the
//! same run, with the same load client, sink, PostgreSQL and NATS as Portico.
//!
//! It takes the same hops as Portico with no business logic in between:
//! - ingest: a bare hyper HTTP/1.1 server takes one `POST /events` per event and
//!   publishes its body to JetStream with a `Nats-Msg-Id` (deduplication, as Portico),
//!   answering 202 only after the stream acknowledged it;
//! - dispatch: one pull consumer takes chunks (up to `chunk` messages, up to
//!   `chunks_in_flight` chunks at once), POSTs each event to every endpoint of the sink
//!   with a bare hyper client (keep-alive connections, no signing, no TLS), writes the
//!   rows Portico writes per delivery (the event and its dedupe key, one delivery and
//!   one attempt per endpoint) into Portico's own schema (its migrations, indexes and
//!   constraints) in one set-based statement per chunk, and then acknowledges the chunk.
//!
//! Like Portico (`PORTICO_ENDPOINT_CONCURRENCY`), at most [`ENDPOINT_CAP`] requests are
//! in flight to one endpoint: without a cap, 16 chunks of 512 events with 10 endpoints
//! each open tens of thousands of connections at once and run out of file descriptors.
//! No retries, no secrets, no health tracking, no ordering, no observability: whatever
//! Portico does on top of this costs the difference.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, consumer::PullConsumer};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::client::{Conn, Target, Template, closed_loop};
use crate::report::Report;
use crate::scenarios::{Bench, event_json, ms, wait_delivered};
use crate::sink::{Tracker, find_number, now_ns};
use crate::system::{create_database, drop_database};

/// Parameters.
#[derive(Debug, Clone, Copy)]
pub struct NullArgs {
    /// Endpoints (sink paths) per event.
    pub endpoints: usize,
    /// Events to publish.
    pub events: u64,
    /// Connections of the load client.
    pub concurrency: usize,
    /// Messages per chunk (Portico's default `PORTICO_DISPATCH_BATCH`).
    pub chunk: usize,
    /// Chunks worked on at once (Portico's default `PORTICO_DISPATCH_CHUNKS`).
    pub chunks_in_flight: usize,
}

/// Requests in flight to one endpoint: Portico's default `PORTICO_ENDPOINT_CONCURRENCY`.
pub const ENDPOINT_CAP: usize = 32;

/// The pipeline's user (rows need an owner; nothing reads it).
const OWNER: &str = "bench-null";

/// Runs the null pipeline in a scratch database and stream, both removed after, and
/// records its delivery rate in `bench.null_rates` for the webhooks scenario.
pub async fn run(bench: &mut Bench, args: NullArgs) -> anyhow::Result<Report> {
    let name = format!(
        "portico_bench_null_{}_{}",
        bench.system.run_id, args.endpoints
    );
    let url = create_database(&bench.system.server_url, &name).await?;
    let result = run_in(bench, &args, &url).await;
    drop_database(&bench.system.server_url, &name).await;
    let report = result?;
    if let Some(rate) = report.value("deliveries_per_sec") {
        bench.null_rates.retain(|n| n.endpoints != args.endpoints);
        bench.null_rates.push(super::NullRate {
            endpoints: args.endpoints,
            rate,
            alone_capacity: report.value("alone_capacity_per_sec"),
        });
    }
    Ok(report)
}

async fn run_in(bench: &Bench, args: &NullArgs, url: &str) -> anyhow::Result<Report> {
    let mut report = Report::new(
        "null-pipeline",
        format!(
            "the design's ceiling: {} endpoint(s) per event, {} events, one request per event \
             ({} connections)",
            args.endpoints, args.events, args.concurrency
        ),
    );
    eprintln!("null-pipeline: {} ...", report.title);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(args.chunks_in_flight as u32 + 1)
        .connect(url)
        .await
        .context("connecting to the scratch database")?;
    portico_storage::MIGRATOR
        .run(&pool)
        .await
        .context("applying Portico's migrations to the scratch database")?;
    let webhooks: Vec<Uuid> = (0..args.endpoints).map(|_| Uuid::now_v7()).collect();
    sqlx::query(
        "INSERT INTO webhooks (id, user_id, url, events, max_retries, base_delay_ms, max_delay_ms)
         SELECT id, $2, 'http://127.0.0.1/null', ARRAY['bench.event'], 0, 1000, 1000
         FROM unnest($1::uuid[]) AS t(id)",
    )
    .bind(&webhooks)
    .bind(OWNER)
    .execute(&pool)
    .await
    .context("creating the pipeline's webhook rows")?;

    let nats = async_nats::connect(&bench.system.nats_url)
        .await
        .context("connecting to NATS")?;
    let js = jetstream::new(nats);
    let tag = format!("{}_{}", bench.system.run_id, args.endpoints);
    let stream_name = format!("BENCH_NULL_{}", tag.to_uppercase());
    let subject = format!("bench_null_{tag}.events");
    let stream = js
        .create_stream(jetstream::stream::Config {
            name: stream_name.clone(),
            subjects: vec![subject.clone()],
            storage: jetstream::stream::StorageType::File,
            retention: jetstream::stream::RetentionPolicy::WorkQueue,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .context("creating the pipeline's stream")?;
    let result = async {
        let consumer: PullConsumer = stream
            .create_consumer(jetstream::consumer::pull::Config {
                durable_name: Some("null".into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 100_000,
                ..Default::default()
            })
            .await
            .context("creating the pipeline's consumer")?;
        measure(
            bench,
            args,
            &mut report,
            js.clone(),
            subject,
            consumer,
            pool,
            webhooks,
        )
        .await
    }
    .await;
    let _ = js.delete_stream(&stream_name).await;
    result?;
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    bench: &Bench,
    args: &NullArgs,
    report: &mut Report,
    js: jetstream::Context,
    subject: String,
    consumer: PullConsumer,
    pool: sqlx::PgPool,
    webhooks: Vec<Uuid>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let ingest_addr = listener.local_addr()?;
    let run_id: Arc<str> = bench.system.run_id.as_str().into();
    let ingest = tokio::spawn(serve_ingest(
        listener,
        js,
        Arc::from(subject.as_str()),
        run_id,
    ));
    let dispatch = tokio::spawn(dispatch(
        consumer,
        pool,
        Arc::new(webhooks),
        Target::at(bench.sink.addr),
        *args,
    ));

    let tracker = bench
        .sink
        .track(Tracker::new(args.events, args.endpoints as u64, 0));
    let target = Target::at(ingest_addr);
    let template = Template::new(&target, Method::POST, "/events").json();
    let run_tag = format!("{}-null{}", bench.system.run_id, args.endpoints);
    let pad = bench.pad();
    let cpu = bench.cpu_snapshot();
    let started = now_ns();
    let stats = closed_loop(
        &target,
        args.concurrency,
        args.events,
        None,
        3,
        Arc::new(move |seq| template.build(Bytes::from(event_json(seq, &run_tag, &pad)))),
    )
    .await;
    let published_ns = now_ns();
    let expected = stats.ok * args.endpoints as u64;
    let complete = wait_delivered(&tracker, expected, bench.knobs.stall_timeout).await;
    let usage = bench.cpu_since(&cpu);
    ingest.abort();
    dispatch.abort();

    let delivered = tracker.unique();
    let last = tracker.last_ns().unwrap_or(published_ns);
    let rate = delivered as f64 / ((last.saturating_sub(started)) as f64 / 1e9).max(1e-9);
    let publish_secs = (published_ns - started) as f64 / 1e9;
    report.fig(
        "publish_events_per_sec",
        "events accepted (published and acknowledged by JetStream)",
        stats.ok as f64 / publish_secs.max(1e-9),
        "events/s",
    );
    report.fig(
        "deliveries_per_sec",
        "deliveries completed end to end (first publish to last delivery)",
        rate,
        "/s",
    );
    if let Some(steady) = tracker.steady_rate() {
        report.fig(
            "steady_deliveries_per_sec",
            "deliveries, steady state (10 % to 90 % of them)",
            steady,
            "/s",
        );
    }
    report.fig(
        "delivered",
        "deliveries received (distinct)",
        delivered as f64,
        "",
    );
    report.fig("expected", "deliveries expected", expected as f64, "");
    report.fig(
        "duplicates",
        "duplicate deliveries",
        tracker.duplicates() as f64,
        "",
    );
    let lat = tracker.latency.summary();
    report.fig(
        "saturated_latency_p99_ms",
        "send to delivery at saturation, p99",
        ms(lat.p99),
        "ms",
    );
    report.note(format!(
        "chunks of up to {} messages, {} in flight; rows per delivery as Portico writes them \
         (event, delivery, attempt) in one statement per chunk, into Portico's schema",
        args.chunk, args.chunks_in_flight
    ));
    if !complete {
        report.note(format!(
            "INCOMPLETE: {delivered} of {expected} deliveries arrived; none for {:?}",
            bench.knobs.stall_timeout
        ));
    }
    if let Some(e) = &stats.first_error {
        report.note(format!("first publish failure: {e}"));
    }
    report.note(
        "the pipeline runs inside the bench process: its CPU is counted under \"bench load\"",
    );
    report.cpu("the run", Some((delivered, "delivery")), usage);
    Ok(())
}

/// The ingest hop: one task per connection, each request published and acknowledged
/// before it is answered.
async fn serve_ingest(
    listener: tokio::net::TcpListener,
    js: jetstream::Context,
    subject: Arc<str>,
    run_id: Arc<str>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (js, subject, run_id) = (js.clone(), subject.clone(), run_id.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (js, subject, run_id) = (js.clone(), subject.clone(), run_id.clone());
                async move {
                    let status = match ingest_one(req, &js, &subject, &run_id).await {
                        Ok(()) => StatusCode::ACCEPTED,
                        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
                    };
                    let mut response = Response::new(Full::new(Bytes::new()));
                    *response.status_mut() = status;
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn ingest_one(
    req: Request<hyper::body::Incoming>,
    js: &jetstream::Context,
    subject: &str,
    run_id: &str,
) -> anyhow::Result<()> {
    let body = req.into_body().collect().await?.to_bytes();
    let seq = find_number(&body, b"\"seq\"").context("no seq")?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        format!("{run_id}-{seq}").as_str(),
    );
    js.publish_with_headers(subject.to_owned(), headers, body)
        .await?
        .await?;
    Ok(())
}

/// Idle keep-alive connections to the sink, shared by every chunk.
type ConnPool = Arc<Mutex<Vec<Conn>>>;

/// The dispatch hop: chunks pulled as they come, at most `chunks_in_flight` at once.
async fn dispatch(
    consumer: PullConsumer,
    pool: sqlx::PgPool,
    webhooks: Arc<Vec<Uuid>>,
    sink: Target,
    args: NullArgs,
) -> anyhow::Result<()> {
    let messages = consumer
        .stream()
        .max_messages_per_batch(args.chunk)
        .messages()
        .await?;
    let mut chunks = messages.ready_chunks(args.chunk.max(1));
    let permits = Arc::new(Semaphore::new(args.chunks_in_flight.max(1)));
    let conns: ConnPool = Arc::new(Mutex::new(Vec::new()));
    let caps: Arc<Vec<Semaphore>> = Arc::new(
        (0..webhooks.len())
            .map(|_| Semaphore::new(ENDPOINT_CAP))
            .collect(),
    );
    let template = Arc::new(Template::new(&sink, Method::POST, "/e/0").json());
    // Chunk tasks live in this set: when the run aborts this task, they stop with it
    // and their connections close before Portico's phase starts.
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(chunk) = chunks.next().await {
        let permit = permits.clone().acquire_owned().await?;
        let messages: Vec<_> = chunk.into_iter().filter_map(Result::ok).collect();
        let (pool, webhooks, sink, conns, caps, template) = (
            pool.clone(),
            webhooks.clone(),
            sink.clone(),
            conns.clone(),
            caps.clone(),
            template.clone(),
        );
        tasks.spawn(async move {
            let _permit = permit;
            let hop = Hop {
                sink: &sink,
                conns: &conns,
                caps: &caps,
                template: &template,
            };
            if let Err(e) = handle_chunk(messages, &pool, &webhooks, &hop).await {
                eprintln!("null-pipeline: chunk failed: {e:#}");
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    Ok(())
}

/// What a chunk needs to POST to the sink.
struct Hop<'a> {
    sink: &'a Target,
    conns: &'a ConnPool,
    /// One per endpoint: [`ENDPOINT_CAP`] requests in flight at most.
    caps: &'a [Semaphore],
    template: &'a Template,
}

async fn post(hop: &Hop<'_>, endpoint: usize, req: Request<Full<Bytes>>) -> (Option<i32>, i32) {
    let _slot = hop.caps[endpoint].acquire().await.ok();
    let (conns, sink) = (hop.conns, hop.sink);
    let mut conn = conns
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .pop()
        .unwrap_or_else(|| Conn::new(sink));
    let started = std::time::Instant::now();
    let status = conn
        .send(req)
        .await
        .ok()
        .map(|(s, _)| i32::from(s.as_u16()));
    let took = started.elapsed().as_millis() as i32;
    conns.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
    (status, took)
}

async fn handle_chunk(
    messages: Vec<jetstream::Message>,
    pool: &sqlx::PgPool,
    webhooks: &[Uuid],
    hop: &Hop<'_>,
) -> anyhow::Result<()> {
    let started_at = chrono::Utc::now();
    let paths: Vec<String> = (0..webhooks.len()).map(|i| format!("/e/{i}")).collect();
    let posts = messages.iter().flat_map(|m| {
        paths
            .iter()
            .enumerate()
            .map(|(i, p)| post(hop, i, hop.template.build_at(p, m.payload.clone())))
    });
    let results = futures::future::join_all(posts).await;

    let n = messages.len();
    let deliveries = n * webhooks.len();
    let event_ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    let payloads: Vec<String> = messages
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    let keys: Vec<String> = messages
        .iter()
        .map(|m| format!("null-{}", m.info().map(|i| i.stream_sequence).unwrap_or(0)))
        .collect();
    let mut delivery_ids = Vec::with_capacity(deliveries);
    let mut delivery_webhooks = Vec::with_capacity(deliveries);
    let mut delivery_events = Vec::with_capacity(deliveries);
    for event in &event_ids {
        for webhook in webhooks {
            delivery_ids.push(Uuid::now_v7());
            delivery_webhooks.push(*webhook);
            delivery_events.push(*event);
        }
    }
    let statuses: Vec<Option<i32>> = results.iter().map(|r| r.0).collect();
    let latencies: Vec<i32> = results.iter().map(|r| r.1).collect();
    sqlx::query(
        "WITH fresh AS (
            INSERT INTO event_keys (id, accepted_at)
            SELECT i, $5 FROM unnest($1::uuid[]) AS t(i)
            ON CONFLICT (id) DO NOTHING
            RETURNING id
         ), ev AS (
            INSERT INTO events (id, user_id, event_type, payload, idempotency_key, accepted_at)
            SELECT i, $2, 'bench.event', p::json, k, $5
            FROM unnest($1::uuid[], $3::text[], $4::text[]) AS t(i, p, k)
            WHERE i IN (SELECT id FROM fresh)
            ON CONFLICT DO NOTHING
         ), del AS (
            INSERT INTO webhook_deliveries (id, webhook_id, event_id, user_id, event_type, status,
                attempts, max_retries, last_status_code)
            SELECT d, w, e, $2, 'bench.event', 'succeeded', 1, 0, s
            FROM unnest($6::uuid[], $7::uuid[], $8::uuid[], $9::int4[]) AS t(d, w, e, s)
            ON CONFLICT DO NOTHING
            RETURNING id
         )
         INSERT INTO webhook_delivery_attempts (delivery_id, attempt_number, request_headers,
             response_status, latency_ms, started_at)
         SELECT d, 1, '{\"content-type\":\"application/json\"}'::jsonb, s, l, $5
         FROM unnest($6::uuid[], $9::int4[], $10::int4[]) AS t(d, s, l)
         WHERE d IN (SELECT id FROM del)",
    )
    .bind(&event_ids)
    .bind(OWNER)
    .bind(&payloads)
    .bind(&keys)
    .bind(started_at)
    .bind(&delivery_ids)
    .bind(&delivery_webhooks)
    .bind(&delivery_events)
    .bind(&statuses)
    .bind(&latencies)
    .execute(pool)
    .await
    .context("recording the chunk")?;
    let acks = messages.iter().map(|m| m.ack());
    for r in futures::future::join_all(acks).await {
        r.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
    }
    Ok(())
}
