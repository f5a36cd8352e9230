//! The loopback sink: a minimal hyper HTTP/1.1 server that receives Portico's webhook
//! deliveries, answers `200` with an empty body, and counts.
//!
//! It is written to cost far less CPU than what it measures: no routing framework, no
//! JSON parsing, no locks on the hot path. The endpoint comes from the path
//! (`/e/<index>`), the event's sequence number and send time from a byte search in the
//! body (`"seq":N`, `"sentAtNanos":N`, both put in the event's `data` by the bench).
//! A bitmap over (event, endpoint) tells first deliveries from duplicates, so "every
//! delivery arrived" is exact. The sink runs on its own small tokio runtime whose
//! threads it knows, so it can report its own CPU time apart from the load generator.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use crate::hist::Histogram;

/// Nanoseconds since the Unix epoch: the clock both the publisher (in `sentAtNanos`)
/// and the sink read, in the same process.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// What one measurement expects: `events` events (sequence numbers `0..events`) to
/// each of `endpoints` endpoints.
#[derive(Debug)]
pub struct Tracker {
    events: u64,
    endpoints: u64,
    warmup: u64,
    seen: Box<[AtomicU64]>,
    unique: AtomicU64,
    duplicates: AtomicU64,
    unmatched: AtomicU64,
    first_ns: AtomicU64,
    last_ns: AtomicU64,
    mark_lo: u64,
    mark_lo_ns: AtomicU64,
    mark_hi: u64,
    mark_hi_ns: AtomicU64,
    /// Publisher send time (`sentAtNanos`) to arrival, for events past the warm-up.
    pub latency: Histogram,
    /// The event's accepted time (body `timestamp`, when it has sub-second digits) to
    /// arrival, for events past the warm-up.
    pub accepted_latency: Histogram,
}

impl Tracker {
    /// Expects `events` x `endpoints` deliveries; latencies of events whose sequence
    /// number is below `warmup` are not recorded.
    pub fn new(events: u64, endpoints: u64, warmup: u64) -> Self {
        let bits = events.saturating_mul(endpoints.max(1));
        let expected = bits;
        Self {
            events,
            endpoints: endpoints.max(1),
            warmup,
            seen: (0..bits.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            unique: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            unmatched: AtomicU64::new(0),
            first_ns: AtomicU64::new(u64::MAX),
            last_ns: AtomicU64::new(0),
            mark_lo: (expected / 10).max(1),
            mark_lo_ns: AtomicU64::new(0),
            mark_hi: (expected * 9 / 10).max(1),
            mark_hi_ns: AtomicU64::new(0),
            latency: Histogram::new(),
            accepted_latency: Histogram::new(),
        }
    }

    /// Deliveries expected in total.
    pub fn expected(&self) -> u64 {
        self.events * self.endpoints
    }

    /// Distinct (event, endpoint) deliveries received.
    pub fn unique(&self) -> u64 {
        self.unique.load(Ordering::Relaxed)
    }

    /// Deliveries received again (at-least-once redeliveries).
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }

    /// Requests that named no expected endpoint or event.
    pub fn unmatched(&self) -> u64 {
        self.unmatched.load(Ordering::Relaxed)
    }

    /// Arrival time (ns since the epoch) of the first delivery, if any.
    pub fn first_ns(&self) -> Option<u64> {
        match self.first_ns.load(Ordering::Relaxed) {
            u64::MAX => None,
            v => Some(v),
        }
    }

    /// Arrival time of the latest delivery, if any.
    pub fn last_ns(&self) -> Option<u64> {
        match self.last_ns.load(Ordering::Relaxed) {
            0 => None,
            v => Some(v),
        }
    }

    /// Deliveries per second between the 10 % and the 90 % marks of the expected
    /// total: the steady state, without ramp-up and tail.
    pub fn steady_rate(&self) -> Option<f64> {
        let lo = self.mark_lo_ns.load(Ordering::Relaxed);
        let hi = self.mark_hi_ns.load(Ordering::Relaxed);
        (lo > 0 && hi > lo).then(|| (self.mark_hi - self.mark_lo) as f64 / ((hi - lo) as f64 / 1e9))
    }

    fn deliver(&self, endpoint: u64, body: &[u8], now: u64) {
        let Some(seq) = find_number(body, b"\"seq\"") else {
            self.unmatched.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if endpoint >= self.endpoints || seq >= self.events {
            self.unmatched.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let bit = seq * self.endpoints + endpoint;
        let mask = 1u64 << (bit % 64);
        if self.seen[(bit / 64) as usize].fetch_or(mask, Ordering::Relaxed) & mask != 0 {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let n = self.unique.fetch_add(1, Ordering::Relaxed) + 1;
        self.first_ns.fetch_min(now, Ordering::Relaxed);
        self.last_ns.fetch_max(now, Ordering::Relaxed);
        if n == self.mark_lo {
            self.mark_lo_ns.store(now, Ordering::Relaxed);
        }
        if n == self.mark_hi {
            self.mark_hi_ns.store(now, Ordering::Relaxed);
        }
        if seq >= self.warmup {
            if let Some(sent) = find_number(body, b"\"sentAtNanos\"") {
                self.latency.record(now.saturating_sub(sent));
            }
            if let Some(accepted) = find_timestamp_ns(body) {
                self.accepted_latency.record(now.saturating_sub(accepted));
            }
        }
    }
}

/// The unsigned integer after `"key"` (skipping `:` and spaces), by byte search.
pub fn find_number(body: &[u8], key: &[u8]) -> Option<u64> {
    let at = body.windows(key.len()).position(|w| w == key)? + key.len();
    let rest = &body[at..];
    let start = rest.iter().position(|b| !matches!(b, b':' | b' '))?;
    let digits = &rest[start..];
    let len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    if len == 0 || len > 19 {
        return None;
    }
    std::str::from_utf8(&digits[..len]).ok()?.parse().ok()
}

/// The body's `"timestamp"` as ns since the epoch, only when it carries sub-second
/// digits (a whole-second timestamp cannot measure milliseconds).
fn find_timestamp_ns(body: &[u8]) -> Option<u64> {
    let key = b"\"timestamp\"";
    let at = body.windows(key.len()).position(|w| w == key)? + key.len();
    let rest = &body[at..];
    let open = rest.iter().position(|b| *b == b'"')? + 1;
    let len = rest[open..].iter().position(|b| *b == b'"')?;
    let text = std::str::from_utf8(&rest[open..open + len]).ok()?;
    if !text.contains('.') {
        return None;
    }
    let t = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    u64::try_from(t.timestamp_nanos_opt()?).ok()
}

/// Endpoint index from a path `/e/<index>`.
fn endpoint_of(path: &str) -> Option<u64> {
    path.strip_prefix("/e/")?.parse().ok()
}

/// Shared between the sink's connections.
#[derive(Debug)]
pub struct SinkState {
    requests: AtomicU64,
    connections: AtomicU64,
    bytes: AtomicU64,
    tracker: RwLock<Arc<Tracker>>,
}

impl SinkState {
    fn tracker(&self) -> Arc<Tracker> {
        self.tracker
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A running sink; stops (and closes every connection) when dropped.
pub struct Sink {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<SinkState>,
    threads: Arc<Mutex<Vec<u32>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    join: Option<std::thread::JoinHandle<()>>,
}

impl Sink {
    /// Starts a sink on 127.0.0.1 (free port) with `threads` runtime workers.
    pub fn start(threads: usize) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(SinkState {
            requests: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            tracker: RwLock::new(Arc::new(Tracker::new(0, 1, 0))),
        });
        let tids = Arc::new(Mutex::new(Vec::new()));
        let record_tid = {
            let tids = tids.clone();
            move || {
                if let Some(t) = crate::cpu::current_tid() {
                    tids.lock().unwrap_or_else(|p| p.into_inner()).push(t);
                }
            }
        };
        // One thread: a current-thread runtime (no work stealing, no cross-thread
        // wake-ups: the cheapest per request); more: a multi-thread one.
        let runtime = if threads <= 1 {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("bench-sink")
                .on_thread_start(record_tid.clone())
                .enable_all()
                .build()?
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serve_state = state.clone();
        let join = std::thread::Builder::new()
            .name("bench-sink-main".into())
            .spawn(move || {
                record_tid();
                runtime.block_on(async move {
                    let accept = tokio::spawn(accept_loop(listener, serve_state));
                    let _ = stopped.await;
                    accept.abort();
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(Self {
            addr,
            state,
            threads: tids,
            stop: Some(stop),
            join: Some(join),
        })
    }

    /// `http://127.0.0.1:<port>/e/<endpoint>`.
    pub fn endpoint_url(&self, endpoint: usize) -> String {
        format!("http://{}/e/{endpoint}", self.addr)
    }

    /// Starts a new measurement: deliveries from now on are checked against `tracker`.
    pub fn track(&self, tracker: Tracker) -> Arc<Tracker> {
        let tracker = Arc::new(tracker);
        *self
            .state
            .tracker
            .write()
            .unwrap_or_else(|p| p.into_inner()) = tracker.clone();
        tracker
    }

    /// Every request answered so far.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Connections accepted so far (how many the sender opened).
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::Relaxed)
    }

    /// Body bytes received so far.
    pub fn bytes(&self) -> u64 {
        self.state.bytes.load(Ordering::Relaxed)
    }

    /// Thread ids of the sink's runtime (for its CPU time).
    pub fn thread_ids(&self) -> Vec<u32> {
        self.threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// CPU time the sink's threads have used, in nanoseconds.
    pub fn cpu_ns(&self) -> u64 {
        self.thread_ids()
            .iter()
            .map(|t| crate::cpu::thread_cpu_ns(*t))
            .sum()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(join) = self.join.take() {
            let _ = join.join();
        }
    }
}

async fn accept_loop(listener: std::net::TcpListener, state: Arc<SinkState>) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        state.connections.fetch_add(1, Ordering::Relaxed);
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    state: Arc<SinkState>,
    req: Request<Incoming>,
) -> Result<Response<Empty<Bytes>>, Infallible> {
    let endpoint = endpoint_of(req.uri().path());
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let now = now_ns();
    state.requests.fetch_add(1, Ordering::Relaxed);
    state.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    if let Some(endpoint) = endpoint {
        state.tracker().deliver(endpoint, &body, now);
    }
    Ok(Response::new(Empty::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte search finds numbers however the JSON around them is spaced.
    #[test]
    fn numbers_are_found_in_delivered_bodies() {
        let body = br#"{"id":"x","type":"bench.event","timestamp":"2026-01-01T00:00:00.123456Z","data":{"seq":42,"sentAtNanos":1700000000000000000}}"#;
        assert_eq!(find_number(body, b"\"seq\""), Some(42));
        assert_eq!(
            find_number(body, b"\"sentAtNanos\""),
            Some(1_700_000_000_000_000_000)
        );
        assert_eq!(find_number(b"{\"seq\" : 7}", b"\"seq\""), Some(7));
        assert_eq!(find_number(b"{\"other\":7}", b"\"seq\""), None);
        assert!(find_timestamp_ns(body).is_some());
        assert!(find_timestamp_ns(br#"{"timestamp":"2026-01-01T00:00:00Z"}"#).is_none());
    }

    /// The bitmap counts each (event, endpoint) once and the rest as duplicates.
    #[test]
    fn duplicates_are_told_apart() {
        let t = Tracker::new(10, 2, 0);
        t.deliver(0, b"{\"seq\":3}", 1);
        t.deliver(1, b"{\"seq\":3}", 2);
        t.deliver(1, b"{\"seq\":3}", 3);
        t.deliver(2, b"{\"seq\":3}", 4);
        t.deliver(0, b"{\"seq\":10}", 5);
        assert_eq!(t.unique(), 2);
        assert_eq!(t.duplicates(), 1);
        assert_eq!(t.unmatched(), 2);
        assert_eq!(t.expected(), 20);
    }
}
