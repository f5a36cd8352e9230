//! The end-to-end test harness: starts the three real Portico binaries against the
//! real PostgreSQL and NATS JetStream, each test with its own database and its own
//! stream prefix, so tests run in parallel without seeing each other's data.
//!
//! # Layout
//! - [`TestApp`]: one isolated Portico (database, stream prefix, processes).
//! - [`otlp`]: a fake OTLP collector that keeps the spans services export.
//! - [`sink`]: a loopback HTTP endpoint that records webhook deliveries and answers
//!   with scripted responses.
//! - [`browser`]: chromium over WebDriver for the portal's browser tests.
//! - [`diagnose`]: what the system knows about events a fault test never saw arrive.
//! - [`wait_for`]: polling a condition with a deadline (tests never sleep to pass).
//!
//! The binaries must be built first (`cargo build --workspace`); the test command in
//! the README does that.

pub mod browser;
pub mod checks;
pub mod diagnose;
pub mod otlp;
pub mod servers;
pub mod sink;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use portico_signing::jwt::{Claims, JwtVerifier};
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// JWT secret every test gateway uses.
pub const JWT_SECRET: &str = "e2e-jwt-secret";
/// Service token every test gateway accepts.
pub const SERVICE_TOKEN: &str = "e2e-service-token";
/// Operator token every test gateway accepts on the admin API.
pub const OPERATOR_TOKEN: &str = "e2e-operator-token-0123456789";
/// Secrets key (base64 of 32 bytes) every test service uses.
pub const SECRETS_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// API key pepper every test gateway uses.
pub const API_KEY_PEPPER: &str = "e2e-pepper";

/// Which Portico binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceKind {
    /// `portico-gateway`.
    Gateway,
    /// `portico-batch-processor`.
    BatchProcessor,
    /// `portico-webhook-dispatcher`.
    WebhookDispatcher,
}

impl ServiceKind {
    /// The binary's name.
    pub fn binary(self) -> &'static str {
        match self {
            ServiceKind::Gateway => "portico-gateway",
            ServiceKind::BatchProcessor => "portico-batch-processor",
            ServiceKind::WebhookDispatcher => "portico-webhook-dispatcher",
        }
    }
}

/// Where the real servers are: `PORTICO_TEST_DATABASE_URL` (a server URL; the harness
/// creates a database per test on it) and `PORTICO_TEST_NATS_URL`.
pub fn server_urls() -> (String, String) {
    let pg = std::env::var("PORTICO_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let nats = std::env::var("PORTICO_TEST_NATS_URL")
        .unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    (pg, nats)
}

/// The directory holding the built binaries (next to the test executable's `deps/`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// A running Portico process; killed when dropped.
pub struct Service {
    /// Which binary.
    pub kind: ServiceKind,
    child: Child,
    /// Addresses it reported: `http`, and `grpc` for the gateway.
    pub addrs: HashMap<String, String>,
    /// Its log file.
    pub log_path: PathBuf,
}

impl Service {
    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends SIGTERM and waits (up to `deadline`) for a clean exit; returns its status.
    pub async fn terminate(
        mut self,
        deadline: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        if let Some(pid) = self.child.id() {
            Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await?;
        }
        match tokio::time::timeout(deadline, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                let _ = self.child.kill().await;
                bail!(
                    "{:?} did not exit within {deadline:?} of SIGTERM",
                    self.kind
                )
            }
        }
    }

    /// Kills the process with SIGKILL (a crash: nothing is flushed).
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        let _ = self.child.wait().await;
        Ok(())
    }

    /// Waits for the process to exit by itself (e.g. at a failpoint).
    pub async fn wait_exit(
        mut self,
        deadline: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        Ok(tokio::time::timeout(deadline, self.child.wait())
            .await
            .context("process did not exit")??)
    }
}

/// One isolated Portico: its own database and stream prefix, and its processes.
pub struct TestApp {
    /// Unique id of this test run.
    pub id: String,
    /// URL of this test's database.
    pub database_url: String,
    /// NATS URL.
    pub nats_url: String,
    /// JetStream prefix of this test.
    pub stream_prefix: String,
    /// Pool on this test's database, for assertions.
    pub pool: PgPool,
    /// HTTP client for the REST API.
    pub http: reqwest::Client,
    /// Running services.
    pub services: HashMap<ServiceKind, Service>,
    /// Extra environment given to every service started from now on.
    pub env: Vec<(String, String)>,
    log_dir: PathBuf,
}

fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl TestApp {
    /// A database and prefix with the schema applied, and no services running yet.
    pub async fn prepare() -> anyhow::Result<Self> {
        let (pg, nats_url) = server_urls();
        Self::prepare_on(&pg, &nats_url).await
    }

    /// Like [`TestApp::prepare`], on the given PostgreSQL server (a URL of its
    /// `postgres` database) and NATS server: tests that restart the servers themselves
    /// run their own ([`servers`]).
    pub async fn prepare_on(pg: &str, nats_url: &str) -> anyhow::Result<Self> {
        install_crypto();
        let (pg, nats_url) = (pg.to_owned(), nats_url.to_owned());
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let db_name = format!("portico_t_{id}");
        let admin = PgPool::connect(&pg)
            .await
            .context("connecting to the test PostgreSQL server")?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE \"{db_name}\""
        )))
        .execute(&admin)
        .await?;
        admin.close().await;
        let mut database_url = reqwest::Url::parse(&pg)?;
        database_url.set_path(&db_name);
        let database_url = database_url.to_string();
        let log_dir = bin_dir().join("e2e-logs").join(&id);
        std::fs::create_dir_all(&log_dir)?;
        let app = Self {
            stream_prefix: format!("T{id}"),
            id,
            pool: PgPool::connect_lazy(&database_url)?,
            database_url,
            nats_url,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            services: HashMap::new(),
            env: Vec::new(),
            log_dir,
        };
        let status = app
            .command(ServiceKind::Gateway)
            .arg("migrate")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .context("running portico-gateway migrate (did you `cargo build --workspace`?)")?;
        if !status.success() {
            bail!("portico-gateway migrate failed: {status}");
        }
        Ok(app)
    }

    /// Gateway, batch-processor and webhook-dispatcher, all ready.
    pub async fn spawn() -> anyhow::Result<Self> {
        Self::spawn_with(&[], &ALL_SERVICES).await
    }

    /// The chosen services with extra environment, all ready.
    pub async fn spawn_with(
        env: &[(&str, &str)],
        services: &[ServiceKind],
    ) -> anyhow::Result<Self> {
        let mut app = Self::prepare().await?;
        app.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for kind in services {
            app.start(*kind).await?;
        }
        Ok(app)
    }

    fn command(&self, kind: ServiceKind) -> Command {
        let path = bin_dir().join(kind.binary());
        let mut cmd = Command::new(path);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &self.database_url)
            .env("NATS_URL", &self.nats_url)
            .env("PORTICO_STREAM_PREFIX", &self.stream_prefix)
            .env("PORTICO_HTTP_ADDR", "127.0.0.1:0")
            .env("PORTICO_GRPC_ADDR", "127.0.0.1:0")
            .env("PORTICO_JWT_SECRET", JWT_SECRET)
            .env("PORTICO_SERVICE_TOKEN", SERVICE_TOKEN)
            .env("PORTICO_OPERATOR_TOKEN", OPERATOR_TOKEN)
            .env("PORTICO_SECRETS_KEY", SECRETS_KEY)
            .env("PORTICO_API_KEY_PEPPER", API_KEY_PEPPER)
            .env("PORTICO_WEBHOOK_ALLOWLIST", "127.0.0.0/8,::1/128")
            .env("PORTICO_LOG_FORMAT", "json")
            .env("PORTICO_DB_MAX_CONNECTIONS", "8")
            // The same name after a restart (it takes back its own claims); extra
            // replicas get their own (start_extra).
            .env(
                "PORTICO_REPLICA_ID",
                format!("{}-{}", self.id, kind.binary()),
            )
            .env(
                "RUST_LOG",
                std::env::var("PORTICO_TEST_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .kill_on_drop(true);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts `kind` with this app's environment plus `extra`, and waits until it has
    /// reported its addresses and answers `/readyz`.
    pub async fn start_with(
        &mut self,
        kind: ServiceKind,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        self.launch(kind, extra, true).await
    }

    /// Starts `kind` and waits only until it reported its addresses, not for
    /// `/readyz` (tests of readiness itself).
    pub async fn start_unready(
        &mut self,
        kind: ServiceKind,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        self.launch(kind, extra, false).await
    }

    async fn launch(
        &mut self,
        kind: ServiceKind,
        extra: &[(&str, &str)],
        wait_ready: bool,
    ) -> anyhow::Result<()> {
        let mut cmd = self.command(kind);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (did you `cargo build --workspace`?)",
                    kind.binary()
                )
            })?;
        let log_path = self.log_dir.join(format!("{}.log", kind.binary()));
        let stdout = child.stdout.take().context("no stdout")?;
        let stderr = child.stderr.take().context("no stderr")?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<HashMap<String, String>>();
        let log_for_stdout = log_path.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            let mut file = open_append(&log_for_stdout).await;
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(serde_json::Value::Object(map)) =
                    serde_json::from_str::<serde_json::Value>(&line)
                    && map.get("message").and_then(|m| m.as_str()) == Some("listening")
                {
                    let addrs = map
                        .iter()
                        .filter(|(k, _)| *k == "http" || *k == "grpc")
                        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                        .collect();
                    let _ = tx.send(addrs);
                }
                write_line(&mut file, &line).await;
            }
        });
        let log_for_stderr = log_path.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut file = open_append(&log_for_stderr).await;
            while let Ok(Some(line)) = lines.next_line().await {
                write_line(&mut file, &line).await;
            }
        });
        let addrs = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .ok()
            .flatten()
            .with_context(|| {
                format!(
                    "{} never reported its addresses; see {}",
                    kind.binary(),
                    log_path.display()
                )
            })?;
        let http = addrs.get("http").cloned().context("no http address")?;
        let client = self.http.clone();
        let ready_within = if wait_ready {
            Duration::from_secs(30)
        } else {
            Duration::ZERO
        };
        wait_for(ready_within, || {
            let client = client.clone();
            let url = format!("http://{http}/readyz");
            async move {
                client
                    .get(url)
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false)
            }
        })
        .await
        .or_else(|e| if wait_ready { Err(e) } else { Ok(()) })
        .with_context(|| {
            format!(
                "{} never became ready; see {}",
                kind.binary(),
                log_path.display()
            )
        })?;
        self.services.insert(
            kind,
            Service {
                kind,
                child,
                addrs,
                log_path,
            },
        );
        Ok(())
    }

    /// Starts one more replica of `kind` beside the one the app already runs (e.g. a
    /// second gateway) and hands it to the test; the app's own service is untouched.
    pub async fn start_extra(
        &mut self,
        kind: ServiceKind,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Service> {
        let existing = self.services.remove(&kind);
        let replica = format!(
            "{}-{}-{}",
            self.id,
            kind.binary(),
            uuid::Uuid::new_v4().simple()
        );
        let mut extra = extra.to_vec();
        if !extra.iter().any(|(k, _)| *k == "PORTICO_REPLICA_ID") {
            extra.push(("PORTICO_REPLICA_ID", &replica));
        }
        let started = self.start_with(kind, &extra).await;
        let replica = self.services.remove(&kind);
        if let Some(service) = existing {
            self.services.insert(kind, service);
        }
        started?;
        replica.context("the extra replica did not start")
    }

    /// Starts `kind` with this app's environment.
    pub async fn start(&mut self, kind: ServiceKind) -> anyhow::Result<()> {
        self.start_with(kind, &[]).await
    }

    /// Starts `kind` expecting it to exit by itself before becoming ready (a failpoint);
    /// returns the running process without waiting for readiness.
    pub fn spawn_unready(
        &mut self,
        kind: ServiceKind,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Child> {
        let mut cmd = self.command(kind);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        Ok(cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?)
    }

    /// Removes a service from the app so the test can stop or kill it.
    pub fn take(&mut self, kind: ServiceKind) -> Service {
        self.services
            .remove(&kind)
            .unwrap_or_else(|| panic!("{kind:?} is not running"))
    }

    /// The address (`host:port`) a service reported for `name` (`http` or `grpc`).
    pub fn addr(&self, kind: ServiceKind, name: &str) -> String {
        self.services
            .get(&kind)
            .and_then(|s| s.addrs.get(name))
            .cloned()
            .unwrap_or_else(|| panic!("{kind:?} has no {name} address"))
    }

    /// `http://host:port` of the gateway's REST API, without the `/api` prefix.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr(ServiceKind::Gateway, "http"))
    }

    /// A full URL under `/api` (e.g. `api("/webhooks")`).
    pub fn api(&self, path: &str) -> String {
        format!("{}/api{path}", self.base_url())
    }

    /// `http://host:port` of the gateway's gRPC endpoint.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.addr(ServiceKind::Gateway, "grpc"))
    }

    /// A valid user JWT for `user_id`, valid for an hour.
    pub fn user_token(&self, user_id: &str) -> String {
        JwtVerifier::new(JWT_SECRET.as_bytes()).issue(&Claims {
            sub: user_id.to_owned(),
            exp: chrono::Utc::now().timestamp() + 3600,
            nbf: None,
        })
    }

    /// Stops every service (SIGTERM), then deletes the stream and drops the database.
    pub async fn cleanup(mut self) {
        for (_, service) in self.services.drain() {
            let _ = service.terminate(Duration::from_secs(20)).await;
        }
        if let Ok(client) = async_nats::connect(&self.nats_url).await {
            let js = async_nats::jetstream::new(client);
            let _ = js
                .delete_stream(format!("{}_JOBS", self.stream_prefix))
                .await;
        }
        self.pool.close().await;
        let (pg, _) = server_urls();
        if let Ok(admin) = PgPool::connect(&pg).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"portico_t_{}\" WITH (FORCE)",
                self.id
            )))
            .execute(&admin)
            .await;
        }
        let _ = std::fs::remove_dir_all(&self.log_dir);
    }
}

/// Every service.
pub const ALL_SERVICES: [ServiceKind; 3] = [
    ServiceKind::Gateway,
    ServiceKind::BatchProcessor,
    ServiceKind::WebhookDispatcher,
];

async fn open_append(path: &PathBuf) -> Option<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
        .ok()
}

async fn write_line(file: &mut Option<tokio::fs::File>, line: &str) {
    use tokio::io::AsyncWriteExt;
    if let Some(f) = file {
        let _ = f.write_all(line.as_bytes()).await;
        let _ = f.write_all(b"\n").await;
    }
    if std::env::var_os("TEST_LOG").is_some() {
        eprintln!("{line}");
    }
}

/// Polls `condition` every 20 ms until it holds or `deadline` passes.
pub async fn wait_for<F, Fut>(deadline: Duration, mut condition: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if condition().await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= until {
            bail!("condition not met within {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts a problem+json error: the status, the media type, the stable `code`, and the
/// RFC 9457 members every problem carries; returns the body for further checks.
pub async fn assert_problem(
    res: reqwest::Response,
    status: reqwest::StatusCode,
    code: &str,
) -> anyhow::Result<serde_json::Value> {
    assert_eq!(res.status(), status);
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: serde_json::Value = res.json().await?;
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert!(
        body["title"].is_string() && body["detail"].is_string() && body["type"].is_string(),
        "{body}"
    );
    Ok(body)
}
