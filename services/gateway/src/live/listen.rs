//! The listen WebSocket (`GET /api/listen/{id}`) of one `portico listen` tool: while it
//! is open, this replica answers the NATS requests the dispatcher sends for the listen
//! endpoint (`<prefix>.listen.<id>`, `portico_queue::listen`). Each request becomes a
//! `delivery` message to the tool, with the request's headers and body unchanged; the
//! tool forwards it to its local server and sends back a `result`, which becomes the
//! request's reply, so the dispatcher records it as the attempt's result.
//!
//! Nothing here waits for the tool with a timer of its own: the dispatcher's request
//! has the delivery timeout, and a reply that comes too late is simply not heard. The
//! endpoint's `listen_seen_at` is refreshed on attach, every [`HEARTBEAT`] and on
//! close, so the dispatcher's sweep removes it only once no connection has held it for
//! `PORTICO_LISTEN_TIMEOUT_SECS`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::StreamExt;
use portico_api::listen::{ListenClientMessage, ListenDelivery, ListenResult, ListenServerMessage};
use portico_domain::ids::WebhookId;
use portico_queue::listen::ListenReply;

use crate::live::CloseCode;
use crate::live_session::{LiveIdentity, expiry_instant};
use crate::state::AppState;

/// How often an attached connection refreshes its endpoint's `listen_seen_at`.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// Deliveries handed to one tool and not answered yet; beyond it a request is answered
/// at once as failed (the tool is not keeping up), and retried on schedule.
pub const MAX_IN_FLIGHT: usize = 256;

/// How long an unanswered delivery is remembered (the dispatcher has given up on it
/// long before).
const FORGET_AFTER: Duration = Duration::from_secs(300);

/// Close code when the endpoint was deleted while the connection was open.
pub const CLOSE_ENDPOINT_GONE: u16 = 4004;

/// A delivery waiting for the tool's result.
struct InFlight {
    reply_to: async_nats::Subject,
    since: tokio::time::Instant,
}

/// Serves one attached tool until it leaves, the credential expires, the endpoint is
/// deleted or the gateway shuts down. `requests` is the subscription to the
/// endpoint's listen subject, made before the upgrade.
pub async fn run_listen_socket(
    mut socket: WebSocket,
    state: AppState,
    identity: LiveIdentity,
    webhook_id: WebhookId,
    mut requests: async_nats::Subscriber,
) {
    let hub = state.live().clone();
    let config = hub.config().clone();
    let stall = Duration::from_secs(config.stall_secs.max(1));
    let every = Duration::from_secs(config.ping_secs.max(1));
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut heartbeat =
        tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    let expiry = expiry_instant(identity.expires_at);
    let mut awaiting_pong = false;
    let mut next_request: u64 = 0;
    let mut in_flight: HashMap<u64, InFlight> = HashMap::new();
    metrics::gauge!("portico_listen_connections").increment(1.0);
    let ready = ListenServerMessage::Ready {
        webhook_id: webhook_id.as_uuid(),
    };
    let (code, reason): (u16, &str) = if !send_json(&mut socket, &ready, stall).await {
        (CloseCode::TooSlow.code(), CloseCode::TooSlow.reason())
    } else {
        loop {
            tokio::select! {
                biased;
                _ = hub.shutdown().cancelled() => break (CloseCode::GoingAway.code(), CloseCode::GoingAway.reason()),
                _ = tokio::time::sleep_until(expiry) => break (CloseCode::CredentialExpired.code(), CloseCode::CredentialExpired.reason()),
                _ = ping.tick() => {
                    if awaiting_pong {
                        break (CloseCode::PingTimeout.code(), CloseCode::PingTimeout.reason());
                    }
                    awaiting_pong = true;
                    if !send(&mut socket, Message::Ping(Default::default()), stall).await {
                        break (CloseCode::TooSlow.code(), CloseCode::TooSlow.reason());
                    }
                }
                _ = heartbeat.tick() => {
                    match crate::app::listen::touch(&state, &identity.caller, webhook_id).await {
                        Ok(()) => {}
                        Err(crate::error::ApiError::NotFound(_)) => break (CLOSE_ENDPOINT_GONE, "listen endpoint deleted"),
                        Err(err) => tracing::warn!(%err, webhook = %webhook_id.as_uuid(), "listen heartbeat not recorded; retrying at the next one"),
                    }
                    in_flight.retain(|_, f| f.since.elapsed() < FORGET_AFTER);
                }
                request = requests.next() => {
                    let Some(request) = request else {
                        break (CloseCode::Unavailable.code(), CloseCode::Unavailable.reason());
                    };
                    let Some(reply_to) = request.reply.clone() else { continue };
                    if in_flight.len() >= MAX_IN_FLIGHT {
                        reply(&state, reply_to, &ListenReply::failed("connect", "the portico listen tool has too many deliveries in flight")).await;
                        continue;
                    }
                    let delivery = match to_delivery(&request, webhook_id, next_request + 1) {
                        Ok(d) => d,
                        Err(why) => {
                            reply(&state, reply_to, &ListenReply::failed("body", why)).await;
                            continue;
                        }
                    };
                    next_request += 1;
                    in_flight.insert(next_request, InFlight { reply_to, since: tokio::time::Instant::now() });
                    if !send_json(&mut socket, &ListenServerMessage::Delivery(delivery), stall).await {
                        break (CloseCode::TooSlow.code(), CloseCode::TooSlow.reason());
                    }
                }
                incoming = socket.recv() => match incoming {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break (0, ""),
                    Some(Ok(Message::Pong(_))) => awaiting_pong = false,
                    Some(Ok(Message::Ping(_))) => {}
                    Some(Ok(Message::Text(text))) => match serde_json::from_str::<ListenClientMessage>(text.as_str()) {
                        Ok(ListenClientMessage::Result(result)) => {
                            // A result for a request already forgotten is not heard.
                            if let Some(f) = in_flight.remove(&result.request_id) {
                                reply(&state, f.reply_to, &to_reply(result)).await;
                            }
                        }
                        Err(err) => {
                            let refusal = ListenServerMessage::Error {
                                code: "invalid_message".into(),
                                message: err.to_string(),
                            };
                            if !send_json(&mut socket, &refusal, stall).await {
                                break (CloseCode::TooSlow.code(), CloseCode::TooSlow.reason());
                            }
                        }
                    },
                    Some(Ok(Message::Binary(_))) => break (CloseCode::ProtocolError.code(), CloseCode::ProtocolError.reason()),
                },
            }
        }
    };
    metrics::gauge!("portico_listen_connections").decrement(1.0);
    // Stop answering first, so the dispatcher hears "no responders" at once.
    drop(requests);
    for (_, f) in in_flight.drain() {
        reply(
            &state,
            f.reply_to,
            &ListenReply::failed("connect", "the portico listen connection closed"),
        )
        .await;
    }
    // The timeout counts from the moment the connection went away.
    if let Err(err) = crate::app::listen::touch(&state, &identity.caller, webhook_id).await
        && !matches!(err, crate::error::ApiError::NotFound(_))
    {
        tracing::warn!(%err, "listen endpoint's last-seen time not recorded on close");
    }
    if code != 0 {
        let close = Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }));
        let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(close)).await;
    }
}

/// The delivery message of one NATS request: its headers and its body, unchanged.
fn to_delivery(
    request: &async_nats::Message,
    webhook_id: WebhookId,
    request_id: u64,
) -> Result<ListenDelivery, String> {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    if let Some(map) = &request.headers {
        for (name, values) in map.iter() {
            let joined = values
                .iter()
                .map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            headers.insert(name.to_string().to_ascii_lowercase(), joined);
        }
    }
    let body = String::from_utf8(request.payload.to_vec())
        .map_err(|_| "the delivery body is not UTF-8 text".to_owned())?;
    Ok(ListenDelivery {
        request_id,
        webhook_id: webhook_id.as_uuid(),
        headers,
        body,
    })
}

/// The dispatcher's reply of a tool's result (the same fields).
fn to_reply(r: ListenResult) -> ListenReply {
    ListenReply {
        status: r.status,
        body: r.body,
        duration_ms: r.duration_ms,
        error_kind: r.error_kind,
        error: r.error,
        retry_after: r.retry_after,
    }
}

async fn reply(state: &AppState, to: async_nats::Subject, reply: &ListenReply) {
    let payload = match serde_json::to_vec(reply) {
        Ok(p) => p,
        Err(err) => {
            tracing::error!(%err, "cannot encode a listen reply");
            return;
        }
    };
    if let Err(err) = state.nats().publish(to, payload.into()).await {
        tracing::warn!(%err, "listen reply not published; the dispatcher counts a timeout");
    }
}

async fn send_json<T: serde::Serialize>(
    socket: &mut WebSocket,
    value: &T,
    stall: Duration,
) -> bool {
    match serde_json::to_string(value) {
        Ok(text) => send(socket, Message::Text(text.into()), stall).await,
        Err(_) => false,
    }
}

/// Sends one message, waiting at most `stall` for the client to make room.
async fn send(socket: &mut WebSocket, message: Message, stall: Duration) -> bool {
    matches!(
        tokio::time::timeout(stall, socket.send(message)).await,
        Ok(Ok(()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A result becomes the dispatcher's reply field for field.
    #[test]
    fn result_becomes_reply() {
        let r = ListenResult {
            request_id: 1,
            status: Some(503),
            body: Some("busy".into()),
            duration_ms: 9,
            retry_after: Some("2".into()),
            ..ListenResult::default()
        };
        let reply = to_reply(r);
        assert_eq!(reply.status, Some(503));
        assert_eq!(reply.body.as_deref(), Some("busy"));
        assert_eq!(reply.retry_after.as_deref(), Some("2"));
        assert_eq!(reply.duration_ms, 9);
    }
}
