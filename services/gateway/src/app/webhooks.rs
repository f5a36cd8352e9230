//! Webhook endpoints: create, list, get, update, delete, signing secrets and test
//! events, for both doors.
//!
//! Every query is scoped by the caller's user, so another user's webhook is simply not
//! found. Input is validated by [`portico_domain::webhooks`] (the rules the dispatcher
//! shares) and the URL by the [`ssrf_guard`](crate::app::ssrf_guard) before anything is
//! written. Signing secrets and custom header values are stored only sealed with the
//! secrets keyring, bound to the webhook's id ([`crate::app::sealing`]); header values are
//! returned opened only to callers who may see secrets, masked otherwise. After
//! every change that affects delivery, a core-NATS message on the `webhooks`
//! invalidation subject (payload: the user id) tells the dispatchers to drop their
//! cached view of that user's webhooks.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use portico_domain::ids::WebhookId;
use portico_domain::webhooks::{
    NewWebhook, RetryPolicy, TEST_EVENT_TYPE, ValidWebhook, WebhookPatch,
};
use portico_domain::{FieldError, pagination};
use portico_queue::jobs::{EventDispatch, Job};
use portico_signing::standard_webhooks::WebhookSecret;
use portico_storage::webhooks::{self as store, WebhookRow, WebhookValues};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::app::audit::{self, AuditEntry};
use crate::app::preconditions::{ETag, Precondition};
use crate::app::sealing;
use crate::app::ssrf_guard;
use crate::error::ApiError;
use crate::identity::{Caller, Scope};
use crate::state::AppState;

/// How long a rotated-out secret keeps signing when the caller does not say.
pub const DEFAULT_GRACE_PERIOD_SECS: i64 = 86_400;
/// Longest grace period a rotation may ask for (30 days).
pub const MAX_GRACE_PERIOD_SECS: i64 = 30 * 86_400;

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

impl From<WebhookRow> for Webhook {
    fn from(r: WebhookRow) -> Self {
        Webhook {
            id: r.id.as_uuid(),
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

impl Webhook {
    /// The version clients name in `If-Match` (and gRPC `etag`).
    pub fn etag(&self) -> ETag {
        ETag::of(self.id, self.updated_at)
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
pub(crate) async fn invalidate(state: &AppState, user_id: &str) {
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
    store::get(state.pool(), caller.user_id(), WebhookId::from(id))
        .await?
        .map(Webhook::from)
        .ok_or(ApiError::NotFound("webhook"))
}

/// A new webhook that passed every rule and the address check, with its signing
/// secret generated and sealed: what [`create`] inserts alone and what a template
/// inserts together with its integration, in one transaction.
#[derive(Debug)]
pub(crate) struct PreparedWebhook {
    id: WebhookId,
    valid: ValidWebhook,
    secret: WebhookSecret,
    sealed: Vec<u8>,
    sealed_headers: BTreeMap<String, String>,
}

impl PreparedWebhook {
    /// The owner-set columns to insert.
    pub(crate) fn values(&self) -> WebhookValues<'_> {
        let valid = &self.valid;
        WebhookValues {
            id: self.id,
            url: valid.url.as_str(),
            events: &valid.events,
            description: valid.description.as_deref(),
            max_retries: to_i32(valid.retry_policy.max_retries),
            base_delay_ms: to_i64(valid.retry_policy.base_delay_ms),
            max_delay_ms: to_i64(valid.retry_policy.max_delay_ms),
            headers: &self.sealed_headers,
            ordering_enabled: valid.ordering_enabled,
            rate_limit_per_second: valid.rate_limit_per_second.map(to_i32),
            max_concurrency: valid.max_concurrency.map(to_i32),
        }
    }

    /// The signing secret sealed with `PORTICO_SECRETS_KEY`, as stored.
    pub(crate) fn sealed_secret(&self) -> &[u8] {
        &self.sealed
    }

    /// The `whsec_` text shown to the owner.
    pub(crate) fn secret_text(&self) -> String {
        self.secret.to_whsec()
    }

    /// Its audit entry: the filters and header *names*, never a value or the secret.
    pub(crate) fn audit_entry(&self, action: &'static str) -> AuditEntry {
        AuditEntry::new(action, "webhook", self.id)
            .detail("events", self.valid.events.clone())
            .detail(
                "headerNames",
                self.valid.headers.keys().cloned().collect::<Vec<_>>(),
            )
    }
}

/// Checks every rule of a new webhook and the SSRF guard, reporting every field problem
/// at once, and generates its sealed secret; writes nothing.
pub(crate) async fn prepare(
    state: &AppState,
    input: NewWebhook,
) -> Result<PreparedWebhook, ApiError> {
    let valid: ValidWebhook = input
        .validate(state.webhooks().default_retry_policy)
        .map_err(ApiError::Validation)?;
    guard(state, &valid.url).await?;
    let secret = WebhookSecret::generate().map_err(ApiError::internal)?;
    // The id is chosen here: the sealed values are bound to it.
    let id = WebhookId::generate();
    // Only the sealed raw key is stored, never the whsec_ text.
    let sealed = state
        .secrets_key()
        .seal(&sealing::secret_context(id), secret.as_bytes())
        .map_err(ApiError::internal)?;
    let sealed_headers = sealing::seal_headers(state.secrets_key(), id, &valid.headers)?;
    Ok(PreparedWebhook {
        id,
        valid,
        secret,
        sealed,
        sealed_headers,
    })
}

/// Creates a webhook with a fresh signing secret. Nothing is written unless every
/// rule and the address check pass.
pub async fn create(
    state: &AppState,
    caller: &Caller,
    input: NewWebhook,
) -> Result<CreatedWebhook, ApiError> {
    caller.require(Scope::WebhooksWrite)?;
    let prepared = prepare(state, input).await?;
    let record = audit::PreparedRecord::of_caller(caller, prepared.audit_entry("webhook.created"));
    // The webhook, its first secret and its audit record in one statement, committed on
    // its own: one round trip, atomic.
    let row = store::insert_with_secret_audited(
        state.pool(),
        caller.user_id(),
        &prepared.values(),
        prepared.sealed_secret(),
        &record.as_new(),
    )
    .await?;
    record.written();
    invalidate(state, caller.user_id()).await;
    Ok(CreatedWebhook {
        webhook: reveal(state.secrets_key(), caller, row.into()),
        secret: prepared.secret_text(),
    })
}

/// One page of the caller's webhooks, newest first.
pub async fn list(
    state: &AppState,
    caller: &Caller,
    page: pagination::PageRequest,
) -> Result<(Vec<Webhook>, Option<String>), ApiError> {
    caller.require(Scope::WebhooksRead)?;
    let rows = store::list(
        state.pool(),
        caller.user_id(),
        page.after.map(|c| (c.created_at, WebhookId::from(c.id))),
        page.fetch_limit(),
    )
    .await?;
    let webhooks: Vec<Webhook> = rows
        .into_iter()
        .map(|row| reveal(state.secrets_key(), caller, row.into()))
        .collect();
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
    let webhook = load(state, caller, id).await?;
    Ok(reveal(state.secrets_key(), caller, webhook))
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
    update_if(state, caller, id, patch, &Precondition::None).await
}

/// [`update`] if the webhook's version meets `precondition` (`If-Match`, gRPC `etag`),
/// checked against the locked row: a stale version answers 412 and changes nothing.
pub async fn update_if(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    patch: WebhookPatch,
    precondition: &Precondition,
) -> Result<Webhook, ApiError> {
    caller.require(Scope::WebhooksWrite)?;
    let patch = patch.validate().map_err(ApiError::Validation)?;
    if let Some(url) = &patch.url {
        // A listen endpoint's URL is its placeholder; it reaches its tool, not an
        // address, and must never become one.
        if portico_storage::listen::is_listen(state.pool(), caller.user_id(), WebhookId::from(id))
            .await?
        {
            return Err(ApiError::Specific {
                status: axum::http::StatusCode::CONFLICT,
                code: "listen_endpoint_url",
                message:
                    "a listen endpoint's url cannot change; create a webhook for an address instead"
                        .into(),
            });
        }
        guard(state, url).await?;
    }
    let mut tx = state.pool().begin().await?;
    let current: Webhook = store::get_for_update(&mut tx, caller.user_id(), WebhookId::from(id))
        .await?
        .map(Webhook::from)
        .ok_or(ApiError::NotFound("webhook"))?;
    precondition.check(&current.etag())?;
    let audited = patch_audit(&patch, id, current.active);
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
    // New values are sealed; unchanged ones stay as stored.
    let headers = match &patch.headers {
        Some(h) => sealing::seal_headers(state.secrets_key(), WebhookId::from(id), h)?,
        None => current.headers,
    };
    let ordering_enabled = patch.ordering_enabled.unwrap_or(current.ordering_enabled);
    let rate = patch
        .rate_limit_per_second
        .unwrap_or(current.rate_limit_per_second);
    let concurrency = patch.max_concurrency.unwrap_or(current.max_concurrency);
    let row = store::update(
        &mut *tx,
        caller.user_id(),
        WebhookId::from(id),
        &WebhookValues {
            id: WebhookId::from(id),
            url: &url,
            events: &events,
            description: description.as_deref(),
            max_retries: to_i32(retry_policy.max_retries),
            base_delay_ms: to_i64(retry_policy.base_delay_ms),
            max_delay_ms: to_i64(retry_policy.max_delay_ms),
            headers: &headers,
            ordering_enabled,
            rate_limit_per_second: rate.map(to_i32),
            max_concurrency: concurrency.map(to_i32),
        },
        active,
    )
    .await?
    .ok_or(ApiError::NotFound("webhook"))?;
    audit::record(&mut tx, caller, audited).await?;
    tx.commit().await?;
    invalidate(state, caller.user_id()).await;
    if active != current.active {
        let change = if active { "enabled" } else { "disabled" };
        state.live().endpoint_event(caller.user_id(), id, change);
    }
    Ok(reveal(state.secrets_key(), caller, row.into()))
}

/// Deletes a webhook with its secrets, deliveries and attempts (cascade).
pub async fn delete(state: &AppState, caller: &Caller, id: Uuid) -> Result<(), ApiError> {
    delete_if(state, caller, id, &Precondition::None).await
}

/// [`delete`] if the webhook's version meets `precondition` (checked on the locked row).
pub async fn delete_if(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    precondition: &Precondition,
) -> Result<(), ApiError> {
    caller.require(Scope::WebhooksWrite)?;
    let mut tx = state.pool().begin().await?;
    if precondition.is_set() {
        let version =
            portico_storage::versions::webhook(&mut tx, caller.user_id(), WebhookId::from(id))
                .await?
                .ok_or(ApiError::NotFound("webhook"))?;
        precondition.check(&ETag::of(id, version))?;
    }
    if !store::delete(&mut *tx, caller.user_id(), WebhookId::from(id)).await? {
        return Err(ApiError::NotFound("webhook"));
    }
    audit::record(
        &mut tx,
        caller,
        AuditEntry::new("webhook.deleted", "webhook", id),
    )
    .await?;
    tx.commit().await?;
    invalidate(state, caller.user_id()).await;
    Ok(())
}

fn open_secret(state: &AppState, id: WebhookId, sealed: &[u8]) -> Result<String, ApiError> {
    let opened = state
        .secrets_key()
        .open(&sealing::secret_context(id), sealed)
        .map_err(|e| ApiError::Internal(format!("webhook secret does not open: {e}")))?;
    Ok(WebhookSecret::from_bytes(&opened.plaintext).to_whsec())
}

/// The newest active signing secret and, during a rotation, when the previous one
/// stops signing. Partners need the write scope: the secret forges deliveries.
pub async fn get_secret(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<SecretView, ApiError> {
    caller.require(Scope::WebhooksWrite)?;
    let rows = store::active_secrets(state.pool(), caller.user_id(), WebhookId::from(id)).await?;
    let Some((current, previous)) = rows.split_first() else {
        load(state, caller, id).await?;
        return Err(ApiError::Internal(format!(
            "webhook {id} has no active signing secret"
        )));
    };
    Ok(SecretView {
        secret: open_secret(state, WebhookId::from(id), &current.ciphertext)?,
        previous_secret_expires_at: previous.iter().filter_map(|s| s.expires_at).max(),
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
    let id = WebhookId::from(id);
    let mut tx = state.pool().begin().await?;
    if !store::lock(&mut tx, caller.user_id(), id).await? {
        return Err(ApiError::NotFound("webhook"));
    }
    // Only the sealed raw key is stored, never the whsec_ text.
    let sealed = state
        .secrets_key()
        .seal(&sealing::secret_context(id), secret.as_bytes())
        .map_err(ApiError::internal)?;
    let previous = store::rotate_secret(&mut tx, id, grace, &sealed).await?;
    let entry = AuditEntry::new("webhook.secret_rotated", "webhook", id)
        .detail("gracePeriodSeconds", grace);
    audit::record(&mut tx, caller, entry).await?;
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
    let entry =
        AuditEntry::new("webhook.test_sent", "webhook", id).detail("eventId", event_id.to_string());
    audit::record_alone(state, caller, entry).await?;
    Ok(event_id)
}

/// The audit entry of an update: the names of the fields the patch sets (header
/// *names*, never values); `webhook.enabled` / `webhook.disabled` when it flips
/// `active`.
fn patch_audit(
    patch: &portico_domain::webhooks::ValidPatch,
    id: Uuid,
    was_active: bool,
) -> AuditEntry {
    let set = [
        ("url", patch.url.is_some()),
        ("events", patch.events.is_some()),
        ("description", patch.description.is_some()),
        ("active", patch.active.is_some()),
        ("headers", patch.headers.is_some()),
        ("retryPolicy", patch.retry_policy.is_some()),
        ("rateLimitPerSecond", patch.rate_limit_per_second.is_some()),
        ("maxConcurrency", patch.max_concurrency.is_some()),
        ("orderingEnabled", patch.ordering_enabled.is_some()),
    ];
    let action = match (was_active, patch.active) {
        (false, Some(true)) => "webhook.enabled",
        (true, Some(false)) => "webhook.disabled",
        _ => "webhook.updated",
    };
    let mut entry = AuditEntry::new(action, "webhook", id)
        .fields(set.iter().filter(|(_, on)| *on).map(|(name, _)| *name));
    if let Some(headers) = &patch.headers {
        entry = entry.detail("headerNames", headers.keys().cloned().collect::<Vec<_>>());
    }
    entry
}

/// The webhook as `caller` may read it: its header values opened, or masked for a
/// caller who may not see secrets ([`sealing::reveal_headers`]).
fn reveal(keys: &portico_signing::seal::Keyring, caller: &Caller, mut webhook: Webhook) -> Webhook {
    sealing::reveal_headers(keys, caller, webhook.id, &mut webhook.headers);
    webhook
}
