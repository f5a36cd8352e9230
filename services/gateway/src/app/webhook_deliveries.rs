//! The delivery history of a webhook and the ways to retry it: one delivery at once, or
//! every matching delivery through a durable retry job.
//!
//! The dispatcher writes deliveries and attempts; this module reads them and schedules
//! retries. A retried delivery is only marked due (`status = 'retrying'`,
//! `next_attempt_at = now()`); the dispatcher's poller picks it up, so no job is needed
//! and a crash cannot lose the request. A retry-failed job is a `webhook_retry_jobs` row
//! committed with its outbox entry in one transaction, so it runs even if the gateway
//! dies right after answering.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use portico_domain::ids::{DeliveryId, RetryJobId, WebhookId};
use portico_domain::webhooks::{
    DeliveryStatus, MAX_RETRIES_LIMIT, RetryJobFilters, RetryJobStatus,
};
use portico_domain::{FieldError, pagination};
use portico_queue::jobs::Job;
use portico_storage::deliveries::{self, AttemptRow, DeliveryRow};
use portico_storage::retry_jobs::{self, DeliveryMatch, RetryJobRow};
use uuid::Uuid;

use crate::app::audit::{self, AuditEntry};
use crate::error::ApiError;
use crate::identity::{Caller, Scope};
use crate::state::AppState;

/// Longest `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// One event on its way to one webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Id.
    pub id: Uuid,
    /// The webhook.
    pub webhook_id: Uuid,
    /// The event; also the `webhook-id` header, stable across attempts.
    pub event_id: Uuid,
    /// The event's type.
    pub event_type: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// Retry budget in force.
    pub max_retries: u32,
    /// When the next attempt is due.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// HTTP status of the last attempt, if it got a response.
    pub last_status_code: Option<u32>,
    /// Last failure.
    pub last_error: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// One HTTP request made for a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryAttempt {
    /// 1-based.
    pub attempt_number: u32,
    /// Headers sent (signature included).
    pub request_headers: BTreeMap<String, String>,
    /// Response status, if a response came.
    pub response_status: Option<u32>,
    /// Response body, truncated by the dispatcher.
    pub response_body: Option<String>,
    /// Request to end of response (or failure).
    pub latency_ms: u64,
    /// Failure class (`timeout`, `connect`, `http_status`, ...).
    pub error_kind: Option<String>,
    /// Failure detail.
    pub error_message: Option<String>,
    /// When the attempt started.
    pub started_at: DateTime<Utc>,
}

/// Filters of the delivery list (the storage's own parameter type).
pub use portico_storage::deliveries::DeliveryFilter;

/// A durable bulk retry of one webhook's deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryJob {
    /// Id.
    pub id: Uuid,
    /// The webhook.
    pub webhook_id: Uuid,
    /// Where the job is.
    pub status: RetryJobStatus,
    /// Count-only job.
    pub dry_run: bool,
    /// Deliveries matching when the job was created.
    pub total: u64,
    /// Deliveries re-queued so far.
    pub processed: u64,
    /// What it retries.
    pub filters: RetryJobFilters,
    /// Retry budget override per delivery; `None` = the webhook's policy.
    pub max_retries: Option<u32>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A retry-failed request as both doors parse it.
#[derive(Debug, Clone, Default)]
pub struct RetryFailedRequest {
    /// Only count.
    pub dry_run: bool,
    /// Statuses to retry; empty = failed.
    pub statuses: Vec<DeliveryStatus>,
    /// Only this exact event type.
    pub event_type: Option<String>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
    /// Retry budget per delivery from now on; `None` = the webhook's policy.
    pub max_retries: Option<i64>,
    /// Same key, same webhook: the existing job is returned.
    pub idempotency_key: Option<String>,
}

/// What a retry-failed request did.
#[derive(Debug, Clone)]
pub enum RetryFailedOutcome {
    /// A dry run: how many deliveries would be retried.
    DryRun {
        /// Matching deliveries.
        matched: u64,
    },
    /// A new job was committed and queued.
    Started(RetryJob),
    /// The idempotency key was already used with the same request: its job.
    Existing(RetryJob),
}

impl TryFrom<DeliveryRow> for Delivery {
    type Error = ApiError;

    fn try_from(r: DeliveryRow) -> Result<Self, ApiError> {
        let status = DeliveryStatus::parse(&r.status).ok_or_else(|| {
            ApiError::Internal(format!("delivery {} has unknown status {}", r.id, r.status))
        })?;
        Ok(Delivery {
            id: r.id.as_uuid(),
            webhook_id: r.webhook_id.as_uuid(),
            event_id: r.event_id.as_uuid(),
            event_type: r.event_type,
            status,
            attempts: u32::try_from(r.attempts).unwrap_or(0),
            max_retries: u32::try_from(r.max_retries).unwrap_or(0),
            next_attempt_at: r.next_attempt_at,
            last_status_code: r.last_status_code.and_then(|c| u32::try_from(c).ok()),
            last_error: r.last_error,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

impl From<AttemptRow> for DeliveryAttempt {
    fn from(r: AttemptRow) -> Self {
        let request_headers = match r.request_headers {
            serde_json::Value::Object(map) => map
                .into_iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => (k, s),
                    other => (k, other.to_string()),
                })
                .collect(),
            _ => BTreeMap::new(),
        };
        DeliveryAttempt {
            attempt_number: u32::try_from(r.attempt_number).unwrap_or(0),
            request_headers,
            response_status: r.response_status.and_then(|s| u32::try_from(s).ok()),
            response_body: r.response_body,
            latency_ms: u64::try_from(r.latency_ms).unwrap_or(0),
            error_kind: r.error_kind,
            error_message: r.error_message,
            started_at: r.started_at,
        }
    }
}

impl TryFrom<RetryJobRow> for RetryJob {
    type Error = ApiError;

    fn try_from(r: RetryJobRow) -> Result<Self, ApiError> {
        let filters: RetryJobFilters = serde_json::from_value(r.filters).map_err(|e| {
            ApiError::Internal(format!("retry job {} has unreadable filters: {e}", r.id))
        })?;
        Ok(RetryJob {
            id: r.id.as_uuid(),
            webhook_id: r.webhook_id.as_uuid(),
            status: RetryJobStatus::parse(&r.status).ok_or_else(|| {
                ApiError::Internal(format!("retry job {} has status {:?}", r.id, r.status))
            })?,
            dry_run: r.dry_run,
            total: u64::try_from(r.total).unwrap_or(0),
            processed: u64::try_from(r.processed).unwrap_or(0),
            filters,
            max_retries: r.max_retries.and_then(|m| u32::try_from(m).ok()),
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// The webhook's retry budget, proving at the same time that the caller owns it.
async fn owned_webhook_max_retries(
    state: &AppState,
    caller: &Caller,
    webhook_id: Uuid,
) -> Result<i32, ApiError> {
    portico_storage::webhooks::max_retries(state.pool(), caller.user_id(), WebhookId(webhook_id))
        .await?
        .ok_or(ApiError::NotFound("webhook"))
}

fn check_max_retries(value: Option<i64>) -> Result<Option<i32>, ApiError> {
    match value {
        None => Ok(None),
        Some(v) if (0..=i64::from(MAX_RETRIES_LIMIT)).contains(&v) => Ok(i32::try_from(v).ok()),
        Some(_) => Err(FieldError::new(
            "invalid_max_retries",
            "/maxRetries",
            format!("maxRetries must be between 0 and {MAX_RETRIES_LIMIT}"),
        )
        .into()),
    }
}

/// One page of a webhook's deliveries, newest first.
pub async fn list(
    state: &AppState,
    caller: &Caller,
    webhook_id: Uuid,
    filter: DeliveryFilter,
    page: pagination::PageRequest,
) -> Result<(Vec<Delivery>, Option<String>), ApiError> {
    caller.require(Scope::WebhooksRead)?;
    if let Some(t) = &filter.event_type {
        portico_domain::webhooks::validate_event_type(t, "/eventType")?;
    }
    owned_webhook_max_retries(state, caller, webhook_id).await?;
    let rows = deliveries::list(state.pool(), WebhookId(webhook_id), &filter, &page).await?;
    let deliveries = rows
        .into_iter()
        .map(Delivery::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(pagination::finish_page(deliveries, &page, |d| {
        pagination::Cursor {
            created_at: d.created_at,
            id: d.id,
        }
    }))
}

async fn load_delivery(
    state: &AppState,
    caller: &Caller,
    webhook_id: Uuid,
    delivery_id: Uuid,
) -> Result<Delivery, ApiError> {
    let row = deliveries::get(
        state.pool(),
        caller.user_id(),
        WebhookId(webhook_id),
        DeliveryId(delivery_id),
    )
    .await?;
    row.ok_or(ApiError::NotFound("delivery"))?.try_into()
}

/// One delivery with every attempt, oldest attempt first.
pub async fn get(
    state: &AppState,
    caller: &Caller,
    webhook_id: Uuid,
    delivery_id: Uuid,
) -> Result<(Delivery, Vec<DeliveryAttempt>), ApiError> {
    caller.require(Scope::WebhooksRead)?;
    let delivery = load_delivery(state, caller, webhook_id, delivery_id).await?;
    let attempts = deliveries::attempts(state.pool(), DeliveryId(delivery_id)).await?;
    Ok((delivery, attempts.into_iter().map(Into::into).collect()))
}

/// Schedules a new attempt of a failed (or retrying) delivery now, with a fresh retry
/// budget: `maxRetries` more retries after this attempt (default: the webhook's).
pub async fn retry(
    state: &AppState,
    caller: &Caller,
    webhook_id: Uuid,
    delivery_id: Uuid,
    max_retries: Option<i64>,
) -> Result<Delivery, ApiError> {
    caller.require(Scope::WebhooksWrite)?;
    let max_retries = check_max_retries(max_retries)?;
    let mut tx = state.pool().begin().await?;
    let row = deliveries::retry_now(
        &mut *tx,
        caller.user_id(),
        WebhookId(webhook_id),
        DeliveryId(delivery_id),
        max_retries,
    )
    .await?;
    match row {
        Some(row) => {
            let entry = AuditEntry::new("delivery.retried", "delivery", delivery_id)
                .detail("webhookId", webhook_id.to_string());
            audit::record(&mut tx, caller, entry).await?;
            tx.commit().await?;
            row.try_into()
        }
        None => {
            let current = load_delivery(state, caller, webhook_id, delivery_id).await?;
            Err(ApiError::FailedPrecondition(format!(
                "the delivery is {}; only failed or retrying deliveries can be retried",
                current.status.as_str()
            )))
        }
    }
}

async fn count_matching(
    executor: impl sqlx::PgExecutor<'_>,
    webhook_id: Uuid,
    filters: &RetryJobFilters,
) -> Result<u64, ApiError> {
    let statuses = filters.status_names();
    let matching = DeliveryMatch {
        statuses: &statuses,
        event_type: filters.event_type.as_deref(),
        since: filters.since,
        until: filters.until,
    };
    let n = retry_jobs::count_matching(executor, WebhookId(webhook_id), &matching).await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

async fn job_by_key(
    state: &AppState,
    caller: &Caller,
    webhook_id: Uuid,
    key: &str,
) -> Result<Option<RetryJob>, ApiError> {
    let row =
        retry_jobs::by_idempotency_key(state.pool(), caller.user_id(), WebhookId(webhook_id), key)
            .await?;
    row.map(RetryJob::try_from).transpose()
}

fn same_request(
    job: RetryJob,
    filters: &RetryJobFilters,
    max_retries: Option<i32>,
) -> Result<RetryJob, ApiError> {
    if &job.filters == filters && job.max_retries.map(super::webhooks::to_i32) == max_retries {
        Ok(job)
    } else {
        Err(ApiError::Conflict(
            "this Idempotency-Key was already used for a retry job with different filters".into(),
        ))
    }
}

/// Retries every matching delivery of one webhook through a durable job, or only
/// counts them (`dry_run`). The job row and its outbox entry commit together; the
/// dispatcher executes the job. With an idempotency key, a repeated request returns
/// the existing job (and a different request with the same key is a conflict).
pub async fn retry_failed(
    state: &AppState,
    caller: &Caller,
    webhook_id: Uuid,
    request: RetryFailedRequest,
) -> Result<RetryFailedOutcome, ApiError> {
    caller.require(Scope::WebhooksWrite)?;
    let mut errors = Vec::new();
    let filters = RetryJobFilters::new(
        request.statuses,
        request.event_type,
        request.since,
        request.until,
    )
    .map_err(|e| errors.extend(e))
    .ok();
    let max_retries = check_max_retries(request.max_retries)
        .map_err(|e| {
            if let ApiError::Validation(v) = e {
                errors.extend(v);
            }
        })
        .ok()
        .flatten();
    if let Some(key) = &request.idempotency_key
        && (key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN)
    {
        errors.push(FieldError::new(
            "invalid_idempotency_key",
            "/headers/idempotency-key",
            format!("Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_LEN} characters"),
        ));
    }
    let Some(filters) = filters.filter(|_| errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    owned_webhook_max_retries(state, caller, webhook_id).await?;
    if request.dry_run {
        let matched = count_matching(state.pool(), webhook_id, &filters).await?;
        return Ok(RetryFailedOutcome::DryRun { matched });
    }
    if let Some(key) = &request.idempotency_key
        && let Some(job) = job_by_key(state, caller, webhook_id, key).await?
    {
        return same_request(job, &filters, max_retries).map(RetryFailedOutcome::Existing);
    }
    let filters_json = serde_json::to_value(&filters).map_err(ApiError::internal)?;
    let mut tx = state.pool().begin().await?;
    let total = count_matching(&mut *tx, webhook_id, &filters).await?;
    let row = retry_jobs::insert(
        &mut *tx,
        caller.user_id(),
        WebhookId(webhook_id),
        request.idempotency_key.as_deref(),
        &filters_json,
        max_retries,
        i64::try_from(total).unwrap_or(i64::MAX),
    )
    .await?;
    let Some(row) = row else {
        // A concurrent request with the same key won the insert: answer with its job.
        tx.rollback().await?;
        let key = request.idempotency_key.as_deref().unwrap_or_default();
        let job = job_by_key(state, caller, webhook_id, key)
            .await?
            .ok_or_else(|| ApiError::Internal("retry job vanished after a key conflict".into()))?;
        return same_request(job, &filters, max_retries).map(RetryFailedOutcome::Existing);
    };
    let job = RetryJob::try_from(row)?;
    portico_queue::outbox::enqueue(
        &mut tx,
        state.publisher().topology(),
        &Job::WebhookRetryV1 { job_id: job.id },
    )
    .await?;
    let entry = AuditEntry::new("retry_job.created", "retry_job", job.id)
        .detail("webhookId", webhook_id.to_string())
        .detail("matched", total);
    audit::record(&mut tx, caller, entry).await?;
    tx.commit().await?;
    portico_queue::failpoint::hit("after_outbox_commit");
    state.outbox().notify();
    Ok(RetryFailedOutcome::Started(job))
}

/// One retry job of one of the caller's webhooks.
pub async fn get_retry_job(
    state: &AppState,
    caller: &Caller,
    webhook_id: Uuid,
    job_id: Uuid,
) -> Result<RetryJob, ApiError> {
    caller.require(Scope::WebhooksRead)?;
    load_job(state, caller, webhook_id, job_id).await
}

async fn load_job(
    state: &AppState,
    caller: &Caller,
    webhook_id: Uuid,
    job_id: Uuid,
) -> Result<RetryJob, ApiError> {
    let row = retry_jobs::get(
        state.pool(),
        caller.user_id(),
        WebhookId(webhook_id),
        RetryJobId(job_id),
    )
    .await?;
    row.ok_or(ApiError::NotFound("retry job"))?.try_into()
}

/// Stops a pending or running retry job; deliveries it already re-queued stay queued.
/// A finished job cannot be cancelled.
pub async fn cancel_retry_job(
    state: &AppState,
    caller: &Caller,
    webhook_id: Uuid,
    job_id: Uuid,
) -> Result<RetryJob, ApiError> {
    caller.require(Scope::WebhooksWrite)?;
    let mut tx = state.pool().begin().await?;
    let row = retry_jobs::cancel(
        &mut *tx,
        caller.user_id(),
        WebhookId(webhook_id),
        RetryJobId(job_id),
    )
    .await?;
    match row {
        Some(row) => {
            let entry = AuditEntry::new("retry_job.cancelled", "retry_job", job_id)
                .detail("webhookId", webhook_id.to_string());
            audit::record(&mut tx, caller, entry).await?;
            tx.commit().await?;
            row.try_into()
        }
        None => {
            let job = load_job(state, caller, webhook_id, job_id).await?;
            Err(ApiError::FailedPrecondition(format!(
                "the retry job is {}; only pending or running jobs can be cancelled",
                job.status.as_str()
            )))
        }
    }
}
