//! Live-update subscribers attached during a measured phase (`--subscribers N`).
//!
//! Issue 16 asks for the delivery rates with live-update listeners attached, so the
//! `webhooks` and `latency` scenarios can open N WebSocket connections to the gateway
//! (`GET /api/live`, docs/api/live.md) as the phase's owner (the user whose webhooks
//! receive the events), subscribe each to the `deliveries` topic, and wait for every
//! `subscribed` reply before the first event is published: from then on, the protocol
//! says nothing committed is missed. Each connection counts the messages it receives,
//! the `lagged` notices (messages the gateway dropped because that connection's queue
//! was full) and how it ended, if the gateway closed it before the phase did.
//!
//! The connections are read on their own thread (a current-thread runtime), apart from
//! the load client's workers, so reading them does not slow the publisher; their CPU
//! time is reported separately. A reader that cannot keep up shows as `lagged`
//! notices, exactly as a slow browser would.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::report::Report;

/// How long opening and subscribing every connection may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(20);

/// The gateway's default live connections per user and replica
/// (`PORTICO_LIVE_MAX_CONNECTIONS_PER_USER`); more subscribers need a higher limit.
pub const DEFAULT_CONNECTION_LIMIT: usize = 16;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What one connection has seen so far (written by its reader task only).
#[derive(Debug, Default)]
struct Counters {
    /// `delivery.attempt` and `delivery.state` messages.
    deliveries: AtomicU64,
    /// Any other message (none expected on the deliveries topic).
    other: AtomicU64,
    /// `lagged` notices.
    lagged_notices: AtomicU64,
    /// Messages the gateway dropped for this connection (sum of the notices' `missed`).
    missed: AtomicU64,
    /// `seq` numbers skipped. The gateway numbers only what it sends (a dropped message
    /// takes no number), so a gap is a message lost on the way to the bench: none expected.
    seq_gaps: AtomicU64,
    /// How the connection ended before the phase closed it.
    ended: Mutex<Option<String>>,
}

impl Counters {
    fn end(&self, why: String) {
        *self.ended.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
    }

    fn ended(&self) -> Option<String> {
        self.ended.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether everything `expected` is accounted for (received or reported missed),
    /// or the connection is gone.
    fn settled(&self, expected: u64) -> bool {
        self.deliveries.load(Ordering::Relaxed) + self.missed.load(Ordering::Relaxed) >= expected
            || self.ended().is_some()
    }

    fn progress(&self) -> u64 {
        self.deliveries.load(Ordering::Relaxed)
            + self.other.load(Ordering::Relaxed)
            + self.lagged_notices.load(Ordering::Relaxed)
    }
}

/// The fields of a pushed message the count needs (the rest is skipped unread).
#[derive(Deserialize)]
struct Pushed<'a> {
    #[serde(default)]
    seq: u64,
    #[serde(rename = "type", borrow, default)]
    kind: &'a str,
    #[serde(default)]
    missed: u64,
}

/// N live connections, open and subscribed; [`Subscribers::finish`] closes them.
pub struct Subscribers {
    counters: Vec<Arc<Counters>>,
    stop: watch::Sender<bool>,
    join: Option<std::thread::JoinHandle<()>>,
    tid: Option<u32>,
    cpu_at_open: u64,
}

/// What one subscriber received during a phase.
#[derive(Debug, Clone)]
pub struct SubscriberStats {
    /// `delivery.attempt` and `delivery.state` messages received.
    pub deliveries: u64,
    /// Other messages.
    pub other: u64,
    /// `lagged` notices received.
    pub lagged_notices: u64,
    /// Messages the gateway dropped for it (from the notices).
    pub missed: u64,
    /// `seq` numbers skipped (lost between the gateway and the bench: none expected).
    pub seq_gaps: u64,
    /// How it ended, when the gateway (or the network) closed it first.
    pub ended: Option<String>,
}

/// Every subscriber's figures for one phase.
#[derive(Debug, Clone)]
pub struct LiveSummary {
    /// Per subscriber, in the order they were opened.
    pub subscribers: Vec<SubscriberStats>,
    /// Delivery messages each one should have seen (the phase's deliveries).
    pub expected: u64,
    /// CPU time of the thread reading them, nanoseconds.
    pub reader_cpu_ns: u64,
}

impl Subscribers {
    /// Opens `n` connections to the gateway at `base_url` as the owner of `token` (a
    /// user JWT), subscribes each to `deliveries` and returns once all have answered
    /// `subscribed`; `None` when `n` is 0. `knobs` says how many (`n`) and whether
    /// they ask for batched messages (`?batch=true`).
    pub async fn open(
        base_url: &str,
        token: &str,
        knobs: &crate::scenarios::Knobs,
    ) -> anyhow::Result<Option<Self>> {
        let n = knobs.subscribers;
        if n == 0 {
            return Ok(None);
        }
        let mut url = live_url(base_url)?;
        if knobs.live_batch {
            url.push_str("?batch=true");
        }
        let authorization = format!("Bearer {token}");
        let counters: Vec<Arc<Counters>> = (0..n).map(|_| Arc::default()).collect();
        let (stop, stopped) = watch::channel(false);
        let (ready_tx, ready_rx) = oneshot::channel::<(Option<u32>, anyhow::Result<()>)>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread_counters = counters.clone();
        let join = std::thread::Builder::new()
            .name("bench-live".into())
            .spawn(move || {
                let tid = crate::cpu::current_tid();
                runtime.block_on(async move {
                    let opened = tokio::time::timeout(OPEN_TIMEOUT, async {
                        let mut sockets = Vec::with_capacity(n);
                        for i in 0..n {
                            sockets.push(
                                connect(&url, &authorization)
                                    .await
                                    .with_context(|| format!("live subscriber {}", i + 1))?,
                            );
                        }
                        Ok::<_, anyhow::Error>(sockets)
                    })
                    .await
                    .unwrap_or_else(|_| {
                        Err(anyhow!(
                            "opening {n} live subscribers took longer than {OPEN_TIMEOUT:?}"
                        ))
                    });
                    let sockets = match opened {
                        Ok(s) => {
                            let _ = ready_tx.send((tid, Ok(())));
                            s
                        }
                        Err(e) => {
                            let _ = ready_tx.send((tid, Err(e)));
                            return;
                        }
                    };
                    let readers: Vec<_> = sockets
                        .into_iter()
                        .zip(thread_counters)
                        .map(|(socket, c)| tokio::spawn(read(socket, c, stopped.clone())))
                        .collect();
                    for r in readers {
                        let _ = r.await;
                    }
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        let (tid, result) = ready_rx
            .await
            .map_err(|_| anyhow!("the live subscriber thread ended before opening"))?;
        if let Err(e) = result {
            let _ = join.join();
            return Err(e);
        }
        let cpu_at_open = tid.map(crate::cpu::thread_cpu_ns).unwrap_or(0);
        Ok(Some(Self {
            counters,
            stop,
            join: Some(join),
            tid,
            cpu_at_open,
        }))
    }

    /// Waits until every subscriber has received (or been told it missed) `expected`
    /// delivery messages, or nothing new arrived for `quiet`; then closes them and
    /// returns what each saw.
    pub async fn finish(mut self, expected: u64, quiet: Duration) -> LiveSummary {
        let mut last = u64::MAX;
        let mut changed = Instant::now();
        loop {
            if self.counters.iter().all(|c| c.settled(expected)) {
                break;
            }
            let now: u64 = self.counters.iter().map(|c| c.progress()).sum();
            if now != last {
                last = now;
                changed = Instant::now();
            } else if changed.elapsed() > quiet {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let reader_cpu_ns = self
            .tid
            .map(crate::cpu::thread_cpu_ns)
            .unwrap_or(0)
            .saturating_sub(self.cpu_at_open);
        let subscribers = self
            .counters
            .iter()
            .map(|c| SubscriberStats {
                deliveries: c.deliveries.load(Ordering::Relaxed),
                other: c.other.load(Ordering::Relaxed),
                lagged_notices: c.lagged_notices.load(Ordering::Relaxed),
                missed: c.missed.load(Ordering::Relaxed),
                seq_gaps: c.seq_gaps.load(Ordering::Relaxed),
                ended: c.ended(),
            })
            .collect();
        let _ = self.stop.send(true);
        if let Some(join) = self.join.take() {
            let _ = tokio::task::spawn_blocking(move || join.join()).await;
        }
        LiveSummary {
            subscribers,
            expected,
            reader_cpu_ns,
        }
    }
}

impl Drop for Subscribers {
    fn drop(&mut self) {
        // A phase that failed before `finish`: the readers close their connections.
        let _ = self.stop.send(true);
    }
}

impl LiveSummary {
    /// Adds the figures (and a note for any subscriber that lagged or was closed).
    pub fn report(&self, report: &mut Report) {
        let n = self.subscribers.len();
        let sum = |f: fn(&SubscriberStats) -> u64| self.subscribers.iter().map(f).sum::<u64>();
        report.fig(
            "live_subscribers",
            "live-update subscribers (WebSocket, deliveries topic)",
            n as f64,
            "",
        );
        report.fig(
            "live_expected",
            "    delivery messages expected by each (the deliveries)",
            self.expected as f64,
            "",
        );
        for (i, s) in self.subscribers.iter().enumerate() {
            report.fig(
                &format!("live_sub{}_received", i + 1),
                &format!("    subscriber {}: delivery messages received", i + 1),
                s.deliveries as f64,
                "",
            );
            report.fig(
                &format!("live_sub{}_missed", i + 1),
                &format!("    subscriber {}: dropped for it (lagged notices)", i + 1),
                s.missed as f64,
                "",
            );
        }
        report.fig(
            "live_received_min",
            "    fewest delivery messages one subscriber received",
            self.subscribers
                .iter()
                .map(|s| s.deliveries)
                .min()
                .unwrap_or(0) as f64,
            "",
        );
        report.fig(
            "live_missed_total",
            "    messages dropped for slow subscribers, all together",
            sum(|s| s.missed) as f64,
            "",
        );
        report.fig(
            "live_lagged_subscribers",
            "    subscribers that got a lagged notice",
            self.subscribers
                .iter()
                .filter(|s| s.lagged_notices > 0)
                .count() as f64,
            "",
        );
        report.fig(
            "live_closed_subscribers",
            "    subscribers closed before the end of the phase",
            self.subscribers
                .iter()
                .filter(|s| s.ended.is_some())
                .count() as f64,
            "",
        );
        report.fig(
            "live_reader_cpu_secs",
            "    CPU of the bench thread reading them",
            self.reader_cpu_ns as f64 / 1e9,
            "s",
        );
        for (i, s) in self.subscribers.iter().enumerate() {
            let unaccounted = self.expected.saturating_sub(s.deliveries + s.missed);
            if s.lagged_notices == 0
                && s.ended.is_none()
                && s.other == 0
                && s.seq_gaps == 0
                && unaccounted == 0
            {
                continue;
            }
            report.note(format!(
                "live subscriber {}: {} delivery messages, {} other, {} lagged notice(s) \
                 ({} missed), {} seq numbers skipped, {} neither received nor reported missed; {}",
                i + 1,
                s.deliveries,
                s.other,
                s.lagged_notices,
                s.missed,
                s.seq_gaps,
                unaccounted,
                s.ended.as_deref().unwrap_or("open to the end"),
            ));
        }
    }
}

/// `ws://host:port/api/live` for the gateway at `base_url` (`http://host:port`).
fn live_url(base_url: &str) -> anyhow::Result<String> {
    let base = base_url.trim_end_matches('/');
    if let Some(rest) = base.strip_prefix("http://") {
        Ok(format!("ws://{rest}/api/live"))
    } else if let Some(rest) = base.strip_prefix("https://") {
        // The bench's WebSocket client has no TLS (the workspace builds it without).
        bail!("live subscribers need a plain-HTTP gateway URL, not https://{rest}")
    } else {
        bail!("the gateway URL {base_url:?} is not http://")
    }
}

/// Opens one connection and subscribes it to the owner's deliveries; returns once the
/// gateway answered `subscribed`.
async fn connect(url: &str, authorization: &str) -> anyhow::Result<Ws> {
    let mut request = url.into_client_request().context("the live URL")?;
    request.headers_mut().insert(
        "authorization",
        authorization.parse().context("the authorization header")?,
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(response) => {
                let body = response.body().clone().unwrap_or_default();
                anyhow!(
                    "the gateway refused the live connection: {} {}",
                    response.status(),
                    String::from_utf8_lossy(&body)
                )
            }
            other => anyhow!("cannot open the live connection: {other}"),
        })?;
    socket
        .send(Message::text(
            r#"{"op":"subscribe","topics":["deliveries"]}"#,
        ))
        .await
        .context("sending subscribe")?;
    loop {
        let frame = socket
            .next()
            .await
            .ok_or_else(|| anyhow!("the live connection closed before subscribing"))?
            .context("reading the subscribe reply")?;
        let text = match frame {
            Message::Text(text) => text,
            Message::Close(close) => bail!("the live connection was closed: {close:?}"),
            _ => continue,
        };
        let reply: serde_json::Value =
            serde_json::from_str(text.as_str()).context("the subscribe reply is not JSON")?;
        match reply["type"].as_str() {
            Some("subscribed") => return Ok(socket),
            Some("error") => bail!("subscribe refused: {text}"),
            _ => bail!("unexpected reply to subscribe: {text}"),
        }
    }
}

/// Counts what one connection receives until told to stop (then closes it) or the
/// gateway closes it.
async fn read(mut socket: Ws, counters: Arc<Counters>, mut stop: watch::Receiver<bool>) {
    let mut last_seq = 0u64;
    loop {
        tokio::select! {
            _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => {
                let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
                return;
            }
            frame = socket.next() => match frame {
                None => {
                    counters.end("the connection ended without a close frame".into());
                    return;
                }
                Some(Err(e)) => {
                    counters.end(format!("the connection failed: {e}"));
                    return;
                }
                Some(Ok(Message::Close(close))) => {
                    counters.end(match close {
                        Some(f) => format!("closed by the gateway: {} {}", u16::from(f.code), f.reason),
                        None => "closed by the gateway".into(),
                    });
                    return;
                }
                Some(Ok(Message::Text(text))) => {
                    // One pushed message, or several one per line (`?batch=true`).
                    for line in text.as_str().split('\n') {
                        count(&counters, line, &mut last_seq);
                    }
                }
                Some(Ok(_)) => {}
            }
        }
    }
}

/// Counts one pushed message.
fn count(counters: &Counters, text: &str, last_seq: &mut u64) {
    let Ok(m) = serde_json::from_str::<Pushed>(text) else {
        counters.other.fetch_add(1, Ordering::Relaxed);
        return;
    };
    if m.seq > *last_seq + 1 {
        counters
            .seq_gaps
            .fetch_add(m.seq - *last_seq - 1, Ordering::Relaxed);
    }
    if m.seq > 0 {
        *last_seq = m.seq;
    }
    match m.kind {
        "delivery.attempt" | "delivery.state" => {
            counters.deliveries.fetch_add(1, Ordering::Relaxed);
        }
        "lagged" => {
            counters.lagged_notices.fetch_add(1, Ordering::Relaxed);
            counters.missed.fetch_add(m.missed, Ordering::Relaxed);
        }
        _ => {
            counters.other.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pushed messages are counted by type; a lagged notice adds what it says was
    /// missed; a skipped seq is counted as a gap.
    #[test]
    fn counts_messages_notices_and_gaps() {
        let c = Counters::default();
        let mut last = 0;
        count(
            &c,
            r#"{"seq":1,"cursor":"x","type":"delivery.attempt","owner":"u","attempt":1}"#,
            &mut last,
        );
        count(
            &c,
            r#"{"seq":2,"type":"delivery.state","status":"failed"}"#,
            &mut last,
        );
        count(&c, r#"{"seq":3,"type":"lagged","missed":7}"#, &mut last);
        count(&c, r#"{"seq":6,"type":"endpoint.state"}"#, &mut last);
        count(&c, "not json", &mut last);
        assert_eq!(c.deliveries.load(Ordering::Relaxed), 2);
        assert_eq!(c.lagged_notices.load(Ordering::Relaxed), 1);
        assert_eq!(c.missed.load(Ordering::Relaxed), 7);
        assert_eq!(c.other.load(Ordering::Relaxed), 2);
        assert_eq!(c.seq_gaps.load(Ordering::Relaxed), 2);
        assert!(c.settled(9));
        assert!(!c.settled(10));
    }

    /// The live URL is the gateway's, with the WebSocket scheme.
    #[test]
    fn live_url_from_the_gateway_url() {
        assert_eq!(
            live_url("http://127.0.0.1:8080/").ok().as_deref(),
            Some("ws://127.0.0.1:8080/api/live")
        );
        assert!(live_url("https://example.test").is_err());
    }
}
