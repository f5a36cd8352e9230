//! `portico listen`: a temporary listen endpoint whose deliveries arrive over a
//! WebSocket (`GET /api/v1/listen/{id}`) and are forwarded, unchanged, to a local URL;
//! the local answer goes back as the attempt's result (docs/cli.md, docs/api/webhooks.md).
//!
//! The endpoint is deleted when the tool exits (Ctrl-C, SIGTERM, `--count`); if the
//! tool dies without deleting it, the server removes it once no connection has held it
//! for its timeout. A dropped connection is reopened (the endpoint stays), with
//! backoff, until the server says the endpoint or the credential is gone.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{SecondsFormat, Utc};
use futures::{SinkExt, StreamExt};
use portico_client::Client;
use portico_client::api::listen::{
    CreateListenBody, ListenClientMessage, ListenDelivery, ListenResult, ListenServerMessage,
};
use portico_client::ids::WebhookId;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::output::{self, Format, Out};
use crate::tail::{self, Socket};

/// The local response body kept for the attempt record (the server keeps 4 KiB).
const BODY_EXCERPT: usize = 4 * 1024;

/// Headers not forwarded: the local request sets its own.
const HOP_BY_HOP: &[&str] = &["host", "content-length", "connection", "transfer-encoding"];

/// What to listen to and where to forward it.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  portico listen --events 'order.*' --forward-to http://localhost:3000/hooks
  portico listen --forward-to http://127.0.0.1:8000/webhooks -o json

Creates a temporary endpoint (owner credentials only: a user token, or the service
token with --user-id), prints its id and signing secret, then one line per delivery:
time, event type, webhook-id, local status, duration. Each delivery is POSTed to
--forward-to with the exact headers and body a real endpoint gets, so signature
verification works unchanged; the local answer is recorded as the attempt (a 5xx or
no answer is retried on the endpoint's schedule). Ctrl-C or SIGTERM deletes the
endpoint and exits 0.")]
pub struct ListenArgs {
    /// Event filters (exact, `prefix.*` or `*`); repeat or separate with commas.
    #[arg(
        long = "events",
        short = 'e',
        value_delimiter = ',',
        default_value = "*"
    )]
    events: Vec<String>,
    /// Where each delivery is POSTed (on this machine or anywhere it can reach).
    #[arg(long)]
    forward_to: reqwest::Url,
    /// Time limit of one local request, in seconds.
    #[arg(long, default_value_t = 10)]
    forward_timeout: u64,
    /// Exit (deleting the endpoint) after this many deliveries.
    #[arg(long)]
    count: Option<u64>,
}

/// One forwarded delivery, for the line printed and the result sent.
struct Forwarded {
    generation: u64,
    result: ListenResult,
    event_type: String,
    message_id: String,
}

/// Why a connection ended.
enum Ended {
    /// Ctrl-C, SIGTERM or `--count`: delete the endpoint and exit 0.
    Stop,
    /// The connection dropped: open it again.
    Dropped(String),
}

/// Runs `portico listen`.
pub async fn run(args: ListenArgs, client: &Client, out: Out) -> anyhow::Result<()> {
    tail::ws_base(client, "listen")?;
    let created = client
        .create_listen_endpoint(&CreateListenBody {
            events: args.events.clone(),
            description: Some(format!("portico listen --forward-to {}", args.forward_to)),
        })
        .await?;
    let id = WebhookId::from(created.webhook.id);
    // Announced once the server says the connection is attached, so a script that
    // publishes after reading it never races the attach.
    let ready = match out.format {
        Format::Json => Ready::Stdout(format!(
            "{}\n",
            json!({"type": "ready", "webhookId": created.webhook.id, "secret": created.secret,
                   "events": created.webhook.events, "forwardTo": args.forward_to.as_str()})
        )),
        Format::Table => Ready::Stderr(format!(
            "listening: endpoint {} for {} -> {}\nsigning secret: {}\n(Ctrl-C to stop; the endpoint is deleted on exit)",
            created.webhook.id,
            created.webhook.events.join(", "),
            args.forward_to,
            created.secret
        )),
    };
    let outcome = serve(&args, client, out, id, ready).await;
    match client.delete_webhook(id).await {
        Ok(()) => {}
        Err(portico_client::Error::Api(e)) if e.status == 404 => {}
        Err(e) => eprintln!(
            "warning: could not delete listen endpoint {}: {e} (the server removes it after its timeout)",
            created.webhook.id
        ),
    }
    outcome
}

/// Keeps a connection open, reopening it after a drop, until told to stop.
async fn serve(
    args: &ListenArgs,
    client: &Client,
    out: Out,
    id: WebhookId,
    ready: Ready,
) -> anyhow::Result<()> {
    let mut ready = Some(ready);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(args.forward_timeout.max(1)))
        .build()
        .context("building the forwarding HTTP client")?;
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    let (done_tx, mut done_rx) = mpsc::channel::<Forwarded>(256);
    let mut seen = 0u64;
    let mut generation = 0u64;
    let mut failures = 0u32;
    loop {
        generation += 1;
        let path = format!("/listen/{}", id.as_uuid());
        let socket = tokio::select! {
            s = tail::open_socket(client, "listen", &path) => s,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let mut socket = match socket {
            Ok(s) => s,
            // The server refused outright (gone, forbidden): nothing to retry.
            Err(e) if e.downcast_ref::<portico_client::Error>().is_some() => return Err(e),
            Err(e) if failures < 10 => {
                failures += 1;
                eprintln!("listen connection failed ({e}); retrying");
                tokio::time::sleep(backoff(failures)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let ended = {
            #[cfg(unix)]
            let stop = async {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            };
            #[cfg(not(unix))]
            let stop = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            tokio::pin!(stop);
            run_connection(
                &mut socket,
                ConnectionCtx {
                    args,
                    http: &http,
                    out,
                    generation,
                    done_tx: &done_tx,
                    done_rx: &mut done_rx,
                    seen: &mut seen,
                    ready: &mut ready,
                },
                &mut stop,
            )
            .await?
        };
        let _ = socket.close(None).await;
        match ended {
            Ended::Stop => return Ok(()),
            Ended::Dropped(why) => {
                failures += 1;
                if failures > 10 {
                    bail!("the listen connection keeps dropping ({why})");
                }
                eprintln!("listen connection dropped ({why}); reconnecting");
                tokio::time::sleep(backoff(failures)).await;
            }
        }
    }
}

fn backoff(failures: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << failures.min(6)))
}

struct ConnectionCtx<'a> {
    args: &'a ListenArgs,
    http: &'a reqwest::Client,
    out: Out,
    generation: u64,
    done_tx: &'a mpsc::Sender<Forwarded>,
    done_rx: &'a mut mpsc::Receiver<Forwarded>,
    seen: &'a mut u64,
    ready: &'a mut Option<Ready>,
}

/// The announcement printed when the first connection is attached.
enum Ready {
    /// `-o json`: a `ready` object on stdout.
    Stdout(String),
    /// Table output: the endpoint and its secret on stderr.
    Stderr(String),
}

/// Serves one connection: deliveries in, forwarded concurrently, results out.
async fn run_connection(
    socket: &mut Socket,
    ctx: ConnectionCtx<'_>,
    stop: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> anyhow::Result<Ended> {
    loop {
        tokio::select! {
            _ = &mut *stop => return Ok(Ended::Stop),
            done = ctx.done_rx.recv() => {
                let Some(done) = done else { return Ok(Ended::Stop) };
                print_line(ctx.out, &done)?;
                // A result of an earlier connection names a request of that
                // connection; the server has already given up on it.
                if done.generation == ctx.generation {
                    let text = serde_json::to_string(&ListenClientMessage::Result(done.result))?;
                    if let Err(e) = socket.send(Message::text(text)).await {
                        return Ok(Ended::Dropped(e.to_string()));
                    }
                }
                *ctx.seen += 1;
                if ctx.args.count.is_some_and(|n| *ctx.seen >= n) {
                    return Ok(Ended::Stop);
                }
            }
            frame = socket.next() => {
                let text = match frame {
                    None => return Ok(Ended::Dropped("closed".into())),
                    Some(Err(e)) => return Ok(Ended::Dropped(e.to_string())),
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(close))) => {
                        if let Some(close) = close {
                            let code = u16::from(close.code);
                            // 4001 credential expired, 4003 revoked, 4004 endpoint deleted.
                            if (4000..5000).contains(&code) && code != 4002 && code != 4008 {
                                bail!("the server closed the listen connection: {code} {}", close.reason);
                            }
                            return Ok(Ended::Dropped(format!("{code} {}", close.reason)));
                        }
                        return Ok(Ended::Dropped("closed".into()));
                    }
                    Some(Ok(_)) => continue,
                };
                match serde_json::from_str::<ListenServerMessage>(&text) {
                    Ok(ListenServerMessage::Ready { .. }) => match ctx.ready.take() {
                        Some(Ready::Stdout(text)) => output::write_stdout(&text)?,
                        Some(Ready::Stderr(text)) => eprintln!("{text}"),
                        None => eprintln!("listen connection attached again"),
                    },
                    Ok(ListenServerMessage::Delivery(delivery)) => {
                        let http = ctx.http.clone();
                        let url = ctx.args.forward_to.clone();
                        let tx = ctx.done_tx.clone();
                        let generation = ctx.generation;
                        tokio::spawn(async move {
                            let done = forward(&http, url, delivery, generation).await;
                            let _ = tx.send(done).await;
                        });
                    }
                    Ok(ListenServerMessage::Error { code, message }) => {
                        eprintln!("server: {code}: {message}");
                    }
                    Err(e) => eprintln!("ignoring an unknown listen message ({e})"),
                }
            }
        }
    }
}

/// POSTs one delivery to the local URL with its headers and body unchanged.
async fn forward(
    http: &reqwest::Client,
    url: reqwest::Url,
    delivery: ListenDelivery,
    generation: u64,
) -> Forwarded {
    let event_type = serde_json::from_str::<serde_json::Value>(&delivery.body)
        .ok()
        .and_then(|v| v["type"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let message_id = delivery
        .headers
        .get("webhook-id")
        .cloned()
        .unwrap_or_default();
    let headers = forwarded_headers(&delivery.headers);
    let clock = Instant::now();
    let sent = http
        .post(url)
        .headers(headers)
        .body(delivery.body)
        .send()
        .await;
    let mut result = ListenResult {
        request_id: delivery.request_id,
        ..ListenResult::default()
    };
    match sent {
        Ok(mut response) => {
            result.status = Some(response.status().as_u16());
            result.retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let mut body = Vec::new();
            while body.len() < BODY_EXCERPT {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        let room = BODY_EXCERPT - body.len();
                        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            result.body = Some(String::from_utf8_lossy(&body).into_owned());
        }
        Err(e) => {
            let kind = if e.is_timeout() {
                "timeout"
            } else if e.is_connect() {
                "connect"
            } else {
                "body"
            };
            result.error_kind = Some(kind.to_owned());
            result.error = Some(error_chain(&e));
        }
    }
    result.duration_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
    Forwarded {
        generation,
        result,
        event_type,
        message_id,
    }
}

/// The delivery's headers as sent, minus those the local request sets itself.
fn forwarded_headers(headers: &BTreeMap<String, String>) -> reqwest::header::HeaderMap {
    let mut out = reqwest::header::HeaderMap::new();
    for (name, value) in headers {
        if HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            reqwest::header::HeaderName::from_bytes(name.as_bytes()),
            reqwest::header::HeaderValue::from_str(value),
        ) {
            out.insert(n, v);
        }
    }
    out
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = Some(err);
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

/// The line (or JSON object) printed for one delivery.
fn print_line(out: Out, done: &Forwarded) -> anyhow::Result<()> {
    let time = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    let r = &done.result;
    match out.format {
        Format::Json => output::write_stdout(&format!(
            "{}\n",
            json!({"type": "delivery", "time": time, "eventType": done.event_type,
                   "webhookId": done.message_id, "status": r.status, "durationMs": r.duration_ms,
                   "errorKind": r.error_kind, "error": r.error})
        )),
        Format::Table => output::write_stdout(&format!("{}\n", line(&time, done))),
    }
}

fn line(time: &str, done: &Forwarded) -> String {
    let r = &done.result;
    let outcome = match (r.status, &r.error_kind) {
        (Some(s), _) => s.to_string(),
        (None, Some(kind)) => kind.clone(),
        (None, None) => "error".to_owned(),
    };
    format!(
        "{time} {} {} -> {outcome} ({} ms)",
        done.event_type, done.message_id, r.duration_ms
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One line per delivery: time, event type, webhook-id, local status, duration.
    #[test]
    fn delivery_line() {
        let done = Forwarded {
            generation: 1,
            result: ListenResult {
                request_id: 1,
                status: Some(200),
                duration_ms: 4,
                ..ListenResult::default()
            },
            event_type: "order.created".into(),
            message_id: "evt_1".into(),
        };
        assert_eq!(
            line("2026-12-01T06:00:00Z", &done),
            "2026-12-01T06:00:00Z order.created evt_1 -> 200 (4 ms)"
        );
    }

    /// Every signed header is forwarded; the ones the local request sets are not.
    #[test]
    fn headers_are_forwarded_unchanged() {
        let headers = BTreeMap::from([
            ("webhook-id".to_owned(), "e1".to_owned()),
            ("webhook-signature".to_owned(), "v1,abc".to_owned()),
            ("content-length".to_owned(), "3".to_owned()),
            ("host".to_owned(), "x".to_owned()),
        ]);
        let out = forwarded_headers(&headers);
        assert_eq!(out.len(), 2);
        assert_eq!(out["webhook-signature"], "v1,abc");
    }
}
