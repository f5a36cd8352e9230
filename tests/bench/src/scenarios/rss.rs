//! `rss`: resident memory of each service, idle (right after it became ready, before
//! any load) and over a steady run (events at a fixed rate, one request each, to one
//! endpoint), sampled every 10 s. Needs `--start`: the bench must know the pids.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use hyper::Method;

use crate::client::{Target, Template, open_loop};
use crate::report::{Goal, Report};
use crate::scenarios::{Bench, delete_webhooks, event_json, wait_delivered, webhooks_for_new_user};
use crate::sink::Tracker;
use crate::system::rss_kib;

/// Parameters.
#[derive(Debug, Clone, Copy)]
pub struct RssArgs {
    /// Events per second during the steady run.
    pub rate: f64,
    /// Seconds of steady run.
    pub duration: f64,
    /// Seconds between samples.
    pub every: f64,
    /// Publisher connections.
    pub concurrency: usize,
    /// Seconds of idle CPU measurement before the load.
    pub idle_secs: f64,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Runs the scenario.
pub async fn run(bench: &mut Bench, args: RssArgs) -> anyhow::Result<Report> {
    if bench.system.services.is_empty() {
        bail!("the rss scenario needs --start (it reads the services' /proc/<pid>/status)");
    }
    let mut report = Report::new(
        "rss",
        format!(
            "idle RSS, then {} events/s for {} s sampled every {} s",
            args.rate, args.duration, args.every
        ),
    );
    eprintln!("rss: {} ...", report.title);
    for s in &bench.system.services {
        report
            .fig(
                &format!("{}.idle_mib", s.kind.binary()),
                &format!("{} idle RSS", s.kind.binary()),
                mib(s.idle_rss_kib),
                "MiB",
            )
            .goal(Goal::Below(30.0));
    }

    // Idle CPU: nothing asked of the system for a few seconds.
    let cpu = bench.cpu_snapshot();
    tokio::time::sleep(Duration::from_secs_f64(args.idle_secs)).await;
    let idle = bench.cpu_since(&cpu);
    for s in &bench.system.services {
        let owner = s.kind.owner();
        report.fig(
            &format!("{}.idle_cpu_pct", s.kind.binary()),
            &format!("{} idle CPU (of one core)", s.kind.binary()),
            idle.secs(owner) / idle.wall_secs.max(1e-9) * 100.0,
            "%",
        );
    }
    report.cpu("idle", None, idle);

    let (user, token, ids) = webhooks_for_new_user(bench, "rss", 1).await?;
    let total = (args.rate * args.duration).round() as u64;
    let tracker = bench.sink.track(Tracker::new(total, 1, 0));
    let target = Target::parse(&bench.system.base_url)?;
    let template = Template::new(&target, Method::POST, "/api/events")
        .json()
        .auth(&format!("Bearer {}", bench.system.service_token))
        .header("x-portico-user-id", &user);
    let run_tag = format!("{}-rss", bench.system.run_id);
    let pad = bench.pad();
    let load = tokio::spawn({
        let target = target.clone();
        let (rate, duration, conns) = (args.rate, args.duration, args.concurrency);
        async move {
            open_loop(
                &target,
                rate,
                Duration::from_secs_f64(duration),
                conns,
                None,
                Arc::new(move |seq| template.build(Bytes::from(event_json(seq, &run_tag, &pad)))),
            )
            .await
        }
    });
    let pids: Vec<(String, u32)> = bench
        .system
        .services
        .iter()
        .map(|s| (s.kind.binary().to_owned(), s.pid))
        .collect();
    let mut samples: Vec<Vec<u64>> = vec![Vec::new(); pids.len()];
    let cpu = bench.cpu_snapshot();
    let started = Instant::now();
    let every = Duration::from_secs_f64(args.every);
    let mut next = started;
    while !load.is_finished() {
        if Instant::now() >= next {
            for (i, (_, pid)) in pids.iter().enumerate() {
                samples[i].push(rss_kib(*pid));
            }
            next += every;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (i, (_, pid)) in pids.iter().enumerate() {
        samples[i].push(rss_kib(*pid));
    }
    let stats = load.await?;
    report.cpu(
        "the steady run",
        Some((stats.ok, "event")),
        bench.cpu_since(&cpu),
    );
    let complete = wait_delivered(&tracker, stats.ok, bench.knobs.stall_timeout).await;

    for (i, (name, _)) in pids.iter().enumerate() {
        let s = &samples[i];
        let first = s.first().copied().unwrap_or(0);
        let second = s.get(1).copied().unwrap_or(first);
        let last = s.last().copied().unwrap_or(0);
        let max = s.iter().copied().max().unwrap_or(0);
        report.fig(
            &format!("{name}.start_mib"),
            &format!("{name} RSS at start of load"),
            mib(first),
            "MiB",
        );
        report.fig(
            &format!("{name}.end_mib"),
            &format!("{name} RSS at end"),
            mib(last),
            "MiB",
        );
        report.fig(
            &format!("{name}.max_mib"),
            &format!("{name} RSS max"),
            mib(max),
            "MiB",
        );
        // "Flat": after the first sample under load, memory grows by less than 5 %.
        let growth = if second > 0 {
            (last as f64 - second as f64) / second as f64 * 100.0
        } else {
            0.0
        };
        report
            .fig(
                &format!("{name}.growth_pct"),
                &format!("{name} growth, first sample under load to end"),
                growth,
                "%",
            )
            .goal(Goal::Below(5.0));
        report.note(format!(
            "{name} samples (MiB): {}",
            s.iter()
                .map(|k| format!("{:.1}", mib(*k)))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    report.fig("rate", "events published", stats.rate(), "events/s");
    report.fig(
        "delivered",
        "deliveries received",
        tracker.unique() as f64,
        "",
    );
    if !complete {
        report.note(format!(
            "INCOMPLETE: {} of {} deliveries arrived",
            tracker.unique(),
            stats.ok
        ));
    }
    report.note("flat = growth from the first sample under load to the end below 5 % (the bench's reading of 'flat')");
    delete_webhooks(bench, &token, &ids).await;
    Ok(report)
}
