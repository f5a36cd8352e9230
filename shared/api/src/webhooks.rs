//! Webhook endpoints and their signing secrets: `/webhooks`, `/webhooks/{id}`,
//! `/webhooks/{id}/secret`, `/webhooks/{id}/secret/rotate` and `/webhooks/{id}/test`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use portico_domain::webhooks::{NewWebhook, RetryPolicy, RetryPolicyPatch, WebhookPatch};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::schema::double_option;

/// Exponential backoff: `baseDelayMs * 2^(n-1)`, capped at `maxDelayMs`.
#[derive(Debug, Default, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicyInput {
    /// Retries after the first attempt, 0..=20 (default 5).
    #[schema(minimum = 0, maximum = 20)]
    pub max_retries: Option<i64>,
    /// First retry delay in ms, 100..=3,600,000 (default 1,000).
    #[schema(minimum = 100, maximum = 3_600_000)]
    pub base_delay_ms: Option<i64>,
    /// Largest delay in ms, >= baseDelayMs and <= 86,400,000 (default 300,000).
    #[schema(minimum = 100, maximum = 86_400_000)]
    pub max_delay_ms: Option<i64>,
}

impl From<RetryPolicyInput> for RetryPolicyPatch {
    fn from(p: RetryPolicyInput) -> Self {
        RetryPolicyPatch {
            max_retries: p.max_retries,
            base_delay_ms: p.base_delay_ms,
            max_delay_ms: p.max_delay_ms,
        }
    }
}

/// A webhook to create.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(examples(crate::examples::create_webhook))]
pub struct CreateWebhookBody {
    /// Absolute http(s) URL; must not reach a private, loopback, link-local or
    /// metadata address unless allowlisted.
    #[serde(default)]
    #[schema(format = "uri", example = "https://example.com/webhooks/portico")]
    pub url: String,
    /// 1-100 filters: exact event types (`order.created`), prefixes (`order.*`) or `*`
    /// (every event except Portico's own `portico.*` ones).
    #[serde(default)]
    #[schema(schema_with = crate::schema::event_filters)]
    pub events: Vec<String>,
    /// Up to 1,024 characters, without control characters other than tab and line
    /// breaks.
    #[schema(max_length = 1024)]
    pub description: Option<String>,
    /// Up to 20 custom headers sent with every delivery; reserved names are refused.
    pub headers: Option<BTreeMap<String, String>>,
    /// Unset fields take the server defaults.
    pub retry_policy: Option<RetryPolicyInput>,
    /// 1..=10,000 deliveries per second; absent = no limit.
    #[schema(minimum = 1, maximum = 10_000)]
    pub rate_limit_per_second: Option<i64>,
    /// 1..=1,000 concurrent deliveries; absent = the dispatcher's default.
    #[schema(minimum = 1, maximum = 1_000)]
    pub max_concurrency: Option<i64>,
    /// Deliver events with the same ordering key in order (default false).
    pub ordering_enabled: Option<bool>,
}

impl From<CreateWebhookBody> for NewWebhook {
    fn from(b: CreateWebhookBody) -> Self {
        NewWebhook {
            url: b.url,
            events: b.events,
            description: b.description,
            headers: b.headers.unwrap_or_default(),
            retry_policy: b.retry_policy.map(Into::into).unwrap_or_default(),
            rate_limit_per_second: b.rate_limit_per_second,
            max_concurrency: b.max_concurrency,
            ordering_enabled: b.ordering_enabled.unwrap_or(false),
        }
    }
}

// Serialized, an absent field is left out, so a client's PATCH clears nothing it did
// not name. (The doc comment is the schema's description.)
/// A partial update: absent fields keep their value; `null` clears a nullable field.
#[derive(Debug, Default, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateWebhookBody {
    /// New URL (checked like on create).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = "uri")]
    pub url: Option<String>,
    /// Replaces the filter list; must not be empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::schema::event_filters)]
    pub events: Option<Vec<String>>,
    /// New description (up to 1,024 characters); `null` removes it.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, nullable, max_length = 1024)]
    pub description: Option<Option<String>>,
    /// `true` re-enables a disabled webhook (clearing `disabledReason`); `false` disables it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// Replaces all custom headers (`{}` removes them); up to 20.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    /// Only the given fields change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<RetryPolicyInput>,
    /// New rate limit, 1..=10,000; `null` removes it.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<i64>, nullable, minimum = 1, maximum = 10_000)]
    pub rate_limit_per_second: Option<Option<i64>>,
    /// New concurrency cap, 1..=1,000; `null` returns to the default.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<i64>, nullable, minimum = 1, maximum = 1_000)]
    pub max_concurrency: Option<Option<i64>>,
    /// Turn per-key ordering on or off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ordering_enabled: Option<bool>,
}

impl From<UpdateWebhookBody> for WebhookPatch {
    fn from(b: UpdateWebhookBody) -> Self {
        WebhookPatch {
            url: b.url,
            events: b.events,
            description: b.description,
            active: b.active,
            headers: b.headers,
            retry_policy: b.retry_policy.map(Into::into),
            rate_limit_per_second: b.rate_limit_per_second,
            max_concurrency: b.max_concurrency,
            ordering_enabled: b.ordering_enabled,
        }
    }
}

/// The effective retry policy.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicyBody {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First retry delay, ms.
    pub base_delay_ms: u64,
    /// Largest delay, ms.
    pub max_delay_ms: u64,
}

impl From<RetryPolicy> for RetryPolicyBody {
    fn from(p: RetryPolicy) -> Self {
        RetryPolicyBody {
            max_retries: p.max_retries,
            base_delay_ms: p.base_delay_ms,
            max_delay_ms: p.max_delay_ms,
        }
    }
}

/// A webhook endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(examples(crate::examples::webhook))]
pub struct WebhookBody {
    /// Id.
    pub id: Uuid,
    /// Where events are POSTed.
    pub url: String,
    /// Event filters.
    pub events: Vec<String>,
    /// Description.
    pub description: Option<String>,
    /// False when disabled by its owner or by Portico.
    pub active: bool,
    /// Why Portico disabled it (e.g. repeated failures, 410 Gone); null otherwise.
    pub disabled_reason: Option<String>,
    /// Effective retry policy.
    pub retry_policy: RetryPolicyBody,
    /// Custom headers.
    pub headers: BTreeMap<String, String>,
    /// Per-ordering-key ordering.
    pub ordering_enabled: bool,
    /// Deliveries per second; null = no limit.
    pub rate_limit_per_second: Option<u32>,
    /// Concurrent deliveries; null = the dispatcher's default.
    pub max_concurrency: Option<u32>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A created webhook with its signing secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(examples(crate::examples::created_webhook))]
pub struct CreatedWebhookBody {
    /// The webhook.
    #[serde(flatten)]
    pub webhook: WebhookBody,
    /// The signing secret, `whsec_<base64>` (Standard Webhooks).
    pub secret: String,
}

/// One page of webhooks.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(examples(crate::examples::webhook_list))]
pub struct WebhookListBody {
    /// Newest first.
    pub data: Vec<WebhookBody>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// A signing secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretBody {
    /// The newest secret, `whsec_<base64>`.
    pub secret: String,
    /// After a rotation, when the previous secret stops signing; null otherwise.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
}

/// Rotation options.
#[derive(Debug, Default, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RotateSecretBody {
    /// How long the old secret keeps signing, 0..=2,592,000 s (default 86,400; 0 = stop now).
    #[schema(minimum = 0, maximum = 2_592_000)]
    pub grace_period_seconds: Option<i64>,
}

/// A test event on its way.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestEventBody {
    /// The event id; its delivery appears in the webhook's deliveries.
    pub event_id: Uuid,
}
