//! A webhook's deliveries, their attempts and single retries:
//! `/webhooks/{id}/deliveries`, `/webhooks/{id}/deliveries/{deliveryId}` and
//! `/webhooks/{id}/deliveries/{deliveryId}/retry`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use portico_domain::webhooks::DeliveryStatus;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// Delivery list parameters. Kept as text so the gateway reports every bad filter at
/// once, each with its own code.
#[derive(Debug, Default, Clone, Serialize, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// Only deliveries in this status.
    #[param(value_type = Option<DeliveryStatus>)]
    pub status: Option<String>,
    /// Exact event type.
    pub event_type: Option<String>,
    /// RFC 3339; deliveries created at or after.
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// RFC 3339; deliveries created before.
    #[param(format = DateTime)]
    pub until: Option<String>,
    /// 1..=500, default 50 (0 = the default).
    #[param(maximum = 500)]
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// One event on its way to one webhook.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryBody {
    /// Id.
    pub id: Uuid,
    /// The webhook.
    pub webhook_id: Uuid,
    /// The event; also the `webhook-id` header, stable across retries.
    pub event_id: Uuid,
    /// Event type.
    pub event_type: String,
    /// Where the delivery is.
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// Retry budget in force.
    pub max_retries: u32,
    /// When the next attempt is due; null when none is scheduled.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// HTTP status of the last attempt; null without a response.
    pub last_status_code: Option<u32>,
    /// Last failure; null after success.
    pub last_error: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// One page of deliveries.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(examples(crate::examples::delivery_list))]
pub struct DeliveryListBody {
    /// Newest first.
    pub data: Vec<DeliveryBody>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// One HTTP request made for a delivery.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptBody {
    /// 1-based.
    pub attempt_number: u32,
    /// Headers sent, signature included.
    pub request_headers: BTreeMap<String, String>,
    /// Null when no response came.
    pub response_status: Option<u32>,
    /// Response body, truncated.
    pub response_body: Option<String>,
    /// Request to end of response (or failure), ms.
    pub latency_ms: u64,
    /// Failure class: timeout, connect, tls, http_status, redirect, blocked_address, ...
    pub error_kind: Option<String>,
    /// Failure detail.
    pub error_message: Option<String>,
    /// When the attempt started.
    pub started_at: DateTime<Utc>,
}

/// A delivery with every attempt, oldest first. `attempts` is the list here;
/// `attemptCount` is the number the list form calls `attempts`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryDetailBody {
    /// Id.
    pub id: Uuid,
    /// The webhook.
    pub webhook_id: Uuid,
    /// The event.
    pub event_id: Uuid,
    /// Event type.
    pub event_type: String,
    /// Where the delivery is.
    pub status: DeliveryStatus,
    /// Every attempt, oldest first.
    pub attempts: Vec<AttemptBody>,
    /// Attempts made so far.
    pub attempt_count: u32,
    /// Retry budget in force.
    pub max_retries: u32,
    /// When the next attempt is due.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// HTTP status of the last attempt.
    pub last_status_code: Option<u32>,
    /// Last failure.
    pub last_error: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl DeliveryDetailBody {
    /// The detail form of a delivery: its list form plus its attempts (the one place
    /// that maps the list form's `attempts` count to `attemptCount`).
    pub fn new(delivery: DeliveryBody, attempts: Vec<AttemptBody>) -> Self {
        DeliveryDetailBody {
            id: delivery.id,
            webhook_id: delivery.webhook_id,
            event_id: delivery.event_id,
            event_type: delivery.event_type,
            status: delivery.status,
            attempts,
            attempt_count: delivery.attempts,
            max_retries: delivery.max_retries,
            next_attempt_at: delivery.next_attempt_at,
            last_status_code: delivery.last_status_code,
            last_error: delivery.last_error,
            created_at: delivery.created_at,
            updated_at: delivery.updated_at,
        }
    }
}

/// Retry options for one delivery.
#[derive(Debug, Default, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryDeliveryBody {
    /// Retries after this attempt, 0..=20 (default: the webhook's policy).
    #[schema(minimum = 0, maximum = 20)]
    pub max_retries: Option<i64>,
}
