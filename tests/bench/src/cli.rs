//! The command line: global options (which system, how much load, output format) and
//! one scenario; [`run`] opens the system, starts the sink, runs the scenario, cleans
//! up, and returns every report with the machine.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;
use clap::{Parser, Subcommand};

use crate::report::{Report, RunReport};
use crate::scenarios::analytics::{self, AnalyticsArgs};
use crate::scenarios::bulk::{self, BulkArgs};
use crate::scenarios::credentials::{self, CredentialsArgs};
use crate::scenarios::gateway::{self, GatewayArgs};
use crate::scenarios::latency::{self, LatencyArgs};
use crate::scenarios::limits::{self, LimitsArgs};
use crate::scenarios::null_pipeline::{self, NullArgs};
use crate::scenarios::rss::{self, RssArgs};
use crate::scenarios::webhooks::{self, Mode, WebhooksArgs};
use crate::scenarios::{Bench, Knobs};
use crate::sink::Sink;
use crate::system::{System, SystemOptions};
use crate::{live, machine};

/// `portico-bench [options] <scenario> [scenario options]`.
#[derive(Debug, Parser)]
#[command(
    name = "portico-bench",
    version,
    about = "Measures Portico against this machine's own limits, through its public APIs"
)]
pub struct Cli {
    /// Use the running system whose gateway is here.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
    pub gateway: String,
    /// Start the three services from --bin-dir with a fresh database and stream prefix,
    /// and stop and remove them at the end.
    #[arg(long, global = true)]
    pub start: bool,
    /// Where the service binaries are (default: next to this binary, i.e.
    /// target/release for a release build).
    #[arg(long, global = true)]
    pub bin_dir: Option<PathBuf>,
    /// PostgreSQL server: --start creates its database here; `limits` writes here.
    #[arg(
        long,
        global = true,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub database_url: String,
    /// NATS server with JetStream.
    #[arg(
        long,
        global = true,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// JWT secret of a running system (not needed with --start).
    #[arg(
        long,
        global = true,
        env = "PORTICO_JWT_SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,
    /// Service token of a running system (not needed with --start).
    #[arg(
        long,
        global = true,
        env = "PORTICO_SERVICE_TOKEN",
        hide_env_values = true
    )]
    pub service_token: Option<String>,
    /// Run length in seconds (latency 30, credentials 20, gateway 20, rss 300).
    #[arg(long, global = true)]
    pub duration: Option<f64>,
    /// Events to publish (webhooks: 100,000).
    #[arg(long, global = true)]
    pub events: Option<u64>,
    /// Client connections (webhooks 64, latency 32, credentials 64, gateway 32, limits 64).
    #[arg(long, global = true)]
    pub concurrency: Option<usize>,
    /// Print one JSON document instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Runtime threads of the sink (1: a current-thread runtime, the cheapest).
    #[arg(long, global = true, default_value_t = 1)]
    pub sink_threads: usize,
    /// Filler bytes in each event's data (realistic body sizes).
    #[arg(long, global = true, default_value_t = 128)]
    pub payload_bytes: usize,
    /// Seconds without a new delivery after which a run is declared incomplete.
    #[arg(long, global = true, default_value_t = 30.0)]
    pub stall_timeout: f64,
    /// Seconds per machine-limit measurement.
    #[arg(long, global = true, default_value_t = 5.0)]
    pub limit_secs: f64,
    /// Extra environment for started services, `KEY=VALUE` (repeatable).
    #[arg(long = "service-env", global = true, value_parser = parse_key_value)]
    pub service_env: Vec<(String, String)>,
    /// RUST_LOG of started services.
    #[arg(long, global = true, default_value = "info")]
    pub rust_log: String,
    /// Keep the started system's database, stream and logs.
    #[arg(long, global = true)]
    pub keep: bool,
    /// Record `perf` CPU profiles of the started services during the webhooks and
    /// latency measurements, into this directory (`perf report -i <file>`).
    #[arg(long, global = true)]
    pub perf: Option<PathBuf>,
    /// Live-update subscribers: before the measured phase of `webhooks` and `latency`,
    /// open this many WebSocket connections to `GET /api/live` as the phase's owner,
    /// subscribed to its deliveries, and report what each received and whether it
    /// lagged or was closed. With --start and more than 16, the started gateway's
    /// per-user limit is raised to match.
    #[arg(long, global = true, default_value_t = 0)]
    pub subscribers: usize,
    /// Open the subscribers with `?batch=true`: each WebSocket message carries every
    /// pushed message ready at the time, one per line (docs/api/live.md).
    #[arg(long, global = true)]
    pub live_batch: bool,
    /// What to measure.
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// The credentials scenario's default route: partners are refused right after
/// authentication, so its time is verification and HTTP only.
const DEFAULT_PARTNER_ROUTE: &str = "/api/integrations";

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}

/// The scenarios.
#[derive(Debug, Clone, Subcommand)]
pub enum Scenario {
    /// This machine's ceilings: loopback HTTP, JetStream publish, PostgreSQL rows.
    Limits,
    /// Deliveries/s end to end (machine limits measured first, in the same run).
    Webhooks {
        /// Webhooks per event.
        #[arg(long, default_value_t = 1)]
        endpoints: usize,
        /// One request per event, batch publish, or both.
        #[arg(long, value_enum, default_value = "both")]
        mode: Mode,
        /// Events per batch request.
        #[arg(long, default_value_t = 250)]
        batch_size: usize,
        /// Connections of the batch publisher.
        #[arg(long, default_value_t = 4)]
        batch_concurrency: usize,
        /// Skip measuring the machine limits.
        #[arg(long)]
        no_limits: bool,
        /// Skip measuring the null pipeline (the design's ceiling) first.
        #[arg(long)]
        no_null: bool,
    },
    /// The design's ceiling: the same hops (HTTP in, JetStream, PostgreSQL rows, HTTP
    /// out) with no business logic, with the same load client and sink.
    NullPipeline {
        /// Endpoints per event.
        #[arg(long, default_value_t = 1)]
        endpoints: usize,
        /// Messages per chunk.
        #[arg(long, default_value_t = 512)]
        chunk: usize,
        /// Chunks worked on at once.
        #[arg(long, default_value_t = 16)]
        chunks_in_flight: usize,
    },
    /// Sent-to-delivered latency at a fixed event rate.
    Latency {
        /// Events per second.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// Webhooks per event.
        #[arg(long, default_value_t = 1)]
        endpoints: usize,
        /// Seconds at the start not counted.
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
    },
    /// One large bulk-order batch: accept time and orders/s.
    Bulk {
        /// Orders in the batch.
        #[arg(long, default_value_t = 100_000)]
        orders: u64,
        /// JSON, NDJSON or both.
        #[arg(long, value_enum, default_value = "both")]
        format: bulk::Format,
    },
    /// Partner authentication (HTTP Basic) cost at a fixed rate, cache hit.
    Credentials {
        /// Requests per second.
        #[arg(long, default_value_t = 10_000.0)]
        rate: f64,
        /// The partner route to call (GET). The default answers 403 to a partner right
        /// after authenticating it: verification cost and nothing else.
        #[arg(long, default_value = "/api/integrations")]
        route: String,
        /// The status a successful call answers (default: 403 for the default route,
        /// any 2xx for another).
        #[arg(long)]
        expect_status: Option<u16>,
        /// Integration type on create.
        #[arg(long, default_value = "custom")]
        integration_type: String,
    },
    /// Create-webhook latency at a fixed rate.
    Gateway {
        /// Requests per second.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
    },
    /// Idle RSS of each service, and RSS over a steady run (needs --start).
    Rss {
        /// Events per second during the steady run.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// Seconds between samples.
        #[arg(long, default_value_t = 10.0)]
        every: f64,
    },
    /// Delivery analytics: seeds rollups standing for 10 million deliveries over 30
    /// days for one owner (plus noise), then times the REST queries (needs --start).
    Analytics {
        /// Requests per timed query.
        #[arg(long, default_value_t = 200)]
        repeats: usize,
    },
    /// Seconds-long run of limits, webhooks (200 events) and latency (100/s for 2 s).
    Smoke,
    /// limits, webhooks 1 and 10, latency, bulk, credentials, gateway in one run.
    All,
}

impl Cli {
    fn limits_args(&self) -> LimitsArgs {
        LimitsArgs {
            secs: self.limit_secs,
            http_conns: self.concurrency.unwrap_or(64),
            ..LimitsArgs::default()
        }
    }

    fn webhooks_args(&self, endpoints: usize, mode: Mode, batch: (usize, usize)) -> WebhooksArgs {
        WebhooksArgs {
            endpoints,
            events: self.events.unwrap_or(100_000),
            mode,
            concurrency: self.concurrency.unwrap_or(64),
            batch_size: batch.0,
            batch_concurrency: batch.1,
            limits: Some(self.limits_args()),
            null_pipeline: true,
        }
    }

    fn latency_args(&self, rate: f64, endpoints: usize, warmup: f64) -> LatencyArgs {
        LatencyArgs {
            rate,
            duration: self.duration.unwrap_or(30.0),
            endpoints,
            warmup,
            concurrency: self.concurrency.unwrap_or(32),
        }
    }

    fn credentials_args(
        &self,
        rate: f64,
        route: &str,
        expect_status: Option<u16>,
        kind: &str,
    ) -> CredentialsArgs {
        CredentialsArgs {
            rate,
            duration: self.duration.unwrap_or(20.0),
            concurrency: self.concurrency.unwrap_or(64),
            route: route.to_owned(),
            expect_status: expect_status.or((route == DEFAULT_PARTNER_ROUTE).then_some(403)),
            integration_type: kind.to_owned(),
        }
    }

    fn gateway_args(&self, rate: f64) -> GatewayArgs {
        GatewayArgs {
            rate,
            duration: self.duration.unwrap_or(20.0),
            concurrency: self.concurrency.unwrap_or(32),
        }
    }
}

fn emit(json: bool, reports: &mut Vec<Report>, new: Vec<Report>) {
    for r in new {
        if !json {
            println!("{}", r.render());
        }
        reports.push(r);
    }
}

/// A report standing for a scenario that could not run (in `all`).
fn failed(scenario: &str, err: anyhow::Error) -> Report {
    let mut r = Report::new(scenario, "could not run");
    r.note(format!("FAILED: {err:#}"));
    r
}

async fn run_scenario(bench: &mut Bench, cli: &Cli, out: &mut Vec<Report>) -> anyhow::Result<()> {
    let json = cli.json;
    match &cli.scenario {
        Scenario::Limits => emit(
            json,
            out,
            vec![limits::run(bench, cli.limits_args()).await?],
        ),
        Scenario::Webhooks {
            endpoints,
            mode,
            batch_size,
            batch_concurrency,
            no_limits,
            no_null,
        } => {
            let mut args = cli.webhooks_args(*endpoints, *mode, (*batch_size, *batch_concurrency));
            if *no_limits {
                args.limits = None;
            }
            args.null_pipeline = !*no_null;
            emit(json, out, webhooks::run(bench, args).await?);
        }
        Scenario::NullPipeline {
            endpoints,
            chunk,
            chunks_in_flight,
        } => {
            let args = NullArgs {
                endpoints: *endpoints,
                events: cli.events.unwrap_or(100_000),
                concurrency: cli.concurrency.unwrap_or(64),
                chunk: *chunk,
                chunks_in_flight: *chunks_in_flight,
            };
            emit(json, out, vec![null_pipeline::run(bench, args).await?]);
        }
        Scenario::Latency {
            rate,
            endpoints,
            warmup,
        } => emit(
            json,
            out,
            vec![latency::run(bench, cli.latency_args(*rate, *endpoints, *warmup)).await?],
        ),
        Scenario::Bulk { orders, format } => emit(
            json,
            out,
            bulk::run(
                bench,
                BulkArgs {
                    orders: *orders,
                    format: *format,
                },
            )
            .await?,
        ),
        Scenario::Credentials {
            rate,
            route,
            expect_status,
            integration_type,
        } => {
            let args = cli.credentials_args(*rate, route, *expect_status, integration_type);
            emit(json, out, vec![credentials::run(bench, args).await?]);
        }
        Scenario::Gateway { rate } => emit(
            json,
            out,
            vec![gateway::run(bench, cli.gateway_args(*rate)).await?],
        ),
        Scenario::Analytics { repeats } => emit(
            json,
            out,
            vec![analytics::run(bench, AnalyticsArgs { repeats: *repeats }).await?],
        ),
        Scenario::Rss { rate, every } => emit(
            json,
            out,
            vec![
                rss::run(
                    bench,
                    RssArgs {
                        rate: *rate,
                        duration: cli.duration.unwrap_or(300.0),
                        every: *every,
                        concurrency: cli.concurrency.unwrap_or(16),
                        idle_secs: 10.0,
                    },
                )
                .await?,
            ],
        ),
        Scenario::Smoke => {
            let limits = LimitsArgs {
                secs: 1.0,
                http_conns: 8,
                ..LimitsArgs::default()
            };
            emit(json, out, vec![limits::run(bench, limits).await?]);
            let args = WebhooksArgs {
                endpoints: 1,
                events: cli.events.unwrap_or(200),
                mode: Mode::Both,
                concurrency: cli.concurrency.unwrap_or(8),
                batch_size: 50,
                batch_concurrency: 2,
                limits: None,
                null_pipeline: true,
            };
            emit(json, out, webhooks::run(bench, args).await?);
            let args = LatencyArgs {
                rate: 100.0,
                duration: cli.duration.unwrap_or(2.0),
                endpoints: 1,
                warmup: 0.0,
                concurrency: 4,
            };
            emit(json, out, vec![latency::run(bench, args).await?]);
        }
        Scenario::All => {
            emit(
                json,
                out,
                vec![limits::run(bench, cli.limits_args()).await?],
            );
            for endpoints in [1, 10] {
                let args = cli.webhooks_args(endpoints, Mode::Both, (250, 4));
                let r = webhooks::run(bench, args)
                    .await
                    .unwrap_or_else(|e| vec![failed("webhooks", e)]);
                emit(json, out, r);
            }
            let r = latency::run(bench, cli.latency_args(1000.0, 1, 2.0))
                .await
                .unwrap_or_else(|e| failed("latency", e));
            emit(json, out, vec![r]);
            let r = bulk::run(
                bench,
                BulkArgs {
                    orders: 100_000,
                    format: bulk::Format::Both,
                },
            )
            .await
            .unwrap_or_else(|e| vec![failed("bulk", e)]);
            emit(json, out, r);
            let r = credentials::run(
                bench,
                cli.credentials_args(10_000.0, DEFAULT_PARTNER_ROUTE, None, "custom"),
            )
            .await
            .unwrap_or_else(|e| failed("credentials", e));
            emit(json, out, vec![r]);
            let r = gateway::run(bench, cli.gateway_args(1000.0))
                .await
                .unwrap_or_else(|e| failed("gateway", e));
            emit(json, out, vec![r]);
        }
    }
    Ok(())
}

/// Runs the command line's scenario; the system is cleaned up whatever happens.
pub async fn run(cli: Cli) -> anyhow::Result<RunReport> {
    let bin_dir = match &cli.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default(),
    };
    let mut service_env = cli.service_env.clone();
    let limit_key = "PORTICO_LIVE_MAX_CONNECTIONS_PER_USER";
    if cli.subscribers > live::DEFAULT_CONNECTION_LIMIT
        && !service_env.iter().any(|(k, _)| k == limit_key)
    {
        service_env.push((limit_key.to_owned(), cli.subscribers.to_string()));
    }
    let opts = SystemOptions {
        gateway: cli.gateway.clone(),
        start: cli.start,
        bin_dir: bin_dir.clone(),
        database_url: cli.database_url.clone(),
        nats_url: cli.nats_url.clone(),
        jwt_secret: cli.jwt_secret.clone(),
        service_token: cli.service_token.clone(),
        service_env,
        rust_log: cli.rust_log.clone(),
        keep: cli.keep,
    };
    let machine = machine::describe(&cli.database_url, &cli.nats_url).await;
    if !cli.json {
        for line in machine.lines() {
            println!("{line}");
        }
    }
    let system = System::open(&opts).await?;
    let system_text = if cli.start {
        format!(
            "started by the bench from {} (fresh database and stream prefix, run {})",
            bin_dir.display(),
            system.run_id
        )
    } else {
        format!("running system at {}", system.base_url)
    };
    if !cli.json {
        println!("system: {system_text}");
    }
    let sink = match Sink::start(cli.sink_threads) {
        Ok(s) => s,
        Err(e) => {
            let mut system = system;
            system.close().await;
            return Err(e);
        }
    };
    let mut bench = Bench {
        system,
        sink,
        knobs: Knobs {
            duration: cli.duration,
            events: cli.events,
            concurrency: cli.concurrency,
            payload_bytes: cli.payload_bytes,
            stall_timeout: Duration::from_secs_f64(cli.stall_timeout),
            perf_dir: cli.perf.clone(),
            subscribers: cli.subscribers,
            live_batch: cli.live_batch,
        },
        limits: None,
        null_rates: Vec::new(),
    };
    let mut reports = Vec::new();
    let result = tokio::select! {
        r = run_scenario(&mut bench, &cli, &mut reports) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    bench.system.close().await;
    result?;
    Ok(RunReport {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine,
        system: system_text,
        reports,
    })
}
