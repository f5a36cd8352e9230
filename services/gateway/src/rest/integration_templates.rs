//! `/api/integration-templates`: built-in and saved integration templates, and creating
//! an integration with its webhook subscription from one. Thin adapters over
//! [`crate::app::integration_templates`].
//!
//! Creating from a template is `POST /integration-templates/{key}/integrations` rather
//! than a `template` field on `POST /integrations`: the template is a resource (an
//! unknown key is a 404 like any other), the answer has a different shape (the webhook
//! and its signing secret besides the integration and its credentials), and
//! `POST /integrations` keeps its exact contract.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use portico_domain::integrations::{IntegrationType, Scope};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::integration_templates::{
    self as templates, CreatedFromTemplate, FromTemplate, Template, TemplateField, TemplatePatch,
    TemplateSpec,
};
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::rest::concurrency::{IfMatch, with_etag};
use crate::rest::integrations::{CredentialsBody, IntegrationBody, present};
use crate::rest::json::ApiJson;
use crate::rest::openapi::PROBLEM;
use crate::rest::webhooks::query;
use crate::state::AppState;

/// The routes, with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_templates))
        .routes(routes!(
            get_template,
            create_template,
            update_template,
            delete_template
        ))
        .routes(routes!(create_integration_from_template))
}

/// An integration template.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateBody {
    /// Its key (`a-z`, `0-9`, `-`; 3-64 characters).
    pub key: String,
    /// Display name; also the default name of integrations made from it.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// The type of the integrations it creates.
    pub integration_type: IntegrationType,
    /// Scopes an integration gets when the request names none.
    pub scopes: Vec<Scope>,
    /// Scopes a request may choose from; null = any.
    pub allowed_scopes: Option<Vec<Scope>>,
    /// Requests per second (0 = unlimited).
    pub rate_limit_per_second: u32,
    /// Calls per UTC day (0 = unlimited).
    pub daily_quota: u64,
    /// Event filters of the webhook subscription it creates.
    #[schema(schema_with = crate::rest::openapi::event_filters)]
    pub events: Vec<String>,
    /// Request fields that may override the defaults; any other is refused (422).
    pub overridable: Vec<TemplateField>,
    /// True for the templates shipped with Portico (read only).
    pub builtin: bool,
    /// Saved templates: when created; null for built-in ones.
    pub created_at: Option<DateTime<Utc>>,
    /// Saved templates: last changed; null for built-in ones.
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<Template> for TemplateBody {
    fn from(t: Template) -> Self {
        Self {
            key: t.key,
            name: t.name,
            description: t.description,
            integration_type: t.integration_type,
            scopes: t.scopes,
            allowed_scopes: t.allowed_scopes,
            rate_limit_per_second: t.rate_limit_per_second,
            daily_quota: t.daily_quota,
            events: t.events,
            overridable: t.overridable,
            builtin: t.builtin,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

/// A page of templates.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateListBody {
    /// Built-in and your own, in key order.
    pub data: Vec<TemplateBody>,
    /// Pass as `cursor` for the next page; null = no more.
    pub next_cursor: Option<String>,
}

/// A template to save under the key of the path.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SaveTemplateBody {
    /// 1-200 characters.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// At most 1000 characters.
    #[serde(default)]
    pub description: String,
    /// The type of the integrations it creates.
    #[schema(value_type = IntegrationType)]
    pub integration_type: String,
    /// Default scopes.
    #[schema(value_type = Vec<Scope>)]
    pub scopes: Vec<String>,
    /// Scopes a request may choose from (must include the defaults); absent = any.
    #[schema(value_type = Option<Vec<Scope>>)]
    pub allowed_scopes: Option<Vec<String>>,
    /// Requests per second, 0 (unlimited) to 100000.
    pub rate_limit_per_second: u32,
    /// Calls per UTC day, 0 (unlimited) to 2147483647.
    pub daily_quota: u64,
    /// Event filters of the webhook subscription.
    #[schema(schema_with = crate::rest::openapi::event_filters)]
    pub events: Vec<String>,
    /// Request fields that may override the defaults; absent = none.
    #[serde(default)]
    #[schema(value_type = Vec<TemplateField>)]
    pub overridable: Vec<String>,
}

impl From<SaveTemplateBody> for TemplateSpec {
    fn from(b: SaveTemplateBody) -> Self {
        TemplateSpec {
            name: b.name,
            description: b.description,
            integration_type: b.integration_type,
            scopes: b.scopes,
            allowed_scopes: b.allowed_scopes,
            rate_limit_per_second: b.rate_limit_per_second,
            daily_quota: b.daily_quota,
            events: b.events,
            overridable: b.overridable,
        }
    }
}

/// Absent leaves a field unchanged; `"allowedScopes": null` allows any scope.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateTemplateBody {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New integration type.
    #[schema(value_type = Option<IntegrationType>)]
    pub integration_type: Option<String>,
    /// New default scopes.
    #[schema(value_type = Option<Vec<Scope>>)]
    pub scopes: Option<Vec<String>>,
    /// New allowed scopes; null = any.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<Scope>>)]
    pub allowed_scopes: Option<Option<Vec<String>>>,
    /// New rate limit.
    pub rate_limit_per_second: Option<u32>,
    /// New daily quota.
    pub daily_quota: Option<u64>,
    /// New event filters.
    pub events: Option<Vec<String>>,
    /// New overridable fields.
    #[schema(value_type = Option<Vec<TemplateField>>)]
    pub overridable: Option<Vec<String>>,
}

/// An integration to create from a template: where its webhook delivers, and the
/// overrides the template allows (each absent field takes the template's value).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateFromTemplateBody {
    /// Where the webhook subscription delivers: an http(s) URL that passes the SSRF
    /// guard. Also stored as the integration's `webhookUrl`.
    pub webhook_url: String,
    /// Default: the template's name.
    pub name: Option<String>,
    /// Default: the template's scopes; each must be in its `allowedScopes`.
    #[schema(value_type = Option<Vec<Scope>>)]
    pub scopes: Option<Vec<String>>,
    /// Default: the template's.
    pub rate_limit_per_second: Option<u32>,
    /// Default: the template's.
    pub daily_quota: Option<u64>,
    /// Default: never.
    pub expires_at: Option<DateTime<Utc>>,
    /// Default: the template's event filters.
    pub events: Option<Vec<String>>,
}

/// The webhook subscription created with the integration (the whole webhook is at
/// `GET /webhooks/{id}`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateWebhookBody {
    /// The webhook's id.
    pub id: Uuid,
    /// Where it delivers.
    pub url: String,
    /// Its event filters.
    pub events: Vec<String>,
    /// Its signing secret, `whsec_<base64>` (Standard Webhooks); shown here once at
    /// creation (the owner can read it again at `GET /webhooks/{id}/secret`).
    pub secret: String,
}

/// What creating from a template made: store both secrets now.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedFromTemplateBody {
    /// The template's key.
    pub template: String,
    /// The integration.
    pub integration: IntegrationBody,
    /// Its API credentials, shown this once.
    pub credentials: CredentialsBody,
    /// Its webhook subscription and signing secret.
    pub webhook: TemplateWebhookBody,
}

impl From<CreatedFromTemplate> for CreatedFromTemplateBody {
    fn from(c: CreatedFromTemplate) -> Self {
        Self {
            template: c.template,
            integration: c.integration.into(),
            credentials: CredentialsBody {
                api_key: c.credentials.api_key,
                api_secret: c.credentials.api_secret,
            },
            webhook: TemplateWebhookBody {
                id: c.webhook.id,
                url: c.webhook.url,
                events: c.webhook.events,
                secret: c.webhook_secret,
            },
        }
    }
}

/// Page parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page size (default 50, at most 500).
    pub limit: Option<u32>,
    /// From a previous page's `nextCursor`.
    pub cursor: Option<String>,
}

/// List the templates you can use: the built-in ones and your own, in key order.
#[utoipa::path(get, path = "/integration-templates", tag = "integration-templates",
    params(ListParams),
    responses(
        (status = 200, description = "A page", body = TemplateListBody),
        (status = 400, description = "Bad limit or cursor (invalid_limit, invalid_cursor)", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = [])))]
pub async fn list_templates(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let params = query(params)?;
    let (rows, next_cursor) =
        templates::list(&state, &caller, params.limit, params.cursor.as_deref()).await?;
    Ok(axum::Json(TemplateListBody {
        data: rows.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// Get a built-in template or one of yours.
#[utoipa::path(get, path = "/integration-templates/{key}", tag = "integration-templates",
    params(("key" = String, Path, description = "Template key")),
    responses(
        (status = 200, description = "The template", body = TemplateBody,
            headers(("ETag" = String, description = "The template's version (a strong entity tag): send it in If-Match to change or delete only this version, or in If-None-Match to get 304 while it is current; built-in templates have none (they cannot be changed)"))),
        (status = 404, description = "No such template for this user (template_not_found)", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = [])))]
pub async fn get_template(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let template = templates::get(&state, &caller, &key).await?;
    Ok(with_etag(
        template.etag(),
        axum::Json(TemplateBody::from(template)),
    ))
}

/// Save a template of your own under this key.
#[utoipa::path(post, path = "/integration-templates/{key}", tag = "integration-templates",
    params(("key" = String, Path, description = "Template key: a-z, 0-9 and '-', 3-64 characters, starting and ending with a letter or digit")),
    request_body = SaveTemplateBody,
    responses(
        (status = 201, description = "Saved", body = TemplateBody,
            headers(("ETag" = String, description = "The template's version (a strong entity tag): send it in If-Match to change or delete only this version, or in If-None-Match to get 304 while it is current; built-in templates have none (they cannot be changed)"))),
        (status = 400, description = "Invalid key or field (invalid_template_key, invalid_name, invalid_integration_type, invalid_scope, scope_not_allowed, invalid_rate_limit, invalid_quota, invalid_event_filter, invalid_template_field, ...)", body = Problem, content_type = PROBLEM),
        (status = 409, description = "A built-in template has this key (template_key_reserved), or you already have one (template_exists)", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = [])))]
pub async fn create_template(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    ApiJson(body): ApiJson<SaveTemplateBody>,
) -> Result<impl IntoResponse, ApiError> {
    let template = templates::create(&state, &caller, &key, body.into()).await?;
    Ok(with_etag(
        template.etag(),
        (
            StatusCode::CREATED,
            axum::Json(TemplateBody::from(template)),
        ),
    ))
}

/// Change one of your templates; absent fields stay as they are.
#[utoipa::path(patch, path = "/integration-templates/{key}", tag = "integration-templates",
    params(("key" = String, Path, description = "Template key")),
    request_body = UpdateTemplateBody,
    responses(
        (status = 200, description = "The changed template", body = TemplateBody,
            headers(("ETag" = String, description = "The template's version (a strong entity tag): send it in If-Match to change or delete only this version, or in If-None-Match to get 304 while it is current; built-in templates have none (they cannot be changed)"))),
        (status = 400, description = "Invalid field (the merged template must pass every rule)", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such template for this user (template_not_found)", body = Problem, content_type = PROBLEM),
        (status = 409, description = "A built-in template cannot be changed (template_read_only)", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = [])))]
pub async fn update_template(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    IfMatch(precondition): IfMatch,
    ApiJson(body): ApiJson<UpdateTemplateBody>,
) -> Result<impl IntoResponse, ApiError> {
    let patch = TemplatePatch {
        name: body.name,
        description: body.description,
        integration_type: body.integration_type,
        scopes: body.scopes,
        allowed_scopes: body.allowed_scopes,
        rate_limit_per_second: body.rate_limit_per_second,
        daily_quota: body.daily_quota,
        events: body.events,
        overridable: body.overridable,
    };
    let template = templates::update(&state, &caller, &key, patch, &precondition).await?;
    Ok(with_etag(
        template.etag(),
        axum::Json(TemplateBody::from(template)),
    ))
}

/// Delete one of your templates (integrations made from it stay).
#[utoipa::path(delete, path = "/integration-templates/{key}", tag = "integration-templates",
    params(("key" = String, Path, description = "Template key")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such template for this user (template_not_found)", body = Problem, content_type = PROBLEM),
        (status = 409, description = "A built-in template cannot be deleted (template_read_only)", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = [])))]
pub async fn delete_template(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    IfMatch(precondition): IfMatch,
) -> Result<impl IntoResponse, ApiError> {
    templates::delete(&state, &caller, &key, &precondition).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Create an integration, its credentials and its webhook subscription from a template,
/// in one transaction; the API secret and the signing secret are shown here once.
#[utoipa::path(post, path = "/integration-templates/{key}/integrations", tag = "integration-templates",
    params(("key" = String, Path, description = "Template key")),
    request_body = CreateFromTemplateBody,
    responses(
        (status = 201, description = "Created; store both secrets now", body = CreatedFromTemplateBody),
        (status = 400, description = "Invalid field (required: webhookUrl missing; invalid_url, forbidden_address, unresolvable_host, invalid_name, invalid_scope, invalid_expiry, invalid_rate_limit, invalid_quota, invalid_event_filter, ...); nothing created", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such template for this user (template_not_found); nothing created", body = Problem, content_type = PROBLEM),
        (status = 422, description = "The request sets a field the template does not allow (template_field_forbidden; errors: field_not_overridable, scope_not_allowed); nothing created", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = [])))]
pub async fn create_integration_from_template(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    ApiJson(body): ApiJson<CreateFromTemplateBody>,
) -> Result<impl IntoResponse, ApiError> {
    let created = templates::create_integration(
        &state,
        &caller,
        &key,
        FromTemplate {
            webhook_url: Some(body.webhook_url),
            name: body.name,
            scopes: body.scopes,
            rate_limit_per_second: body.rate_limit_per_second,
            daily_quota: body.daily_quota,
            expires_at: body.expires_at,
            events: body.events,
        },
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedFromTemplateBody::from(created)),
    ))
}
