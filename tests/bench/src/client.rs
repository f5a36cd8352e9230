//! The load client: keep-alive HTTP/1.1 connections on raw hyper (no pool, no
//! redirects, no decompression: a few microseconds per request), driven closed-loop
//! (N connections, each sending its next request when the previous one answered) or
//! open-loop (a fixed schedule of requests per second, whatever the answers do).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

use crate::hist::Histogram;

/// Where requests go.
#[derive(Debug, Clone)]
pub struct Target {
    /// Socket address.
    pub addr: SocketAddr,
    host: HeaderValue,
}

impl Target {
    /// A target from `http://host:port` (only plain HTTP on an IP address).
    pub fn parse(base_url: &str) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(base_url).with_context(|| format!("URL {base_url}"))?;
        let addrs = url
            .socket_addrs(|| Some(80))
            .with_context(|| format!("resolving {base_url}"))?;
        let addr = *addrs.first().context("no address")?;
        Ok(Self {
            addr,
            host: HeaderValue::from_str(&addr.to_string())?,
        })
    }

    /// A target at a socket address.
    pub fn at(addr: SocketAddr) -> Self {
        Self {
            addr,
            host: HeaderValue::from_str(&addr.to_string())
                .unwrap_or(HeaderValue::from_static("localhost")),
        }
    }
}

/// A request shape: method, path and headers, to which each request adds its body.
#[derive(Debug, Clone)]
pub struct Template {
    method: Method,
    path: String,
    headers: HeaderMap,
}

impl Template {
    /// A request to `path` on `target`.
    pub fn new(target: &Target, method: Method, path: &str) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, target.host.clone());
        Self {
            method,
            path: path.to_owned(),
            headers,
        }
    }

    /// Adds a header (invalid names or values are ignored: they are the bench's own).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            self.headers.insert(n, v);
        }
        self
    }

    /// `Content-Type: application/json`.
    pub fn json(self) -> Self {
        self.header(CONTENT_TYPE.as_str(), "application/json")
    }

    /// `Authorization: <value>`.
    pub fn auth(self, value: &str) -> Self {
        self.header(AUTHORIZATION.as_str(), value)
    }

    /// The request with `body`.
    pub fn build(&self, body: Bytes) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.path.parse().unwrap_or_default();
        *req.headers_mut() = self.headers.clone();
        req
    }

    /// The request with another path (same method and headers).
    pub fn build_at(&self, path: &str, body: Bytes) -> Request<Full<Bytes>> {
        let mut req = self.build(body);
        *req.uri_mut() = path.parse().unwrap_or_default();
        req
    }
}

/// One keep-alive connection that reconnects after an error.
pub struct Conn {
    target: Target,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    /// A connection to `target`, opened lazily by the first request.
    pub fn new(target: &Target) -> Self {
        Self {
            target: target.clone(),
            sender: None,
        }
    }

    async fn open(&mut self) -> anyhow::Result<&mut SendRequest<Full<Bytes>>> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = tokio::net::TcpStream::connect(self.target.addr).await?;
            stream.set_nodelay(true)?;
            let (sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            self.sender = Some(sender);
        }
        self.sender.as_mut().context("no connection")
    }

    /// Sends `req` and reads the whole answer.
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> anyhow::Result<(StatusCode, Bytes)> {
        let result = async {
            let sender = self.open().await?;
            sender.ready().await?;
            let response = sender.send_request(req).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        }
        .await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }
}

/// Builds the request of operation `op` (0, 1, 2, ...).
pub type MakeRequest = Arc<dyn Fn(u64) -> Request<Full<Bytes>> + Send + Sync>;

/// What a driver measured.
#[derive(Debug)]
pub struct LoadStats {
    /// Operations answered 2xx.
    pub ok: u64,
    /// Operations that failed (after retries, for the closed loop).
    pub failed: u64,
    /// Attempts retried.
    pub retried: u64,
    /// First failure, for the report.
    pub first_error: Option<String>,
    /// From the first request to the last answer.
    pub elapsed: Duration,
    /// Request sent to answer read, ns (service time).
    pub service: Histogram,
    /// Scheduled time to answer read, ns (open loop: includes being late).
    pub response: Histogram,
    /// How late requests left against their schedule, ns (open loop).
    pub lag: Histogram,
}

impl LoadStats {
    fn new() -> Self {
        Self {
            ok: 0,
            failed: 0,
            retried: 0,
            first_error: None,
            elapsed: Duration::ZERO,
            service: Histogram::new(),
            response: Histogram::new(),
            lag: Histogram::new(),
        }
    }

    /// Successful operations per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

#[derive(Default)]
struct Shared {
    ok: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some(what);
        }
    }

    fn into_stats(self, stats: &mut LoadStats) {
        stats.ok = self.ok.into_inner();
        stats.failed = self.failed.into_inner();
        stats.retried = self.retried.into_inner();
        stats.first_error = self
            .first_error
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
    }
}

fn describe(status: StatusCode, body: &Bytes) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    format!("HTTP {status}: {text}")
}

/// Closed loop: `conns` connections send operations `0..total` (or until `deadline`)
/// as fast as answers come back. A failed operation (transport error, 5xx or 429) is
/// retried up to `retries` times; any other answer is final.
pub async fn closed_loop(
    target: &Target,
    conns: usize,
    total: u64,
    deadline: Option<Duration>,
    retries: u32,
    make: MakeRequest,
) -> LoadStats {
    let shared = Arc::new(Shared::default());
    let next = Arc::new(AtomicU64::new(0));
    let stats = Arc::new(LoadStats::new());
    let started = Instant::now();
    let until = deadline.map(|d| started + d);
    let mut tasks = Vec::new();
    for _ in 0..conns.max(1) {
        let (target, shared, next, stats, make) = (
            target.clone(),
            shared.clone(),
            next.clone(),
            stats.clone(),
            make.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(&target);
            loop {
                if until.is_some_and(|u| Instant::now() >= u) {
                    break;
                }
                let op = next.fetch_add(1, Ordering::Relaxed);
                if op >= total {
                    break;
                }
                let mut attempt = 0;
                loop {
                    let sent = Instant::now();
                    let result = conn.send(make(op)).await;
                    let took = sent.elapsed().as_nanos() as u64;
                    let retryable = match &result {
                        Ok((s, _)) if s.is_success() => {
                            stats.service.record(took);
                            shared.ok.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Ok((s, _)) => s.is_server_error() || *s == StatusCode::TOO_MANY_REQUESTS,
                        Err(_) => true,
                    };
                    if retryable && attempt < retries {
                        attempt += 1;
                        shared.retried.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20 * attempt as u64)).await;
                        continue;
                    }
                    shared.fail(match result {
                        Ok((s, b)) => describe(s, &b),
                        Err(e) => format!("{e:#}"),
                    });
                    break;
                }
            }
        }));
    }
    collect(tasks, started, stats, shared).await
}

/// Open loop: operation `i` is due at `start + i / rate`, for `duration`; `workers`
/// connections share the schedule (worker `k` sends operations `k`, `k + workers`, ...),
/// so a slow answer makes the next requests late, and that lateness is measured
/// (`lag`, and `response` from the scheduled time) instead of hidden. An answer counts
/// as success when it is 2xx, or exactly `expect` when given.
pub async fn open_loop(
    target: &Target,
    rate: f64,
    duration: Duration,
    workers: usize,
    expect: Option<u16>,
    make: MakeRequest,
) -> LoadStats {
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let workers = workers.max(1) as u64;
    let shared = Arc::new(Shared::default());
    let stats = Arc::new(LoadStats::new());
    // Connections are opened before the clock starts, so the first requests do not
    // pay for TCP handshakes.
    let mut conns = Vec::new();
    for _ in 0..workers {
        let mut conn = Conn::new(target);
        let _ = conn.open().await;
        conns.push(conn);
    }
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let started = Instant::now() + Duration::from_millis(20);
    let interval_ns = 1e9 / rate.max(1e-9);
    let mut tasks = Vec::new();
    for (k, mut conn) in conns.into_iter().enumerate() {
        let (shared, stats, make) = (shared.clone(), stats.clone(), make.clone());
        tasks.push(tokio::spawn(async move {
            let mut op = k as u64;
            while op < total {
                let due = start + Duration::from_nanos((op as f64 * interval_ns) as u64);
                tokio::time::sleep_until(due).await;
                let sent = tokio::time::Instant::now();
                stats
                    .lag
                    .record(sent.saturating_duration_since(due).as_nanos() as u64);
                match conn.send(make(op)).await {
                    Ok((s, _)) if expect.map_or(s.is_success(), |e| s.as_u16() == e) => {
                        let done = tokio::time::Instant::now();
                        stats.service.record((done - sent).as_nanos() as u64);
                        stats
                            .response
                            .record(done.saturating_duration_since(due).as_nanos() as u64);
                        shared.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((s, b)) => shared.fail(describe(s, &b)),
                    Err(e) => shared.fail(format!("{e:#}")),
                }
                op += workers;
            }
        }));
    }
    collect(tasks, started, stats, shared).await
}

/// Waits for a run's connection tasks and folds their counters into its figures.
async fn collect(
    tasks: Vec<tokio::task::JoinHandle<()>>,
    started: Instant,
    stats: Arc<LoadStats>,
    shared: Arc<Shared>,
) -> LoadStats {
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed();
    let mut stats = Arc::try_unwrap(stats).unwrap_or_else(|_| LoadStats::new());
    stats.elapsed = elapsed;
    if let Ok(shared) = Arc::try_unwrap(shared) {
        shared.into_stats(&mut stats);
    }
    stats
}
