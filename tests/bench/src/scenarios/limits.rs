//! `limits`: this machine's own ceilings, measured by the same tool in the same run as
//! Portico, so Portico can be reported as a fraction of them:
//! (a) loopback HTTP/1.1 requests/s to the sink with nothing in between,
//! (b) JetStream acknowledged publishes/s (up to 256 acks in flight, file storage),
//! (c) PostgreSQL committed rows/s (8 connections, 1000-row `INSERT ... SELECT FROM
//!     unnest` per transaction into a normal, logged table: Portico's writes are
//!     logged and fsynced too).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream;
use bytes::Bytes;
use hyper::Method;
use serde::Serialize;

use crate::client::{Target, Template, closed_loop};
use crate::cpu::Usage;
use crate::report::Report;
use crate::scenarios::Bench;
use crate::system::{create_database, drop_database};

/// The machine's ceilings.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Limits {
    /// Loopback HTTP/1.1 POSTs per second against the sink.
    pub http_per_sec: f64,
    /// JetStream acknowledged publishes per second.
    pub jetstream_per_sec: f64,
    /// PostgreSQL committed rows per second.
    pub pg_rows_per_sec: f64,
}

impl Limits {
    /// The lowest of the three, and its name.
    pub fn tightest(&self) -> (&'static str, f64) {
        [
            ("loopback HTTP", self.http_per_sec),
            ("JetStream publish", self.jetstream_per_sec),
            ("PostgreSQL rows", self.pg_rows_per_sec),
        ]
        .into_iter()
        .fold(
            ("none", f64::INFINITY),
            |a, b| if b.1 < a.1 { b } else { a },
        )
    }
}

/// How long and how wide to measure.
#[derive(Debug, Clone, Copy)]
pub struct LimitsArgs {
    /// Seconds per measurement.
    pub secs: f64,
    /// HTTP client connections.
    pub http_conns: usize,
    /// PostgreSQL connections.
    pub pg_conns: usize,
    /// Rows per PostgreSQL transaction.
    pub pg_batch: usize,
    /// JetStream acks in flight.
    pub js_inflight: usize,
}

impl Default for LimitsArgs {
    fn default() -> Self {
        Self {
            secs: 5.0,
            http_conns: 64,
            pg_conns: 8,
            pg_batch: 1000,
            js_inflight: 256,
        }
    }
}

/// Measures the three limits and reports them.
pub async fn run(bench: &mut Bench, args: LimitsArgs) -> anyhow::Result<Report> {
    let secs = Duration::from_secs_f64(args.secs);
    let mut report = Report::new(
        "limits",
        format!("this machine's ceilings, {:.0} s each", args.secs),
    );

    // (a) Loopback HTTP.
    eprintln!("limits: loopback HTTP to the sink ...");
    let target = Target::at(bench.sink.addr);
    let template = Template::new(&target, Method::POST, "/limit").json();
    let body = Bytes::from(format!(r#"{{"pad":"{}"}}"#, "x".repeat(240)));
    let cpu = bench.cpu_snapshot();
    let sink_ns = bench.sink.cpu_ns();
    let sink_requests = bench.sink.requests();
    let stats = closed_loop(
        &target,
        args.http_conns,
        u64::MAX,
        Some(secs),
        0,
        Arc::new(move |_| template.build(body.clone())),
    )
    .await;
    let usage = bench.cpu_since(&cpu);
    let served = bench.sink.requests() - sink_requests;
    let sink_us = (bench.sink.cpu_ns() - sink_ns) as f64 / 1e3 / served.max(1) as f64;
    let http = stats.rate();
    report
        .fig(
            "http_per_sec",
            "(a) loopback HTTP/1.1 POST 250 B, keep-alive",
            http,
            "req/s",
        )
        .reference("wrk against nginx here: ~151,000/s; hyper 2 workers: ~169,000/s (docs)");
    report.fig(
        "sink_cpu_us_per_request",
        "    sink CPU per request",
        sink_us,
        "us",
    );
    report.note(format!(
        "(a) {} connections of the bench's hyper client, closed loop, {} requests, {} failed",
        args.http_conns, stats.ok, stats.failed
    ));
    report.cpu("(a) loopback HTTP", Some((stats.ok, "req")), usage);

    // (b) JetStream.
    eprintln!("limits: JetStream publish ...");
    let cpu = bench.cpu_snapshot();
    let (js_plain, js_dedup, published) = jetstream_rate(bench, secs, args.js_inflight).await?;
    report.cpu(
        "(b) JetStream publish, both",
        Some((published, "msg")),
        bench.cpu_since(&cpu),
    );
    report.fig(
        "jetstream_per_sec",
        "(b) JetStream acked publish 250 B, file store",
        js_plain,
        "msg/s",
    );
    report.fig(
        "jetstream_dedup_per_sec",
        "    the same with a Nats-Msg-Id (dedup, as Portico)",
        js_dedup,
        "msg/s",
    );
    report.note(format!(
        "(b) one publisher, up to {} acks in flight, on a temporary WorkQueue stream (deleted after)",
        args.js_inflight
    ));

    // (c) PostgreSQL.
    eprintln!("limits: PostgreSQL rows ...");
    let (rows, pg_secs, usage, pg_note) =
        pg_rate(bench, secs, args.pg_conns, args.pg_batch).await?;
    report.fig(
        "pg_rows_per_sec",
        "(c) PostgreSQL committed rows (logged table)",
        rows as f64 / pg_secs,
        "rows/s",
    );
    report.note(pg_note);
    report.cpu("(c) PostgreSQL rows", Some((rows, "row")), usage);

    let limits = Limits {
        http_per_sec: http,
        jetstream_per_sec: js_plain,
        pg_rows_per_sec: rows as f64 / pg_secs,
    };
    let (name, value) = limits.tightest();
    report.fig("tightest", &format!("tightest: {name}"), value, "/s");
    bench.limits = Some(limits);
    Ok(report)
}

async fn jetstream_rate(
    bench: &Bench,
    secs: Duration,
    inflight: usize,
) -> anyhow::Result<(f64, f64, u64)> {
    let client = async_nats::connect(&bench.system.nats_url)
        .await
        .context("connecting to NATS")?;
    let js = jetstream::new(client);
    let name = format!("BENCH_LIMIT_{}", bench.system.run_id.to_uppercase());
    let subject = format!("bench_limit_{}", bench.system.run_id);
    js.create_stream(jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![format!("{subject}.>")],
        storage: jetstream::stream::StorageType::File,
        retention: jetstream::stream::RetentionPolicy::WorkQueue,
        ..Default::default()
    })
    .await
    .context("creating the temporary stream")?;
    let payload = Bytes::from(vec![b'x'; 250]);
    let mut rates = Vec::new();
    let mut total = 0;
    for dedup in [false, true] {
        let topic = format!("{subject}.{}", if dedup { "dedup" } else { "plain" });
        let started = Instant::now();
        let mut pending = VecDeque::new();
        let mut acked = 0u64;
        let mut sent = 0u64;
        let result: anyhow::Result<()> = async {
            while started.elapsed() < secs {
                let ack = if dedup {
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert(
                        async_nats::header::NATS_MESSAGE_ID,
                        format!("{}-{sent}", bench.system.run_id).as_str(),
                    );
                    js.publish_with_headers(topic.clone(), headers, payload.clone())
                        .await?
                } else {
                    js.publish(topic.clone(), payload.clone()).await?
                };
                sent += 1;
                pending.push_back(ack);
                if pending.len() >= inflight
                    && let Some(oldest) = pending.pop_front()
                {
                    oldest.await?;
                    acked += 1;
                }
            }
            while let Some(ack) = pending.pop_front() {
                ack.await?;
                acked += 1;
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            let _ = js.delete_stream(&name).await;
            return Err(e.context("publishing to JetStream"));
        }
        rates.push(acked as f64 / started.elapsed().as_secs_f64());
        total += acked;
    }
    let _ = js.delete_stream(&name).await;
    Ok((rates[0], rates[1], total))
}

async fn pg_rate(
    bench: &Bench,
    secs: Duration,
    conns: usize,
    batch: usize,
) -> anyhow::Result<(u64, f64, Usage, String)> {
    // The bench database when the bench started Portico; otherwise a scratch one.
    let (url, scratch) = match &bench.system.database_url {
        Some(url) => (url.clone(), None),
        None => {
            let name = format!("portico_bench_limits_{}", bench.system.run_id);
            (
                create_database(&bench.system.server_url, &name).await?,
                Some(name),
            )
        }
    };
    let result = pg_insert(bench, &url, secs, conns, batch).await;
    if let Some(name) = scratch {
        drop_database(&bench.system.server_url, &name).await;
    }
    let (rows, elapsed, usage) = result?;
    Ok((
        rows,
        elapsed,
        usage,
        format!(
            "(c) {conns} connections, {batch}-row INSERT ... SELECT FROM unnest per transaction, \
             table with a uuid primary key, uuid, text and jsonb columns (~200 B rows), dropped after"
        ),
    ))
}

/// Inserts for `secs`; the CPU is measured while the connections are open (a backend
/// that has ended no longer shows its time).
async fn pg_insert(
    bench: &Bench,
    url: &str,
    secs: Duration,
    conns: usize,
    batch: usize,
) -> anyhow::Result<(u64, f64, Usage)> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(conns as u32)
        .connect(url)
        .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS bench_limit_rows (
            id uuid PRIMARY KEY,
            webhook_id uuid NOT NULL,
            status text NOT NULL,
            payload jsonb NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(&pool)
    .await?;
    let rows = Arc::new(AtomicU64::new(0));
    let cpu = bench.cpu_snapshot();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (pool, rows) = (pool.clone(), rows.clone());
        tasks.push(tokio::spawn(async move {
            let webhook = uuid::Uuid::now_v7();
            let payload = format!(r#"{{"seq":0,"pad":"{}"}}"#, "x".repeat(120));
            let payloads = vec![payload; batch];
            let statuses = vec!["succeeded".to_owned(); batch];
            let webhooks = vec![webhook; batch];
            while started.elapsed() < secs {
                let ids: Vec<uuid::Uuid> = (0..batch).map(|_| uuid::Uuid::now_v7()).collect();
                sqlx::query(
                    "INSERT INTO bench_limit_rows (id, webhook_id, status, payload)
                     SELECT i, w, s, p::jsonb
                     FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[]) AS t(i, w, s, p)",
                )
                .bind(&ids)
                .bind(&webhooks)
                .bind(&statuses)
                .bind(&payloads)
                .execute(&pool)
                .await?;
                rows.fetch_add(batch as u64, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    let mut first_error = None;
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(e) => first_error = first_error.or(Some(e.into())),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let usage = bench.cpu_since(&cpu);
    let _ = sqlx::query("DROP TABLE IF EXISTS bench_limit_rows")
        .execute(&pool)
        .await;
    pool.close().await;
    if let Some(e) = first_error {
        return Err(e.context("inserting rows"));
    }
    Ok((rows.load(Ordering::Relaxed), elapsed, usage))
}
