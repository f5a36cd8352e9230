//! `portico deliveries tail`: every delivery attempt as it is committed, one line each,
//! over the live WebSocket (`GET /api/v1/live`, docs/api/live.md).

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use portico_client::Client;
use portico_client::ids::WebhookId;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::output::{self, Format, Out};

/// What to follow.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  portico deliveries tail
  portico deliveries tail <WEBHOOK_ID> --event-type 'order.*'
  portico deliveries tail -o json | jq -c 'select(.status == \"failed\")'

Ends with Ctrl-C, after --count messages, or when the server closes the connection.")]
pub struct TailArgs {
    /// Only this webhook's deliveries.
    webhook: Option<WebhookId>,
    /// Only these event types (exact, `prefix.*` or `*`).
    #[arg(long)]
    event_type: Option<String>,
    /// Exit after this many delivery messages.
    #[arg(long)]
    count: Option<u64>,
}

/// One line of a pushed message.
fn line(m: &Value) -> String {
    let s = |k: &str| m[k].as_str().unwrap_or("").to_owned();
    match m["type"].as_str() {
        Some("delivery.attempt") => {
            let mut text = format!(
                "{} attempt {} {} {} {} -> {}",
                s("occurredAt"),
                m["attempt"],
                s("eventType"),
                s("deliveryId"),
                m["httpStatus"]
                    .as_u64()
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| s("errorKind")),
                s("status"),
            );
            if let Some(ms) = m["durationMs"].as_u64() {
                text.push_str(&format!(" ({ms} ms)"));
            }
            text
        }
        Some("delivery.state") => format!(
            "{} state {} {} -> {} ({})",
            s("occurredAt"),
            s("eventId"),
            s("deliveryId"),
            s("status"),
            s("reason")
        ),
        Some("lagged") => format!(
            "lagged: {} messages missed (see portico deliveries list)",
            m["missed"]
        ),
        Some(other) => format!("{other} {m}"),
        None => m.to_string(),
    }
}

/// A WebSocket opened by [`open_socket`].
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The `ws://` root of the client's server; `what` names the command in the error.
pub fn ws_base(client: &Client, what: &str) -> anyhow::Result<String> {
    match client.base_url().strip_prefix("http://") {
        Some(rest) => Ok(format!("ws://{rest}")),
        None => bail!(
            "{what} supports http:// servers only for now (no TLS WebSocket client in the CLI yet)"
        ),
    }
}

/// Opens the WebSocket at `path` (under `/api/v1`) with the client's credentials; a
/// refused upgrade is reported as the server's problem document.
pub async fn open_socket(client: &Client, what: &str, path: &str) -> anyhow::Result<Socket> {
    let ws_base = ws_base(client, what)?;
    let mut request = format!("{ws_base}/api/v1{path}")
        .into_client_request()
        .context("the WebSocket URL")?;
    request.headers_mut().extend(client.auth_headers().clone());
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(response) => {
                let status = response.status().as_u16();
                let body = response.body().clone().unwrap_or_default();
                anyhow::Error::new(portico_client::Error::Api(Box::new(
                    portico_client::ApiError::from_parts(status, response.headers(), &body),
                )))
            }
            other => anyhow::anyhow!("cannot open the live connection: {other}"),
        })?;
    Ok(socket)
}

/// Runs `portico deliveries tail`.
pub async fn run(args: TailArgs, client: &Client, out: Out) -> anyhow::Result<()> {
    let mut socket = open_socket(client, "deliveries tail", "/live").await?;
    let mut subscribe = json!({"op": "subscribe", "topics": ["deliveries"]});
    if let Some(id) = args.webhook {
        subscribe["webhookId"] = json!(id);
    }
    if let Some(t) = &args.event_type {
        subscribe["eventType"] = json!(t);
    }
    socket.send(Message::text(subscribe.to_string())).await?;
    let mut seen = 0u64;
    loop {
        let frame = tokio::select! {
            frame = socket.next() => frame,
            _ = tokio::signal::ctrl_c() => break,
        };
        let Some(frame) = frame else { break };
        let text = match frame? {
            Message::Text(text) => text,
            Message::Close(close) => {
                if let Some(close) = close
                    && u16::from(close.code) >= 4000
                {
                    bail!(
                        "the server closed the connection: {} {}",
                        u16::from(close.code),
                        close.reason
                    );
                }
                break;
            }
            _ => continue,
        };
        let message: Value = serde_json::from_str(&text).context("a live message is not JSON")?;
        match message["type"].as_str() {
            Some("subscribed") => {
                eprintln!("subscribed: waiting for deliveries (Ctrl-C to stop)");
                continue;
            }
            Some("error") => bail!(
                "{}: {}",
                message["code"].as_str().unwrap_or("error"),
                message["message"].as_str().unwrap_or("")
            ),
            _ => {}
        }
        match out.format {
            Format::Json => output::write_stdout(&format!("{message}\n"))?,
            Format::Table => output::write_stdout(&format!("{}\n", line(&message)))?,
        }
        seen += 1;
        if args.count.is_some_and(|n| seen >= n) {
            break;
        }
    }
    let _ = socket.close(None).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An attempt prints as one line with its outcome.
    #[test]
    fn attempt_line() {
        let m = json!({"type": "delivery.attempt", "occurredAt": "2026-12-01T03:00:00Z", "attempt": 2,
            "eventType": "order.created", "deliveryId": "d1", "httpStatus": 503, "status": "retrying", "durationMs": 41});
        assert_eq!(
            line(&m),
            "2026-12-01T03:00:00Z attempt 2 order.created d1 503 -> retrying (41 ms)"
        );
        let m = json!({"type": "delivery.attempt", "occurredAt": "t", "attempt": 1,
            "eventType": "x", "deliveryId": "d", "errorKind": "timeout", "status": "failed"});
        assert_eq!(line(&m), "t attempt 1 x d timeout -> failed");
    }
}
