//! Retry-failed and its durable jobs: `/webhooks/{id}/retry-failed`,
//! `/webhooks/{id}/retry-jobs/{jobId}` and `/webhooks/{id}/retry-jobs/{jobId}/cancel`.

use chrono::{DateTime, Utc};
use portico_domain::webhooks::{DeliveryStatus, RetryJobStatus};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

// Statuses and times stay text so the gateway reports every bad value at once, each
// with its own JSON pointer. (The doc comment is the schema's description.)
/// What retry-failed retries.
#[derive(Debug, Default, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryFailedBody {
    /// Only count the matching deliveries (default false).
    pub dry_run: Option<bool>,
    /// Statuses to retry: failed and/or retrying (default ["failed"]).
    #[schema(value_type = Option<Vec<RetryableStatus>>)]
    pub statuses: Option<Vec<String>>,
    /// Exact event type.
    #[schema(schema_with = crate::schema::event_type)]
    pub event_type: Option<String>,
    /// RFC 3339; deliveries created at or after.
    #[schema(format = DateTime)]
    pub since: Option<String>,
    /// RFC 3339; deliveries created before.
    #[schema(format = DateTime)]
    pub until: Option<String>,
    /// Retries per delivery from now on, 0..=20 (default: the webhook's policy).
    #[schema(minimum = 0, maximum = 20)]
    pub max_retries: Option<i64>,
}

// The schema of `RetryFailedBody::statuses`, and the values a client may send there.
/// A status retry-failed can retry (documentation only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RetryableStatus {
    /// Deliveries that failed for good.
    Failed,
    /// Deliveries waiting for their next attempt.
    Retrying,
}

/// The filters a retry job applies.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryJobFiltersBody {
    /// Statuses retried.
    pub statuses: Vec<DeliveryStatus>,
    /// Exact event type, or null for any.
    pub event_type: Option<String>,
    /// Lower bound on createdAt (inclusive).
    pub since: Option<DateTime<Utc>>,
    /// Upper bound on createdAt (exclusive).
    pub until: Option<DateTime<Utc>>,
}

/// A durable retry-failed job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryJobBody {
    /// Id.
    pub id: Uuid,
    /// The webhook.
    pub webhook_id: Uuid,
    /// Where the job is.
    pub status: RetryJobStatus,
    /// Always false for a stored job (dry runs store nothing).
    pub dry_run: bool,
    /// Deliveries matching when the job was created.
    pub total: u64,
    /// Deliveries re-queued so far.
    pub processed: u64,
    /// What it retries.
    pub filters: RetryJobFiltersBody,
    /// Retry budget override; null = the webhook's policy.
    pub max_retries: Option<u32>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// The answer to a dry run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DryRunBody {
    /// Always true.
    pub dry_run: bool,
    /// Deliveries that would be retried.
    pub matched: u64,
}

/// 200 answers of retry-failed: a dry-run count, or the job an Idempotency-Key
/// already started.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum RetryFailedOkBody {
    /// `dryRun: true`.
    DryRun(DryRunBody),
    /// The existing job.
    Existing(RetryJobBody),
}
