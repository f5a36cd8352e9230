//! REST routes of webhooks: endpoints, signing secrets, test events, deliveries,
//! retries and retry jobs. Thin adapters: parse, call [`crate::app::webhooks`] or
//! [`crate::app::webhook_deliveries`], render.

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use portico_domain::FieldError;
use portico_domain::pagination::PageRequest;
use portico_domain::webhooks::{
    DeliveryStatus, NewWebhook, RetryJobStatus, RetryPolicyPatch, WebhookPatch,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::webhook_deliveries::{
    self, Delivery, DeliveryAttempt, DeliveryFilter, RetryFailedOutcome, RetryFailedRequest,
    RetryJob,
};
use crate::app::webhooks::{self, SecretView, Webhook};
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::rest::json::ApiJson;
use crate::rest::openapi::PROBLEM;
use crate::state::AppState;

/// The routes, with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_webhook, list_webhooks))
        .routes(routes!(get_webhook, update_webhook, delete_webhook))
        .routes(routes!(get_secret))
        .routes(routes!(rotate_secret))
        .routes(routes!(send_test_event))
        .routes(routes!(list_deliveries))
        .routes(routes!(get_delivery))
        .routes(routes!(retry_delivery))
        .routes(routes!(retry_failed))
        .routes(routes!(get_retry_job))
        .routes(routes!(cancel_retry_job))
}

// ---------------------------------------------------------------------------
// Extraction helpers
// ---------------------------------------------------------------------------

/// A JSON body that may be left out entirely (then `T::default()`), for actions whose
/// every field is optional (rotate, retry).
pub struct OptionalJson<T>(pub T);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = req.headers();
        let has_body = headers.contains_key(header::TRANSFER_ENCODING)
            || headers
                .get(header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() != b"0");
        if !has_body {
            return Ok(OptionalJson(T::default()));
        }
        let ApiJson(value) = ApiJson::<T>::from_request(req, state).await?;
        Ok(OptionalJson(value))
    }
}

fn query<T>(extracted: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    extracted
        .map(|Query(q)| q)
        .map_err(|e| ApiError::field("invalid_query", "/query", e.body_text()))
}

fn parse_id(text: &str, name: &str) -> Result<Uuid, ApiError> {
    text.parse().map_err(|_| {
        ApiError::field(
            "invalid_id",
            &format!("/{name}"),
            format!("{name} must be a UUID"),
        )
    })
}

fn parse_time(text: Option<&str>, path: &str) -> Result<Option<DateTime<Utc>>, FieldError> {
    text.filter(|t| !t.is_empty())
        .map(|t| {
            DateTime::parse_from_rfc3339(t)
                .map(|d| d.with_timezone(&Utc))
                .map_err(|_| {
                    FieldError::new(
                        "invalid_timestamp",
                        path,
                        format!("{t:?} is not an RFC 3339 timestamp (e.g. 2026-01-31T12:00:00Z)"),
                    )
                })
        })
        .transpose()
}

fn parse_status(text: &str, path: &str) -> Result<DeliveryStatus, FieldError> {
    DeliveryStatus::parse(text).ok_or_else(|| {
        FieldError::new(
            "invalid_status",
            path,
            format!("{text:?} is not one of pending, delivering, succeeded, retrying, failed"),
        )
    })
}

/// `Some(None)` for an explicit `null`, `Some(Some(v))` for a value; with
/// `#[serde(default)]` a missing field stays `None`: a PATCH can clear a field.
fn double_option<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

// ---------------------------------------------------------------------------
// Shapes
// ---------------------------------------------------------------------------

/// Exponential backoff: `baseDelayMs * 2^(n-1)`, capped at `maxDelayMs`.
#[derive(Debug, Default, Deserialize, ToSchema)]
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
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateWebhookBody {
    /// Absolute http(s) URL; must not reach a private, loopback, link-local or
    /// metadata address unless allowlisted.
    #[serde(default)]
    #[schema(format = "uri", example = "https://example.com/webhooks/portico")]
    pub url: String,
    /// 1-100 filters: exact event types (`order.created`), prefixes (`order.*`) or `*`
    /// (every event except Portico's own `portico.*` ones).
    #[serde(default)]
    #[schema(schema_with = crate::rest::openapi::event_filters)]
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

/// A partial update: absent fields keep their value; `null` clears a nullable field.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateWebhookBody {
    /// New URL (checked like on create).
    #[schema(format = "uri")]
    pub url: Option<String>,
    /// Replaces the filter list; must not be empty.
    #[schema(schema_with = crate::rest::openapi::event_filters)]
    pub events: Option<Vec<String>>,
    /// New description (up to 1,024 characters); `null` removes it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, nullable, max_length = 1024)]
    pub description: Option<Option<String>>,
    /// `true` re-enables a disabled webhook (clearing `disabledReason`); `false` disables it.
    pub active: Option<bool>,
    /// Replaces all custom headers (`{}` removes them); up to 20.
    pub headers: Option<BTreeMap<String, String>>,
    /// Only the given fields change.
    pub retry_policy: Option<RetryPolicyInput>,
    /// New rate limit, 1..=10,000; `null` removes it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i64>, nullable, minimum = 1, maximum = 10_000)]
    pub rate_limit_per_second: Option<Option<i64>>,
    /// New concurrency cap, 1..=1,000; `null` returns to the default.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i64>, nullable, minimum = 1, maximum = 1_000)]
    pub max_concurrency: Option<Option<i64>>,
    /// Turn per-key ordering on or off.
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
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicyBody {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First retry delay, ms.
    pub base_delay_ms: u64,
    /// Largest delay, ms.
    pub max_delay_ms: u64,
}

/// A webhook endpoint.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
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

impl From<Webhook> for WebhookBody {
    fn from(w: Webhook) -> Self {
        WebhookBody {
            id: w.id,
            url: w.url,
            events: w.events,
            description: w.description,
            active: w.active,
            disabled_reason: w.disabled_reason,
            retry_policy: RetryPolicyBody {
                max_retries: w.retry_policy.max_retries,
                base_delay_ms: w.retry_policy.base_delay_ms,
                max_delay_ms: w.retry_policy.max_delay_ms,
            },
            headers: w.headers,
            ordering_enabled: w.ordering_enabled,
            rate_limit_per_second: w.rate_limit_per_second,
            max_concurrency: w.max_concurrency,
            created_at: w.created_at,
            updated_at: w.updated_at,
        }
    }
}

/// A created webhook with its signing secret.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedWebhookBody {
    /// The webhook.
    #[serde(flatten)]
    pub webhook: WebhookBody,
    /// The signing secret, `whsec_<base64>` (Standard Webhooks).
    pub secret: String,
}

/// One page of webhooks.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookListBody {
    /// Newest first.
    pub data: Vec<WebhookBody>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Page parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1..=500, default 50 (0 = the default).
    #[param(maximum = 500)]
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// A signing secret.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretBody {
    /// The newest secret, `whsec_<base64>`.
    pub secret: String,
    /// After a rotation, when the previous secret stops signing; null otherwise.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
}

impl From<SecretView> for SecretBody {
    fn from(s: SecretView) -> Self {
        SecretBody {
            secret: s.secret,
            previous_secret_expires_at: s.previous_secret_expires_at,
        }
    }
}

/// Rotation options.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RotateSecretBody {
    /// How long the old secret keeps signing, 0..=2,592,000 s (default 86,400; 0 = stop now).
    #[schema(minimum = 0, maximum = 2_592_000)]
    pub grace_period_seconds: Option<i64>,
}

/// A test event on its way.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestEventBody {
    /// The event id; its delivery appears in the webhook's deliveries.
    pub event_id: Uuid,
}

/// Delivery list parameters.
#[derive(Debug, Deserialize, IntoParams)]
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
#[derive(Debug, Serialize, ToSchema)]
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

impl From<Delivery> for DeliveryBody {
    fn from(d: Delivery) -> Self {
        DeliveryBody {
            id: d.id,
            webhook_id: d.webhook_id,
            event_id: d.event_id,
            event_type: d.event_type,
            status: d.status,
            attempts: d.attempts,
            max_retries: d.max_retries,
            next_attempt_at: d.next_attempt_at,
            last_status_code: d.last_status_code,
            last_error: d.last_error,
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

/// One page of deliveries.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryListBody {
    /// Newest first.
    pub data: Vec<DeliveryBody>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// One HTTP request made for a delivery.
#[derive(Debug, Serialize, ToSchema)]
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

impl From<DeliveryAttempt> for AttemptBody {
    fn from(a: DeliveryAttempt) -> Self {
        AttemptBody {
            attempt_number: a.attempt_number,
            request_headers: a.request_headers,
            response_status: a.response_status,
            response_body: a.response_body,
            latency_ms: a.latency_ms,
            error_kind: a.error_kind,
            error_message: a.error_message,
            started_at: a.started_at,
        }
    }
}

/// A delivery with every attempt, oldest first. `attempts` is the list here;
/// `attemptCount` is the number the list form calls `attempts`.
#[derive(Debug, Serialize, ToSchema)]
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

/// Retry options for one delivery.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryDeliveryBody {
    /// Retries after this attempt, 0..=20 (default: the webhook's policy).
    #[schema(minimum = 0, maximum = 20)]
    pub max_retries: Option<i64>,
}

/// What retry-failed retries.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryFailedBody {
    /// Only count the matching deliveries (default false).
    pub dry_run: Option<bool>,
    /// Statuses to retry: failed and/or retrying (default ["failed"]).
    #[schema(value_type = Option<Vec<RetryableStatus>>)]
    pub statuses: Option<Vec<String>>,
    /// Exact event type.
    #[schema(schema_with = crate::rest::openapi::event_type)]
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

/// A status retry-failed can retry (documentation only).
#[derive(Debug, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum RetryableStatus {
    /// Deliveries that failed for good.
    Failed,
    /// Deliveries waiting for their next attempt.
    Retrying,
}

/// The filters a retry job applies.
#[derive(Debug, Serialize, ToSchema)]
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
#[derive(Debug, Serialize, ToSchema)]
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

impl From<RetryJob> for RetryJobBody {
    fn from(j: RetryJob) -> Self {
        RetryJobBody {
            id: j.id,
            webhook_id: j.webhook_id,
            status: j.status,
            dry_run: j.dry_run,
            total: j.total,
            processed: j.processed,
            filters: RetryJobFiltersBody {
                statuses: j.filters.statuses,
                event_type: j.filters.event_type,
                since: j.filters.since,
                until: j.filters.until,
            },
            max_retries: j.max_retries,
            created_at: j.created_at,
            updated_at: j.updated_at,
        }
    }
}

/// The answer to a dry run.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DryRunBody {
    /// Always true.
    pub dry_run: bool,
    /// Deliveries that would be retried.
    pub matched: u64,
}

/// 200 answers of retry-failed: a dry-run count, or the job an Idempotency-Key
/// already started.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum RetryFailedOkBody {
    /// `dryRun: true`.
    DryRun(DryRunBody),
    /// The existing job.
    Existing(RetryJobBody),
}

// ---------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------

/// Register a webhook endpoint; the response carries its signing secret.
#[utoipa::path(post, path = "/webhooks", tag = "webhooks",
    request_body = CreateWebhookBody,
    responses(
        (status = 201, description = "Created", body = CreatedWebhookBody),
        (status = 400, description = "Invalid input (invalid_url, empty_events, invalid_event_filter, reserved_header, invalid_retry_policy, forbidden_address, unresolvable_host, ...)", body = Problem, content_type = PROBLEM),
        (status = 401, description = "Not authenticated", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn create_webhook(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateWebhookBody>,
) -> Result<impl IntoResponse, ApiError> {
    let created = webhooks::create(&state, &caller, body.into()).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedWebhookBody {
            webhook: created.webhook.into(),
            secret: created.secret,
        }),
    ))
}

/// List the caller's webhooks, newest first.
#[utoipa::path(get, path = "/webhooks", tag = "webhooks",
    params(PageQuery),
    responses(
        (status = 200, description = "One page", body = WebhookListBody),
        (status = 400, description = "Invalid limit or cursor", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn list_webhooks(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<PageQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let params = query(params)?;
    let page = PageRequest::parse(params.limit, params.cursor.as_deref())?;
    let (items, next_cursor) = webhooks::list(&state, &caller, page).await?;
    Ok(axum::Json(WebhookListBody {
        data: items.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// Get one webhook.
#[utoipa::path(get, path = "/webhooks/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id")),
    responses(
        (status = 200, description = "The webhook", body = WebhookBody),
        (status = 404, description = "No such webhook for this caller", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn get_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "id")?;
    let webhook = webhooks::get(&state, &caller, id).await?;
    Ok(axum::Json(WebhookBody::from(webhook)))
}

/// Update a webhook partially; `active: true` re-enables a disabled one.
#[utoipa::path(patch, path = "/webhooks/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id")),
    request_body = UpdateWebhookBody,
    responses(
        (status = 200, description = "The updated webhook", body = WebhookBody),
        (status = 400, description = "Invalid input; nothing changed", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such webhook for this caller", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn update_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateWebhookBody>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "id")?;
    let webhook = webhooks::update(&state, &caller, id, body.into()).await?;
    Ok(axum::Json(WebhookBody::from(webhook)))
}

/// Delete a webhook with its deliveries; pending deliveries are not sent.
#[utoipa::path(delete, path = "/webhooks/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such webhook for this caller", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn delete_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id, "id")?;
    webhooks::delete(&state, &caller, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The current signing secret (and, during a rotation, when the old one expires).
#[utoipa::path(get, path = "/webhooks/{id}/secret", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id")),
    responses(
        (status = 200, description = "The secret", body = SecretBody),
        (status = 404, description = "No such webhook for this caller", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn get_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "id")?;
    let secret = webhooks::get_secret(&state, &caller, id).await?;
    Ok(axum::Json(SecretBody::from(secret)))
}

/// Replace the signing secret; the old one keeps signing during the grace period.
#[utoipa::path(post, path = "/webhooks/{id}/secret/rotate", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id")),
    request_body(content = Option<RotateSecretBody>, description = "Optional"),
    responses(
        (status = 200, description = "The new secret", body = SecretBody),
        (status = 400, description = "invalid_grace_period", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such webhook for this caller", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<RotateSecretBody>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "id")?;
    let secret = webhooks::rotate_secret(&state, &caller, id, body.grace_period_seconds).await?;
    Ok(axum::Json(SecretBody::from(secret)))
}

/// Send a `webhook.test` event to this endpoint only.
#[utoipa::path(post, path = "/webhooks/{id}/test", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id")),
    responses(
        (status = 202, description = "Queued for delivery", body = TestEventBody),
        (status = 404, description = "No such webhook for this caller", body = Problem, content_type = PROBLEM),
        (status = 409, description = "The webhook is disabled (failed_precondition)", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn send_test_event(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "id")?;
    let event_id = webhooks::send_test_event(&state, &caller, id).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(TestEventBody { event_id })))
}

/// List a webhook's deliveries, newest first, with filters.
#[utoipa::path(get, path = "/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id"), DeliveryQuery),
    responses(
        (status = 200, description = "One page", body = DeliveryListBody),
        (status = 400, description = "Invalid filter (invalid_status, invalid_timestamp, invalid_event_type, invalid_cursor)", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such webhook for this caller", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    params: Result<Query<DeliveryQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "id")?;
    let params = query(params)?;
    let mut errors = Vec::new();
    let status = params
        .status
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| parse_status(s, "/status"))
        .transpose()
        .map_err(|e| errors.push(e))
        .ok()
        .flatten();
    let since = parse_time(params.since.as_deref(), "/since")
        .map_err(|e| errors.push(e))
        .ok()
        .flatten();
    let until = parse_time(params.until.as_deref(), "/until")
        .map_err(|e| errors.push(e))
        .ok()
        .flatten();
    let page = PageRequest::parse(params.limit, params.cursor.as_deref())
        .map_err(|e| errors.push(e))
        .ok();
    let Some(page) = page.filter(|_| errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let filter = DeliveryFilter {
        status,
        event_type: params.event_type.filter(|t| !t.is_empty()),
        since,
        until,
    };
    let (items, next_cursor) = webhook_deliveries::list(&state, &caller, id, filter, page).await?;
    Ok(axum::Json(DeliveryListBody {
        data: items.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// One delivery with every attempt.
#[utoipa::path(get, path = "/webhooks/{id}/deliveries/{deliveryId}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id"), ("deliveryId" = Uuid, Path, description = "Delivery id")),
    responses(
        (status = 200, description = "The delivery and its attempts", body = DeliveryDetailBody),
        (status = 404, description = "No such delivery of this caller's webhook", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn get_delivery(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "id")?;
    let delivery_id = parse_id(&delivery_id, "deliveryId")?;
    let (d, attempts) = webhook_deliveries::get(&state, &caller, id, delivery_id).await?;
    Ok(axum::Json(DeliveryDetailBody {
        id: d.id,
        webhook_id: d.webhook_id,
        event_id: d.event_id,
        event_type: d.event_type,
        status: d.status,
        attempts: attempts.into_iter().map(Into::into).collect(),
        attempt_count: d.attempts,
        max_retries: d.max_retries,
        next_attempt_at: d.next_attempt_at,
        last_status_code: d.last_status_code,
        last_error: d.last_error,
        created_at: d.created_at,
        updated_at: d.updated_at,
    }))
}

/// Retry one failed (or retrying) delivery now.
#[utoipa::path(post, path = "/webhooks/{id}/deliveries/{deliveryId}/retry", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id"), ("deliveryId" = Uuid, Path, description = "Delivery id")),
    request_body(content = Option<RetryDeliveryBody>, description = "Optional"),
    responses(
        (status = 202, description = "Scheduled now", body = DeliveryBody),
        (status = 400, description = "invalid_max_retries", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such delivery of this caller's webhook", body = Problem, content_type = PROBLEM),
        (status = 409, description = "Not failed or retrying (failed_precondition)", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn retry_delivery(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, delivery_id)): Path<(String, String)>,
    OptionalJson(body): OptionalJson<RetryDeliveryBody>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "id")?;
    let delivery_id = parse_id(&delivery_id, "deliveryId")?;
    let delivery =
        webhook_deliveries::retry(&state, &caller, id, delivery_id, body.max_retries).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(DeliveryBody::from(delivery)),
    ))
}

/// Retry every matching delivery through a durable job (or count them with `dryRun`).
#[utoipa::path(post, path = "/webhooks/{id}/retry-failed", tag = "webhooks",
    params(
        ("id" = Uuid, Path, description = "Webhook id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Same key for the same webhook returns the existing job"),
    ),
    request_body(content = Option<RetryFailedBody>, description = "Optional; default retries every failed delivery"),
    responses(
        (status = 202, description = "Job committed and queued", body = RetryJobBody),
        (status = 200, description = "Dry-run count, or the job this Idempotency-Key already started", body = RetryFailedOkBody),
        (status = 400, description = "Invalid filters", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such webhook for this caller", body = Problem, content_type = PROBLEM),
        (status = 409, description = "Idempotency-Key reused with different filters (conflict)", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn retry_failed(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    OptionalJson(body): OptionalJson<RetryFailedBody>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id, "id")?;
    let mut errors = Vec::new();
    let statuses: Vec<DeliveryStatus> = body
        .statuses
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            parse_status(s, &format!("/statuses/{i}"))
                .map_err(|e| errors.push(e))
                .ok()
        })
        .collect();
    let since = parse_time(body.since.as_deref(), "/since")
        .map_err(|e| errors.push(e))
        .ok()
        .flatten();
    let until = parse_time(body.until.as_deref(), "/until")
        .map_err(|e| errors.push(e))
        .ok()
        .flatten();
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => match v.to_str() {
            Ok(s) => Some(s.trim().to_owned()),
            Err(_) => {
                errors.push(FieldError::new(
                    "invalid_idempotency_key",
                    "/headers/idempotency-key",
                    "Idempotency-Key must be ASCII",
                ));
                None
            }
        },
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let request = RetryFailedRequest {
        dry_run: body.dry_run.unwrap_or(false),
        statuses,
        event_type: body.event_type,
        since,
        until,
        max_retries: body.max_retries,
        idempotency_key,
    };
    Ok(
        match webhook_deliveries::retry_failed(&state, &caller, id, request).await? {
            RetryFailedOutcome::DryRun { matched } => (
                StatusCode::OK,
                axum::Json(DryRunBody {
                    dry_run: true,
                    matched,
                }),
            )
                .into_response(),
            RetryFailedOutcome::Started(job) => {
                (StatusCode::ACCEPTED, axum::Json(RetryJobBody::from(job))).into_response()
            }
            RetryFailedOutcome::Existing(job) => {
                (StatusCode::OK, axum::Json(RetryJobBody::from(job))).into_response()
            }
        },
    )
}

/// A retry job with its progress.
#[utoipa::path(get, path = "/webhooks/{id}/retry-jobs/{jobId}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id"), ("jobId" = Uuid, Path, description = "Retry job id")),
    responses(
        (status = 200, description = "The job", body = RetryJobBody),
        (status = 404, description = "No such job of this caller's webhook", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn get_retry_job(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, job_id)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "id")?;
    let job_id = parse_id(&job_id, "jobId")?;
    let job = webhook_deliveries::get_retry_job(&state, &caller, id, job_id).await?;
    Ok(axum::Json(RetryJobBody::from(job)))
}

/// Cancel a pending or running retry job.
#[utoipa::path(post, path = "/webhooks/{id}/retry-jobs/{jobId}/cancel", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id"), ("jobId" = Uuid, Path, description = "Retry job id")),
    responses(
        (status = 200, description = "Cancelled", body = RetryJobBody),
        (status = 404, description = "No such job of this caller's webhook", body = Problem, content_type = PROBLEM),
        (status = 409, description = "The job already finished (failed_precondition)", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn cancel_retry_job(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, job_id)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "id")?;
    let job_id = parse_id(&job_id, "jobId")?;
    let job = webhook_deliveries::cancel_retry_job(&state, &caller, id, job_id).await?;
    Ok(axum::Json(RetryJobBody::from(job)))
}
