//! `/api/integrations`: partner integrations, their credentials and usage log.
//! Thin adapters over [`crate::app::integrations`].

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use bytes::Bytes;
// Re-exported: other REST modules (templates) render integrations with these too.
pub use portico_api::integrations::{
    CreateIntegrationBody, CredentialsBody, CurrentIntegrationBody, IntegrationBody,
    IntegrationListBody, IntegrationWithCredentialsBody, ListParams, RegenerateBody,
    UpdateIntegrationBody, UsageEntryBody, UsagePageBody, UsageParams, UsageTotalsBody, VerifyBody,
    VerifyResultBody,
};
use serde::{Deserialize, Deserializer};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::integrations::{
    self, Integration, IntegrationPatch, NewIntegration, UsagePage, UsageQuery, UsageRecord,
    UsageTotals, WithCredentials,
};
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::rest::concurrency::{IfMatch, with_etag};
use crate::rest::json::ApiJson;
use crate::rest::openapi::PROBLEM;
use crate::rest::webhooks::query;
use crate::state::AppState;

/// The routes, with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_integration, list_integrations))
        .routes(routes!(verify_credentials))
        .routes(routes!(current_integration))
        .routes(routes!(current_usage))
        .routes(routes!(
            get_integration,
            update_integration,
            delete_integration
        ))
        .routes(routes!(regenerate_credentials))
        .routes(routes!(integration_usage))
}

// The bodies are portico_api::integrations; the conversions from application types
// are here, once.

impl From<Integration> for IntegrationBody {
    fn from(i: Integration) -> Self {
        Self {
            id: i.id,
            name: i.name,
            integration_type: i.integration_type,
            webhook_url: i.webhook_url,
            scopes: i.scopes,
            active: i.active,
            api_key: i.api_key,
            expires_at: i.expires_at,
            rate_limit_per_second: i.rate_limit_per_second,
            daily_quota: i.daily_quota,
            created_at: i.created_at,
            updated_at: i.updated_at,
            last_used_at: i.last_used_at,
        }
    }
}

impl From<WithCredentials> for IntegrationWithCredentialsBody {
    fn from(w: WithCredentials) -> Self {
        Self {
            integration: w.integration.into(),
            credentials: CredentialsBody {
                api_key: w.credentials.api_key,
                api_secret: w.credentials.api_secret,
            },
            previous_secret_expires_at: w.previous_expires_at,
        }
    }
}

impl From<UsageParams> for UsageQuery {
    fn from(p: UsageParams) -> Self {
        UsageQuery {
            from: p.from,
            to: p.to,
            limit: p.limit,
            cursor: p.cursor,
        }
    }
}

/// The one mapping of a stored usage record to its REST body.
fn usage_entry_body(r: UsageRecord) -> UsageEntryBody {
    UsageEntryBody {
        method: r.method,
        route: r.route,
        status: u16::try_from(r.status).unwrap_or(0),
        latency_us: u64::try_from(r.latency_us).unwrap_or(0),
        client_ip: r.client_ip,
        occurred_at: r.occurred_at,
    }
}

impl From<UsageTotals> for UsageTotalsBody {
    fn from(t: UsageTotals) -> Self {
        Self {
            total: t.total,
            by_status: t.by_status,
            by_route: t.by_route,
        }
    }
}

impl From<UsagePage> for UsagePageBody {
    fn from(p: UsagePage) -> Self {
        Self {
            data: p.entries.into_iter().map(usage_entry_body).collect(),
            next_cursor: p.next_cursor,
            totals: p.totals.into(),
        }
    }
}

/// Tells "absent" (`None`) from "null" (`Some(None)`).
pub(crate) fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

fn parse_id(text: &str) -> Result<Uuid, ApiError> {
    text.parse()
        .map_err(|_| ApiError::field("invalid_id", "/id", "the id must be a UUID"))
}

/// Create an integration and its first credentials (the secret is shown only here).
#[utoipa::path(post, path = "/integrations", tag = "integrations",
    request_body = CreateIntegrationBody,
    responses(
        (status = 201, description = "Created; store the secret now", body = IntegrationWithCredentialsBody,
            headers(("ETag" = String, description = "The integration's version (a strong entity tag): send it in If-Match to change or delete only this version, or in If-None-Match to get 304 while it is current"))),
        (status = 400, description = "Invalid name, type, webhookUrl, scopes, expiry or limits", body = Problem, content_type = PROBLEM),
        (status = 401, description = "Not authenticated", body = Problem, content_type = PROBLEM),
        (status = 403, description = "Partners cannot manage integrations", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = [])))]
pub async fn create_integration(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateIntegrationBody>,
) -> Result<impl IntoResponse, ApiError> {
    let created = integrations::create(
        &state,
        &caller,
        NewIntegration {
            name: body.name,
            integration_type: body.integration_type,
            webhook_url: body.webhook_url,
            scopes: body.scopes,
            expires_at: body.expires_at,
            rate_limit_per_second: body.rate_limit_per_second,
            daily_quota: body.daily_quota,
        },
    )
    .await?;
    let etag = created.integration.etag();
    Ok(with_etag(
        Some(etag),
        (
            StatusCode::CREATED,
            axum::Json(IntegrationWithCredentialsBody::from(created)),
        ),
    ))
}

/// List the caller's integrations, newest first, optionally of one type.
#[utoipa::path(get, path = "/integrations", tag = "integrations",
    params(ListParams),
    responses(
        (status = 200, description = "A page", body = IntegrationListBody),
        (status = 400, description = "Unknown type, bad limit or cursor", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = [])))]
pub async fn list_integrations(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let params = query(params)?;
    let (rows, next_cursor) = integrations::list(
        &state,
        &caller,
        params.integration_type.as_deref(),
        params.limit,
        params.cursor.as_deref(),
    )
    .await?;
    Ok(axum::Json(IntegrationListBody {
        data: rows.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// Get one integration.
#[utoipa::path(get, path = "/integrations/{id}", tag = "integrations",
    params(("id" = Uuid, Path, description = "Integration id")),
    responses(
        (status = 200, description = "The integration", body = IntegrationBody,
            headers(("ETag" = String, description = "The integration's version (a strong entity tag): send it in If-Match to change or delete only this version, or in If-None-Match to get 304 while it is current"))),
        (status = 404, description = "No such integration for this user", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = [])))]
pub async fn get_integration(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let integration = integrations::get(&state, &caller, parse_id(&id)?).await?;
    Ok(with_etag(
        Some(integration.etag()),
        axum::Json(IntegrationBody::from(integration)),
    ))
}

/// Update an integration; absent fields stay as they are.
#[utoipa::path(patch, path = "/integrations/{id}", tag = "integrations",
    params(("id" = Uuid, Path, description = "Integration id")),
    request_body = UpdateIntegrationBody,
    responses(
        (status = 200, description = "The updated integration", body = IntegrationBody,
            headers(("ETag" = String, description = "The integration's version (a strong entity tag): send it in If-Match to change or delete only this version, or in If-None-Match to get 304 while it is current"))),
        (status = 400, description = "Invalid field", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such integration for this user", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = [])))]
pub async fn update_integration(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    IfMatch(precondition): IfMatch,
    ApiJson(body): ApiJson<UpdateIntegrationBody>,
) -> Result<impl IntoResponse, ApiError> {
    let patch = IntegrationPatch {
        name: body.name,
        integration_type: body.integration_type,
        webhook_url: body.webhook_url,
        scopes: body.scopes,
        active: body.active,
        expires_at: body.expires_at,
        rate_limit_per_second: body.rate_limit_per_second,
        daily_quota: body.daily_quota,
    };
    let integration =
        integrations::update(&state, &caller, parse_id(&id)?, patch, &precondition).await?;
    Ok(with_etag(
        Some(integration.etag()),
        axum::Json(IntegrationBody::from(integration)),
    ))
}

/// Delete an integration with its usage log; its credentials stop working at once.
#[utoipa::path(delete, path = "/integrations/{id}", tag = "integrations",
    params(("id" = Uuid, Path, description = "Integration id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such integration for this user", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = [])))]
pub async fn delete_integration(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    IfMatch(precondition): IfMatch,
) -> Result<impl IntoResponse, ApiError> {
    integrations::delete(&state, &caller, parse_id(&id)?, &precondition).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Issue new credentials; the previous secret keeps working for the grace period.
#[utoipa::path(post, path = "/integrations/{id}/regenerate-credentials", tag = "integrations",
    params(("id" = Uuid, Path, description = "Integration id")),
    request_body(content = RegenerateBody, description = "Optional; an empty body uses the default grace period"),
    responses(
        (status = 200, description = "New credentials; store the secret now", body = IntegrationWithCredentialsBody,
            headers(("ETag" = String, description = "The integration's version (a strong entity tag): send it in If-Match to change or delete only this version, or in If-None-Match to get 304 while it is current"))),
        (status = 400, description = "Invalid grace period", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such integration for this user", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = [])))]
pub async fn regenerate_credentials(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id)?;
    let options: RegenerateBody = if body.iter().all(u8::is_ascii_whitespace) {
        RegenerateBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::MalformedBody(e.to_string()))?
    };
    let regenerated =
        integrations::regenerate(&state, &caller, id, options.grace_period_seconds).await?;
    let etag = regenerated.integration.etag();
    Ok(with_etag(
        Some(etag),
        axum::Json(IntegrationWithCredentialsBody::from(regenerated)),
    ))
}

/// Check an API key and secret. Invalid, expired, revoked or another user's
/// credentials answer `valid: false`.
#[utoipa::path(post, path = "/integrations/verify", tag = "integrations",
    request_body = VerifyBody,
    responses(
        (status = 200, description = "The verdict", body = VerifyResultBody),
        (status = 400, description = "Missing key or secret", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = [])))]
pub async fn verify_credentials(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<VerifyBody>,
) -> Result<impl IntoResponse, ApiError> {
    let v = integrations::verify(&state, &caller, &body.api_key, &body.api_secret).await?;
    Ok(axum::Json(VerifyResultBody {
        valid: v.valid,
        integration_id: v.integration_id,
        scopes: v.valid.then_some(v.scopes),
    }))
}

/// The usage log of an integration over a time range, newest first, with totals.
#[utoipa::path(get, path = "/integrations/{id}/usage", tag = "integrations",
    params(("id" = Uuid, Path, description = "Integration id"), UsageParams),
    responses(
        (status = 200, description = "Entries and totals", body = UsagePageBody),
        (status = 400, description = "Bad range, limit or cursor", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such integration for this user", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = [])))]
pub async fn integration_usage(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    params: Result<Query<UsageParams>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id)?;
    let page = integrations::usage(&state, &caller, id, query(params)?.into()).await?;
    Ok(axum::Json(UsagePageBody::from(page)))
}

/// The calling partner's own integration, scopes and usage today (partners only).
#[utoipa::path(get, path = "/integrations/me", tag = "integrations",
    responses(
        (status = 200, description = "The integration whose credentials were presented", body = CurrentIntegrationBody),
        (status = 401, description = "Missing, malformed, wrong, expired or revoked credentials", body = Problem, content_type = PROBLEM),
        (status = 403, description = "Not a partner", body = Problem, content_type = PROBLEM),
        (status = 429, description = "Rate limit or daily quota exceeded (see Retry-After)", body = Problem, content_type = PROBLEM),
    ),
    security(("partnerBasic" = [])))]
pub async fn current_integration(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    let (integration, totals) = integrations::current(&state, &caller).await?;
    Ok(axum::Json(CurrentIntegrationBody {
        integration: integration.into(),
        usage_today: totals.into(),
    }))
}

/// The calling partner's own usage log (partners holding any read scope).
#[utoipa::path(get, path = "/integrations/me/usage", tag = "integrations",
    params(UsageParams),
    responses(
        (status = 200, description = "Entries and totals", body = UsagePageBody),
        (status = 403, description = "Not a partner, or no read scope", body = Problem, content_type = PROBLEM),
        (status = 429, description = "Rate limit or daily quota exceeded (see Retry-After)", body = Problem, content_type = PROBLEM),
    ),
    security(("partnerBasic" = [])))]
pub async fn current_usage(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<UsageParams>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let page = integrations::current_usage(&state, &caller, query(params)?.into()).await?;
    Ok(axum::Json(UsagePageBody::from(page)))
}
