//! `gateway`: `POST /api/webhooks` (a user creating webhooks) at a fixed rate, with
//! the client's p50/p95/p99 and the gateway's own histogram for the route.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;

use crate::client::{Target, Template, open_loop};
use crate::report::{Goal, Report};
use crate::scenarios::{Bench, ms, prometheus};

/// Parameters.
#[derive(Debug, Clone, Copy)]
pub struct GatewayArgs {
    /// Requests per second.
    pub rate: f64,
    /// Seconds.
    pub duration: f64,
    /// Client connections.
    pub concurrency: usize,
}

/// Runs the scenario.
pub async fn run(bench: &mut Bench, args: GatewayArgs) -> anyhow::Result<Report> {
    let mut report = Report::new(
        "gateway",
        format!(
            "POST /api/webhooks at {} requests/s for {} s",
            args.rate, args.duration
        ),
    );
    eprintln!("gateway: {} ...", report.title);
    let user = bench.user("gateway");
    let token = bench.system.user_token(&user);
    let target = Target::parse(&bench.system.base_url)?;
    let template = Template::new(&target, Method::POST, "/api/webhooks")
        .json()
        .auth(&format!("Bearer {token}"));
    let sink_url = bench.sink.endpoint_url(0);
    let before = bench.system.metrics().await;
    let cpu = bench.cpu_snapshot();
    let stats = open_loop(
        &target,
        args.rate,
        Duration::from_secs_f64(args.duration),
        args.concurrency,
        None,
        Arc::new(move |i| {
            template.build(Bytes::from(format!(
                r#"{{"url":"{sink_url}?n={i}","events":["bench.gateway"],"description":"portico-bench gateway {i}"}}"#
            )))
        }),
    )
    .await;
    let usage = bench.cpu_since(&cpu);
    let after = bench.system.metrics().await;
    let s = stats.service.summary();
    report.fig("rate", "webhooks created", stats.rate(), "req/s");
    report.fig("failed", "requests failed", stats.failed as f64, "");
    report.fig("p50_ms", "create-webhook, p50", ms(s.p50), "ms");
    report.fig("p95_ms", "create-webhook, p95", ms(s.p95), "ms");
    report
        .fig("p99_ms", "create-webhook, p99", ms(s.p99), "ms")
        .goal(Goal::Below(5.0));
    report.fig("max_ms", "create-webhook, max", ms(s.max), "ms");
    report.fig(
        "response_p99_ms",
        "from scheduled time (includes client lateness), p99",
        ms(stats.response.quantile(0.99)),
        "ms",
    );
    let labels = [("route", "/api/webhooks"), ("method", "POST")];
    let delta = prometheus::delta(
        &prometheus::buckets(&before, "portico_http_request_duration_seconds", &labels),
        &prometheus::buckets(&after, "portico_http_request_duration_seconds", &labels),
    );
    if let Some(p99) = prometheus::quantile(&delta, 0.99) {
        report.fig(
            "server_p99_ms",
            "gateway histogram for the route, p99 (interpolated)",
            p99 * 1e3,
            "ms",
        );
    }
    if let Some(e) = &stats.first_error {
        report.note(format!("first failure: {e}"));
    }
    report.note("client time = request written to answer read, keep-alive connections, open loop");
    report.cpu("the run", Some((stats.ok, "request")), usage);
    Ok(report)
}
