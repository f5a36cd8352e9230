//! The bench's smoke run, in the test suite so the tool cannot rot: the compiled
//! `portico-bench` starts the debug services itself (fresh database and stream
//! prefix), measures the machine limits for a second each, sends 200 events one
//! request at a time and in batches, and runs 2 s of fixed-rate latency load, with two
//! live-update subscribers attached to each measured phase.
//!
//! Benchmarks are not tests: nothing here asserts a time or a rate, only that the
//! figures come out and that every delivery arrived.

use std::process::Command;

use serde_json::Value;

fn figure(report: &Value, key: &str) -> Option<f64> {
    report["figures"]
        .as_array()?
        .iter()
        .find(|f| f["key"] == key)
        .and_then(|f| f["value"].as_f64())
}

/// Scenario: an operator runs `portico-bench --start smoke`; it prints the machine,
/// the three machine limits, both publish modes and the latency run, and every event
/// published is delivered exactly as expected; each live subscriber hears of every
/// delivery (or is told how many it missed) and stays open.
#[test]
fn smoke_run_reports_figures_and_every_delivery_arrives() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portico-bench"));
    if let Ok(url) = std::env::var("PORTICO_TEST_DATABASE_URL") {
        cmd.args(["--database-url", &url]);
    }
    if let Ok(url) = std::env::var("PORTICO_TEST_NATS_URL") {
        cmd.args(["--nats-url", &url]);
    }
    let output = cmd
        .args([
            "--start",
            "--json",
            "--stall-timeout",
            "20",
            "--subscribers",
            "2",
            "smoke",
        ])
        .output()
        .expect("the bench binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "portico-bench smoke failed:\n{stderr}"
    );
    let run: Value = serde_json::from_slice(&output.stdout).expect("one JSON document");

    for field in [
        "cpu_model",
        "kernel",
        "postgres",
        "nats_server",
        "date",
        "git_commit",
    ] {
        let text = run["machine"][field].as_str().unwrap_or("");
        assert!(!text.is_empty(), "machine.{field} is missing");
    }
    let reports = run["reports"].as_array().expect("reports");
    let by =
        |name: &str| -> Vec<&Value> { reports.iter().filter(|r| r["scenario"] == name).collect() };

    let limits = by("limits");
    assert_eq!(limits.len(), 1);
    for key in ["http_per_sec", "jetstream_per_sec", "pg_rows_per_sec"] {
        let v = figure(limits[0], key).unwrap_or(0.0);
        assert!(v > 0.0, "limits.{key} was not measured: {}", limits[0]);
    }

    let webhooks = by("webhooks");
    assert_eq!(webhooks.len(), 2, "one report per publish mode");
    for r in webhooks.iter().chain(by("latency").iter()) {
        let delivered = figure(r, "delivered").unwrap_or(-1.0);
        let expected = figure(r, "expected").unwrap_or(-2.0);
        assert!(expected > 0.0, "nothing was expected: {r}");
        assert_eq!(delivered, expected, "a delivery is missing: {r}");
        assert_eq!(figure(r, "publish_failed"), Some(0.0), "{r}");
        assert_eq!(figure(r, "live_subscribers"), Some(2.0), "{r}");
        for i in 1..=2 {
            let received = figure(r, &format!("live_sub{i}_received")).unwrap_or(-1.0);
            let missed = figure(r, &format!("live_sub{i}_missed")).unwrap_or(-1.0);
            assert_eq!(
                received + missed,
                expected,
                "live subscriber {i} neither heard of nor was told it missed some deliveries: {r}"
            );
        }
        assert_eq!(figure(r, "live_closed_subscribers"), Some(0.0), "{r}");
    }
    let latency = by("latency");
    assert_eq!(latency.len(), 1);
    assert!(figure(latency[0], "p99_ms").is_some());
}
