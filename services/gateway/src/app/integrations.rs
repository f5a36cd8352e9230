//! Partner integrations and their API credentials: the operations behind
//! `/api/integrations` and gRPC `IntegrationService`.
//!
//! Users (and internal services acting for them) manage integrations; every query is
//! scoped to the caller's user, so another user's integration answers 404. Each
//! integration has credentials (see `portico_domain::credentials`): the secret is
//! returned once, at create and regenerate, and stored only as a keyed hash.
//!
//! Anything that changes what a credential may do (update, regenerate, delete) evicts
//! it from this replica's cache at once and tells every other replica over the NATS
//! invalidation subject, so a revoked secret stops working everywhere right away.

use chrono::{DateTime, Duration, Utc};
use portico_domain::FieldError;
use portico_domain::credentials::{self, IssuedCredentials};
use portico_domain::ids::IntegrationId;
use portico_domain::integrations::{IntegrationType, Scope, validate_name};
use portico_domain::pagination::{Cursor, PageRequest, finish_page};
use portico_queue::jobs::{EventDispatch, Job};
use portico_storage::integrations::{self as store, IntegrationChanges, IntegrationRow};
use portico_storage::usage;
use uuid::Uuid;

use crate::app::audit::{self, AuditEntry};
use crate::app::preconditions::{ETag, Precondition};
use crate::app::ssrf_guard;
use crate::error::ApiError;
use crate::identity::Caller;
use crate::state::AppState;

/// Topic of the credential cache's invalidation subject (`<prefix>.invalidate.credentials`).
pub const INVALIDATION_TOPIC: &str = "credentials";
/// Event published to the owner when credentials are regenerated.
pub const ROTATED_EVENT: &str = "integration.credentials_rotated";
/// Longest grace period for a rotated-out secret (30 days).
pub const MAX_GRACE_SECONDS: u32 = 30 * 24 * 3600;
/// Largest rate limit accepted (requests per second).
pub const MAX_RATE_LIMIT: u32 = 100_000;
/// Largest daily quota accepted (the column is a 32-bit integer).
pub const MAX_DAILY_QUOTA: u64 = i32::MAX as u64;
/// Rotated-out credentials are kept this long after they stopped working, so a
/// partner still using one gets "expired" rather than "invalid", then pruned.
const KEEP_RETIRED_DAYS: i64 = 7;

/// An integration as its owner sees it (never with a secret).
#[derive(Debug, Clone)]
pub struct Integration {
    /// Its id.
    pub id: Uuid,
    /// Display name.
    pub name: String,
    /// From the fixed list.
    pub integration_type: IntegrationType,
    /// Where the partner wants events, if anywhere.
    pub webhook_url: Option<String>,
    /// What its credentials may do.
    pub scopes: Vec<Scope>,
    /// False when deactivated (its credentials are refused).
    pub active: bool,
    /// The current public key id.
    pub api_key: Option<String>,
    /// When its credentials stop working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// Requests per second (0 = unlimited).
    pub rate_limit_per_second: u32,
    /// Calls per UTC day (0 = unlimited).
    pub daily_quota: u64,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed by its owner.
    pub updated_at: DateTime<Utc>,
    /// Last call admitted with its credentials.
    pub last_used_at: Option<DateTime<Utc>>,
}

/// What a new integration is made of, as both doors parse it.
#[derive(Debug, Default)]
pub struct NewIntegration {
    /// 1-200 characters.
    pub name: String,
    /// A type name from the fixed list.
    pub integration_type: String,
    /// Optional http(s) URL; checked by the SSRF guard like a webhook's.
    pub webhook_url: Option<String>,
    /// Scope names; `None` = the default set.
    pub scopes: Option<Vec<String>>,
    /// Optional expiry, in the future.
    pub expires_at: Option<DateTime<Utc>>,
    /// `None` = the server default; 0 = unlimited.
    pub rate_limit_per_second: Option<u32>,
    /// `None` = the server default; 0 = unlimited.
    pub daily_quota: Option<u64>,
}

/// A partial update: `None` leaves a field as it is; for nullable fields
/// `Some(None)` clears it.
#[derive(Debug, Default)]
pub struct IntegrationPatch {
    /// New name.
    pub name: Option<String>,
    /// New type name.
    pub integration_type: Option<String>,
    /// New webhook URL, or `Some(None)` to remove it.
    pub webhook_url: Option<Option<String>>,
    /// Replaces every scope.
    pub scopes: Option<Vec<String>>,
    /// Activate or deactivate.
    pub active: Option<bool>,
    /// New expiry, or `Some(None)` for never.
    pub expires_at: Option<Option<DateTime<Utc>>>,
    /// New rate limit (0 = unlimited).
    pub rate_limit_per_second: Option<u32>,
    /// New daily quota (0 = unlimited).
    pub daily_quota: Option<u64>,
}

/// An integration with credentials that are shown this once.
#[derive(Debug)]
pub struct WithCredentials {
    /// The integration.
    pub integration: Integration,
    /// Key id and secret.
    pub credentials: IssuedCredentials,
    /// When the previous secret stops working (regenerate with a grace period).
    pub previous_expires_at: Option<DateTime<Utc>>,
}

/// The answer of the verify endpoints.
#[derive(Debug, Default)]
pub struct Verification {
    /// True when the pair is valid, current and the caller's own.
    pub valid: bool,
    /// Set when valid.
    pub integration_id: Option<Uuid>,
    /// Set when valid.
    pub scopes: Vec<Scope>,
}

/// One usage-log row (the storage row as it is: the doors render it).
pub use portico_storage::usage::UsageRecord;

/// Totals over a usage range (all pages).
#[derive(Debug, Default, Clone)]
pub struct UsageTotals {
    /// Calls in the range.
    pub total: u64,
    /// By status code, e.g. `"200"`.
    pub by_status: std::collections::BTreeMap<String, u64>,
    /// By `METHOD route`, e.g. `"POST /api/bulk-orders"`.
    pub by_route: std::collections::BTreeMap<String, u64>,
}

/// A page of usage with the range's totals.
#[derive(Debug, Default)]
pub struct UsagePage {
    /// Newest first.
    pub entries: Vec<UsageRecord>,
    /// Cursor of the next page.
    pub next_cursor: Option<String>,
    /// Totals over the whole range.
    pub totals: UsageTotals,
}

/// Which usage to read.
#[derive(Debug, Default)]
pub struct UsageQuery {
    /// Inclusive lower bound.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive upper bound.
    pub to: Option<DateTime<Utc>>,
    /// Page size.
    pub limit: Option<u32>,
    /// Cursor from a previous page.
    pub cursor: Option<String>,
}

/// The owner's view of a stored row: typed names, the server defaults for unset limits.
fn into_integration(row: IntegrationRow, state: &AppState) -> Integration {
    let config = state.config();
    Integration {
        id: row.id.as_uuid(),
        name: row.name,
        integration_type: IntegrationType::parse(&row.integration_type, "")
            .unwrap_or(IntegrationType::Custom),
        webhook_url: row.webhook_url,
        scopes: Scope::from_stored(&row.scopes),
        active: row.active,
        api_key: row.api_key,
        expires_at: row.expires_at,
        rate_limit_per_second: row
            .rate_limit_per_second
            .map_or(config.default_partner_rate_limit, |r| r.max(0) as u32),
        daily_quota: row
            .daily_quota
            .map_or(config.default_partner_daily_quota, |q| q.max(0) as u64),
        created_at: row.created_at,
        updated_at: row.updated_at,
        last_used_at: row.last_used_at,
    }
}

fn scope_names(scopes: &[Scope]) -> Vec<String> {
    scopes.iter().map(|s| s.as_str().to_owned()).collect()
}

fn validate_expiry(expires_at: Option<DateTime<Utc>>, errors: &mut Vec<FieldError>) {
    if let Some(t) = expires_at
        && t <= Utc::now()
    {
        errors.push(FieldError::new(
            "invalid_expiry",
            "/expiresAt",
            "expiresAt must be in the future",
        ));
    }
}

pub(crate) fn validate_rate(rate: Option<u32>, errors: &mut Vec<FieldError>) {
    if rate.is_some_and(|r| r > MAX_RATE_LIMIT) {
        errors.push(FieldError::new(
            "invalid_rate_limit",
            "/rateLimitPerSecond",
            format!("rateLimitPerSecond must be 0 (unlimited) to {MAX_RATE_LIMIT}"),
        ));
    }
}

pub(crate) fn validate_quota(quota: Option<u64>, errors: &mut Vec<FieldError>) {
    if quota.is_some_and(|q| q > MAX_DAILY_QUOTA) {
        errors.push(FieldError::new(
            "invalid_quota",
            "/dailyQuota",
            format!("dailyQuota must be 0 (unlimited) to {MAX_DAILY_QUOTA}"),
        ));
    }
}

/// Checks an integration's webhook URL: its form, then the SSRF guard with the same
/// rules and allowlist as webhook endpoints, so it can never name an address Portico
/// must not reach. Returns the normalised URL.
async fn validate_url(
    state: &AppState,
    url: Option<&str>,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    let checked = match portico_domain::network::parse_webhook_url(url?, "/webhookUrl") {
        Ok(parsed) => ssrf_guard::check_url(&parsed, &state.webhooks().allowlist, "/webhookUrl")
            .await
            .map(|()| parsed.to_string()),
        Err(e) => Err(e),
    };
    checked.map_err(|e| errors.push(e)).ok()
}

fn issue() -> Result<IssuedCredentials, ApiError> {
    credentials::generate().map_err(ApiError::internal)
}

/// Stores `issued` for an integration, its secret only as the keyed hash.
async fn insert_credential(
    executor: impl sqlx::PgExecutor<'_>,
    state: &AppState,
    integration_id: IntegrationId,
    issued: &IssuedCredentials,
) -> Result<Uuid, ApiError> {
    let hash = state.credentials().hash_secret(&issued.api_secret);
    Ok(store::insert_credential(executor, integration_id, &issued.api_key, &hash).await?)
}

pub(crate) async fn fetch(
    state: &AppState,
    user_id: &str,
    id: Uuid,
) -> Result<Integration, ApiError> {
    store::fetch(state.pool(), user_id, IntegrationId::from(id))
        .await?
        .map(|r| into_integration(r, state))
        .ok_or(ApiError::NotFound("integration"))
}

/// Locks the integration's version and checks `precondition` against it (nothing to
/// lock without a condition): 404 when the caller has no such integration, 412 when
/// the version is stale.
async fn check_version(
    conn: &mut sqlx::PgConnection,
    caller: &Caller,
    id: Uuid,
    precondition: &Precondition,
) -> Result<(), ApiError> {
    if !precondition.is_set() {
        return Ok(());
    }
    let version =
        portico_storage::versions::integration(conn, caller.user_id(), IntegrationId::from(id))
            .await?
            .ok_or(ApiError::NotFound("integration"))?;
    precondition.check(&ETag::of(id, version))
}

impl Integration {
    /// The version clients name in `If-Match` (and gRPC `etag`).
    pub fn etag(&self) -> ETag {
        ETag::of(self.id, self.updated_at)
    }
}

/// Tells this replica and every other one to forget cached credentials of `id`. A
/// failed broadcast is logged; the cache TTL bounds how long other replicas lag.
async fn invalidate(state: &AppState, id: Uuid) {
    state.credentials().evict(id);
    let subject = state
        .publisher()
        .topology()
        .invalidation_subject(INVALIDATION_TOPIC);
    let sent = state
        .nats()
        .publish(subject, id.to_string().into())
        .await
        .map_err(|e| e.to_string());
    let flushed = match sent {
        Ok(()) => state.nats().flush().await.map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    if let Err(err) = flushed {
        tracing::warn!(%err, integration_id = %id, "credential invalidation not broadcast; other replicas catch up within the cache TTL");
    }
}

/// A new integration that passed every rule (name, type, URL and SSRF guard, scopes,
/// expiry, limits) with its credentials issued and hashed: what [`create`] inserts
/// alone and what a template inserts together with its webhook, in one transaction.
#[derive(Debug)]
pub(crate) struct PreparedIntegration {
    id: IntegrationId,
    name: String,
    integration_type: IntegrationType,
    webhook_url: Option<String>,
    scopes: Vec<String>,
    expires_at: Option<DateTime<Utc>>,
    rate_limit_per_second: i32,
    daily_quota: i32,
    issued: IssuedCredentials,
    secret_hash: Vec<u8>,
}

impl PreparedIntegration {
    /// Its id.
    pub(crate) fn id(&self) -> IntegrationId {
        self.id
    }

    /// The row to insert for `user_id`.
    pub(crate) fn row<'a>(&'a self, user_id: &'a str) -> store::NewIntegration<'a> {
        store::NewIntegration {
            id: self.id,
            user_id,
            name: &self.name,
            integration_type: self.integration_type.as_str(),
            webhook_url: self.webhook_url.as_deref(),
            scopes: &self.scopes,
            expires_at: self.expires_at,
            rate_limit_per_second: self.rate_limit_per_second,
            daily_quota: self.daily_quota,
        }
    }

    /// The public key id and the secret's keyed hash, as stored.
    pub(crate) fn credential(&self) -> (&str, &[u8]) {
        (&self.issued.api_key, &self.secret_hash)
    }

    /// Its audit entry: type, scopes and the public API key, never the secret.
    pub(crate) fn audit_entry(&self, action: &'static str) -> AuditEntry {
        AuditEntry::new(action, "integration", self.id)
            .detail("type", self.integration_type.as_str())
            .detail("scopes", self.scopes.clone())
            .detail("apiKey", self.issued.api_key.clone())
    }

    /// The credentials to show once, after the commit.
    pub(crate) fn into_credentials(self) -> IssuedCredentials {
        self.issued
    }
}

/// Checks every rule of a new integration, reporting every problem at once, and issues
/// its credentials; writes nothing.
pub(crate) async fn prepare(
    state: &AppState,
    input: NewIntegration,
) -> Result<PreparedIntegration, ApiError> {
    let mut errors = Vec::new();
    if let Err(e) = validate_name(&input.name, "/name") {
        errors.push(e);
    }
    let integration_type = match IntegrationType::parse(&input.integration_type, "/type") {
        Ok(t) => Some(t),
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let webhook_url = validate_url(state, input.webhook_url.as_deref(), &mut errors).await;
    let scopes = match &input.scopes {
        None => Scope::DEFAULT.to_vec(),
        Some(names) => Scope::parse_list(names, "/scopes").unwrap_or_else(|e| {
            errors.push(e);
            Vec::new()
        }),
    };
    validate_expiry(input.expires_at, &mut errors);
    validate_rate(input.rate_limit_per_second, &mut errors);
    validate_quota(input.daily_quota, &mut errors);
    let Some(integration_type) = integration_type.filter(|_| errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let config = state.config();
    let rate = input
        .rate_limit_per_second
        .unwrap_or(config.default_partner_rate_limit);
    let quota = input
        .daily_quota
        .unwrap_or(config.default_partner_daily_quota);
    let issued = issue()?;
    let secret_hash = state.credentials().hash_secret(&issued.api_secret);
    Ok(PreparedIntegration {
        id: IntegrationId::generate(),
        name: input.name.trim().to_owned(),
        integration_type,
        webhook_url,
        scopes: scope_names(&scopes),
        expires_at: input.expires_at,
        rate_limit_per_second: i32::try_from(rate).unwrap_or(i32::MAX),
        daily_quota: i32::try_from(quota).unwrap_or(i32::MAX),
        issued,
        secret_hash,
    })
}

/// Creates an integration and its first credentials.
pub async fn create(
    state: &AppState,
    caller: &Caller,
    input: NewIntegration,
) -> Result<WithCredentials, ApiError> {
    caller.require_user_or_service()?;
    let prepared = prepare(state, input).await?;
    let id = prepared.id();
    let mut tx = state.pool().begin().await?;
    store::insert(&mut *tx, &prepared.row(caller.user_id())).await?;
    let (api_key, secret_hash) = prepared.credential();
    store::insert_credential(&mut *tx, id, api_key, secret_hash).await?;
    audit::record(&mut tx, caller, prepared.audit_entry("integration.created")).await?;
    tx.commit().await?;
    let integration = fetch(state, caller.user_id(), id.as_uuid()).await?;
    Ok(WithCredentials {
        integration,
        credentials: prepared.into_credentials(),
        previous_expires_at: None,
    })
}

/// Lists the caller's integrations, newest first, optionally of one type.
pub async fn list(
    state: &AppState,
    caller: &Caller,
    integration_type: Option<&str>,
    limit: Option<u32>,
    cursor: Option<&str>,
) -> Result<(Vec<Integration>, Option<String>), ApiError> {
    caller.require_user_or_service()?;
    let page = PageRequest::parse(limit, cursor)?;
    let integration_type = integration_type
        .filter(|t| !t.is_empty())
        .map(|t| IntegrationType::parse(t, "/type"))
        .transpose()?;
    let rows = store::list(
        state.pool(),
        caller.user_id(),
        integration_type.map(IntegrationType::as_str),
        page.after
            .map(|c| (c.created_at, IntegrationId::from(c.id))),
        page.fetch_limit(),
    )
    .await?;
    let (rows, next) = finish_page(rows, &page, |r| Cursor {
        created_at: r.created_at,
        id: r.id.as_uuid(),
    });
    Ok((
        rows.into_iter()
            .map(|r| into_integration(r, state))
            .collect(),
        next,
    ))
}

/// One of the caller's integrations.
pub async fn get(state: &AppState, caller: &Caller, id: Uuid) -> Result<Integration, ApiError> {
    caller.require_user_or_service()?;
    fetch(state, caller.user_id(), id).await
}

/// Partially updates an integration; its cached credentials are invalidated on every
/// replica so new scopes, limits, expiry or deactivation apply at once. `precondition`
/// is checked against the locked row, so a stale version answers 412 and changes
/// nothing.
pub async fn update(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    patch: IntegrationPatch,
    precondition: &Precondition,
) -> Result<Integration, ApiError> {
    caller.require_user_or_service()?;
    let mut errors = Vec::new();
    if let Some(name) = &patch.name
        && let Err(e) = validate_name(name, "/name")
    {
        errors.push(e);
    }
    let integration_type = match patch.integration_type.as_deref() {
        None => None,
        Some(t) => match IntegrationType::parse(t, "/type") {
            Ok(t) => Some(t),
            Err(e) => {
                errors.push(e);
                None
            }
        },
    };
    let webhook_url = match &patch.webhook_url {
        None => None,
        Some(None) => Some(None),
        Some(Some(url)) => Some(validate_url(state, Some(url), &mut errors).await),
    };
    let scopes = match &patch.scopes {
        None => None,
        Some(names) => match Scope::parse_list(names, "/scopes") {
            Ok(s) => Some(scope_names(&s)),
            Err(e) => {
                errors.push(e);
                None
            }
        },
    };
    if let Some(expiry) = patch.expires_at {
        validate_expiry(expiry, &mut errors);
    }
    validate_rate(patch.rate_limit_per_second, &mut errors);
    validate_quota(patch.daily_quota, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let changes = IntegrationChanges {
        name: patch.name.as_deref().map(str::trim),
        integration_type: integration_type.map(IntegrationType::as_str),
        webhook_url: webhook_url.as_ref().map(Option::as_deref),
        scopes,
        active: patch.active,
        expires_at: patch.expires_at,
        rate_limit_per_second: patch
            .rate_limit_per_second
            .map(|r| i32::try_from(r).unwrap_or(i32::MAX)),
        daily_quota: patch
            .daily_quota
            .map(|q| i32::try_from(q).unwrap_or(i32::MAX)),
    };
    let mut tx = state.pool().begin().await?;
    check_version(&mut tx, caller, id, precondition).await?;
    let updated = store::update(
        &mut *tx,
        caller.user_id(),
        IntegrationId::from(id),
        &changes,
    )
    .await?;
    if !updated {
        return Err(ApiError::NotFound("integration"));
    }
    audit::record(&mut tx, caller, changes_audit(&changes, id)).await?;
    tx.commit().await?;
    invalidate(state, id).await;
    if patch.active == Some(false) {
        state
            .live()
            .credential_event(caller.user_id(), id, "deactivated");
    }
    fetch(state, caller.user_id(), id).await
}

/// Deletes an integration with its credentials and usage log, if its version meets
/// `precondition`; its credentials stop working at once on every replica.
pub async fn delete(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    precondition: &Precondition,
) -> Result<(), ApiError> {
    caller.require_user_or_service()?;
    let mut tx = state.pool().begin().await?;
    check_version(&mut tx, caller, id, precondition).await?;
    let deleted = store::delete(&mut *tx, caller.user_id(), IntegrationId::from(id)).await?;
    if !deleted {
        return Err(ApiError::NotFound("integration"));
    }
    audit::record(
        &mut tx,
        caller,
        AuditEntry::new("integration.deleted", "integration", id),
    )
    .await?;
    tx.commit().await?;
    state.credentials().forget_integration(id);
    invalidate(state, id).await;
    state
        .live()
        .credential_event(caller.user_id(), id, "deleted");
    Ok(())
}

/// Issues new credentials. The new secret works at once; the previous ones keep
/// working for `grace_seconds` (the configured default when `None`; 0 revokes them
/// at once). The owner is told with an `integration.credentials_rotated` event,
/// enqueued in the same transaction so the rotation and its event cannot diverge.
pub async fn regenerate(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    grace_seconds: Option<u32>,
) -> Result<WithCredentials, ApiError> {
    caller.require_user_or_service()?;
    let grace = grace_seconds.unwrap_or(state.config().credential_grace_seconds);
    if grace > MAX_GRACE_SECONDS {
        return Err(ApiError::field(
            "invalid_grace_period",
            "/gracePeriodSeconds",
            format!("gracePeriodSeconds must be 0 (revoke at once) to {MAX_GRACE_SECONDS}"),
        ));
    }
    let issued = issue()?;
    let integration_id = IntegrationId::from(id);
    let mut tx = state.pool().begin().await?;
    // Locks the integration: concurrent regenerations of one integration serialize.
    if !store::lock_for_rotation(&mut *tx, caller.user_id(), integration_id).await? {
        return Err(ApiError::NotFound("integration"));
    }
    store::prune_retired_credentials(&mut *tx, integration_id, KEEP_RETIRED_DAYS as i32).await?;
    let previous_expires_at: Option<DateTime<Utc>> = if grace == 0 {
        store::revoke_credentials(&mut *tx, integration_id).await?;
        None
    } else {
        let until = Utc::now() + Duration::seconds(i64::from(grace));
        store::retire_credentials(&mut *tx, integration_id, until).await?
    };
    insert_credential(&mut *tx, state, integration_id, &issued).await?;
    let data = serde_json::json!({
        "integrationId": id,
        "apiKey": issued.api_key,
        "previousExpiresAt": previous_expires_at,
    });
    let idempotency_key = format!("{ROTATED_EVENT}:{}", issued.api_key);
    let job = Job::EventDispatchV1(EventDispatch {
        event_id: portico_domain::ids::event_id(caller.user_id(), &idempotency_key),
        user_id: caller.user_id().to_owned(),
        event_type: ROTATED_EVENT.to_owned(),
        data: serde_json::value::to_raw_value(&data).map_err(ApiError::internal)?,
        idempotency_key,
        ordering_key: None,
        accepted_at: Utc::now(),
        only_webhook_id: None,
    });
    portico_queue::outbox::enqueue(&mut tx, state.publisher().topology(), &job).await?;
    let action = if grace == 0 {
        "integration.credentials_revoked"
    } else {
        "integration.credentials_regenerated"
    };
    let entry = AuditEntry::new(action, "integration", id)
        .detail("apiKey", issued.api_key.clone())
        .detail("gracePeriodSeconds", grace);
    audit::record(&mut tx, caller, entry).await?;
    tx.commit().await?;
    portico_queue::failpoint::hit("integrations.regenerate.after_commit");
    state.outbox().notify();
    invalidate(state, id).await;
    let action = if grace == 0 { "revoked" } else { "regenerated" };
    state.live().credential_event(caller.user_id(), id, action);
    let integration = fetch(state, caller.user_id(), id).await?;
    Ok(WithCredentials {
        integration,
        credentials: issued,
        previous_expires_at,
    })
}

/// Checks a key and secret for a user or service. Wrong, expired, revoked, malformed
/// and other users' credentials all answer `valid: false`, never an error, so the
/// endpoint cannot be used to probe other users' integrations.
pub async fn verify(
    state: &AppState,
    caller: &Caller,
    api_key: &str,
    api_secret: &str,
) -> Result<Verification, ApiError> {
    caller.require_user_or_service()?;
    let mut errors = Vec::new();
    for (value, path) in [(api_key, "/apiKey"), (api_secret, "/apiSecret")] {
        if value.is_empty() {
            errors.push(FieldError::new(
                "missing_field",
                path,
                format!("{} is required", &path[1..]),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    // Guessing through this route is throttled per user like guessing over Basic is
    // per address.
    let client = format!("user:{}", caller.user_id());
    match state
        .credentials()
        .check_from(api_key, api_secret, &client)
        .await
    {
        Ok(Ok(c)) if c.user_id == caller.user_id() => Ok(Verification {
            valid: true,
            integration_id: Some(c.integration_id),
            scopes: c.scopes.clone(),
        }),
        Ok(_) | Err(ApiError::Unauthenticated(_)) => Ok(Verification::default()),
        Err(other) => Err(other),
    }
}

/// The integration whose credentials the calling partner presented, with its usage
/// totals since 00:00 UTC (the day its quota counts).
pub async fn current(
    state: &AppState,
    caller: &Caller,
) -> Result<(Integration, UsageTotals), ApiError> {
    let Caller::Partner(partner) = caller else {
        return Err(ApiError::Forbidden(
            "this route is for partners (HTTP Basic with an integration's credentials); users read /api/integrations/{id}".into(),
        ));
    };
    let integration = fetch(state, &partner.user_id, partner.integration_id).await?;
    let midnight = Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc());
    let totals = usage_totals(state, partner.integration_id, midnight, None).await?;
    Ok((integration, totals))
}

/// The calling partner's own usage. Needs a read scope: a write-only integration
/// reads nothing, its own activity included.
pub async fn current_usage(
    state: &AppState,
    caller: &Caller,
    query: UsageQuery,
) -> Result<UsagePage, ApiError> {
    let Caller::Partner(partner) = caller else {
        return Err(ApiError::Forbidden(
            "this route is for partners; users read /api/integrations/{id}/usage".into(),
        ));
    };
    if !partner.scopes.iter().any(|s| s.is_read()) {
        return Err(ApiError::Forbidden(
            "the integration's credentials hold no read scope (bulk_orders:read, webhooks:read or orders:read)".into(),
        ));
    }
    read_usage(state, partner.integration_id, query).await
}

/// The usage log of one of the caller's integrations: a page of entries, newest
/// first, and totals over the whole range.
pub async fn usage(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    query: UsageQuery,
) -> Result<UsagePage, ApiError> {
    caller.require_user_or_service()?;
    if !store::exists(state.pool(), caller.user_id(), IntegrationId::from(id)).await? {
        return Err(ApiError::NotFound("integration"));
    }
    read_usage(state, id, query).await
}

async fn read_usage(
    state: &AppState,
    integration_id: Uuid,
    query: UsageQuery,
) -> Result<UsagePage, ApiError> {
    let page = PageRequest::parse(query.limit, query.cursor.as_deref())?;
    if let (Some(from), Some(to)) = (query.from, query.to)
        && from >= to
    {
        return Err(ApiError::field(
            "invalid_range",
            "/from",
            "from must be before to",
        ));
    }
    let after_id = page
        .after
        .map(|c| i64::try_from(c.id.as_u64_pair().1).unwrap_or(i64::MAX));
    let entries = usage::page(
        state.pool(),
        IntegrationId::from(integration_id),
        query.from,
        query.to,
        page.after.map(|c| c.created_at).zip(after_id),
        page.fetch_limit(),
    )
    .await?;
    let (entries, next_cursor) = finish_page(entries, &page, |e| Cursor {
        created_at: e.occurred_at,
        id: Uuid::from_u64_pair(0, u64::try_from(e.id).unwrap_or(0)),
    });
    let totals = usage_totals(state, integration_id, query.from, query.to).await?;
    Ok(UsagePage {
        entries,
        next_cursor,
        totals,
    })
}

/// Totals over a time range, in one grouped scan: overall, by status, by route.
async fn usage_totals(
    state: &AppState,
    integration_id: Uuid,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<UsageTotals, ApiError> {
    let groups = usage::totals(state.pool(), IntegrationId::from(integration_id), from, to).await?;
    let mut totals = UsageTotals::default();
    for group in groups {
        let count = u64::try_from(group.calls).unwrap_or(0);
        match (group.status, group.method, group.route) {
            (Some(status), _, _) => {
                totals.by_status.insert(status.to_string(), count);
            }
            (None, Some(method), Some(route)) => {
                totals.by_route.insert(format!("{method} {route}"), count);
            }
            _ => totals.total = count,
        }
    }
    Ok(totals)
}

/// The audit entry of an update: the names of the fields it sets (scopes by name).
fn changes_audit(changes: &IntegrationChanges<'_>, id: Uuid) -> AuditEntry {
    let set = [
        ("name", changes.name.is_some()),
        ("type", changes.integration_type.is_some()),
        ("webhookUrl", changes.webhook_url.is_some()),
        ("scopes", changes.scopes.is_some()),
        ("active", changes.active.is_some()),
        ("expiresAt", changes.expires_at.is_some()),
        (
            "rateLimitPerSecond",
            changes.rate_limit_per_second.is_some(),
        ),
        ("dailyQuota", changes.daily_quota.is_some()),
    ];
    let action = match changes.active {
        Some(false) => "integration.deactivated",
        Some(true) => "integration.activated",
        None => "integration.updated",
    };
    let mut entry = AuditEntry::new(action, "integration", id)
        .fields(set.iter().filter(|(_, on)| *on).map(|(name, _)| *name));
    if let Some(scopes) = &changes.scopes {
        entry = entry.detail("scopes", scopes.clone());
    }
    entry
}

/// Most days [`daily_usage`] reads.
pub const MAX_USAGE_DAYS: u32 = 90;

/// Calls per UTC day of one of the caller's integrations over the last `days` days
/// (today included), oldest first, a zero for a day without calls: the counters the
/// daily quota is charged against, which outlive the usage log's retention.
pub async fn daily_usage(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    days: u32,
) -> Result<Vec<(chrono::NaiveDate, u64)>, ApiError> {
    caller.require_user_or_service()?;
    if days == 0 || days > MAX_USAGE_DAYS {
        return Err(ApiError::field(
            "invalid_days",
            "/days",
            format!("days must be between 1 and {MAX_USAGE_DAYS}"),
        ));
    }
    let integration_id = IntegrationId::from(id);
    if !store::exists(state.pool(), caller.user_id(), integration_id).await? {
        return Err(ApiError::NotFound("integration"));
    }
    let today = Utc::now().date_naive();
    let first = today - Duration::days(i64::from(days) - 1);
    let counted = store::daily_calls(state.pool(), integration_id, first).await?;
    Ok(first
        .iter_days()
        .take(days as usize)
        .map(|day| {
            let calls = counted
                .iter()
                .find(|c| c.day == day)
                .map_or(0, |c| u64::try_from(c.calls).unwrap_or(0));
            (day, calls)
        })
        .collect())
}
