//! Webhook endpoints: create, list, get, update, delete, signing secrets and test
//! events, for both doors.
//!
//! Every query is scoped by the caller's user, so another user's webhook is simply not
//! found. Input is validated by [`portico_domain::webhooks`] (the rules the dispatcher
//! shares) and the URL by the [`ssrf_guard`](crate::app::ssrf_guard) before anything is
//! written. Signing secrets are stored only sealed with `PORTICO_SECRETS_KEY`. After
//! every change that affects delivery, a core-NATS message on the `webhooks`
//! invalidation subject (payload: the user id) tells the dispatchers to drop their
//! cached view of that user's webhooks.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use portico_domain::network::Allowlist;
use portico_domain::webhooks::{
    NewWebhook, RetryPolicy, TEST_EVENT_TYPE, ValidWebhook, WebhookPatch,
};
use portico_domain::{FieldError, pagination};
use portico_queue::jobs::{EventDispatch, Job};
use portico_signing::standard_webhooks::WebhookSecret;
use serde_json::value::RawValue;
use sqlx::types::Json;
use uuid::Uuid;

use crate::app::ssrf_guard;
use crate::auth::{Caller, Scope};
use crate::config::{ConfigError, GatewayConfig};
use crate::error::ApiError;
use crate::state::AppState;

/// How long a rotated-out secret keeps signing when the caller does not say.
pub const DEFAULT_GRACE_PERIOD_SECS: i64 = 86_400;
/// Longest grace period a rotation may ask for (30 days).
pub const MAX_GRACE_PERIOD_SECS: i64 = 30 * 86_400;

/// Webhook settings read once at start-up: the SSRF allowlist and the retry policy of
/// webhooks that set none.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Networks webhook URLs may reach despite the SSRF guard.
    pub allowlist: Allowlist,
    /// Retry policy used for fields a creator leaves unset.
    pub default_retry_policy: RetryPolicy,
}

impl WebhookSettings {
    /// Parses the allowlist and checks the default policy; a bad CIDR or an
    /// out-of-range default stops the gateway at start-up instead of misbehaving later.
    pub fn from_config(config: &GatewayConfig) -> Result<Self, ConfigError> {
        let allowlist = Allowlist::parse(&config.webhook_allowlist)
            .map_err(|e| ConfigError(format!("PORTICO_WEBHOOK_ALLOWLIST: {e}")))?;
        let default_retry_policy = RetryPolicy {
            max_retries: config.default_max_retries,
            base_delay_ms: config.default_base_delay_ms,
            max_delay_ms: config.default_max_delay_ms,
        };
        default_retry_policy.validate("").map_err(|errors| {
            ConfigError(format!(
                "PORTICO_DEFAULT_MAX_RETRIES / PORTICO_DEFAULT_BASE_DELAY_MS / PORTICO_DEFAULT_MAX_DELAY_MS: {}",
                errors
                    .iter()
                    .map(|e| e.message.clone())
                    .collect::<Vec<_>>()
                    .join("; ")
            ))
        })?;
        Ok(Self {
            allowlist,
            default_retry_policy,
        })
    }
}

/// A webhook as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Id.
    pub id: Uuid,
    /// Where events are POSTed.
    pub url: String,
    /// Event filters.
    pub events: Vec<String>,
    /// Owner's description.
    pub description: Option<String>,
    /// False when disabled by the owner or by Portico.
    pub active: bool,
    /// Why Portico disabled it; `None` when active or disabled by the owner.
    pub disabled_reason: Option<String>,
    /// Effective retry policy.
    pub retry_policy: RetryPolicy,
    /// Custom headers sent with every delivery.
    pub headers: BTreeMap<String, String>,
    /// Per-ordering-key ordering.
    pub ordering_enabled: bool,
    /// Deliveries per second; `None` = no limit.
    pub rate_limit_per_second: Option<u32>,
    /// Concurrent deliveries; `None` = the dispatcher's default.
    pub max_concurrency: Option<u32>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A new webhook and its signing secret, shown here and at `GET /webhooks/{id}/secret`.
#[derive(Debug, Clone)]
pub struct CreatedWebhook {
    /// The webhook.
    pub webhook: Webhook,
    /// `whsec_<base64>`.
    pub secret: String,
}

/// The current signing secret of a webhook.
#[derive(Debug, Clone)]
pub struct SecretView {
    /// `whsec_<base64>`, the newest active secret.
    pub secret: String,
    /// When the previous secret stops signing; `None` when no previous secret is active.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
}

/// Columns of [`WebhookRow`], in one place for every query.
macro_rules! webhook_columns {
    () => {
        "id, url, events, description, active, disabled_reason, max_retries, base_delay_ms, \
         max_delay_ms, headers, ordering_enabled, rate_limit_per_second, max_concurrency, \
         created_at, updated_at"
    };
}

#[derive(sqlx::FromRow)]
struct WebhookRow {
    id: Uuid,
    url: String,
    events: Vec<String>,
    description: Option<String>,
    active: bool,
    disabled_reason: Option<String>,
    max_retries: i32,
    base_delay_ms: i64,
    max_delay_ms: i64,
    headers: Json<BTreeMap<String, String>>,
    ordering_enabled: bool,
    rate_limit_per_second: Option<i32>,
    max_concurrency: Option<i32>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<WebhookRow> for Webhook {
    fn from(r: WebhookRow) -> Self {
        Webhook {
            id: r.id,
            url: r.url,
            events: r.events,
            description: r.description,
            active: r.active,
            disabled_reason: r.disabled_reason,
            retry_policy: RetryPolicy {
                max_retries: u32::try_from(r.max_retries).unwrap_or(0),
                base_delay_ms: u64::try_from(r.base_delay_ms).unwrap_or(0),
                max_delay_ms: u64::try_from(r.max_delay_ms).unwrap_or(0),
            },
            headers: r.headers.0,
            ordering_enabled: r.ordering_enabled,
            rate_limit_per_second: r.rate_limit_per_second.and_then(|v| u32::try_from(v).ok()),
            max_concurrency: r.max_concurrency.and_then(|v| u32::try_from(v).ok()),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// Validated values fit the columns; saturate rather than panic if a bound ever grows.
pub(crate) fn to_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Tells every dispatcher to drop its cached webhooks of `user_id`. Core NATS, fire and
/// forget: a lost message only delays a change until the dispatcher's cache expires.
async fn invalidate(state: &AppState, user_id: &str) {
    let subject = state
        .publisher()
        .topology()
        .invalidation_subject("webhooks");
    if let Err(err) = state
        .nats()
        .publish(subject, user_id.to_owned().into())
        .await
    {
        tracing::warn!(%err, "webhook cache invalidation not published");
    }
}

/// Refuses a URL whose host is (or resolves to) a forbidden address.
async fn guard(state: &AppState, url: &url::Url) -> Result<(), ApiError> {
    ssrf_guard::check_url(url, &state.webhooks().allowlist, "/url")
        .await
        .map_err(ApiError::from)
}

/// Loads one of the caller's webhooks, or answers not found.
async fn load(state: &AppState, caller: &Caller, id: Uuid) -> Result<Webhook, ApiError> {
    let row: Option<WebhookRow> = sqlx::query_as(concat!(
        "SELECT ",
        webhook_columns!(),
        " FROM webhooks WHERE id = $1 AND user_id = $2"
    ))
    .bind(id)
    .bind(caller.user_id())
    .fetch_optional(state.pool())
    .await?;
    row.map(Webhook::from).ok_or(ApiError::NotFound("webhook"))
}

/// Creates a webhook with a fresh signing secret. Nothing is written unless every
/// rule and the address check pass.
pub async fn create(
    state: &AppState,
    caller: &Caller,
    input: NewWebhook,
) -> Result<CreatedWebhook, ApiError> {
    caller.require(Scope::WebhooksWrite)?;
    let valid: ValidWebhook = input
        .validate(state.webhooks().default_retry_policy)
        .map_err(ApiError::Validation)?;
    guard(state, &valid.url).await?;
    let secret = WebhookSecret::generate().map_err(ApiError::internal)?;
    // Only the sealed raw key is stored, never the whsec_ text.
    let sealed = state
        .secrets_key()
        .seal(secret.as_bytes())
        .map_err(ApiError::internal)?;
    let id = portico_domain::ids::new_id();
    // The webhook and its first secret in one statement (one round trip, atomic on
    // its own): the secret's foreign key is checked at the end of the statement, when
    // the webhook row exists.
    let row: WebhookRow = sqlx::query_as(concat!(
        "WITH w AS (INSERT INTO webhooks (id, user_id, url, events, description, max_retries, \
         base_delay_ms, max_delay_ms, headers, ordering_enabled, rate_limit_per_second, \
         max_concurrency) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING ",
        webhook_columns!(),
        "), s AS (INSERT INTO webhook_secrets (id, webhook_id, ciphertext) \
         SELECT $13, w.id, $14 FROM w) SELECT * FROM w"
    ))
    .bind(id)
    .bind(caller.user_id())
    .bind(valid.url.as_str())
    .bind(&valid.events)
    .bind(&valid.description)
    .bind(to_i32(valid.retry_policy.max_retries))
    .bind(to_i64(valid.retry_policy.base_delay_ms))
    .bind(to_i64(valid.retry_policy.max_delay_ms))
    .bind(Json(&valid.headers))
    .bind(valid.ordering_enabled)
    .bind(valid.rate_limit_per_second.map(to_i32))
    .bind(valid.max_concurrency.map(to_i32))
    .bind(portico_domain::ids::new_id())
    .bind(sealed)
    .fetch_one(state.pool())
    .await?;
    invalidate(state, caller.user_id()).await;
    Ok(CreatedWebhook {
        webhook: row.into(),
        secret: secret.to_whsec(),
    })
}

async fn insert_secret(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    state: &AppState,
    webhook_id: Uuid,
    secret: &WebhookSecret,
) -> Result<(), ApiError> {
    // Only the sealed raw key is stored, never the whsec_ text.
    let sealed = state
        .secrets_key()
        .seal(secret.as_bytes())
        .map_err(ApiError::internal)?;
    sqlx::query("INSERT INTO webhook_secrets (id, webhook_id, ciphertext) VALUES ($1, $2, $3)")
        .bind(portico_domain::ids::new_id())
        .bind(webhook_id)
        .bind(sealed)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// One page of the caller's webhooks, newest first.
pub async fn list(
    state: &AppState,
    caller: &Caller,
    page: pagination::PageRequest,
) -> Result<(Vec<Webhook>, Option<String>), ApiError> {
    caller.require(Scope::WebhooksRead)?;
    let rows: Vec<WebhookRow> = sqlx::query_as(concat!(
        "SELECT ",
        webhook_columns!(),
        " FROM webhooks WHERE user_id = $1
           AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
         ORDER BY created_at DESC, id DESC LIMIT $4"
    ))
    .bind(caller.user_id())
    .bind(page.after.map(|c| c.created_at))
    .bind(page.after.map(|c| c.id))
    .bind(page.fetch_limit())
    .fetch_all(state.pool())
    .await?;
    let webhooks: Vec<Webhook> = rows.into_iter().map(Webhook::from).collect();
    Ok(pagination::finish_page(webhooks, &page, |w| {
        pagination::Cursor {
            created_at: w.created_at,
            id: w.id,
        }
    }))
}

/// One of the caller's webhooks.
pub async fn get(state: &AppState, caller: &Caller, id: Uuid) -> Result<Webhook, ApiError> {
    caller.require(Scope::WebhooksRead)?;
    load(state, caller, id).await
}

/// Applies a partial update. `active: true` on a disabled webhook re-enables it and
/// clears `disabled_reason` and the failure count; `active: false` disables it (an
/// owner's choice, so without a reason).
pub async fn update(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    patch: WebhookPatch,
) -> Result<Webhook, ApiError> {
    caller.require(Scope::WebhooksWrite)?;
    let patch = patch.validate().map_err(ApiError::Validation)?;
    if let Some(url) = &patch.url {
        guard(state, url).await?;
    }
    let mut tx = state.pool().begin().await?;
    let current: Webhook = sqlx::query_as::<_, WebhookRow>(concat!(
        "SELECT ",
        webhook_columns!(),
        " FROM webhooks WHERE id = $1 AND user_id = $2 FOR UPDATE"
    ))
    .bind(id)
    .bind(caller.user_id())
    .fetch_optional(&mut *tx)
    .await?
    .map(Webhook::from)
    .ok_or(ApiError::NotFound("webhook"))?;
    let retry_policy = match &patch.retry_policy {
        Some(p) => p
            .apply(current.retry_policy, "/retryPolicy")
            .map_err(ApiError::Validation)?,
        None => current.retry_policy,
    };
    let url = patch
        .url
        .as_ref()
        .map(|u| u.as_str().to_owned())
        .unwrap_or(current.url);
    let events = patch.events.unwrap_or(current.events);
    let description = patch.description.unwrap_or(current.description);
    let active = patch.active.unwrap_or(current.active);
    let headers = patch.headers.unwrap_or(current.headers);
    let ordering_enabled = patch.ordering_enabled.unwrap_or(current.ordering_enabled);
    let rate = patch
        .rate_limit_per_second
        .unwrap_or(current.rate_limit_per_second);
    let concurrency = patch.max_concurrency.unwrap_or(current.max_concurrency);
    // In SET, column names denote the old row: `$6 AND NOT active` is "re-enabled now".
    let row: WebhookRow = sqlx::query_as(concat!(
        "UPDATE webhooks SET url = $3, events = $4, description = $5, active = $6,
           max_retries = $7, base_delay_ms = $8, max_delay_ms = $9, headers = $10,
           ordering_enabled = $11, rate_limit_per_second = $12, max_concurrency = $13,
           disabled_reason = CASE WHEN $6 <> active THEN NULL ELSE disabled_reason END,
           disabled_at = CASE WHEN $6 AND NOT active THEN NULL
                              WHEN NOT $6 AND active THEN now() ELSE disabled_at END,
           consecutive_failures = CASE WHEN $6 AND NOT active THEN 0 ELSE consecutive_failures END,
           updated_at = now()
         WHERE id = $1 AND user_id = $2 RETURNING ",
        webhook_columns!()
    ))
    .bind(id)
    .bind(caller.user_id())
    .bind(url)
    .bind(events)
    .bind(description)
    .bind(active)
    .bind(to_i32(retry_policy.max_retries))
    .bind(to_i64(retry_policy.base_delay_ms))
    .bind(to_i64(retry_policy.max_delay_ms))
    .bind(Json(headers))
    .bind(ordering_enabled)
    .bind(rate.map(to_i32))
    .bind(concurrency.map(to_i32))
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    invalidate(state, caller.user_id()).await;
    Ok(row.into())
}

/// Deletes a webhook with its secrets, deliveries and attempts (cascade).
pub async fn delete(state: &AppState, caller: &Caller, id: Uuid) -> Result<(), ApiError> {
    caller.require(Scope::WebhooksWrite)?;
    let deleted = sqlx::query("DELETE FROM webhooks WHERE id = $1 AND user_id = $2")
        .bind(id)
        .bind(caller.user_id())
        .execute(state.pool())
        .await?
        .rows_affected();
    if deleted == 0 {
        return Err(ApiError::NotFound("webhook"));
    }
    invalidate(state, caller.user_id()).await;
    Ok(())
}

fn open_secret(state: &AppState, sealed: &[u8]) -> Result<String, ApiError> {
    let raw = state
        .secrets_key()
        .open(sealed)
        .map_err(|e| ApiError::Internal(format!("webhook secret does not open: {e}")))?;
    Ok(WebhookSecret::from_bytes(&raw).to_whsec())
}

/// The newest active signing secret and, during a rotation, when the previous one
/// stops signing. Partners need the write scope: the secret forges deliveries.
pub async fn get_secret(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<SecretView, ApiError> {
    caller.require(Scope::WebhooksWrite)?;
    let rows: Vec<(Vec<u8>, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT s.ciphertext, s.expires_at FROM webhook_secrets s
           JOIN webhooks w ON w.id = s.webhook_id
         WHERE w.id = $1 AND w.user_id = $2
           AND (s.expires_at IS NULL OR s.expires_at > now())
         ORDER BY s.created_at DESC, s.id DESC",
    )
    .bind(id)
    .bind(caller.user_id())
    .fetch_all(state.pool())
    .await?;
    let Some(((current, _), previous)) = rows.split_first() else {
        load(state, caller, id).await?;
        return Err(ApiError::Internal(format!(
            "webhook {id} has no active signing secret"
        )));
    };
    Ok(SecretView {
        secret: open_secret(state, current)?,
        previous_secret_expires_at: previous.iter().filter_map(|(_, e)| *e).max(),
    })
}

/// Replaces the signing secret. Every active secret keeps signing for `grace` seconds
/// (default one day; 0 stops it at once; an earlier expiry is never extended), so a
/// receiver can switch keys without rejecting a delivery.
pub async fn rotate_secret(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    grace_period_seconds: Option<i64>,
) -> Result<SecretView, ApiError> {
    caller.require(Scope::WebhooksWrite)?;
    let grace = grace_period_seconds.unwrap_or(DEFAULT_GRACE_PERIOD_SECS);
    if !(0..=MAX_GRACE_PERIOD_SECS).contains(&grace) {
        return Err(FieldError::new(
            "invalid_grace_period",
            "/gracePeriodSeconds",
            format!("gracePeriodSeconds must be between 0 and {MAX_GRACE_PERIOD_SECS}"),
        )
        .into());
    }
    let secret = WebhookSecret::generate().map_err(ApiError::internal)?;
    let mut tx = state.pool().begin().await?;
    let owned: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM webhooks WHERE id = $1 AND user_id = $2 FOR UPDATE")
            .bind(id)
            .bind(caller.user_id())
            .fetch_optional(&mut *tx)
            .await?;
    if owned.is_none() {
        return Err(ApiError::NotFound("webhook"));
    }
    // Secrets past their expiry sign nothing any more; dropping them keeps the table
    // at a handful of rows per webhook however often it is rotated.
    sqlx::query("DELETE FROM webhook_secrets WHERE webhook_id = $1 AND expires_at <= now()")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE webhook_secrets
            SET expires_at = LEAST(COALESCE(expires_at, 'infinity'::timestamptz),
                                   now() + $2::bigint * interval '1 second')
          WHERE webhook_id = $1 AND (expires_at IS NULL OR expires_at > now())",
    )
    .bind(id)
    .bind(grace)
    .execute(&mut *tx)
    .await?;
    // now() is the transaction's start, so with grace 0 the old rows are already expired.
    let previous: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT max(expires_at) FROM webhook_secrets WHERE webhook_id = $1 AND expires_at > now()",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    insert_secret(&mut tx, state, id, &secret).await?;
    tx.commit().await?;
    invalidate(state, caller.user_id()).await;
    Ok(SecretView {
        secret: secret.to_whsec(),
        previous_secret_expires_at: previous,
    })
}

/// Publishes a `webhook.test` event for this webhook only; the dispatcher delivers it
/// like any event. An inactive webhook receives nothing, so it is refused.
pub async fn send_test_event(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<Uuid, ApiError> {
    caller.require(Scope::WebhooksWrite)?;
    let webhook = load(state, caller, id).await?;
    if !webhook.active {
        return Err(ApiError::FailedPrecondition(
            "the webhook is disabled; enable it (active: true) before sending a test event".into(),
        ));
    }
    let idempotency_key = format!("webhook-test:{}", Uuid::now_v7());
    let event_id = portico_domain::ids::event_id(caller.user_id(), &idempotency_key);
    let data = serde_json::json!({
        "webhookId": id,
        "message": "This is a test event from Portico",
    });
    let data = RawValue::from_string(data.to_string()).map_err(ApiError::internal)?;
    let job = Job::EventDispatchV1(EventDispatch {
        event_id,
        user_id: caller.user_id().to_owned(),
        event_type: TEST_EVENT_TYPE.to_owned(),
        data,
        idempotency_key,
        ordering_key: None,
        accepted_at: Utc::now(),
        only_webhook_id: Some(id),
    });
    state.publisher().publish(&job).await?;
    Ok(event_id)
}
