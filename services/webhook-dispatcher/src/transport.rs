//! The outgoing HTTP side: one shared client, the SSRF guard at connect time, and the
//! record of every attempt.
//!
//! One hyper client (HTTP/1.1, keep-alive pool, rustls with the platform's roots)
//! serves every delivery of the process, so a busy endpoint reuses warm connections.
//! It is hyper's own client, not reqwest: reqwest wraps every request in a redirect
//! layer even when redirects are off, which parsed the URL twice, printed it twice and
//! copied the body per attempt (about 24,000 instructions, a seventh of a delivery's
//! cost in the dispatcher; callgrind). Its DNS resolver is
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

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use portico_domain::network::{Allowlist, BlockedReason, check_ip};

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

/// What the resolver answers: the allowed addresses, or why there are none.
type Resolving = Pin<
    Box<
        dyn Future<
                Output = Result<
                    std::vec::IntoIter<SocketAddr>,
                    Box<dyn std::error::Error + Send + Sync>,
                >,
            > + Send,
    >,
>;

/// A DNS resolver that only returns addresses the SSRF guard allows.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    allowlist: Arc<Allowlist>,
}

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Resolving;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Resolving {
        self.resolve(name.as_str())
    }
}

impl GuardedResolver {
    /// Resolves `host` and keeps the addresses the allowlist and the SSRF rules allow.
    fn resolve(&self, host: &str) -> Resolving {
        let allowlist = self.allowlist.clone();
        let host = host.to_owned();
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
            Ok(allowed.into_iter())
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

/// The connector: TCP through [`GuardedResolver`], TLS for `https`.
type Connector = hyper_rustls::HttpsConnector<HttpConnector<GuardedResolver>>;

/// The shared outgoing client.
#[derive(Clone)]
pub struct Transport {
    client: Client<Connector, Full<Bytes>>,
    allowlist: Arc<Allowlist>,
    listen: ListenRoute,
    timeout: Duration,
}

impl Transport {
    /// Builds the client: HTTP/1.1 keep-alive, guarded DNS, no redirects, no proxies,
    /// certificates checked against the platform's roots, `timeout` per attempt
    /// (connect, request and response body); listen endpoints are reached through
    /// `listen`. Needs the process's rustls crypto provider installed.
    pub fn new(
        allowlist: Allowlist,
        timeout: Duration,
        listen: ListenRoute,
    ) -> Result<Self, rustls::Error> {
        let allowlist = Arc::new(allowlist);
        let provider = rustls::crypto::CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
        let verifier = rustls_platform_verifier::Verifier::new(provider.clone())?;
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut tcp = HttpConnector::new_with_resolver(GuardedResolver {
            allowlist: allowlist.clone(),
        });
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(timeout.min(Duration::from_secs(10))));
        let connector = hyper_rustls::HttpsConnector::from((tcp, Arc::new(tls)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
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
        } else {
            self.send_http(endpoint, headers, event, &mut record).await;
        }
        record.latency = clock.elapsed();
        record
    }

    /// POSTs the signed request to the endpoint's URL (after the SSRF check of an IP
    /// literal) and records the response, or why there was none.
    async fn send_http(
        &self,
        endpoint: &Endpoint,
        headers: http::HeaderMap,
        event: &PreparedEvent,
        record: &mut AttemptRecord,
    ) {
        if let Some(blocked) = self.literal_ip_refused(&endpoint.url) {
            record.error = Some((ErrorKind::Blocked, blocked));
            return;
        }
        let Some(uri) = endpoint.uri.clone() else {
            record.error = Some((
                ErrorKind::Connect,
                format!(
                    "{} is not an HTTP URL this client can send to",
                    endpoint.url
                ),
            ));
            return;
        };
        let mut request = http::Request::new(Full::new(event.body.clone()));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        let exchange = async {
            let response = self.client.request(request).await?;
            let (parts, body) = response.into_parts();
            Ok::<_, hyper_util::client::legacy::Error>((parts, read_truncated(body).await))
        };
        let (response, body) = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(answered)) => answered,
            Ok(Err(err)) => {
                record.error = Some((classify(&err), error_chain(&err)));
                return;
            }
            Err(_) => {
                record.error = Some((
                    ErrorKind::Timeout,
                    format!("no complete response within {:?}", self.timeout),
                ));
                return;
            }
        };
        let status = response.status;
        record.status = Some(status.as_u16());
        if matches!(status.as_u16(), 429 | 503) {
            record.retry_after = response
                .headers
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| portico_domain::retry::parse_retry_after(v, Utc::now()));
        }
        record.response_body = Some(body);
        if status.is_redirection() {
            let target = response
                .headers
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("no Location");
            record.error = Some((
                ErrorKind::Redirect,
                format!("{status}: redirects are not followed (to {target})"),
            ));
        } else if !status.is_success() {
            record.error = Some((ErrorKind::HttpStatus, format!("endpoint answered {status}")));
        }
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

    fn literal_ip_refused(&self, url: &url::Url) -> Option<String> {
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
async fn read_truncated(mut body: hyper::body::Incoming) -> String {
    let mut buf = BytesMut::new();
    while buf.len() < MAX_RESPONSE_BODY {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(chunk) = frame.data_ref() {
                    let room = MAX_RESPONSE_BODY - buf.len();
                    buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
            }
            None | Some(Err(_)) => break,
        }
    }
    String::from_utf8_lossy(&buf).replace('\0', "\u{FFFD}")
}

/// Maps a client error to its kind by looking through its causes.
fn classify(err: &hyper_util::client::legacy::Error) -> ErrorKind {
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
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return ErrorKind::Timeout;
            }
            // The TLS connector reports rustls's error inside an io::Error inside
            // another, and an io::Error's `source()` skips what it wraps.
            if wraps_tls_error(io) {
                return ErrorKind::Tls;
            }
        }
        source = e.source();
    }
    if err.is_connect() {
        return ErrorKind::Connect;
    }
    // A request that got a connection and then failed (reset, malformed response).
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(|h| h.is_incomplete_message() || h.is_body_write_aborted() || h.is_parse())
        {
            return ErrorKind::Body;
        }
        source = e.source();
    }
    ErrorKind::Connect
}

/// Whether `io` wraps, directly or through other io::Errors, a rustls error.
fn wraps_tls_error(io: &std::io::Error) -> bool {
    let mut inner = io.get_ref();
    while let Some(e) = inner {
        if e.is::<rustls::Error>() {
            return true;
        }
        inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref);
    }
    false
}

/// The error and its causes on one line, without repeats.
fn error_chain(err: &hyper_util::client::legacy::Error) -> String {
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
        let addrs: Vec<SocketAddr> = open.resolve("localhost").await.unwrap().collect();
        assert!(
            addrs.iter().all(|a| a.ip().is_loopback() && a.is_ipv4()),
            "{addrs:?}"
        );
        assert!(!addrs.is_empty());
        let closed = GuardedResolver {
            allowlist: Arc::new(Allowlist::default()),
        };
        let err = match closed.resolve("localhost").await {
            Ok(_) => panic!("loopback must be refused"),
            Err(e) => e,
        };
        assert!(err.is::<BlockedAddress>(), "{err}");
    }
}
