//! Listen endpoints (`portico listen`): `POST /listen` creates one, and the WebSocket
//! `GET /listen/{id}` carries its deliveries to the tool and the tool's results back.
//!
//! The WebSocket messages are JSON text frames: the server sends
//! [`ListenServerMessage`]s (`ready`, then one `delivery` per attempt), the tool answers
//! each delivery with a [`ListenClientMessage::Result`] carrying the same `requestId`.
//! The protocol is documented in `docs/api/webhooks.md` ("Listen endpoints").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// A listen endpoint to create (`POST /listen`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateListenBody {
    /// 1-100 filters: exact event types, `prefix.*` or `*`.
    #[serde(default)]
    #[schema(schema_with = crate::schema::event_filters)]
    pub events: Vec<String>,
    /// Up to 1,024 characters (the tool records where it forwards).
    #[schema(max_length = 1024)]
    pub description: Option<String>,
}

/// One delivery attempt handed to the tool: forward `body` with `headers`, unchanged,
/// and answer with a result of the same `requestId`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenDelivery {
    /// Names this attempt on this connection; the result must repeat it.
    pub request_id: u64,
    /// The listen endpoint.
    pub webhook_id: Uuid,
    /// Every HTTP header of the delivery (`webhook-id`, `webhook-timestamp`,
    /// `webhook-signature`, `content-type`, ...), lower-case names.
    pub headers: BTreeMap<String, String>,
    /// The request body, byte for byte (the Standard Webhooks JSON body).
    pub body: String,
}

/// A message from the server on the listen WebSocket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum ListenServerMessage {
    /// The connection is attached: deliveries to `webhookId` come here from now on.
    Ready {
        /// The listen endpoint.
        webhook_id: Uuid,
    },
    /// A delivery attempt to forward.
    Delivery(ListenDelivery),
    /// A client message was refused (`invalid_message`).
    Error {
        /// Stable code.
        code: String,
        /// What is wrong.
        message: String,
    },
}

/// What the tool's local request gave, for one delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenResult {
    /// The delivery's `requestId`.
    pub request_id: u64,
    /// The local server's status; absent when it gave no response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The start of the local response body (the server keeps 4 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// How long the local request took.
    #[serde(default)]
    pub duration_ms: u64,
    /// Without a response: `connect`, `timeout` or `body`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    /// Without a response: what went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The local server's `Retry-After` on a 429 or 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<String>,
}

/// A message from the tool on the listen WebSocket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ListenClientMessage {
    /// The outcome of one delivery.
    Result(ListenResult),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire shapes the tool and the server agree on.
    #[test]
    fn wire_format() {
        let ready = ListenServerMessage::Ready {
            webhook_id: Uuid::nil(),
        };
        assert_eq!(
            serde_json::to_string(&ready).unwrap(),
            r#"{"type":"ready","webhookId":"00000000-0000-0000-0000-000000000000"}"#
        );
        let delivery = ListenServerMessage::Delivery(ListenDelivery {
            request_id: 7,
            webhook_id: Uuid::nil(),
            headers: BTreeMap::from([("webhook-id".into(), "e".into())]),
            body: "{}".into(),
        });
        let text = serde_json::to_string(&delivery).unwrap();
        assert!(
            text.starts_with(r#"{"type":"delivery","requestId":7,"#),
            "{text}"
        );
        let result: ListenClientMessage =
            serde_json::from_str(r#"{"op":"result","requestId":7,"status":200,"durationMs":3}"#)
                .unwrap();
        assert_eq!(
            result,
            ListenClientMessage::Result(ListenResult {
                request_id: 7,
                status: Some(200),
                duration_ms: 3,
                ..ListenResult::default()
            })
        );
    }
}
