//! Integration templates: the operations behind `/api/integration-templates` and gRPC
//! `IntegrationTemplateService`.
//!
//! A template is a named starting point for a partner integration: its type, default
//! scopes (and the scopes a request may pick), rate limit and quota, the webhook event
//! subscriptions it needs, and which of those a request may override. The built-in
//! ones ship in `data/integration-templates.json` (versioned, compiled in, parsed and
//! checked once when the gateway starts); users save their own, isolated per user, under
//! keys that never shadow a built-in one.
//!
//! Creating an integration from a template runs the same validation as creating an
//! integration ([`integrations::prepare`]) and a webhook ([`webhooks::prepare`],
//! with the SSRF guard), then writes the integration, its credential and its webhook
//! subscription in one transaction: either all exist afterwards or none does. The API
//! secret and the webhook signing secret are returned once.

use std::sync::LazyLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use portico_domain::FieldError;
use portico_domain::credentials::IssuedCredentials;
use portico_domain::integrations::{IntegrationType, Scope, validate_name};
use portico_domain::pagination::parse_limit;
use portico_domain::webhooks::{NewWebhook, validate_description, validate_event_filters};
use portico_storage::integration_templates::{
    self as store, IntegrationWithWebhook, TemplateRow, TemplateValues,
};
use serde::{Deserialize, Serialize};

use crate::app::audit::{self, AuditEntry};
use crate::app::integrations::{self, Integration, NewIntegration};
use crate::app::preconditions::{ETag, Precondition};
use crate::app::webhooks::{self, Webhook};
use crate::error::ApiError;
use crate::identity::Caller;
use crate::state::AppState;

/// The built-in templates' data file, compiled in so a gateway binary and its templates
/// can never disagree.
const BUILTIN_DATA: &str = include_str!("../../../../data/integration-templates.json");
/// The data file format this gateway reads (`version` in the file).
pub const DATA_VERSION: u32 = 1;
/// Shortest and longest template key.
const KEY_LENGTH: std::ops::RangeInclusive<usize> = 3..=64;

/// A request field a template may let a request override. A field not listed in a
/// template's `overridable` is refused with 422, so a template can pin what matters
/// (an ERP read-only template pins its limits, for example).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum TemplateField {
    /// The integration's name (the template's name when absent).
    Name,
    /// The integration's scopes (always within the template's `allowedScopes`).
    Scopes,
    /// Requests per second.
    RateLimitPerSecond,
    /// Calls per UTC day.
    DailyQuota,
    /// When the credentials stop working.
    ExpiresAt,
    /// The webhook subscription's event filters.
    Events,
}

impl TemplateField {
    /// Every field, in documentation order.
    pub const ALL: [TemplateField; 6] = [
        TemplateField::Name,
        TemplateField::Scopes,
        TemplateField::RateLimitPerSecond,
        TemplateField::DailyQuota,
        TemplateField::ExpiresAt,
        TemplateField::Events,
    ];

    /// The request field's wire name (also its JSON pointer without the slash).
    pub fn as_str(self) -> &'static str {
        match self {
            TemplateField::Name => "name",
            TemplateField::Scopes => "scopes",
            TemplateField::RateLimitPerSecond => "rateLimitPerSecond",
            TemplateField::DailyQuota => "dailyQuota",
            TemplateField::ExpiresAt => "expiresAt",
            TemplateField::Events => "events",
        }
    }

    /// The field of a wire name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == text)
    }
}

/// A template as both doors show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// Its key: `[a-z0-9-]`, 3-64 characters, starting and ending with a letter or digit.
    pub key: String,
    /// Display name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// The type of the integrations it creates.
    pub integration_type: IntegrationType,
    /// Scopes an integration gets when the request names none.
    pub scopes: Vec<Scope>,
    /// Scopes a request may choose from; `None` = any.
    pub allowed_scopes: Option<Vec<Scope>>,
    /// Requests per second (0 = unlimited).
    pub rate_limit_per_second: u32,
    /// Calls per UTC day (0 = unlimited).
    pub daily_quota: u64,
    /// Event filters of the webhook subscription it creates.
    pub events: Vec<String>,
    /// Request fields that may override the defaults.
    pub overridable: Vec<TemplateField>,
    /// True for the templates shipped with Portico (read only).
    pub builtin: bool,
    /// Saved templates only: when created.
    pub created_at: Option<DateTime<Utc>>,
    /// Saved templates only: last changed.
    pub updated_at: Option<DateTime<Utc>>,
}

impl Template {
    /// The version clients name in `If-Match` (and gRPC `etag`); built-in templates
    /// are read only and have none.
    pub fn etag(&self) -> Option<ETag> {
        self.updated_at.map(|at| ETag::of(&self.key, at))
    }
}

/// Locks one of the caller's saved templates and checks `precondition` against its
/// version (nothing to lock without a condition).
async fn check_version(
    conn: &mut sqlx::PgConnection,
    caller: &Caller,
    key: &str,
    precondition: &Precondition,
) -> Result<(), ApiError> {
    if !precondition.is_set() {
        return Ok(());
    }
    let version = portico_storage::versions::integration_template(conn, caller.user_id(), key)
        .await?
        .ok_or_else(not_found)?;
    precondition.check(&ETag::of(key, version))
}

/// What a template is made of, as the data file, REST and gRPC give it (wire names,
/// not yet checked).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TemplateSpec {
    /// 1-200 characters.
    pub name: String,
    /// At most 1000 characters.
    #[serde(default)]
    pub description: String,
    /// An integration type name.
    pub integration_type: String,
    /// Default scope names.
    pub scopes: Vec<String>,
    /// Scope names a request may choose from; `None` = any.
    #[serde(default)]
    pub allowed_scopes: Option<Vec<String>>,
    /// Requests per second (0 = unlimited).
    pub rate_limit_per_second: u32,
    /// Calls per UTC day (0 = unlimited).
    pub daily_quota: u64,
    /// Event filters (1-100).
    pub events: Vec<String>,
    /// Overridable request field names.
    #[serde(default)]
    pub overridable: Vec<String>,
}

/// A partial update of a saved template: `None` keeps a field; `allowed_scopes:
/// Some(None)` lifts the restriction.
#[derive(Debug, Clone, Default)]
pub struct TemplatePatch {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New integration type name.
    pub integration_type: Option<String>,
    /// New default scopes.
    pub scopes: Option<Vec<String>>,
    /// New allowed scopes, or `Some(None)` for any.
    pub allowed_scopes: Option<Option<Vec<String>>>,
    /// New rate limit.
    pub rate_limit_per_second: Option<u32>,
    /// New daily quota.
    pub daily_quota: Option<u64>,
    /// New event filters.
    pub events: Option<Vec<String>>,
    /// New overridable fields.
    pub overridable: Option<Vec<String>>,
}

/// A request to create an integration from a template: the webhook URL (required) and
/// the overrides the template allows.
#[derive(Debug, Clone, Default)]
pub struct FromTemplate {
    /// Where the webhook subscription delivers; checked by the SSRF guard.
    pub webhook_url: Option<String>,
    /// The integration's name; default: the template's name.
    pub name: Option<String>,
    /// Scope names; default: the template's.
    pub scopes: Option<Vec<String>>,
    /// Requests per second; default: the template's.
    pub rate_limit_per_second: Option<u32>,
    /// Calls per UTC day; default: the template's.
    pub daily_quota: Option<u64>,
    /// When the credentials stop working; default: never.
    pub expires_at: Option<DateTime<Utc>>,
    /// Event filters of the webhook; default: the template's.
    pub events: Option<Vec<String>>,
}

/// What creating from a template made: both secrets are shown this once.
#[derive(Debug)]
pub struct CreatedFromTemplate {
    /// The template's key.
    pub template: String,
    /// The integration.
    pub integration: Integration,
    /// Its API credentials.
    pub credentials: IssuedCredentials,
    /// Its webhook subscription.
    pub webhook: Webhook,
    /// The webhook's signing secret (`whsec_...`).
    pub webhook_secret: String,
}

/// The data file: a format version and the templates.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DataFile {
    version: u32,
    templates: Vec<DataEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DataEntry {
    key: String,
    #[serde(flatten)]
    spec: TemplateSpec,
}

/// The built-in templates in key order, or why the data file is unusable.
static BUILTINS: LazyLock<Result<Vec<Template>, String>> =
    LazyLock::new(|| parse_builtins(BUILTIN_DATA));

fn parse_builtins(text: &str) -> Result<Vec<Template>, String> {
    let file: DataFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if file.version != DATA_VERSION {
        return Err(format!(
            "data file version {} is not the supported {DATA_VERSION}",
            file.version
        ));
    }
    let mut templates = Vec::with_capacity(file.templates.len());
    for entry in file.templates {
        let mut template = validate(&entry.key, entry.spec).map_err(|errors| {
            let reasons: Vec<String> = errors.iter().map(ToString::to_string).collect();
            format!("template {:?}: {}", entry.key, reasons.join("; "))
        })?;
        template.builtin = true;
        if templates.iter().any(|t: &Template| t.key == template.key) {
            return Err(format!("template key {:?} is repeated", template.key));
        }
        templates.push(template);
    }
    templates.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(templates)
}

/// The built-in templates, parsed and checked on first use; the gateway calls this at
/// start, so a broken data file stops it there rather than failing requests.
pub fn builtins() -> Result<&'static [Template], String> {
    BUILTINS.as_deref().map_err(Clone::clone)
}

fn builtins_or_internal() -> Result<&'static [Template], ApiError> {
    builtins().map_err(ApiError::Internal)
}

fn builtin(key: &str) -> Result<Option<&'static Template>, ApiError> {
    Ok(builtins_or_internal()?.iter().find(|t| t.key == key))
}

/// Checks a key: `[a-z0-9-]`, 3-64 characters, first and last a letter or digit.
pub fn validate_key(key: &str) -> Result<(), FieldError> {
    let bytes = key.as_bytes();
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let ok = KEY_LENGTH.contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && edge(bytes.first())
        && edge(bytes.last());
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            "invalid_template_key",
            "/key",
            "a template key is 3-64 characters of a-z, 0-9 and '-', starting and ending with a letter or digit",
        ))
    }
}

/// Checks every rule of a template and reports every problem at once: the name, the
/// description, the type, scopes (the defaults within the allowed ones), limits, event
/// filters and overridable field names.
pub fn validate(key: &str, spec: TemplateSpec) -> Result<Template, Vec<FieldError>> {
    let mut errors = Vec::new();
    if let Err(e) = validate_key(key) {
        errors.push(e);
    }
    if let Err(e) = validate_name(&spec.name, "/name") {
        errors.push(e);
    }
    if let Err(e) = validate_description(&spec.description, "/description") {
        errors.push(e);
    }
    let integration_type = IntegrationType::parse(&spec.integration_type, "/integrationType")
        .map_err(|e| errors.push(e))
        .ok();
    let scopes = Scope::parse_list(&spec.scopes, "/scopes")
        .map_err(|e| errors.push(e))
        .unwrap_or_default();
    let allowed_scopes = match &spec.allowed_scopes {
        None => None,
        Some(names) => Scope::parse_list(names, "/allowedScopes")
            .map_err(|e| errors.push(e))
            .ok(),
    };
    if let Some(allowed) = &allowed_scopes {
        for (i, scope) in scopes.iter().enumerate() {
            if !allowed.contains(scope) {
                errors.push(FieldError::new(
                    "scope_not_allowed",
                    format!("/scopes/{i}"),
                    format!(
                        "the default scope {} is not in allowedScopes",
                        scope.as_str()
                    ),
                ));
            }
        }
    }
    integrations::validate_rate(Some(spec.rate_limit_per_second), &mut errors);
    integrations::validate_quota(Some(spec.daily_quota), &mut errors);
    let events = validate_event_filters(&spec.events, "/events")
        .map_err(|e| errors.extend(e))
        .unwrap_or_default();
    let mut overridable = Vec::with_capacity(spec.overridable.len());
    for (i, name) in spec.overridable.iter().enumerate() {
        match TemplateField::parse(name) {
            Some(f) if !overridable.contains(&f) => overridable.push(f),
            Some(_) => {}
            None => errors.push(FieldError::new(
                "invalid_template_field",
                format!("/overridable/{i}"),
                "overridable lists request fields: name, scopes, rateLimitPerSecond, dailyQuota, expiresAt, events",
            )),
        }
    }
    match integration_type.filter(|_| errors.is_empty()) {
        Some(integration_type) => Ok(Template {
            key: key.to_owned(),
            name: spec.name.trim().to_owned(),
            description: spec.description,
            integration_type,
            scopes,
            allowed_scopes,
            rate_limit_per_second: spec.rate_limit_per_second,
            daily_quota: spec.daily_quota,
            events,
            overridable,
            builtin: false,
            created_at: None,
            updated_at: None,
        }),
        None => Err(errors),
    }
}

/// A saved template as both doors show it. Stored rows passed [`validate`] when they
/// were written; a value that no longer parses is left out rather than failing reads.
fn from_row(row: TemplateRow) -> Template {
    let parse_scopes = |names: &[String]| names.iter().filter_map(|n| Scope::parse(n)).collect();
    Template {
        integration_type: IntegrationType::parse(&row.integration_type, "")
            .unwrap_or(IntegrationType::Custom),
        scopes: parse_scopes(&row.scopes),
        allowed_scopes: row.allowed_scopes.as_deref().map(parse_scopes),
        rate_limit_per_second: u32::try_from(row.rate_limit_per_second).unwrap_or(0),
        daily_quota: u64::try_from(row.daily_quota).unwrap_or(0),
        overridable: row
            .overridable
            .iter()
            .filter_map(|n| TemplateField::parse(n))
            .collect(),
        key: row.key,
        name: row.name,
        description: row.description,
        events: row.events,
        builtin: false,
        created_at: Some(row.created_at),
        updated_at: Some(row.updated_at),
    }
}

/// Storage values of a checked template (the owned vectors `values` borrows from).
struct Columns {
    scopes: Vec<String>,
    allowed_scopes: Option<Vec<String>>,
    overridable: Vec<String>,
}

impl Columns {
    fn of(t: &Template) -> Self {
        let names = |s: &[Scope]| s.iter().map(|s| s.as_str().to_owned()).collect();
        Columns {
            scopes: names(&t.scopes),
            allowed_scopes: t.allowed_scopes.as_deref().map(names),
            overridable: t
                .overridable
                .iter()
                .map(|f| f.as_str().to_owned())
                .collect(),
        }
    }

    fn values<'a>(&'a self, t: &'a Template) -> TemplateValues<'a> {
        TemplateValues {
            name: &t.name,
            description: &t.description,
            integration_type: t.integration_type.as_str(),
            scopes: &self.scopes,
            allowed_scopes: self.allowed_scopes.as_deref(),
            rate_limit_per_second: i32::try_from(t.rate_limit_per_second).unwrap_or(i32::MAX),
            daily_quota: i32::try_from(t.daily_quota).unwrap_or(i32::MAX),
            events: &t.events,
            overridable: &self.overridable,
        }
    }
}

fn spec_of(t: &Template) -> TemplateSpec {
    let names = |s: &[Scope]| s.iter().map(|s| s.as_str().to_owned()).collect();
    TemplateSpec {
        name: t.name.clone(),
        description: t.description.clone(),
        integration_type: t.integration_type.as_str().to_owned(),
        scopes: names(&t.scopes),
        allowed_scopes: t.allowed_scopes.as_deref().map(names),
        rate_limit_per_second: t.rate_limit_per_second,
        daily_quota: t.daily_quota,
        events: t.events.clone(),
        overridable: t
            .overridable
            .iter()
            .map(|f| f.as_str().to_owned())
            .collect(),
    }
}

fn not_found() -> ApiError {
    ApiError::Specific {
        status: axum::http::StatusCode::NOT_FOUND,
        code: "template_not_found",
        message: "no built-in template and none of yours has this key".into(),
    }
}

fn read_only(key: &str) -> ApiError {
    ApiError::Specific {
        status: axum::http::StatusCode::CONFLICT,
        code: "template_read_only",
        message: format!("{key} is a built-in template; built-in templates cannot be changed"),
    }
}

/// A page cursor: the last key of the previous page, opaque to clients.
fn encode_cursor(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("t|{key}"))
}

fn decode_cursor(text: &str) -> Result<String, FieldError> {
    let bad = || {
        FieldError::new(
            "invalid_cursor",
            "/cursor",
            "cursor is not one this API issued",
        )
    };
    let raw = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let key = raw.strip_prefix("t|").ok_or_else(bad)?;
    validate_key(key).map_err(|_| bad())?;
    Ok(key.to_owned())
}

/// One page of the templates the caller can use: the built-in ones and their own, in
/// key order (keys never collide, so the merge is stable).
pub async fn list(
    state: &AppState,
    caller: &Caller,
    limit: Option<u32>,
    cursor: Option<&str>,
) -> Result<(Vec<Template>, Option<String>), ApiError> {
    caller.require_user_or_service()?;
    let limit = parse_limit(limit)? as usize;
    let after = cursor
        .filter(|c| !c.is_empty())
        .map(decode_cursor)
        .transpose()?;
    let rows = store::list(
        state.pool(),
        caller.user_id(),
        after.as_deref(),
        i64::try_from(limit + 1).unwrap_or(i64::MAX),
    )
    .await?;
    let mut page: Vec<Template> = builtins_or_internal()?
        .iter()
        .filter(|t| after.as_deref().is_none_or(|a| t.key.as_str() > a))
        .take(limit + 1)
        .cloned()
        .chain(rows.into_iter().map(from_row))
        .collect();
    page.sort_by(|a, b| a.key.cmp(&b.key));
    if page.len() > limit {
        page.truncate(limit);
        let next = page.last().map(|t| encode_cursor(&t.key));
        Ok((page, next))
    } else {
        Ok((page, None))
    }
}

/// A built-in template or one of the caller's.
pub async fn get(state: &AppState, caller: &Caller, key: &str) -> Result<Template, ApiError> {
    caller.require_user_or_service()?;
    find(state, caller, key).await
}

async fn find(state: &AppState, caller: &Caller, key: &str) -> Result<Template, ApiError> {
    if validate_key(key).is_err() {
        return Err(not_found());
    }
    if let Some(t) = builtin(key)? {
        return Ok(t.clone());
    }
    store::get(state.pool(), caller.user_id(), key)
        .await?
        .map(from_row)
        .ok_or_else(not_found)
}

/// Saves a template of the caller's under `key`: 409 `template_key_reserved` for a
/// built-in key, 409 `template_exists` when they already have one.
pub async fn create(
    state: &AppState,
    caller: &Caller,
    key: &str,
    spec: TemplateSpec,
) -> Result<Template, ApiError> {
    caller.require_user_or_service()?;
    let template = validate(key, spec).map_err(ApiError::Validation)?;
    if builtin(key)?.is_some() {
        return Err(ApiError::Specific {
            status: axum::http::StatusCode::CONFLICT,
            code: "template_key_reserved",
            message: format!("{key} is the key of a built-in template; choose another"),
        });
    }
    let columns = Columns::of(&template);
    let mut tx = state.pool().begin().await?;
    let created = store::insert(&mut *tx, caller.user_id(), key, &columns.values(&template))
        .await?
        .map(from_row)
        .ok_or_else(|| ApiError::Specific {
            status: axum::http::StatusCode::CONFLICT,
            code: "template_exists",
            message: format!("you already have a template {key}; change it with PATCH"),
        })?;
    audit::record(
        &mut tx,
        caller,
        AuditEntry::new("template.created", "template", key),
    )
    .await?;
    tx.commit().await?;
    Ok(created)
}

/// Changes one of the caller's templates; the merged result must pass every rule.
/// `precondition` is checked against the locked row (412 when stale).
pub async fn update(
    state: &AppState,
    caller: &Caller,
    key: &str,
    patch: TemplatePatch,
    precondition: &Precondition,
) -> Result<Template, ApiError> {
    caller.require_user_or_service()?;
    let current = find(state, caller, key).await?;
    if current.builtin {
        return Err(read_only(key));
    }
    let mut spec = spec_of(&current);
    let TemplatePatch {
        name,
        description,
        integration_type,
        scopes,
        allowed_scopes,
        rate_limit_per_second,
        daily_quota,
        events,
        overridable,
    } = patch;
    let patched: Vec<&str> = [
        ("name", name.is_some()),
        ("description", description.is_some()),
        ("type", integration_type.is_some()),
        ("scopes", scopes.is_some()),
        ("allowedScopes", allowed_scopes.is_some()),
        ("rateLimitPerSecond", rate_limit_per_second.is_some()),
        ("dailyQuota", daily_quota.is_some()),
        ("events", events.is_some()),
        ("overridable", overridable.is_some()),
    ]
    .into_iter()
    .filter_map(|(field, set)| set.then_some(field))
    .collect();
    spec.name = name.unwrap_or(spec.name);
    spec.description = description.unwrap_or(spec.description);
    spec.integration_type = integration_type.unwrap_or(spec.integration_type);
    spec.scopes = scopes.unwrap_or(spec.scopes);
    spec.allowed_scopes = allowed_scopes.unwrap_or(spec.allowed_scopes);
    spec.rate_limit_per_second = rate_limit_per_second.unwrap_or(spec.rate_limit_per_second);
    spec.daily_quota = daily_quota.unwrap_or(spec.daily_quota);
    spec.events = events.unwrap_or(spec.events);
    spec.overridable = overridable.unwrap_or(spec.overridable);
    let template = validate(key, spec).map_err(ApiError::Validation)?;
    let columns = Columns::of(&template);
    let mut tx = state.pool().begin().await?;
    check_version(&mut tx, caller, key, precondition).await?;
    let updated = store::update(&mut *tx, caller.user_id(), key, &columns.values(&template))
        .await?
        .map(from_row)
        .ok_or_else(not_found)?;
    audit::record(
        &mut tx,
        caller,
        AuditEntry::new("template.updated", "template", key).fields(patched),
    )
    .await?;
    tx.commit().await?;
    Ok(updated)
}

/// Deletes one of the caller's templates (integrations made from it stay), if its
/// version meets `precondition`.
pub async fn delete(
    state: &AppState,
    caller: &Caller,
    key: &str,
    precondition: &Precondition,
) -> Result<(), ApiError> {
    caller.require_user_or_service()?;
    if validate_key(key).is_err() {
        return Err(not_found());
    }
    if builtin(key)?.is_some() {
        return Err(read_only(key));
    }
    let mut tx = state.pool().begin().await?;
    check_version(&mut tx, caller, key, precondition).await?;
    if !store::delete(&mut *tx, caller.user_id(), key).await? {
        return Err(not_found());
    }
    audit::record(
        &mut tx,
        caller,
        AuditEntry::new("template.deleted", "template", key),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The request fields a template does not let a request set, and requested scopes it
/// does not allow: each a field error, all reported at once.
fn forbidden_fields(template: &Template, request: &FromTemplate) -> Vec<FieldError> {
    let present = [
        (TemplateField::Name, request.name.is_some()),
        (TemplateField::Scopes, request.scopes.is_some()),
        (
            TemplateField::RateLimitPerSecond,
            request.rate_limit_per_second.is_some(),
        ),
        (TemplateField::DailyQuota, request.daily_quota.is_some()),
        (TemplateField::ExpiresAt, request.expires_at.is_some()),
        (TemplateField::Events, request.events.is_some()),
    ];
    let mut errors: Vec<FieldError> = present
        .into_iter()
        .filter(|(field, set)| *set && !template.overridable.contains(field))
        .map(|(field, _)| {
            FieldError::new(
                "field_not_overridable",
                format!("/{}", field.as_str()),
                format!(
                    "the template {} does not let a request set {}",
                    template.key,
                    field.as_str()
                ),
            )
        })
        .collect();
    if let (Some(names), Some(allowed)) = (&request.scopes, &template.allowed_scopes)
        && template.overridable.contains(&TemplateField::Scopes)
    {
        for (i, name) in names.iter().enumerate() {
            if Scope::parse(name).is_some_and(|s| !allowed.contains(&s)) {
                errors.push(FieldError::new(
                    "scope_not_allowed",
                    format!("/scopes/{i}"),
                    format!(
                        "the template {} does not allow the scope {name}",
                        template.key
                    ),
                ));
            }
        }
    }
    errors
}

/// The webhook's errors point at its own fields; the request calls the URL `webhookUrl`.
fn webhook_error_paths(err: ApiError) -> ApiError {
    match err {
        ApiError::Validation(errors) => ApiError::Validation(
            errors
                .into_iter()
                .map(|mut e| {
                    if e.path == "/url" {
                        e.path = "/webhookUrl".into();
                    }
                    e
                })
                .collect(),
        ),
        other => other,
    }
}

/// Creates an integration, its credentials and its webhook subscription from a
/// template, in one transaction. Explicit request fields override the template's
/// defaults; a field the template does not let a request set answers 422
/// `template_field_forbidden` and an unknown template 404 `template_not_found`, both
/// before anything is written.
pub async fn create_integration(
    state: &AppState,
    caller: &Caller,
    key: &str,
    request: FromTemplate,
) -> Result<CreatedFromTemplate, ApiError> {
    caller.require_user_or_service()?;
    let template = find(state, caller, key).await?;
    let forbidden = forbidden_fields(&template, &request);
    if !forbidden.is_empty() {
        return Err(ApiError::Unprocessable {
            code: "template_field_forbidden",
            message: format!(
                "the template {} does not allow what the request sets",
                template.key
            ),
            errors: forbidden,
        });
    }
    let Some(webhook_url) = request.webhook_url.filter(|u| !u.is_empty()) else {
        return Err(ApiError::field(
            "required",
            "/webhookUrl",
            "webhookUrl is required: the template's webhook subscription delivers there",
        ));
    };
    let scope_names = |s: &[Scope]| s.iter().map(|s| s.as_str().to_owned()).collect();
    let integration = integrations::prepare(
        state,
        NewIntegration {
            name: request.name.unwrap_or_else(|| template.name.clone()),
            integration_type: template.integration_type.as_str().to_owned(),
            webhook_url: Some(webhook_url.clone()),
            scopes: Some(
                request
                    .scopes
                    .unwrap_or_else(|| scope_names(&template.scopes)),
            ),
            expires_at: request.expires_at,
            rate_limit_per_second: Some(
                request
                    .rate_limit_per_second
                    .unwrap_or(template.rate_limit_per_second),
            ),
            daily_quota: Some(request.daily_quota.unwrap_or(template.daily_quota)),
        },
    )
    .await?;
    let webhook = webhooks::prepare(
        state,
        NewWebhook {
            url: webhook_url,
            events: request.events.unwrap_or_else(|| template.events.clone()),
            description: Some(format!("Created from the integration template {key}")),
            ..NewWebhook::default()
        },
    )
    .await
    .map_err(webhook_error_paths)?;
    let (api_key, secret_hash) = integration.credential();
    let user_id = caller.user_id();
    let mut tx = state.pool().begin().await?;
    let (id, webhook_row) = store::create_integration_with_webhook(
        &mut tx,
        &IntegrationWithWebhook {
            integration: integration.row(user_id),
            api_key,
            secret_hash,
            webhook: webhook.values(),
            sealed_secret: webhook.sealed_secret(),
        },
    )
    .await?;
    let entry = integration
        .audit_entry("integration.created")
        .detail("template", key)
        .detail("webhookId", webhook_row.id.as_uuid().to_string());
    audit::record(&mut tx, caller, entry).await?;
    audit::record(&mut tx, caller, webhook.audit_entry("webhook.created")).await?;
    tx.commit().await?;
    webhooks::invalidate(state, user_id).await;
    let view = integrations::fetch(state, user_id, id.as_uuid()).await?;
    Ok(CreatedFromTemplate {
        template: template.key,
        integration: view,
        credentials: integration.into_credentials(),
        webhook: webhook_row.into(),
        webhook_secret: webhook.secret_text(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every built-in template in the data file passes the rules user templates must,
    /// its keys are unique, and the file is of the version this gateway reads.
    #[test]
    fn builtin_templates_are_valid() {
        let templates = match builtins() {
            Ok(t) => t,
            Err(e) => panic!("data/integration-templates.json: {e}"),
        };
        assert!(templates.len() >= 4);
        for key in [
            "marketplace-order-sync",
            "fulfilment-3pl",
            "erp-read-only",
            "analytics-export",
        ] {
            assert!(templates.iter().any(|t| t.key == key), "{key} missing");
        }
        assert!(templates.iter().all(|t| t.builtin));
        assert!(templates.windows(2).all(|w| w[0].key < w[1].key));
    }

    /// A built-in template subscribes only to event types that exist: every exact name
    /// is in the catalogue (`portico_domain::event_types`), and every `prefix.*`
    /// pattern matches at least one of its types, so a partner is never promised an
    /// event Portico does not send.
    #[test]
    fn builtin_templates_subscribe_to_catalogued_events() {
        let templates = match builtins() {
            Ok(t) => t,
            Err(e) => panic!("data/integration-templates.json: {e}"),
        };
        let names: Vec<&str> = portico_domain::event_types::all()
            .iter()
            .map(|t| t.name)
            .collect();
        for t in templates.iter() {
            for pattern in &t.events {
                let known = match pattern.strip_suffix('*') {
                    Some(prefix) => names.iter().any(|n| n.starts_with(prefix)),
                    None => names.contains(&pattern.as_str()),
                };
                assert!(
                    known,
                    "template {}: no catalogued event type for {pattern}",
                    t.key
                );
            }
        }
    }

    /// The ERP read-only template can never get a write scope.
    #[test]
    fn erp_read_only_forbids_write_scopes() {
        let erp = builtins()
            .ok()
            .and_then(|t| t.iter().find(|t| t.key == "erp-read-only"))
            .cloned();
        let Some(erp) = erp else {
            panic!("erp-read-only missing")
        };
        let writes = [Scope::BulkOrdersWrite, Scope::WebhooksWrite];
        assert!(erp.scopes.iter().all(|s| !writes.contains(s)));
        let allowed = erp.allowed_scopes.clone().unwrap_or_default();
        assert!(allowed.iter().all(|s| !writes.contains(s)));
        let request = FromTemplate {
            scopes: Some(vec!["orders:read".into(), "bulk_orders:write".into()]),
            rate_limit_per_second: Some(1000),
            ..FromTemplate::default()
        };
        let errors = forbidden_fields(&erp, &request);
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["/rateLimitPerSecond", "/scopes/1"]);
    }

    /// A data file with a bad template, a repeated key or another version is refused
    /// with a reason.
    #[test]
    fn broken_data_files_are_refused() {
        let entry = |key: &str, scopes: &str| {
            format!(
                r#"{{"key":"{key}","name":"N","integrationType":"erp","scopes":{scopes},
                   "rateLimitPerSecond":1,"dailyQuota":1,"events":["order.*"]}}"#
            )
        };
        let file = |version: u32, entries: &[String]| {
            format!(
                r#"{{"version":{version},"templates":[{}]}}"#,
                entries.join(",")
            )
        };
        let good = entry("good-one", r#"["orders:read"]"#);
        assert!(parse_builtins(&file(1, std::slice::from_ref(&good))).is_ok());
        assert!(parse_builtins(&file(2, std::slice::from_ref(&good))).is_err());
        assert!(parse_builtins(&file(1, &[good.clone(), good.clone()])).is_err());
        let bad_scope = entry("bad-one", r#"["orders:delete"]"#);
        assert!(parse_builtins(&file(1, &[bad_scope])).is_err());
        let bad_key = entry("Bad_Key", r#"["orders:read"]"#);
        assert!(parse_builtins(&file(1, &[bad_key])).is_err());
    }

    /// Keys: the documented alphabet and length; cursors round-trip and refuse garbage.
    #[test]
    fn keys_and_cursors() {
        for ok in ["abc", "erp-read-only", "a1-b2", &"k".repeat(64)] {
            assert!(validate_key(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "-abc",
            "abc-",
            "ABC",
            "a_b",
            "a b",
            &"k".repeat(65),
            "",
        ] {
            assert!(validate_key(bad).is_err(), "{bad}");
        }
        assert_eq!(
            decode_cursor(&encode_cursor("erp-x")).ok(),
            Some("erp-x".into())
        );
        assert!(decode_cursor("nope").is_err());
    }
}
