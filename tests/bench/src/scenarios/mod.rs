//! The scenarios, one module each, and what they share: the system, the sink, the
//! options, and the machine limits once measured in this run.

pub mod analytics;
pub mod bulk;
pub mod credentials;
pub mod gateway;
pub mod latency;
pub mod limits;
pub mod null_pipeline;
pub mod rss;
pub mod webhooks;

use std::time::{Duration, Instant};

use crate::cpu::{Owner, Snapshot, Usage, pids_of};
use crate::sink::{Sink, Tracker};
use crate::system::System;

/// Options every scenario may read; `None` means the scenario's own default.
#[derive(Debug, Clone, Default)]
pub struct Knobs {
    /// Run length, seconds.
    pub duration: Option<f64>,
    /// Events (or orders) to send.
    pub events: Option<u64>,
    /// Client connections.
    pub concurrency: Option<usize>,
    /// Filler bytes in each event's data, so bodies have a realistic size.
    pub payload_bytes: usize,
    /// Give up waiting for deliveries after this long without progress.
    pub stall_timeout: Duration,
    /// Record a `perf` CPU profile of each started service during measured phases,
    /// into this directory.
    pub perf_dir: Option<std::path::PathBuf>,
    /// Live-update WebSocket subscribers to attach (as the phase's owner, deliveries
    /// topic) during the `webhooks` and `latency` measurements.
    pub subscribers: usize,
    /// Whether they ask for batched messages (`?batch=true`).
    pub live_batch: bool,
}

/// `perf record` processes sampling the services during one phase.
pub struct Profiler {
    children: Vec<(u32, std::process::Child)>,
    files: Vec<String>,
}

impl Profiler {
    /// Stops the recorders (SIGINT, so perf writes its file) and returns the files.
    pub fn stop(mut self) -> Vec<String> {
        self.interrupt();
        std::mem::take(&mut self.files)
    }

    fn interrupt(&mut self) {
        for (pid, mut child) in self.children.drain(..) {
            let _ = std::process::Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for Profiler {
    fn drop(&mut self) {
        self.interrupt();
    }
}

/// Everything a scenario works with.
pub struct Bench {
    /// The system under test.
    pub system: System,
    /// The loopback sink receiving deliveries.
    pub sink: Sink,
    /// Options.
    pub knobs: Knobs,
    /// Machine limits measured earlier in this run.
    pub limits: Option<limits::Limits>,
    /// Deliveries/s of the null pipeline measured earlier in this run, by endpoints
    /// per event: the ceiling Portico's figures are reported against.
    pub null_rates: Vec<NullRate>,
}

/// What the null pipeline reached in this run for one number of endpoints per event.
#[derive(Debug, Clone, Copy)]
pub struct NullRate {
    /// Endpoints per event.
    pub endpoints: usize,
    /// Deliveries/s end to end.
    pub rate: f64,
    /// Deliveries/s if the machine were the run's alone (cores / CPU per delivery):
    /// a comparison that neighbours on a shared machine disturb less.
    pub alone_capacity: Option<f64>,
}

impl Bench {
    /// A CPU snapshot of every process (Portico's services by pid when started here).
    pub fn cpu_snapshot(&self) -> Snapshot {
        Snapshot::take(&self.system.pids(), &self.sink.thread_ids())
    }

    /// CPU used since `start`.
    pub fn cpu_since(&self, start: &Snapshot) -> Usage {
        Usage::between(start, &self.cpu_snapshot())
    }

    /// Starts `perf record` (cpu-clock samples, 997 Hz) on every started service when
    /// `--perf` is given; the files are named after `phase`.
    pub fn profile(&self, phase: &str) -> Option<Profiler> {
        let dir = self.knobs.perf_dir.as_ref()?;
        let _ = std::fs::create_dir_all(dir);
        let pids = self.system.pids();
        let mut targets: Vec<(String, Vec<u32>)> = self
            .system
            .services
            .iter()
            .map(|s| (s.kind.binary().to_owned(), vec![s.pid]))
            .collect();
        // PostgreSQL (this run's backends) and nats-server, when the bench started
        // the system and can tell its backends apart.
        if pids.database_marker.is_some() {
            targets.push(("postgres".into(), pids_of(Owner::Postgres, &pids)));
            targets.push(("nats-server".into(), pids_of(Owner::Nats, &pids)));
        }
        // Release builds have no frame pointers: PORTICO_BENCH_PERF_CALL_GRAPH=dwarf
        // gives real call stacks (larger files, fewer samples).
        let call_graph =
            std::env::var("PORTICO_BENCH_PERF_CALL_GRAPH").unwrap_or_else(|_| "fp".into());
        let freq = if call_graph.starts_with("dwarf") {
            "199"
        } else {
            "997"
        };
        let mut children = Vec::new();
        let mut files = Vec::new();
        for (name, target_pids) in targets {
            if target_pids.is_empty() {
                continue;
            }
            let file = dir.join(format!("{phase}-{name}.perf.data"));
            let list: Vec<String> = target_pids.iter().map(u32::to_string).collect();
            let child = std::process::Command::new("perf")
                .args(["record", "-e", "cpu-clock", "-F", freq, "--call-graph"])
                .arg(&call_graph)
                .arg("-o")
                .arg(&file)
                .args(["-p", &list.join(",")])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn();
            match child {
                Ok(c) => {
                    children.push((c.id(), c));
                    files.push(file.display().to_string());
                }
                Err(e) => eprintln!("perf record could not start: {e}"),
            }
        }
        // perf needs a moment to attach before the phase begins.
        std::thread::sleep(Duration::from_millis(300));
        Some(Profiler { children, files })
    }

    /// The null pipeline's rate for `endpoints`, when measured in this run.
    pub fn null_rate(&self, endpoints: usize) -> Option<NullRate> {
        self.null_rates
            .iter()
            .find(|n| n.endpoints == endpoints)
            .copied()
    }

    /// A fresh user id for one phase of this run.
    pub fn user(&self, tag: &str) -> String {
        format!("bench-{}-{tag}", self.system.run_id)
    }

    /// The filler string for event data.
    pub fn pad(&self) -> String {
        "x".repeat(self.knobs.payload_bytes)
    }
}

/// Waits until the tracker has every one of `target` deliveries, or no new delivery
/// arrived for `stall`; returns whether all arrived.
pub async fn wait_delivered(tracker: &Tracker, target: u64, stall: Duration) -> bool {
    let mut last = tracker.unique();
    let mut changed = Instant::now();
    loop {
        let now = tracker.unique();
        if now >= target {
            return true;
        }
        if now != last {
            last = now;
            changed = Instant::now();
        } else if changed.elapsed() > stall {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How long live subscribers may go without a new message, once the phase's
/// deliveries are in, before their counts are taken as final.
pub const LIVE_QUIET: Duration = Duration::from_secs(3);

/// The title suffix naming the live subscribers attached (none: empty).
pub fn live_title(knobs: &Knobs) -> String {
    match (knobs.subscribers, knobs.live_batch) {
        (0, _) => String::new(),
        (n, false) => format!(", {n} live subscriber(s)"),
        (n, true) => format!(", {n} live subscriber(s), batched"),
    }
}

/// Nanoseconds to milliseconds.
pub fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Creates `endpoints` webhooks for a new user, each pointing at its own sink path
/// and subscribed to `bench.event`; returns the user, its token and the webhook ids.
pub async fn webhooks_for_new_user(
    bench: &Bench,
    tag: &str,
    endpoints: usize,
) -> anyhow::Result<(String, String, Vec<String>)> {
    let user = bench.user(tag);
    let token = bench.system.user_token(&user);
    let mut ids = Vec::new();
    for i in 0..endpoints {
        ids.push(
            bench
                .system
                .create_webhook(&token, &bench.sink.endpoint_url(i), &["bench.event"])
                .await?,
        );
    }
    Ok((user, token, ids))
}

/// Deletes the webhooks again (a running system keeps no bench leftovers).
pub async fn delete_webhooks(bench: &Bench, token: &str, ids: &[String]) {
    for id in ids {
        bench.system.delete_webhook(token, id).await;
    }
}

/// The JSON of one event for `POST /api/events` (or an element of a batch): its data
/// carries the sequence number and the send time the sink reads back.
pub fn event_json(seq: u64, run_tag: &str, pad: &str) -> String {
    format!(
        r#"{{"type":"bench.event","data":{{"seq":{seq},"sentAtNanos":{},"pad":"{pad}"}},"idempotencyKey":"{run_tag}-{seq}"}}"#,
        crate::sink::now_ns()
    )
}

/// Quantiles of a Prometheus histogram between two scrapes of the gateway.
pub mod prometheus {
    use std::collections::BTreeMap;

    /// Cumulative bucket counts (upper bound in seconds -> count) of the series of
    /// `metric` whose labels include every `(name, value)` in `labels`.
    pub fn buckets(text: &str, metric: &str, labels: &[(&str, &str)]) -> BTreeMap<u64, f64> {
        let prefix = format!("{metric}_bucket{{");
        let mut out: BTreeMap<u64, f64> = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(&prefix) else {
                continue;
            };
            let Some((label_text, value)) = rest.rsplit_once("} ") else {
                continue;
            };
            let has = |k: &str, v: &str| label_text.contains(&format!("{k}=\"{v}\""));
            if !labels.iter().all(|(k, v)| has(k, v)) {
                continue;
            }
            let Some(le) = label_text
                .split(',')
                .find_map(|kv| kv.trim().strip_prefix("le=\""))
                .map(|v| v.trim_end_matches('"'))
            else {
                continue;
            };
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::INFINITY)
            };
            let key = if bound.is_finite() {
                (bound * 1e9) as u64
            } else {
                u64::MAX
            };
            *out.entry(key).or_default() += value.trim().parse::<f64>().unwrap_or(0.0);
        }
        out
    }

    /// Bucket counts of `after` minus `before`.
    pub fn delta(before: &BTreeMap<u64, f64>, after: &BTreeMap<u64, f64>) -> BTreeMap<u64, f64> {
        after
            .iter()
            .map(|(k, v)| (*k, v - before.get(k).copied().unwrap_or(0.0)))
            .collect()
    }

    /// The `q` quantile in seconds, interpolating linearly inside the bucket it falls
    /// in (as Prometheus' `histogram_quantile` does); `None` without observations.
    pub fn quantile(buckets: &BTreeMap<u64, f64>, q: f64) -> Option<f64> {
        let total = buckets
            .get(&u64::MAX)
            .copied()
            .or_else(|| buckets.values().last().copied())?;
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut lower_bound = 0.0;
        let mut lower_count = 0.0;
        for (bound, count) in buckets {
            if *count >= rank {
                if *bound == u64::MAX {
                    return Some(lower_bound);
                }
                let upper = *bound as f64 / 1e9;
                let width = count - lower_count;
                let frac = if width > 0.0 {
                    (rank - lower_count) / width
                } else {
                    1.0
                };
                return Some(lower_bound + (upper - lower_bound) * frac);
            }
            lower_bound = *bound as f64 / 1e9;
            lower_count = *count;
        }
        None
    }

    /// Fraction of observations at or below `seconds` (which must be a bucket bound).
    pub fn fraction_within(buckets: &BTreeMap<u64, f64>, seconds: f64) -> Option<f64> {
        let total = buckets.get(&u64::MAX).copied()?;
        let at = buckets.get(&((seconds * 1e9) as u64)).copied()?;
        (total > 0.0).then(|| at / total)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// The quantile of a scraped histogram is interpolated inside its bucket.
        #[test]
        fn quantiles_from_scraped_buckets() {
            let text = "\
x_bucket{route=\"/a\",le=\"0.0005\"} 50\n\
x_bucket{route=\"/a\",le=\"0.001\"} 99\n\
x_bucket{route=\"/a\",le=\"+Inf\"} 100\n\
x_bucket{route=\"/b\",le=\"0.0005\"} 7\n";
            let b = buckets(text, "x", &[("route", "/a")]);
            assert_eq!(b.len(), 3);
            let p50 = quantile(&b, 0.5).unwrap_or(0.0);
            assert!((p50 - 0.0005).abs() < 1e-9, "{p50}");
            let p99 = quantile(&b, 0.99).unwrap_or(0.0);
            assert!((p99 - 0.001).abs() < 1e-9, "{p99}");
            assert_eq!(fraction_within(&b, 0.001), Some(0.99));
        }
    }
}
