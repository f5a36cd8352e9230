//! The outgoing HTTP side: one shared client, the SSRF guard at connect time, and the
//! record of every attempt.
//!
//! One `reqwest::Client` (HTTP/1.1, keep-alive pool) serves every delivery of the
//! process, so a busy endpoint reuses warm connections. Its DNS resolver is
//! [`GuardedResolver`]: it resolves, keeps only addresses the SSRF rules allow, and
//! hands exactly those to the connector, so the connection is pinned to vetted
//! addresses (a DNS answer that changes between the check and the connect cannot
//! slip through). IP-literal URLs never reach a resolver, so they are checked before
//! sending. Redirects are not followed (a 3xx is a failed attempt: following it would
//! send signed data to a place the owner never registered), proxies from the
//! environment are ignored (they would bypass the guard), and every attempt has a
//! timeout covering connect, request and response.
//!
//! A listen endpoint (`portico listen`) is never sent an HTTP request: the same signed
//! headers and body go as a NATS request to the gateway replica holding the
//! developer's connection ([`ListenRoute`], `portico_queue::listen`), and its reply (the
//! developer's local server's answer) is recorded like an HTTP response. No responder
//! (the tool is disconnected) or no reply within the timeout is a failed attempt.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chrono::{DateTime, Utc};
use portico_domain::network::{Allowlist, BlockedReason, check_ip};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::endpoints::{Endpoint, EndpointTransport};
use crate::envelope::{self, PreparedEvent};

/// Response bodies are kept up to this many bytes (enough to show an error page's gist).
pub const MAX_RESPONSE_BODY: usize = 4 * 1024;

/// Why an attempt failed, as stored in `webhook_delivery_attempts.error_kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No complete response within the delivery timeout.
    Timeout,
    /// The TCP connection could not be made (refused, reset, unreachable).
    Connect,
    /// The host name did not resolve.
    Dns,
    /// Every address of the host is forbidden by the SSRF guard.
    Blocked,
    /// The endpoint answered with a status that is neither 2xx nor 3xx.
    HttpStatus,
    /// The endpoint answered 3xx; redirects are not followed.
    Redirect,
    /// The TLS handshake failed (certificate, protocol).
    Tls,
    /// Sending the body or reading the response failed mid-way.
    Body,
    /// The webhook has no active signing secret, so nothing was sent.
    Signing,
}

impl ErrorKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::Dns => "dns",
            ErrorKind::Blocked => "blocked",
            ErrorKind::HttpStatus => "http_status",
            ErrorKind::Redirect => "redirect",
            ErrorKind::Tls => "tls",
            ErrorKind::Body => "body",
            ErrorKind::Signing => "signing",
        }
    }
}

/// Everything recorded about one attempt.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// 1-based attempt number of the delivery.
    pub number: i32,
    /// When the attempt started.
    pub started_at: DateTime<Utc>,
    /// Every header sent, as a JSON object.
    pub request_headers: String,
    /// The response status, if a response arrived.
    pub status: Option<u16>,
    /// The response body, truncated to [`MAX_RESPONSE_BODY`] bytes.
    pub response_body: Option<String>,
    /// Wall time of the attempt.
    pub latency: Duration,
    /// Why it failed; `None` on a 2xx.
    pub error: Option<(ErrorKind, String)>,
    /// `Retry-After` of a 429 or 503, as a wait from the response.
    pub retry_after: Option<Duration>,
}

impl AttemptRecord {
    /// A 2xx response.
    pub fn succeeded(&self) -> bool {
        self.error.is_none() && self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// `2xx`, `3xx`, `4xx`, `5xx` or `none` (no response), for metrics.
    pub fn status_class(&self) -> &'static str {
        match self.status {
            Some(200..=299) => "2xx",
            Some(300..=399) => "3xx",
            Some(400..=499) => "4xx",
            Some(500..=599) => "5xx",
            Some(_) => "other",
            None => "none",
        }
    }
}

/// Every resolved address was refused by the SSRF guard.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves only to forbidden addresses ({addr}: {reason})")]
pub struct BlockedAddress {
    host: String,
    addr: IpAddr,
    reason: &'static str,
}

/// The resolver itself failed.
#[derive(Debug, thiserror::Error)]
#[error("resolving {host}: {source}")]
pub struct DnsFailure {
    host: String,
    source: std::io::Error,
}

/// A DNS resolver that only returns addresses the SSRF guard allows.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    allowlist: Arc<Allowlist>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allowlist = self.allowlist.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|source| DnsFailure {
                    host: host.clone(),
                    source,
                })?;
            let mut allowed: Vec<SocketAddr> = Vec::new();
            let mut refused: Option<(IpAddr, BlockedReason)> = None;
            for addr in resolved {
                match check_ip(addr.ip(), &allowlist) {
                    Ok(()) => allowed.push(addr),
                    Err(reason) => refused = Some((addr.ip(), reason)),
                }
            }
            if allowed.is_empty() {
                let (addr, reason) =
                    refused.unwrap_or((IpAddr::from([0, 0, 0, 0]), BlockedReason::Unspecified));
                return Err(Box::new(BlockedAddress {
                    host,
                    addr,
                    reason: reason.as_str(),
                })
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// Where deliveries to listen endpoints go: core NATS, on each endpoint's
/// [`portico_queue::Topology::listen_subject`].
#[derive(Clone)]
pub struct ListenRoute {
    /// The dispatcher's NATS connection.
    pub nats: async_nats::Client,
    /// Names the subjects.
    pub topology: portico_queue::Topology,
}

/// The shared outgoing client.
#[derive(Clone)]
pub struct Transport {
    client: reqwest::Client,
    allowlist: Arc<Allowlist>,
    listen: ListenRoute,
    timeout: Duration,
}

impl Transport {
    /// Builds the client: HTTP/1.1 keep-alive, guarded DNS, no redirects, no proxies,
    /// `timeout` per attempt; listen endpoints are reached through `listen`.
    pub fn new(
        allowlist: Allowlist,
        timeout: Duration,
        listen: ListenRoute,
    ) -> Result<Self, reqwest::Error> {
        let allowlist = Arc::new(allowlist);
        let client = reqwest::Client::builder()
            .http1_only()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .dns_resolver(GuardedResolver {
                allowlist: allowlist.clone(),
            })
            .build()?;
        Ok(Self {
            client,
            allowlist,
            listen,
            timeout,
        })
    }

    /// Makes one attempt and records it; never fails (a failure is a record). Call it
    /// inside the attempt's span: the W3C `traceparent` sent is that span's.
    pub async fn send(
        &self,
        endpoint: &Endpoint,
        event: &PreparedEvent,
        number: i32,
    ) -> AttemptRecord {
        let started_at = Utc::now();
        let clock = Instant::now();
        let mut record = AttemptRecord {
            number,
            started_at,
            request_headers: "{}".to_owned(),
            status: None,
            response_body: None,
            latency: Duration::ZERO,
            error: None,
            retry_after: None,
        };
        let mut headers = match envelope::request_headers(endpoint, event, started_at) {
            Ok(h) => h,
            Err(err) => {
                record.error = Some((ErrorKind::Signing, err.to_string()));
                return record;
            }
        };
        portico_telemetry::propagation::inject_current_http(&mut headers);
        record.request_headers = envelope::headers_json(&headers);
        if endpoint.transport == EndpointTransport::Listen {
            self.send_listen(endpoint, &headers, event, &mut record)
                .await;
            record.latency = clock.elapsed();
            return record;
        }
        if let Some(blocked) = self.literal_ip_refused(&endpoint.url) {
            record.error = Some((ErrorKind::Blocked, blocked));
            record.latency = clock.elapsed();
            return record;
        }
        let sent = self
            .client
            .post(endpoint.url.clone())
            .headers(headers)
            .body(event.body.clone())
            .send()
            .await;
        match sent {
            Err(err) => {
                record.error = Some((classify(&err), error_chain(&err)));
            }
            Ok(response) => {
                let status = response.status();
                record.status = Some(status.as_u16());
                if matches!(status.as_u16(), 429 | 503) {
                    record.retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| portico_domain::retry::parse_retry_after(v, Utc::now()));
                }
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                record.response_body = Some(read_truncated(response).await);
                if status.is_redirection() {
                    let target = location.unwrap_or_else(|| "no Location".to_owned());
                    record.error = Some((
                        ErrorKind::Redirect,
                        format!("{status}: redirects are not followed (to {target})"),
                    ));
                } else if !status.is_success() {
                    record.error =
                        Some((ErrorKind::HttpStatus, format!("endpoint answered {status}")));
                }
            }
        }
        record.latency = clock.elapsed();
        record
    }

    /// Hands the signed request to the gateway holding the listen connection and
    /// records its reply as the response.
    async fn send_listen(
        &self,
        endpoint: &Endpoint,
        headers: &http::HeaderMap,
        event: &PreparedEvent,
        record: &mut AttemptRecord,
    ) {
        let mut nats_headers = async_nats::HeaderMap::new();
        for (name, value) in headers {
            if let Ok(value) = value.to_str() {
                nats_headers.append(name.as_str(), value);
            }
        }
        let subject = self.listen.topology.listen_subject(endpoint.id);
        let request = async_nats::Request::new()
            .headers(nats_headers)
            .payload(event.body.clone())
            .timeout(Some(self.timeout));
        let reply = match self.listen.nats.send_request(subject, request).await {
            Ok(message) => message,
            Err(err) => {
                use async_nats::RequestErrorKind as K;
                record.error = Some(match err.kind() {
                    K::TimedOut => (
                        ErrorKind::Timeout,
                        "no answer from the portico listen connection in time".to_owned(),
                    ),
                    K::NoResponders => (
                        ErrorKind::Connect,
                        "no portico listen connection is attached to this endpoint".to_owned(),
                    ),
                    _ => (ErrorKind::Connect, format!("listen request: {err}")),
                });
                return;
            }
        };
        let reply: portico_queue::listen::ListenReply = match serde_json::from_slice(&reply.payload)
        {
            Ok(r) => r,
            Err(err) => {
                record.error = Some((ErrorKind::Body, format!("invalid listen reply: {err}")));
                return;
            }
        };
        record.status = reply.status;
        record.response_body = reply.body.map(|mut b| {
            if b.len() > MAX_RESPONSE_BODY {
                let mut cut = MAX_RESPONSE_BODY;
                while !b.is_char_boundary(cut) {
                    cut -= 1;
                }
                b.truncate(cut);
            }
            b.replace('\0', "\u{FFFD}")
        });
        match reply.status {
            None => {
                let kind = match reply.error_kind.as_deref() {
                    Some("timeout") => ErrorKind::Timeout,
                    Some("body") => ErrorKind::Body,
                    _ => ErrorKind::Connect,
                };
                let text = reply
                    .error
                    .unwrap_or_else(|| "the local server gave no response".to_owned());
                record.error = Some((kind, format!("forwarding to the local server: {text}")));
            }
            Some(status) => {
                if matches!(status, 429 | 503) {
                    record.retry_after = reply
                        .retry_after
                        .as_deref()
                        .and_then(|v| portico_domain::retry::parse_retry_after(v, Utc::now()));
                }
                if (300..400).contains(&status) {
                    record.error = Some((
                        ErrorKind::Redirect,
                        format!("{status}: redirects are not followed"),
                    ));
                } else if !(200..300).contains(&status) {
                    record.error = Some((
                        ErrorKind::HttpStatus,
                        format!("the local server answered {status}"),
                    ));
                }
            }
        }
    }

    fn literal_ip_refused(&self, url: &reqwest::Url) -> Option<String> {
        let ip: IpAddr = match url.host()? {
            url::Host::Ipv4(v4) => v4.into(),
            url::Host::Ipv6(v6) => v6.into(),
            url::Host::Domain(_) => return None,
        };
        check_ip(ip, &self.allowlist)
            .err()
            .map(|reason| format!("{ip} is a forbidden address ({})", reason.as_str()))
    }
}

/// Reads at most [`MAX_RESPONSE_BODY`] bytes of the response and drops the rest (the
/// connection is then closed rather than drained: a huge body costs us nothing). Text
/// is stored lossily as UTF-8, without NUL characters (PostgreSQL text refuses them).
async fn read_truncated(mut response: reqwest::Response) -> String {
    let mut buf = BytesMut::new();
    while buf.len() < MAX_RESPONSE_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_RESPONSE_BODY - buf.len();
                buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    String::from_utf8_lossy(&buf).replace('\0', "\u{FFFD}")
}

/// Maps a client error to its kind by looking through its causes.
fn classify(err: &reqwest::Error) -> ErrorKind {
    if err.is_timeout() {
        return ErrorKind::Timeout;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if e.is::<BlockedAddress>() {
            return ErrorKind::Blocked;
        }
        if e.is::<DnsFailure>() {
            return ErrorKind::Dns;
        }
        if e.is::<rustls::Error>() {
            return ErrorKind::Tls;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return ErrorKind::Timeout;
        }
        source = e.source();
    }
    if err.is_connect() {
        ErrorKind::Connect
    } else if err.is_body() || err.is_decode() {
        ErrorKind::Body
    } else {
        ErrorKind::Connect
    }
}

/// The error and its causes on one line, without repeats.
fn error_chain(err: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The resolver keeps allowed addresses and refuses a host whose every address is
    /// forbidden, with an error the classifier recognises.
    #[tokio::test]
    async fn resolver_filters_forbidden_addresses() {
        let open = GuardedResolver {
            allowlist: Arc::new(Allowlist::parse("127.0.0.0/8").unwrap()),
        };
        let addrs: Vec<SocketAddr> = open
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(
            addrs.iter().all(|a| a.ip().is_loopback() && a.is_ipv4()),
            "{addrs:?}"
        );
        assert!(!addrs.is_empty());
        let closed = GuardedResolver {
            allowlist: Arc::new(Allowlist::default()),
        };
        let err = match closed.resolve("localhost".parse().unwrap()).await {
            Ok(_) => panic!("loopback must be refused"),
            Err(e) => e,
        };
        assert!(err.is::<BlockedAddress>(), "{err}");
    }
}
