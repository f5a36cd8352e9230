//! `bulk`: one batch of N orders through `POST /api/bulk-orders`: how long until the
//! `202` (accept), and orders per second processed, from the batch's own `startedAt`
//! to `completedAt` and by the wall clock (polling `GET /api/bulk-orders/{id}`).
//! Done once with a JSON body and once with NDJSON (`application/x-ndjson`).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::report::{Goal, Report};
use crate::scenarios::Bench;

/// Body formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `{"orders": [...]}`.
    Json,
    /// One order per line, `application/x-ndjson`.
    Ndjson,
    /// Both, one after the other.
    Both,
}

/// Parameters.
#[derive(Debug, Clone, Copy)]
pub struct BulkArgs {
    /// Orders in the batch.
    pub orders: u64,
    /// Which format(s).
    pub format: Format,
}

/// One valid order; `reference` makes it unique per owner.
pub fn order_json(reference: &str, i: u64) -> String {
    format!(
        r#"{{"clientOrderRef":"{reference}-{i}","currency":"EUR","customer":{{"email":"customer{i}@example.com","name":"Customer {i}"}},"shippingAddress":{{"line1":"{n} Main Street","city":"Berlin","postalCode":"10115","country":"DE"}},"lineItems":[{{"sku":"SKU-{sku}","quantity":{q},"unitPrice":"12.50"}},{{"sku":"SKU-X","quantity":1,"unitPrice":"3.99"}}]}}"#,
        n = i % 200 + 1,
        sku = i % 1000,
        q = i % 5 + 1,
    )
}

const TERMINAL: [&str; 4] = ["completed", "completed_with_errors", "failed", "cancelled"];

/// Runs the scenario.
pub async fn run(bench: &mut Bench, args: BulkArgs) -> anyhow::Result<Vec<Report>> {
    let user = bench.user("bulk");
    let token = bench.system.user_token(&user);
    preflight(bench, &token).await?;
    let formats: &[Format] = match args.format {
        Format::Both => &[Format::Json, Format::Ndjson],
        Format::Json => &[Format::Json],
        Format::Ndjson => &[Format::Ndjson],
    };
    let mut reports = Vec::new();
    for format in formats {
        reports.push(one_batch(bench, &token, args.orders, *format).await?);
    }
    Ok(reports)
}

/// Submits two orders with `validateOnly`, so an order shape the API does not accept
/// stops the scenario with the API's own explanation.
async fn preflight(bench: &Bench, token: &str) -> anyhow::Result<()> {
    let body: Value = serde_json::from_str(&format!(
        r#"{{"orders":[{},{}],"validateOnly":true}}"#,
        order_json("preflight", 0),
        order_json("preflight", 1)
    ))?;
    let (status, answer) = bench.system.post("/api/bulk-orders", token, &body).await?;
    if !(200..300).contains(&status) {
        bail!("bulk-orders validateOnly answered {status}: {answer}");
    }
    if any_failed(&answer) {
        bail!("the bench's sample orders do not validate: {answer}");
    }
    Ok(())
}

/// Whether any object in `v` has `"status": "failed"` (a per-order result).
fn any_failed(v: &Value) -> bool {
    match v {
        Value::Object(map) => {
            map.get("status").and_then(Value::as_str) == Some("failed")
                || map.values().any(any_failed)
        }
        Value::Array(items) => items.iter().any(any_failed),
        _ => false,
    }
}

async fn one_batch(
    bench: &mut Bench,
    token: &str,
    orders: u64,
    format: Format,
) -> anyhow::Result<Report> {
    let name = if format == Format::Ndjson {
        "ndjson"
    } else {
        "json"
    };
    let mut report = Report::new("bulk", format!("{orders} orders in one {name} batch"));
    eprintln!("bulk: {} ...", report.title);
    let reference = format!("{}-{name}", bench.system.run_id);
    let (body, content_type) = if format == Format::Ndjson {
        let mut body = String::with_capacity(orders as usize * 300);
        for i in 0..orders {
            body.push_str(&order_json(&reference, i));
            body.push('\n');
        }
        (body, "application/x-ndjson")
    } else {
        let mut body = String::with_capacity(orders as usize * 300 + 32);
        body.push_str(r#"{"orders":["#);
        for i in 0..orders {
            if i > 0 {
                body.push(',');
            }
            body.push_str(&order_json(&reference, i));
        }
        body.push_str("]}");
        (body, "application/json")
    };
    let bytes = body.len();
    let profiler = bench.profile(&format!("bulk-{name}"));
    let cpu = bench.cpu_snapshot();
    let sent = Instant::now();
    let response = bench
        .system
        .http
        .post(bench.system.url("/api/bulk-orders"))
        .bearer_auth(token)
        .header("content-type", content_type)
        .header("idempotency-key", &reference)
        .body(body)
        .send()
        .await
        .context("submitting the batch")?;
    let accept = sent.elapsed();
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    if status != 202 && status != 201 && status != 200 {
        report.note(format!(
            "the {name} batch was refused: HTTP {status}: {answer}"
        ));
        return Ok(report);
    }
    let id = answer
        .get("id")
        .and_then(Value::as_str)
        .context("batch without id")?
        .to_owned();
    report
        .fig(
            "accept_ms",
            "accepted (request sent to 2xx)",
            accept.as_secs_f64() * 1e3,
            "ms",
        )
        .goal(Goal::Below(2000.0));
    report.fig(
        "body_mib",
        "request body",
        bytes as f64 / (1 << 20) as f64,
        "MiB",
    );

    // Poll until the batch is final.
    let mut last;
    let mut samples: Vec<(f64, u64)> = Vec::new();
    let done = loop {
        let (status, batch) = bench
            .system
            .get(&format!("/api/bulk-orders/{id}"), token)
            .await?;
        if status != 200 {
            bail!("GET /api/bulk-orders/{id} answered {status}: {batch}");
        }
        let processed = batch
            .pointer("/counts/processed")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        samples.push((sent.elapsed().as_secs_f64(), processed));
        let state = batch.get("status").and_then(Value::as_str).unwrap_or("");
        last = batch.clone();
        if TERMINAL.contains(&state) {
            break true;
        }
        if sent.elapsed() > Duration::from_secs(600) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let wall = sent.elapsed().as_secs_f64();
    let usage = bench.cpu_since(&cpu);
    if let Some(p) = profiler {
        report.note(format!("perf profiles: {}", p.stop().join(", ")));
    }
    let count = |k: &str| {
        last.pointer(&format!("/counts/{k}"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let time = |k: &str| {
        last.get(k)
            .and_then(Value::as_str)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    };
    let processed = count("processed");
    if let (Some(start), Some(end)) = (time("startedAt"), time("completedAt")) {
        let secs = (end - start).num_microseconds().unwrap_or(0) as f64 / 1e6;
        report
            .fig(
                "orders_per_sec",
                "processed, batch startedAt to completedAt",
                processed as f64 / secs.max(1e-6),
                "orders/s",
            )
            .goal(Goal::AtLeast(50_000.0));
        report.fig(
            "processing_secs",
            "processing time (API timestamps)",
            secs,
            "s",
        );
    } else {
        report.note("the batch reports no startedAt/completedAt; only the wall clock is given");
    }
    report.fig(
        "orders_per_sec_wall",
        "processed, request sent to final status seen (wall clock)",
        processed as f64 / wall,
        "orders/s",
    );
    if let Some(peak) = samples
        .windows(2)
        .filter_map(|w| {
            let dt = w[1].0 - w[0].0;
            (dt > 0.0).then(|| (w[1].1.saturating_sub(w[0].1)) as f64 / dt)
        })
        .reduce(f64::max)
    {
        report.fig(
            "peak_orders_per_sec",
            "peak between two polls",
            peak,
            "orders/s",
        );
    }
    for k in ["total", "processed", "succeeded", "failed", "duplicate"] {
        report.fig(k, &format!("count: {k}"), count(k) as f64, "");
    }
    report.note(format!(
        "final status {}; polled every 100 ms",
        last.get("status").and_then(Value::as_str).unwrap_or("?")
    ));
    if !done {
        report.note("INCOMPLETE: the batch did not finish within 10 minutes");
    }
    report.cpu("the batch", Some((processed, "order")), usage);
    Ok(report)
}
