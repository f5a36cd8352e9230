//! One live connection: who it is ([`LiveIdentity`], checked before the WebSocket
//! upgrade), what it asked for ([`ClientOp`] → [`crate::live::hub::Filter`]), and the
//! WebSocket loop ([`run_websocket`]): frames out with a per-connection `seq`, client
//! messages in, pings, the credential's expiry, stalls and shutdown.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use futures::SinkExt;
use portico_queue::live::Topic;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;
use crate::identity::{Caller, Scope};
use crate::live::hub::{Filter, Frame, Membership};
use crate::live::{CloseCode, Hub};
use crate::state::AppState;

/// Largest client message accepted (a subscribe message is a few hundred bytes).
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 16 * 1024;

/// The WebSocket read buffer. Clients send only small control messages (a longer one
/// is read in several pieces), and tungstenite zeroes this much again on every read
/// poll, which the connection's loop makes each time it wakes to write: the 128 KiB
/// default was a tenth of a subscriber's cost, 4 KiB still 11,500 instructions per
/// delivery with 10 subscribers (callgrind).
pub const READ_BUFFER_BYTES: usize = 512;

/// How pushed messages are laid out in WebSocket messages (`?batch=` at connect).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One pushed message per WebSocket message (the default).
    Single,
    /// Every pushed message ready at the time in one WebSocket message, one JSON object
    /// per line: a client following thousands of deliveries a second handles a few
    /// hundred WebSocket messages instead, and the gateway writes one per flush.
    Batched,
}

/// An authenticated live caller and when its credential stops being valid.
#[derive(Debug, Clone)]
pub struct LiveIdentity {
    /// Who.
    pub caller: Caller,
    /// The JWT's `exp` (or the ticket's record of it); the connection closes then.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Authenticates a live request before any upgrade: a `ticket` when given, otherwise
/// the request's credential exactly as every other route reads it
/// ([`crate::auth::authenticate`]; a partner already authenticated by the partner-call
/// layer is taken from `authenticated`).
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    authenticated: Option<Caller>,
    ticket: Option<&str>,
) -> Result<LiveIdentity, ApiError> {
    if let Some(ticket) = ticket.filter(|t| !t.is_empty()) {
        let (caller, expires_at) =
            state
                .live()
                .tickets()
                .redeem(ticket, Utc::now())
                .map_err(|e| ApiError::UnauthenticatedAs {
                    code: "invalid_ticket",
                    message: e.to_string(),
                })?;
        return Ok(LiveIdentity { caller, expires_at });
    }
    let caller = match authenticated {
        Some(c) => c,
        None => crate::auth::authenticate(state, headers).await?,
    };
    let expires_at = match &caller {
        Caller::User { .. } => jwt_expiry(state, headers),
        _ => None,
    };
    Ok(LiveIdentity { caller, expires_at })
}

/// The `exp` of the request's (already verified) bearer JWT.
fn jwt_expiry(state: &AppState, headers: &HeaderMap) -> Option<DateTime<Utc>> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (_, token) = value.split_once(' ')?;
    let claims = state
        .jwt()
        .verify(token.trim(), Utc::now().timestamp())
        .ok()?;
    DateTime::from_timestamp(claims.exp, 0)
}

/// A message from the client.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ClientOp {
    /// Adds topics and sets the narrowing.
    Subscribe(Subscribe),
    /// Removes topics (all when `topics` is empty or absent).
    Unsubscribe(Unsubscribe),
}

/// `{"op":"subscribe", ...}`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subscribe {
    /// `deliveries`, `batches`, `endpoints`, `credentials`.
    #[serde(default)]
    pub topics: Vec<String>,
    /// Only this webhook (deliveries, endpoints).
    #[serde(default)]
    pub webhook_id: Option<Uuid>,
    /// Only this batch (batches).
    #[serde(default)]
    pub batch_id: Option<Uuid>,
    /// Only these event types (`order.*`, an exact type or `*`).
    #[serde(default)]
    pub event_type: Option<String>,
}

/// `{"op":"unsubscribe", "topics": [...]}`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Unsubscribe {
    /// Topics to drop; empty = all.
    #[serde(default)]
    pub topics: Vec<String>,
}

/// A client message refused (sent back as `{"type":"error",...}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError {
    /// Stable code: `invalid_message`, `invalid_topic`, `invalid_event_type`,
    /// `forbidden_topic`, `unavailable`.
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
}

impl OpError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

fn parse_topics(names: &[String], caller: &Caller) -> Result<u8, OpError> {
    let mut bits = 0u8;
    for name in names {
        let topic = Topic::parse(name).ok_or_else(|| {
            OpError::new(
                "invalid_topic",
                format!("unknown topic {name:?} (deliveries, batches, endpoints, credentials)"),
            )
        })?;
        if let Caller::Partner(p) = caller {
            let allowed = match topic {
                Topic::Deliveries | Topic::Endpoints => p
                    .scopes
                    .iter()
                    .any(|s| matches!(s, Scope::WebhooksRead | Scope::WebhooksWrite)),
                Topic::Batches => p
                    .scopes
                    .iter()
                    .any(|s| matches!(s, Scope::BulkOrdersRead | Scope::BulkOrdersWrite)),
                Topic::Credentials => true,
            };
            if !allowed {
                return Err(OpError::new(
                    "forbidden_topic",
                    format!(
                        "the integration's credentials lack a scope for {}",
                        topic.as_str()
                    ),
                ));
            }
        }
        bits |= topic.bit();
    }
    Ok(bits)
}

/// The filter after `op`, for `caller`, starting from `current`.
pub fn apply(op: &ClientOp, current: &Filter, caller: &Caller) -> Result<Filter, OpError> {
    let mut next = current.clone();
    match op {
        ClientOp::Subscribe(s) => {
            if let Some(pattern) = &s.event_type {
                portico_domain::webhooks::validate_event_filter(pattern, "/eventType")
                    .map_err(|e| OpError::new("invalid_event_type", e.message))?;
            }
            next.topics |= if s.topics.is_empty() {
                // Every topic the caller may see.
                Topic::ALL
                    .iter()
                    .filter_map(|t| parse_topics(&[t.as_str().to_owned()], caller).ok())
                    .fold(0, |acc, bits| acc | bits)
            } else {
                parse_topics(&s.topics, caller)?
            };
            next.webhook_id = s.webhook_id;
            next.batch_id = s.batch_id;
            next.event_type = s.event_type.clone();
        }
        ClientOp::Unsubscribe(u) => {
            if u.topics.is_empty() {
                next = Filter::default();
            } else {
                // Any topic may be dropped, even one the caller could not add.
                for name in &u.topics {
                    let topic = Topic::parse(name).ok_or_else(|| {
                        OpError::new("invalid_topic", format!("unknown topic {name:?}"))
                    })?;
                    next.topics &= !topic.bit();
                }
            }
        }
    }
    Ok(next)
}

/// The `subscribed` reply: the connection's whole filter after the change.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscribed<'a> {
    /// Always `subscribed`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Topics now delivered.
    pub topics: Vec<&'static str>,
    /// Narrowing in force.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_id: Option<Uuid>,
    /// Narrowing in force.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<Uuid>,
    /// Narrowing in force.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<&'a str>,
}

impl<'a> Subscribed<'a> {
    /// The reply for `filter`.
    pub fn of(filter: &'a Filter) -> Self {
        Self {
            kind: "subscribed",
            topics: filter.topic_names(),
            webhook_id: filter.webhook_id,
            batch_id: filter.batch_id,
            event_type: filter.event_type.as_deref(),
        }
    }
}

/// Handles one client message and returns the reply's JSON text.
pub async fn handle_client_message(text: &str, membership: &Membership, caller: &Caller) -> String {
    let result = serde_json::from_str::<ClientOp>(text)
        .map_err(|e| OpError::new("invalid_message", e.to_string()))
        .and_then(|op| apply(&op, &membership.listener.filter(), caller));
    let reply = match result {
        Ok(filter) => {
            membership.listener.set_filter(filter.clone());
            if membership.ready().await {
                serde_json::to_string(&Subscribed::of(&filter))
            } else {
                error_json(&OpError::new(
                    "unavailable",
                    "live updates are unavailable on this replica; retry",
                ))
            }
        }
        Err(e) => error_json(&e),
    };
    reply.unwrap_or_else(|_| r#"{"type":"error","code":"internal"}"#.to_owned())
}

fn error_json(e: &OpError) -> Result<String, serde_json::Error> {
    serde_json::to_string(&serde_json::json!({
        "type": "error", "code": e.code, "message": e.message
    }))
}

/// The WebSocket loop of one connection, until the client leaves or a close code.
pub async fn run_websocket(
    mut socket: WebSocket,
    mut membership: Membership,
    identity: LiveIdentity,
    hub: Hub,
    framing: Framing,
) {
    let config = hub.config().clone();
    let stall = Duration::from_secs(config.stall_secs.max(1));
    let every = Duration::from_secs(config.ping_secs.max(1));
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let expiry = expiry_instant(identity.expires_at);
    let mut awaiting_pong = false;
    let mut seq: u64 = 0;
    let code = loop {
        tokio::select! {
            biased;
            _ = hub.shutdown().cancelled() => break CloseCode::GoingAway,
            _ = membership.listener.closed() => {
                break membership.listener.close_code().unwrap_or(CloseCode::Unavailable);
            }
            _ = tokio::time::sleep_until(expiry) => break CloseCode::CredentialExpired,
            _ = ping.tick() => {
                if awaiting_pong {
                    break CloseCode::PingTimeout;
                }
                awaiting_pong = true;
                if !send(&mut socket, Message::Ping(Default::default()), stall).await {
                    break CloseCode::TooSlow;
                }
            }
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(Message::Pong(_))) => awaiting_pong = false,
                Some(Ok(Message::Ping(_))) => {}
                Some(Ok(Message::Text(text))) => {
                    let reply = handle_client_message(text.as_str(), &membership, &identity.caller).await;
                    if !send(&mut socket, Message::Text(reply.into()), stall).await {
                        break CloseCode::TooSlow;
                    }
                }
                Some(Ok(Message::Binary(_))) => break CloseCode::ProtocolError,
            },
            frame = membership.frames.recv() => {
                let Some(frame) = frame else { break CloseCode::Unavailable };
                let sent = match framing {
                    Framing::Single => send_queued(&mut socket, &mut membership, frame, &mut seq, stall).await,
                    Framing::Batched => send_batched(&mut socket, &mut membership, frame, &mut seq, stall).await,
                };
                if !sent {
                    break CloseCode::TooSlow;
                }
            }
        }
    };
    if code == CloseCode::TooSlow {
        metrics::counter!("portico_live_closed_slow_total").increment(1);
    }
    let close = Message::Close(Some(CloseFrame {
        code: code.code(),
        reason: code.reason().into(),
    }));
    // A stalled client cannot take even this; do not wait for it long.
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(close)).await;
}

/// Sends one message, waiting at most `stall` for the client to make room.
async fn send(socket: &mut WebSocket, message: Message, stall: Duration) -> bool {
    matches!(
        tokio::time::timeout(stall, socket.send(message)).await,
        Ok(Ok(()))
    )
}

/// Frames written before one flush at most, so a busy queue still reaches the client
/// in steady writes.
const FRAMES_PER_FLUSH: usize = 64;

/// Writes `first` and every frame already queued behind it (up to
/// [`FRAMES_PER_FLUSH`]), then the `lagged` notice if frames were dropped, and flushes
/// once: one write for all of them. A flush per frame made a system call per message
/// per subscriber, the largest cost of live updates under load, and let queues
/// overflow. Waits at most `stall` for the client in all.
async fn send_queued(
    socket: &mut WebSocket,
    membership: &mut Membership,
    first: Arc<Frame>,
    seq: &mut u64,
    stall: Duration,
) -> bool {
    let frames = take_ready(membership, first, FRAMES_PER_FLUSH);
    let write = async {
        for frame in frames {
            *seq += 1;
            socket
                .feed(Message::Text(frame.render(*seq).into()))
                .await?;
        }
        if let Some(notice) = lagged_notice(membership, seq) {
            socket.feed(Message::Text(notice.into())).await?;
        }
        socket.flush().await
    };
    matches!(tokio::time::timeout(stall, write).await, Ok(Ok(())))
}

/// Frames in one batched WebSocket message at most (about 128 KiB).
const FRAMES_PER_BATCH: usize = 256;

/// Like [`send_queued`], for [`Framing::Batched`]: `first`, every frame queued behind
/// it (up to [`FRAMES_PER_BATCH`]) and the `lagged` notice, one per line, in one
/// WebSocket message built in one buffer.
async fn send_batched(
    socket: &mut WebSocket,
    membership: &mut Membership,
    first: Arc<Frame>,
    seq: &mut u64,
    stall: Duration,
) -> bool {
    let frames = take_ready(membership, first, FRAMES_PER_BATCH);
    // Each frame adds `{"seq":N,` and a newline to its tail: one allocation.
    let mut text = String::with_capacity(frames.iter().map(|f| f.tail.len() + 32).sum());
    for (i, frame) in frames.into_iter().enumerate() {
        if i > 0 {
            text.push('\n');
        }
        *seq += 1;
        frame.render_into(&mut text, *seq);
    }
    if let Some(notice) = lagged_notice(membership, seq) {
        text.push('\n');
        text.push_str(&notice);
    }
    send(socket, Message::Text(text.into()), stall).await
}

/// `first` and the frames queued behind it, `max` in all at most.
fn take_ready(membership: &mut Membership, first: Arc<Frame>, max: usize) -> Vec<Arc<Frame>> {
    let mut frames = Vec::with_capacity(max.min(membership.frames.len() + 1));
    frames.push(first);
    while frames.len() < max {
        match membership.frames.try_recv() {
            Ok(frame) => frames.push(frame),
            Err(_) => break,
        }
    }
    frames
}

/// The `lagged` notice, numbered, once the queue is drained and frames were dropped.
fn lagged_notice(membership: &Membership, seq: &mut u64) -> Option<String> {
    if !membership.frames.is_empty() {
        return None;
    }
    let missed = membership.listener.take_missed();
    if missed == 0 {
        return None;
    }
    *seq += 1;
    Some(format!(
        r#"{{"seq":{seq},"type":"lagged","missed":{missed}}}"#
    ))
}

/// The instant a credential expiring at `at` stops being valid (far away without one).
pub fn expiry_instant(at: Option<DateTime<Utc>>) -> tokio::time::Instant {
    let far = Duration::from_secs(100 * 365 * 24 * 3600);
    let wait = match at {
        Some(at) => (at - Utc::now()).to_std().unwrap_or(Duration::ZERO),
        None => far,
    };
    tokio::time::Instant::now() + wait.min(far)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> Caller {
        Caller::User {
            user_id: "u".into(),
        }
    }

    /// Subscribing adds topics and narrows; unsubscribing removes; bad names and
    /// patterns are refused; a partner needs the matching scope.
    #[test]
    fn client_messages_shape_the_filter() {
        let op: ClientOp = serde_json::from_str(
            r#"{"op":"subscribe","topics":["deliveries"],"eventType":"order.*"}"#,
        )
        .unwrap();
        let f = apply(&op, &Filter::default(), &user()).unwrap();
        assert_eq!(f.topic_names(), vec!["deliveries"]);
        assert_eq!(f.event_type.as_deref(), Some("order.*"));
        let op: ClientOp =
            serde_json::from_str(r#"{"op":"unsubscribe","topics":["deliveries"]}"#).unwrap();
        assert_eq!(apply(&op, &f, &user()).unwrap().topics, 0);
        let bad: ClientOp =
            serde_json::from_str(r#"{"op":"subscribe","topics":["nope"]}"#).unwrap();
        assert_eq!(apply(&bad, &f, &user()).unwrap_err().code, "invalid_topic");
        let bad: ClientOp =
            serde_json::from_str(r#"{"op":"subscribe","eventType":"a b"}"#).unwrap();
        assert_eq!(
            apply(&bad, &f, &user()).unwrap_err().code,
            "invalid_event_type"
        );
        let partner = Caller::Partner(crate::identity::PartnerIdentity {
            integration_id: Uuid::nil(),
            user_id: "u".into(),
            scopes: vec![Scope::BulkOrdersRead],
        });
        let op: ClientOp =
            serde_json::from_str(r#"{"op":"subscribe","topics":["batches"]}"#).unwrap();
        assert!(apply(&op, &f, &partner).is_ok());
        let op: ClientOp =
            serde_json::from_str(r#"{"op":"subscribe","topics":["deliveries"]}"#).unwrap();
        assert_eq!(
            apply(&op, &f, &partner).unwrap_err().code,
            "forbidden_topic"
        );
        assert!(serde_json::from_str::<ClientOp>(r#"{"op":"dance"}"#).is_err());
    }
}
