//! `credentials`: what authenticating a partner costs, on a cache hit, at a fixed rate.
//!
//! An integration is created (user JWT) without a rate limit; then a partner route is
//! called with HTTP Basic on an open-loop schedule. By default the route is
//! `GET /api/integrations`, which a partner may not use: the gateway authenticates the
//! credentials (the cache hit being measured), logs the call to the usage log, and
//! answers `403` without touching the database, so the request time is verification
//! plus HTTP and nothing else. (`GET /api/integrations/me` reads the integration and
//! sums today's usage log in PostgreSQL on every call: a database benchmark, not a
//! verification one; `--route /api/integrations/me --expect-status 200` runs it.)
//! Two measures, both reported: the client's request time (connection, routing,
//! verification, handler, answer: an upper bound on verification), and the gateway's
//! own Prometheus histogram for that route (server-side request time), read before
//! and after the run.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use bytes::Bytes;
use hyper::Method;
use serde_json::Value;

use crate::client::{Target, Template, open_loop};
use crate::report::{Goal, Report};
use crate::scenarios::{Bench, ms, prometheus};

/// Parameters.
#[derive(Debug, Clone)]
pub struct CredentialsArgs {
    /// Requests per second.
    pub rate: f64,
    /// Seconds.
    pub duration: f64,
    /// Client connections.
    pub concurrency: usize,
    /// The partner route (GET).
    pub route: String,
    /// The status a successful call answers (`None`: any 2xx).
    pub expect_status: Option<u16>,
    /// Integration type on create.
    pub integration_type: String,
}

/// Finds the first string under `key` anywhere in `v`.
fn find_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    match v {
        Value::Object(map) => map
            .get(key)
            .and_then(Value::as_str)
            .or_else(|| map.values().find_map(|x| find_str(x, key))),
        Value::Array(items) => items.iter().find_map(|x| find_str(x, key)),
        _ => None,
    }
}

/// Creates an integration for a new user; returns the `Authorization: Basic` value.
pub async fn partner_credentials(bench: &Bench, integration_type: &str) -> anyhow::Result<String> {
    let user = bench.user("partner");
    let token = bench.system.user_token(&user);
    let body = serde_json::json!({
        "name": format!("portico-bench {}", bench.system.run_id),
        "type": integration_type,
        "scopes": ["bulk_orders:write", "bulk_orders:read", "webhooks:write", "webhooks:read", "orders:read"],
        "rateLimitPerSecond": 0,
        "dailyQuota": 0,
    });
    let (status, answer) = bench
        .system
        .post("/api/integrations", &token, &body)
        .await?;
    if !(200..300).contains(&status) {
        bail!("creating an integration answered {status}: {answer}");
    }
    let key = find_str(&answer, "apiKey").context("no apiKey in the create response")?;
    let secret = find_str(&answer, "apiSecret").context("no apiSecret in the create response")?;
    Ok(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:{secret}"))
    ))
}

/// Runs the scenario.
pub async fn run(bench: &mut Bench, args: CredentialsArgs) -> anyhow::Result<Report> {
    let mut report = Report::new(
        "credentials",
        format!(
            "GET {} with HTTP Basic at {} requests/s for {} s",
            args.route, args.rate, args.duration
        ),
    );
    eprintln!("credentials: {} ...", report.title);
    let basic = partner_credentials(bench, &args.integration_type).await?;
    // One call first: the verification cache is warm for the run (a cache hit is
    // what the target is about).
    let warm = bench
        .system
        .http
        .get(bench.system.url(&args.route))
        .header("authorization", &basic)
        .send()
        .await?;
    let status = warm.status();
    let expected = args
        .expect_status
        .map_or(status.is_success(), |e| status.as_u16() == e);
    let text = warm.text().await.unwrap_or_default();
    if !expected {
        bail!(
            "GET {} with the partner's credentials answered {status}: {text}",
            args.route
        );
    }
    report.note(format!(
        "the route answers {status} to the partner: {}",
        text.chars().take(160).collect::<String>()
    ));
    let target = Target::parse(&bench.system.base_url)?;
    let template = Template::new(&target, Method::GET, &args.route).auth(&basic);
    let before = bench.system.metrics().await;
    let cpu = bench.cpu_snapshot();
    let stats = open_loop(
        &target,
        args.rate,
        Duration::from_secs_f64(args.duration),
        args.concurrency,
        args.expect_status,
        Arc::new(move |_| template.build(Bytes::new())),
    )
    .await;
    let usage = bench.cpu_since(&cpu);
    let after = bench.system.metrics().await;

    report.fig(
        "rate",
        "requests answered as expected",
        stats.rate(),
        "req/s",
    );
    report.fig("failed", "requests failed", stats.failed as f64, "");
    let s = stats.service.summary();
    report.fig("client_p50_ms", "client request time, p50", ms(s.p50), "ms");
    report
        .fig("client_p99_ms", "client request time, p99", ms(s.p99), "ms")
        .goal(Goal::Below(1.0));
    report.fig(
        "client_p999_ms",
        "client request time, p99.9",
        ms(s.p999),
        "ms",
    );
    report.fig(
        "client_response_p99_ms",
        "from scheduled time (includes client lateness), p99",
        ms(stats.response.quantile(0.99)),
        "ms",
    );
    let route_label = format!("/api{}", args.route.trim_start_matches("/api"));
    let labels = [("route", route_label.as_str()), ("method", "GET")];
    let delta = prometheus::delta(
        &prometheus::buckets(&before, "portico_http_request_duration_seconds", &labels),
        &prometheus::buckets(&after, "portico_http_request_duration_seconds", &labels),
    );
    match (
        prometheus::quantile(&delta, 0.5),
        prometheus::quantile(&delta, 0.99),
    ) {
        (Some(p50), Some(p99)) => {
            report.fig("server_p50_ms", "gateway histogram for the route, p50 (interpolated)", p50 * 1e3, "ms");
            report
                .fig("server_p99_ms", "gateway histogram for the route, p99 (interpolated)", p99 * 1e3, "ms")
                .goal(Goal::Below(1.0));
            if let Some(f) = prometheus::fraction_within(&delta, 0.0005) {
                report.fig("server_within_0_5ms", "gateway: requests within 0.5 ms", f * 100.0, "%");
            }
            if let Some(f) = prometheus::fraction_within(&delta, 0.001) {
                report.fig("server_within_1ms", "gateway: requests within 1 ms", f * 100.0, "%");
            }
        }
        _ => report.note(format!(
            "the gateway's /metrics has no portico_http_request_duration_seconds series for route {route_label}"
        )),
    }
    if let Some(e) = &stats.first_error {
        report.note(format!("first failure: {e}"));
    }
    report.note(
        "client time = request written to answer read on a keep-alive connection (includes \
         HTTP parsing, routing, verification and the handler); server time = the gateway's own \
         request histogram (buckets 0.5, 1, 2.5 ms: quantiles are interpolated inside a bucket)",
    );
    report.cpu("the run", Some((stats.ok, "request")), usage);
    Ok(report)
}
