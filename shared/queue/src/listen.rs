//! Listen deliveries (`portico listen`): the dispatcher's NATS request to the gateway
//! replica that holds a listen endpoint's connection, and the gateway's reply.
//!
//! The request goes to [`crate::Topology::listen_subject`] of the webhook (core NATS,
//! never JetStream: a request nobody answers is a failed attempt, retried on the
//! endpoint's schedule like any other). Its NATS headers are exactly the HTTP headers
//! of the delivery (`webhook-id`, `webhook-timestamp`, `webhook-signature`,
//! `content-type`, custom headers, ...) and its payload is exactly the body, so the
//! command-line tool forwards the same bytes an HTTP delivery would have sent. The
//! reply is a JSON [`ListenReply`]: what the developer's local server answered.

use serde::{Deserialize, Serialize};

/// How the forward to the developer's local server went, as the gateway replies it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenReply {
    /// The local server's HTTP status; `None` when it gave no response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The start of the local server's response body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// How long the local request took, as the tool measured it.
    #[serde(default)]
    pub duration_ms: u64,
    /// Why no response arrived (`connect`, `timeout`, `body`), or why the gateway
    /// could not forward (`connect`: the tool's connection is gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    /// The failure in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The local server's `Retry-After` (on 429/503), as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<String>,
}

impl ListenReply {
    /// A reply for a delivery that could not be handed to the tool at all.
    pub fn failed(kind: &str, error: impl Into<String>) -> Self {
        Self {
            error_kind: Some(kind.to_owned()),
            error: Some(error.into()),
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reply's wire format is camelCase and leaves absent fields out.
    #[test]
    fn reply_wire_format() {
        let r = ListenReply {
            status: Some(200),
            body: Some("ok".into()),
            duration_ms: 12,
            ..ListenReply::default()
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"status":200,"body":"ok","durationMs":12}"#
        );
        let failed: ListenReply =
            serde_json::from_str(r#"{"errorKind":"connect","error":"refused"}"#).unwrap();
        assert_eq!(failed, ListenReply::failed("connect", "refused"));
    }
}
