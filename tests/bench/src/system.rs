//! The system under test: either a running Portico reached through its gateway URL,
//! or the three binaries started here (`--start`) with a fresh database and stream
//! prefix, stopped with SIGTERM and cleaned away at the end. Either way the bench
//! talks to it only through its public HTTP API.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use portico_signing::jwt::{Claims, JwtVerifier};
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::cpu::{Owner, Pids};

/// JWT secret of a started system.
pub const BENCH_JWT_SECRET: &str = "portico-bench-jwt-secret";
/// Service token of a started system.
pub const BENCH_SERVICE_TOKEN: &str = "portico-bench-service-token";
const BENCH_SECRETS_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const BENCH_API_KEY_PEPPER: &str = "portico-bench-pepper";

/// Which Portico binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum ServiceKind {
    /// `portico-gateway`.
    Gateway,
    /// `portico-webhook-dispatcher`.
    WebhookDispatcher,
    /// `portico-batch-processor`.
    BatchProcessor,
}

impl ServiceKind {
    /// Every service, in start order.
    pub const ALL: [ServiceKind; 3] = [
        ServiceKind::Gateway,
        ServiceKind::WebhookDispatcher,
        ServiceKind::BatchProcessor,
    ];

    /// The binary's name.
    pub fn binary(self) -> &'static str {
        match self {
            ServiceKind::Gateway => "portico-gateway",
            ServiceKind::WebhookDispatcher => "portico-webhook-dispatcher",
            ServiceKind::BatchProcessor => "portico-batch-processor",
        }
    }

    /// Its owner in CPU accounting.
    pub fn owner(self) -> Owner {
        match self {
            ServiceKind::Gateway => Owner::Gateway,
            ServiceKind::WebhookDispatcher => Owner::Dispatcher,
            ServiceKind::BatchProcessor => Owner::BatchProcessor,
        }
    }
}

/// How to reach or start the system.
#[derive(Debug, Clone)]
pub struct SystemOptions {
    /// Use the running gateway at this URL (when not starting one).
    pub gateway: String,
    /// Start the three binaries here.
    pub start: bool,
    /// Where the binaries are (`target/release` for benchmarks).
    pub bin_dir: PathBuf,
    /// PostgreSQL server (any database on it; the bench creates its own).
    pub database_url: String,
    /// NATS server.
    pub nats_url: String,
    /// JWT secret of the running system (ignored with `--start`).
    pub jwt_secret: Option<String>,
    /// Service token of the running system (ignored with `--start`).
    pub service_token: Option<String>,
    /// Extra environment for started services (`KEY=VALUE`).
    pub service_env: Vec<(String, String)>,
    /// `RUST_LOG` of started services.
    pub rust_log: String,
    /// Keep the database, stream and logs after the run.
    pub keep: bool,
}

/// A service the bench started.
pub struct Service {
    /// Which binary.
    pub kind: ServiceKind,
    /// Its pid.
    pub pid: u32,
    /// Its HTTP address (`host:port`).
    pub http: String,
    /// Resident memory right after it became ready, before any load, KiB.
    pub idle_rss_kib: u64,
    child: Child,
    log: PathBuf,
}

/// The system under test.
pub struct System {
    /// `http://host:port` of the gateway.
    pub base_url: String,
    /// Unique id of this bench run (names the database, stream prefix and users).
    pub run_id: String,
    /// Secret that signs user JWTs.
    pub jwt_secret: String,
    /// Internal services' bearer token.
    pub service_token: String,
    /// NATS server.
    pub nats_url: String,
    /// PostgreSQL server URL (database part as given).
    pub server_url: String,
    /// Portico's database when the bench started it.
    pub database_url: Option<String>,
    /// Services the bench started (empty when using a running system).
    pub services: Vec<Service>,
    /// Control-plane HTTP client (setup calls, polling; not the load).
    pub http: reqwest::Client,
    db_name: Option<String>,
    prefix: Option<String>,
    log_dir: Option<PathBuf>,
    keep: bool,
}

fn with_database(server_url: &str, db: &str) -> anyhow::Result<String> {
    let mut url = reqwest::Url::parse(server_url).context("DATABASE_URL")?;
    url.set_path(db);
    Ok(url.to_string())
}

/// Creates database `name` on the server of `server_url`; returns its URL.
pub async fn create_database(server_url: &str, name: &str) -> anyhow::Result<String> {
    let admin = sqlx::PgPool::connect(server_url)
        .await
        .with_context(|| format!("connecting to PostgreSQL at {server_url}"))?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&admin)
        .await?;
    admin.close().await;
    with_database(server_url, name)
}

/// Drops database `name` (closing its sessions).
pub async fn drop_database(server_url: &str, name: &str) {
    if let Ok(admin) = sqlx::PgPool::connect(server_url).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .execute(&admin)
        .await;
        admin.close().await;
    }
}

/// Resident memory of a process, KiB (0 when it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// The most resident memory a process ever had (`VmHWM`), KiB (0 when it is gone):
/// the figure a memory limit must hold, whatever the backlog did meanwhile.
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl System {
    /// Reaches the running system, or starts one.
    pub async fn open(opts: &SystemOptions) -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let run_id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()?;
        let mut system = Self {
            base_url: opts.gateway.trim_end_matches('/').to_owned(),
            run_id,
            jwt_secret: opts.jwt_secret.clone().unwrap_or_default(),
            service_token: opts.service_token.clone().unwrap_or_default(),
            nats_url: opts.nats_url.clone(),
            server_url: opts.database_url.clone(),
            database_url: None,
            services: Vec::new(),
            http,
            db_name: None,
            prefix: None,
            log_dir: None,
            keep: opts.keep,
        };
        if opts.start {
            if let Err(e) = system.start(opts).await {
                system.close().await;
                return Err(e);
            }
        } else if system.jwt_secret.is_empty() || system.service_token.is_empty() {
            bail!(
                "using a running system needs its PORTICO_JWT_SECRET and PORTICO_SERVICE_TOKEN \
                 (--jwt-secret, --service-token); or pass --start"
            );
        }
        Ok(system)
    }

    async fn start(&mut self, opts: &SystemOptions) -> anyhow::Result<()> {
        self.jwt_secret = BENCH_JWT_SECRET.into();
        self.service_token = BENCH_SERVICE_TOKEN.into();
        let db_name = format!("portico_bench_{}", self.run_id);
        let database_url = create_database(&self.server_url, &db_name).await?;
        self.db_name = Some(db_name);
        self.database_url = Some(database_url.clone());
        let prefix = format!("BENCH{}", self.run_id.to_uppercase());
        self.prefix = Some(prefix.clone());
        let log_dir = opts.bin_dir.join("bench-logs").join(&self.run_id);
        std::fs::create_dir_all(&log_dir)?;
        self.log_dir = Some(log_dir.clone());

        let env = |kind: ServiceKind| -> Vec<(String, String)> {
            let mut env: Vec<(String, String)> = [
                ("DATABASE_URL", database_url.as_str()),
                ("NATS_URL", opts.nats_url.as_str()),
                ("PORTICO_STREAM_PREFIX", prefix.as_str()),
                ("PORTICO_JWT_SECRET", BENCH_JWT_SECRET),
                ("PORTICO_SERVICE_TOKEN", BENCH_SERVICE_TOKEN),
                ("PORTICO_SECRETS_KEY", BENCH_SECRETS_KEY),
                ("PORTICO_API_KEY_PEPPER", BENCH_API_KEY_PEPPER),
                ("PORTICO_WEBHOOK_ALLOWLIST", "127.0.0.0/8"),
                ("PORTICO_LOG_FORMAT", "json"),
                ("RUST_LOG", opts.rust_log.as_str()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
            if kind == ServiceKind::Gateway {
                // The bulk scenario submits 100,000 orders in one request.
                env.push(("PORTICO_MAX_BATCH_ORDERS".into(), "100000".into()));
                env.push(("PORTICO_MAX_BODY_BYTES".into(), (256u64 << 20).to_string()));
            }
            env.extend(opts.service_env.iter().cloned());
            env
        };

        let migrate_log = std::fs::File::create(log_dir.join("migrate.log"))?;
        let status = Command::new(opts.bin_dir.join(ServiceKind::Gateway.binary()))
            .arg("migrate")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env(ServiceKind::Gateway))
            .stdout(Stdio::from(migrate_log.try_clone()?))
            .stderr(Stdio::from(migrate_log))
            .status()
            .await
            .with_context(|| {
                format!(
                    "running {}/portico-gateway migrate (build the services first)",
                    opts.bin_dir.display()
                )
            })?;
        if !status.success() {
            bail!(
                "portico-gateway migrate failed ({status}); see {}",
                log_dir.display()
            );
        }

        for kind in ServiceKind::ALL {
            // Ports are chosen here, not by the services, so no log line (which a
            // quieter RUST_LOG would hide) is needed to find them.
            let http = free_port()?;
            let mut vars = env(kind);
            vars.push(("PORTICO_HTTP_ADDR".into(), http.clone()));
            vars.push(("PORTICO_GRPC_ADDR".into(), free_port()?));
            let service = spawn_service(&opts.bin_dir, &log_dir, kind, vars, http).await?;
            if kind == ServiceKind::Gateway {
                self.base_url = format!("http://{}", service.http);
            }
            self.services.push(service);
        }
        for service in &mut self.services {
            wait_ready(&self.http, service).await?;
        }
        // Idle memory: ready, nothing asked of it yet.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for service in &mut self.services {
            service.idle_rss_kib = rss_kib(service.pid);
        }
        Ok(())
    }

    /// Pids of the started services, for CPU accounting.
    pub fn pids(&self) -> Pids {
        Pids {
            services: self
                .services
                .iter()
                .map(|s| (s.pid, s.kind.owner()))
                .collect(),
            // Started here: this run's databases carry the run id in their name.
            // Otherwise Portico's database is unknown and every backend counts.
            database_marker: self.db_name.as_ref().map(|_| self.run_id.clone()),
        }
    }

    /// A URL on the gateway (`path` starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// A user JWT for `user_id`, valid for a day.
    pub fn user_token(&self, user_id: &str) -> String {
        JwtVerifier::new(self.jwt_secret.as_bytes()).issue(&Claims {
            sub: user_id.to_owned(),
            exp: chrono::Utc::now().timestamp() + 86_400,
            nbf: None,
        })
    }

    /// POSTs JSON with a bearer token; returns status and JSON body.
    pub async fn post(
        &self,
        path: &str,
        bearer: &str,
        body: &Value,
    ) -> anyhow::Result<(u16, Value)> {
        let response = self
            .http
            .post(self.url(path))
            .bearer_auth(bearer)
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// GETs JSON with a bearer token.
    pub async fn get(&self, path: &str, bearer: &str) -> anyhow::Result<(u16, Value)> {
        let response = self
            .http
            .get(self.url(path))
            .bearer_auth(bearer)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// Creates a webhook for the token's user; returns its id.
    pub async fn create_webhook(
        &self,
        token: &str,
        url: &str,
        events: &[&str],
    ) -> anyhow::Result<String> {
        let (status, body) = self
            .post(
                "/api/webhooks",
                token,
                &serde_json::json!({"url": url, "events": events, "description": "portico-bench"}),
            )
            .await?;
        if status != 201 && status != 200 {
            bail!("creating a webhook answered {status}: {body}");
        }
        body.get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .context("webhook without id")
    }

    /// Deletes a webhook, ignoring errors (clean-up).
    pub async fn delete_webhook(&self, token: &str, id: &str) {
        let _ = self
            .http
            .delete(self.url(&format!("/api/webhooks/{id}")))
            .bearer_auth(token)
            .send()
            .await;
    }

    /// The gateway's Prometheus text.
    pub async fn metrics(&self) -> String {
        match self.http.get(self.url("/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Stops started services (SIGTERM, then SIGKILL after 30 s), deletes the stream and
    /// drops the database, unless asked to keep them.
    pub async fn close(&mut self) {
        for service in self.services.drain(..) {
            let Service {
                mut child,
                pid,
                kind,
                ..
            } = service;
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await;
            if tokio::time::timeout(Duration::from_secs(30), child.wait())
                .await
                .is_err()
            {
                eprintln!(
                    "{} did not stop within 30 s of SIGTERM; killing it",
                    kind.binary()
                );
                let _ = child.kill().await;
            }
        }
        if self.keep {
            if let Some(db) = &self.db_name {
                eprintln!("kept database {db}, stream prefix {:?}", self.prefix);
            }
            return;
        }
        if let Some(prefix) = self.prefix.take()
            && let Ok(client) = async_nats::connect(&self.nats_url).await
        {
            let js = async_nats::jetstream::new(client);
            let _ = js.delete_stream(format!("{prefix}_JOBS")).await;
        }
        if let Some(db) = self.db_name.take() {
            drop_database(&self.server_url, &db).await;
        }
        if let Some(dir) = self.log_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A free loopback port (`127.0.0.1:<port>`), as the kernel hands one out.
fn free_port() -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.to_string())
}

async fn spawn_service(
    bin_dir: &Path,
    log_dir: &Path,
    kind: ServiceKind,
    env: Vec<(String, String)>,
    http: String,
) -> anyhow::Result<Service> {
    let log = log_dir.join(format!("{}.log", kind.binary()));
    let file = std::fs::File::create(&log)?;
    // Logs go straight to a file: the bench must not spend CPU reading them.
    let child = Command::new(bin_dir.join(kind.binary()))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env)
        .stdout(Stdio::from(file.try_clone()?))
        .stderr(Stdio::from(file))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}/{}", bin_dir.display(), kind.binary()))?;
    let pid = child.id().context("no pid")?;
    Ok(Service {
        kind,
        pid,
        http,
        idle_rss_kib: 0,
        child,
        log,
    })
}

async fn wait_ready(http: &reqwest::Client, service: &mut Service) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let ok = http
            .get(format!("http://{}/readyz", service.http))
            .send()
            .await
            .map(|r| r.status().is_success())
            .unwrap_or(false);
        if ok {
            return Ok(());
        }
        if let Ok(Some(status)) = service.child.try_wait() {
            bail!(
                "{} exited ({status}) before it was ready; see {}",
                service.kind.binary(),
                service.log.display()
            );
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!(
                "{} never became ready; see {}",
                service.kind.binary(),
                service.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
