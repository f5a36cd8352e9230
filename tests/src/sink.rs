//! A loopback webhook receiver for tests: records every request and answers with a
//! scripted response (status, headers, delay), so delivery behaviour (retries,
//! `Retry-After`, 410, timeouts) is tested against a real HTTP endpoint.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// One request the sink received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Request path (with query).
    pub path: String,
    /// Request headers, lower-case names.
    pub headers: HeaderMap,
    /// Raw body.
    pub body: Bytes,
    /// When it arrived.
    pub at: Instant,
}

impl Received {
    /// A header as text, or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Reply {
    /// A plain status.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Delays the answer.
    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    script: VecDeque<Reply>,
    default: Option<Reply>,
    /// Requests being answered right now, and the most there ever were at once.
    in_flight: usize,
    peak_in_flight: usize,
}

/// Counts a request out of `in_flight` when its answer is done (or abandoned).
struct InFlight(Arc<Mutex<Inner>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        guard.in_flight = guard.in_flight.saturating_sub(1);
    }
}

/// A running sink; it stops when dropped.
#[derive(Clone)]
pub struct Sink {
    inner: Arc<Mutex<Inner>>,
    /// Where it listens.
    pub addr: SocketAddr,
    _guard: Arc<tokio::task::JoinHandle<()>>,
}

impl Sink {
    /// Starts a sink on 127.0.0.1 with a free port, answering 200 by default.
    pub async fn start() -> anyhow::Result<Self> {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Router::new().fallback(receive).with_state(inner.clone());
        let handle = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            inner,
            addr,
            _guard: Arc::new(handle),
        })
    }

    /// The URL of `path` on this sink.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers the next requests with these replies, in order, then the default.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.lock().script.extend(replies);
    }

    /// Answers every request not covered by a script with `reply`.
    pub fn set_default(&self, reply: Reply) {
        self.lock().default = Some(reply);
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    /// The most requests the sink was answering at once so far: what a sender's
    /// concurrency cap must bound.
    pub fn peak_in_flight(&self) -> usize {
        self.lock().peak_in_flight
    }

    /// How many requests arrived.
    pub fn count(&self) -> usize {
        self.lock().received.len()
    }

    /// Requests whose path starts with `prefix`.
    pub fn received_at(&self, prefix: &str) -> Vec<Received> {
        self.lock()
            .received
            .iter()
            .filter(|r| r.path.starts_with(prefix))
            .cloned()
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn receive(
    State(inner): State<Arc<Mutex<Inner>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = {
        let mut guard = inner.lock().unwrap_or_else(|p| p.into_inner());
        guard.in_flight += 1;
        guard.peak_in_flight = guard.peak_in_flight.max(guard.in_flight);
        guard.received.push(Received {
            path: uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            headers,
            body,
            at: Instant::now(),
        });
        guard.script.pop_front().or_else(|| guard.default.clone())
    };
    let _in_flight = InFlight(inner);
    let reply = reply.unwrap_or_else(|| Reply::status(200));
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = StatusCode::from_u16(reply.status)
        .unwrap_or(StatusCode::OK)
        .into_response();
    for (k, v) in reply.headers {
        if let (Ok(k), Ok(v)) = (
            axum::http::HeaderName::from_bytes(k.as_bytes()),
            axum::http::HeaderValue::from_str(&v),
        ) {
            response.headers_mut().insert(k, v);
        }
    }
    response
}
