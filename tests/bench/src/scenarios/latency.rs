//! `latency`: from event sent to delivered, at a fixed rate below saturation.
//!
//! An open-loop publisher sends one request per event on a fixed schedule; each event's
//! data carries the time it was sent (`sentAtNanos`, read just before the request is
//! written), and the sink, in the same process and on the same clock, subtracts it
//! from the arrival time. That interval contains the gateway's accept (the publish
//! request itself) plus everything up to the delivery, so it bounds the issue's
//! "accepted to delivered" from above. When the delivered body's `timestamp` (the
//! accepted time) has sub-second digits, accepted-to-delivered is reported too.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;

use crate::client::{Target, Template, open_loop};
use crate::live::Subscribers;
use crate::report::{Goal, Report};
use crate::scenarios::{
    Bench, LIVE_QUIET, delete_webhooks, event_json, live_title, ms, wait_delivered,
    webhooks_for_new_user,
};
use crate::sink::Tracker;

/// Parameters.
#[derive(Debug, Clone, Copy)]
pub struct LatencyArgs {
    /// Events per second.
    pub rate: f64,
    /// Seconds.
    pub duration: f64,
    /// Webhooks per event.
    pub endpoints: usize,
    /// Seconds at the start whose events are not counted.
    pub warmup: f64,
    /// Publisher connections.
    pub concurrency: usize,
}

/// Runs the scenario.
pub async fn run(bench: &mut Bench, args: LatencyArgs) -> anyhow::Result<Report> {
    let mut report = Report::new(
        "latency",
        format!(
            "{} events/s for {} s, {} endpoint(s), one request per event, first {} s not counted",
            args.rate, args.duration, args.endpoints, args.warmup
        ) + &live_title(&bench.knobs),
    );
    eprintln!("latency: {} ...", report.title);
    let (user, token, ids) = webhooks_for_new_user(bench, "latency", args.endpoints).await?;
    let live = Subscribers::open(&bench.system.base_url, &token, &bench.knobs).await?;
    let total = (args.rate * args.duration).round() as u64;
    let warmup = (args.rate * args.warmup).round() as u64;
    let tracker = bench
        .sink
        .track(Tracker::new(total, args.endpoints as u64, warmup));
    let target = Target::parse(&bench.system.base_url)?;
    let template = Template::new(&target, Method::POST, "/api/events")
        .json()
        .auth(&format!("Bearer {}", bench.system.service_token))
        .header("x-portico-user-id", &user);
    let run_tag = format!("{}-latency", bench.system.run_id);
    let pad = bench.pad();
    let profiler = bench.profile("latency");
    let cpu = bench.cpu_snapshot();
    let stats = open_loop(
        &target,
        args.rate,
        Duration::from_secs_f64(args.duration),
        args.concurrency,
        None,
        Arc::new(move |seq| template.build(Bytes::from(event_json(seq, &run_tag, &pad)))),
    )
    .await;
    let expected = stats.ok * args.endpoints as u64;
    let complete = wait_delivered(&tracker, expected, bench.knobs.stall_timeout).await;
    let usage = bench.cpu_since(&cpu);
    if let Some(p) = profiler {
        report.note(format!("perf profiles: {}", p.stop().join(", ")));
    }
    let live = match live {
        Some(l) => Some(l.finish(tracker.unique(), LIVE_QUIET).await),
        None => None,
    };

    let lat = tracker.latency.summary();
    report
        .fig("p50_ms", "sent to delivered, p50", ms(lat.p50), "ms")
        .reference("leading server at its saturation point: 36 ms");
    report
        .fig("p95_ms", "sent to delivered, p95", ms(lat.p95), "ms")
        .reference("leading server: 57 ms");
    report
        .fig("p99_ms", "sent to delivered, p99", ms(lat.p99), "ms")
        .goal(Goal::Below(25.0))
        .reference("leading server: 70 ms");
    report.fig("p999_ms", "sent to delivered, p99.9", ms(lat.p999), "ms");
    report.fig("max_ms", "sent to delivered, max", ms(lat.max), "ms");
    report.fig(
        "measured",
        "deliveries measured (after warm-up)",
        lat.count as f64,
        "",
    );
    let acc = tracker.accepted_latency.summary();
    if acc.count > 0 {
        report.fig(
            "accepted_p50_ms",
            "accepted (body timestamp) to delivered, p50",
            ms(acc.p50),
            "ms",
        );
        report.fig(
            "accepted_p99_ms",
            "accepted (body timestamp) to delivered, p99",
            ms(acc.p99),
            "ms",
        );
    } else {
        report.note("the delivered `timestamp` has no sub-second digits, so accepted-to-delivered is measured from the send time only");
    }
    report.fig(
        "publish_p50_ms",
        "publish request (gateway accept), p50",
        ms(stats.service.quantile(0.5)),
        "ms",
    );
    report.fig(
        "publish_p99_ms",
        "publish request (gateway accept), p99",
        ms(stats.service.quantile(0.99)),
        "ms",
    );
    report.fig(
        "schedule_lag_p99_ms",
        "publisher lateness against its schedule, p99",
        ms(stats.lag.quantile(0.99)),
        "ms",
    );
    report.fig("rate", "events published", stats.rate(), "events/s");
    report.fig(
        "delivered",
        "deliveries received (distinct)",
        tracker.unique() as f64,
        "",
    );
    report.fig("expected", "deliveries expected", expected as f64, "");
    report.fig(
        "duplicates",
        "duplicate deliveries",
        tracker.duplicates() as f64,
        "",
    );
    report.fig(
        "publish_failed",
        "publish requests failed",
        stats.failed as f64,
        "",
    );
    if !complete {
        report.note(format!(
            "INCOMPLETE: {} of {expected} deliveries arrived",
            tracker.unique()
        ));
    }
    if let Some(e) = &stats.first_error {
        report.note(format!("first publish failure: {e}"));
    }
    report.note(
        "the latency histogram is log-linear (64 steps per power of two, within 1.6 %); \
         the publisher's send time is read right before each request is written",
    );
    if let Some(live) = &live {
        live.report(&mut report);
    }
    report.cpu("the run", Some((tracker.unique(), "delivery")), usage);
    delete_webhooks(bench, &token, &ids).await;
    Ok(report)
}
