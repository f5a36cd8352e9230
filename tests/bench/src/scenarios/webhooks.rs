//! `webhooks`: deliveries per second, end to end, through the public API only.
//!
//! A fresh user gets `endpoints` webhooks (each its own sink path); `events` events are
//! published as an internal service, either one HTTP request per event (`POST
//! /api/events` over many keep-alive connections: what the leading server's figure
//! counts) or in batches (`POST /api/events/batch`). The clock runs from the first
//! publish to the last delivery received by the sink; the steady-state rate is taken
//! between 10 % and 90 % of the expected deliveries.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;

use crate::client::{Target, Template, closed_loop};
use crate::cpu::Owner;
use crate::live::Subscribers;
use crate::report::{Goal, Report};
use crate::scenarios::{
    Bench, LIVE_QUIET, delete_webhooks, event_json, limits, live_title, ms, null_pipeline,
    wait_delivered, webhooks_for_new_user,
};
use crate::sink::{Tracker, now_ns};

/// How events are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// One HTTP request per event.
    Single,
    /// `POST /api/events/batch`.
    Batch,
    /// Both, one after the other (separate users and webhooks).
    Both,
}

/// Parameters.
#[derive(Debug, Clone, Copy)]
pub struct WebhooksArgs {
    /// Webhooks per event.
    pub endpoints: usize,
    /// Events to publish.
    pub events: u64,
    /// Which publishing mode(s).
    pub mode: Mode,
    /// Connections of the one-request-per-event publisher.
    pub concurrency: usize,
    /// Events per batch request.
    pub batch_size: usize,
    /// Connections of the batch publisher.
    pub batch_concurrency: usize,
    /// Measure the machine limits first (unless already measured in this run).
    pub limits: Option<limits::LimitsArgs>,
    /// Measure the null pipeline first with the same endpoints, events and
    /// connections (unless already measured in this run).
    pub null_pipeline: bool,
}

/// The CPU budget per delivery with one endpoint per event (issue 16), by part:
/// figure key, label, whose CPU, microseconds.
const CPU_BUDGETS: [(&str, &str, Owner, f64); 4] = [
    (
        "cpu_us.gateway",
        "CPU per delivery: gateway",
        Owner::Gateway,
        25.0,
    ),
    (
        "cpu_us.dispatcher",
        "CPU per delivery: webhook-dispatcher",
        Owner::Dispatcher,
        35.0,
    ),
    (
        "cpu_us.nats",
        "CPU per delivery: nats-server",
        Owner::Nats,
        30.0,
    ),
    (
        "cpu_us.postgres",
        "CPU per delivery: PostgreSQL (this run)",
        Owner::Postgres,
        30.0,
    ),
];

/// The issue's target and the leading server's figure for `endpoints`.
fn target_for(endpoints: usize) -> Option<(f64, &'static str)> {
    match endpoints {
        1 => Some((
            12_000.0,
            "leading Rust webhook server here: ~1,170/s (one request per event)",
        )),
        10 => Some((30_000.0, "leading Rust webhook server here: ~3,900/s")),
        _ => None,
    }
}

/// Runs the scenario.
pub async fn run(bench: &mut Bench, args: WebhooksArgs) -> anyhow::Result<Vec<Report>> {
    let mut reports = Vec::new();
    if bench.limits.is_none()
        && let Some(l) = args.limits
    {
        reports.push(limits::run(bench, l).await?);
    }
    if args.null_pipeline && bench.null_rate(args.endpoints).is_none() {
        let null = null_pipeline::NullArgs {
            endpoints: args.endpoints,
            events: args.events,
            concurrency: args.concurrency,
            chunk: 512,
            chunks_in_flight: 16,
        };
        reports.push(null_pipeline::run(bench, null).await?);
    }
    let modes: &[Mode] = match args.mode {
        Mode::Both => &[Mode::Single, Mode::Batch],
        Mode::Single => &[Mode::Single],
        Mode::Batch => &[Mode::Batch],
    };
    for mode in modes {
        reports.push(run_mode(bench, &args, *mode).await?);
    }
    Ok(reports)
}

async fn run_mode(bench: &mut Bench, args: &WebhooksArgs, mode: Mode) -> anyhow::Result<Report> {
    let tag = match mode {
        Mode::Batch => "batch",
        _ => "single",
    };
    let mut report = Report::new(
        "webhooks",
        format!(
            "{} endpoint(s) per event, {} events, {}",
            args.endpoints,
            args.events,
            match mode {
                Mode::Batch => format!(
                    "batch publish ({} per request, {} connections)",
                    args.batch_size, args.batch_concurrency
                ),
                _ => format!("one request per event ({} connections)", args.concurrency),
            }
        ) + &live_title(&bench.knobs),
    );
    eprintln!("webhooks: {} ...", report.title);
    let phase = format!("{tag}{}", args.endpoints);
    let (user, token, ids) = webhooks_for_new_user(bench, &phase, args.endpoints).await?;
    let live = Subscribers::open(&bench.system.base_url, &token, &bench.knobs).await?;
    let tracker = bench
        .sink
        .track(Tracker::new(args.events, args.endpoints as u64, 0));

    let target = Target::parse(&bench.system.base_url)?;
    let run_tag = format!("{}-{phase}", bench.system.run_id);
    let pad = bench.pad();
    let auth = format!("Bearer {}", bench.system.service_token);
    let connections = bench.sink.connections();
    let profiler = bench.profile(&format!("webhooks-{phase}"));
    let cpu = bench.cpu_snapshot();
    let started = now_ns();
    let stats = match mode {
        Mode::Batch => {
            let template = Template::new(&target, Method::POST, "/api/events/batch")
                .json()
                .auth(&auth)
                .header("x-portico-user-id", &user);
            let (events, size) = (args.events, args.batch_size as u64);
            let batches = events.div_ceil(size);
            closed_loop(
                &target,
                args.batch_concurrency,
                batches,
                None,
                3,
                Arc::new(move |b| {
                    let mut body = String::from(r#"{"events":["#);
                    for seq in b * size..((b + 1) * size).min(events) {
                        if seq > b * size {
                            body.push(',');
                        }
                        body.push_str(&event_json(seq, &run_tag, &pad));
                    }
                    body.push_str("]}");
                    template.build(Bytes::from(body))
                }),
            )
            .await
        }
        _ => {
            let template = Template::new(&target, Method::POST, "/api/events")
                .json()
                .auth(&auth)
                .header("x-portico-user-id", &user);
            closed_loop(
                &target,
                args.concurrency,
                args.events,
                None,
                3,
                Arc::new(move |seq| template.build(Bytes::from(event_json(seq, &run_tag, &pad)))),
            )
            .await
        }
    };
    let published_ns = now_ns();
    let accepted_events = match mode {
        Mode::Batch => (stats.ok * args.batch_size as u64).min(args.events),
        _ => stats.ok,
    };
    let target_deliveries = accepted_events * args.endpoints as u64;
    let complete = wait_delivered(&tracker, target_deliveries, bench.knobs.stall_timeout).await;
    let usage = bench.cpu_since(&cpu);
    if let Some(p) = profiler {
        report.note(format!("perf profiles: {}", p.stop().join(", ")));
    }
    let live = match live {
        Some(l) => Some(l.finish(tracker.unique(), LIVE_QUIET).await),
        None => None,
    };

    let delivered = tracker.unique();
    let last = tracker.last_ns().unwrap_or(published_ns);
    let e2e_secs = (last.saturating_sub(started)) as f64 / 1e9;
    let rate = delivered as f64 / e2e_secs.max(1e-9);
    let publish_secs = (published_ns - started) as f64 / 1e9;

    report.fig(
        "publish_events_per_sec",
        "events accepted by the gateway",
        accepted_events as f64 / publish_secs.max(1e-9),
        "events/s",
    );
    let f = report.fig(
        "deliveries_per_sec",
        "deliveries completed end to end (first publish to last delivery)",
        rate,
        "/s",
    );
    if let Some((t, r)) = target_for(args.endpoints) {
        f.goal(Goal::AtLeast(t)).reference(r);
    }
    if let Some(steady) = tracker.steady_rate() {
        report.fig(
            "steady_deliveries_per_sec",
            "deliveries, steady state (10 % to 90 % of them)",
            steady,
            "/s",
        );
    }
    if let Some(c) = usage.alone_capacity(delivered) {
        report.fig(
            "alone_capacity_per_sec",
            "if the machine were this run's alone (cores / CPU per delivery)",
            c,
            "/s",
        );
    }
    report.fig(
        "events_per_sec_e2e",
        "events fully delivered end to end",
        rate / args.endpoints as f64,
        "events/s",
    );
    report.fig(
        "delivered",
        "deliveries received (distinct)",
        delivered as f64,
        "",
    );
    report.fig(
        "expected",
        "deliveries expected (accepted events x endpoints)",
        target_deliveries as f64,
        "",
    );
    report.fig(
        "duplicates",
        "duplicate deliveries",
        tracker.duplicates() as f64,
        "",
    );
    report.fig(
        "sink_connections",
        "connections Portico opened to the sink",
        (bench.sink.connections() - connections) as f64,
        "",
    );
    for service in &bench.system.services {
        let name = service.kind.binary().trim_start_matches("portico-");
        let key = format!("peak_rss_mib_{}", name.replace('-', "_"));
        report
            .fig(
                &key,
                &format!("{name} peak RSS since start (VmHWM)"),
                crate::system::peak_rss_kib(service.pid) as f64 / 1024.0,
                "MiB",
            )
            .goal(Goal::Below(64.0));
    }
    report.fig(
        "publish_failed",
        "publish requests failed",
        stats.failed as f64,
        "",
    );
    let lat = tracker.latency.summary();
    report.fig(
        "saturated_latency_p50_ms",
        "send to delivery at saturation, p50",
        ms(lat.p50),
        "ms",
    );
    report.fig(
        "saturated_latency_p99_ms",
        "send to delivery at saturation, p99",
        ms(lat.p99),
        "ms",
    );
    report.fig(
        "publish_p99_ms",
        "publish request, p99",
        ms(stats.service.quantile(0.99)),
        "ms",
    );
    if let Some(null) = bench.null_rate(args.endpoints) {
        report
            .fig(
                "fraction_of_null_pipeline",
                "fraction of the null pipeline (the design's ceiling, same run)",
                rate / null.rate * 100.0,
                "%",
            )
            .goal(Goal::AtLeast(60.0));
        if let (Some(mine), Some(theirs)) = (usage.alone_capacity(delivered), null.alone_capacity) {
            report.fig(
                "capacity_fraction_of_null_pipeline",
                "    the same by CPU per delivery (alone capacities)",
                mine / theirs * 100.0,
                "%",
            );
        }
    }
    if args.endpoints == 1 && delivered > 0 {
        // The issue's CPU budget per delivery with one endpoint, part by part.
        for (key, label, owner, budget) in CPU_BUDGETS {
            report
                .fig(key, label, usage.secs(owner) * 1e6 / delivered as f64, "us")
                .goal(Goal::AtMost(budget));
        }
    }
    if let Some(l) = bench.limits {
        let (name, value) = l.tightest();
        report
            .fig(
                "fraction_of_tightest_limit",
                &format!("fraction of the tightest machine limit ({name})"),
                rate / value * 100.0,
                "%",
            )
            .goal(Goal::AtLeast(50.0));
        report.fig(
            "fraction_of_http_limit",
            "fraction of the loopback HTTP limit",
            rate / l.http_per_sec * 100.0,
            "%",
        );
    }
    if !complete {
        report.note(format!(
            "INCOMPLETE: {} of {} deliveries arrived; none for {:?}",
            delivered, target_deliveries, bench.knobs.stall_timeout
        ));
    }
    if let Some(e) = &stats.first_error {
        report.note(format!("first publish failure: {e}"));
    }
    if stats.retried > 0 {
        report.note(format!("{} publish requests were retried", stats.retried));
    }
    report.note(format!(
        "publishing took {publish_secs:.2} s; the last delivery came {:.2} s after the last publish answer",
        (last.saturating_sub(published_ns)) as f64 / 1e9
    ));
    if let Some(live) = &live {
        live.report(&mut report);
    }
    report.cpu("the run", Some((delivered, "delivery")), usage);
    delete_webhooks(bench, &token, &ids).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(report)
}
