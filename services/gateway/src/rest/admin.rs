//! The admin API, for operators only (`Authorization: Bearer <PORTICO_OPERATOR_TOKEN>`,
//! see [`crate::auth::Operator`]): dead letters, listed, inspected, replayed and
//! discarded. Thin adapters over [`crate::app::dead_letters`].

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use portico_api::admin::{
    DeadLetterActionBody, DeadLetterBody, DeadLetterDetailBody, DeadLetterListBody,
    DeadLetterQuery, ResolveDeadLetterBody,
};
use portico_domain::wire::WireName;
use portico_queue::jobs::Job;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::dead_letters::{
    self, DeadLetter, DeadLetterAction, DeadLetterDetail, DeadLetterFilter, DeadLetterPage,
    Resolution, ResolutionFilter,
};
use crate::auth::Operator;
use crate::error::{ApiError, Problem};
use crate::rest::json::ApiJson;
use crate::rest::openapi::PROBLEM;
use crate::rest::webhooks::{collect_field, parse_time};
use crate::state::AppState;

/// The routes, with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_dead_letters))
        .routes(routes!(get_dead_letter))
        .routes(routes!(replay_dead_letter))
        .routes(routes!(discard_dead_letter))
}

fn parse_id(text: &str) -> Result<i64, ApiError> {
    text.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::field("invalid_id", "/id", "id must be a positive integer"))
}

// The bodies are portico_api::admin; the conversions from application and storage
// types are here, once.

/// The one mapping of a stored dead letter to its REST body.
fn dead_letter_body(d: DeadLetter) -> DeadLetterBody {
    DeadLetterBody {
        id: d.id,
        consumer: d.consumer,
        subject: d.subject,
        reason: d.reason,
        user_id: d.user_id,
        message_id: d.message_id,
        payload_bytes: d.payload_bytes,
        created_at: d.created_at,
        resolved_at: d.resolved_at,
        resolution: d.resolution,
    }
}

/// The one mapping of an audited action to its REST body.
fn action_body(a: DeadLetterAction) -> DeadLetterActionBody {
    DeadLetterActionBody {
        action: a.action,
        operator: a.operator,
        request_id: a.request_id,
        client_addr: a.client_addr,
        reason: a.reason,
        replay_message_id: a.replay_message_id,
        at: a.at,
    }
}

impl From<DeadLetterDetail> for DeadLetterDetailBody {
    fn from(d: DeadLetterDetail) -> Self {
        let decoded = Job::decode(&d.payload)
            .map_err(|e| e.to_string())
            .and_then(|_| serde_json::from_slice(&d.payload).map_err(|e| e.to_string()));
        let (job, payload_base64, decode_error) = match decoded {
            Ok(job) => (Some(job), None, None),
            Err(e) => (None, Some(STANDARD.encode(&d.payload)), Some(e)),
        };
        let l = d.dead_letter;
        Self {
            id: l.id,
            consumer: l.consumer,
            subject: l.subject,
            reason: l.reason,
            user_id: l.user_id,
            message_id: l.message_id,
            payload_bytes: l.payload_bytes,
            created_at: l.created_at,
            resolved_at: l.resolved_at,
            resolution: l.resolution,
            job,
            payload_base64,
            decode_error,
            actions: d.actions.into_iter().map(action_body).collect(),
        }
    }
}

/// List dead letters, newest first, with filters (operators only).
#[utoipa::path(get, path = "/admin/dead-letters", tag = "admin",
    params(DeadLetterQuery),
    responses(
        (status = 200, description = "One page", body = DeadLetterListBody),
        (status = 400, description = "Invalid filter (invalid_timestamp, invalid_status, invalid_consumer, invalid_user_id, invalid_cursor, invalid_limit; invalid_operator)", body = Problem, content_type = PROBLEM),
        (status = 401, description = "Not the operator token (unauthenticated)", body = Problem, content_type = PROBLEM),
        (status = 404, description = "The admin API is disabled: no PORTICO_OPERATOR_TOKEN (operator_access_disabled)", body = Problem, content_type = PROBLEM),
    ),
    security(("operatorToken" = [])))]
pub async fn list_dead_letters(
    State(state): State<AppState>,
    _operator: Operator,
    params: Result<Query<DeadLetterQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(params) =
        params.map_err(|e| ApiError::field("invalid_query", "/query", e.body_text()))?;
    let mut errors = Vec::new();
    let status = collect_field(
        &mut errors,
        params
            .status
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| ResolutionFilter::parse_field(s, "/status"))
            .transpose(),
    )
    .flatten();
    let since = collect_field(&mut errors, parse_time(params.since.as_deref(), "/since")).flatten();
    let until = collect_field(&mut errors, parse_time(params.until.as_deref(), "/until")).flatten();
    let page = collect_field(
        &mut errors,
        DeadLetterPage::parse(params.limit, params.cursor.as_deref()),
    );
    let filter = DeadLetterFilter {
        consumer: params.consumer.filter(|c| !c.is_empty()),
        user_id: params.user_id.filter(|u| !u.is_empty()),
        since,
        until,
        status,
    };
    if let Err(mut invalid) = filter.validate() {
        errors.append(&mut invalid);
    }
    let Some(page) = page.filter(|_| errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let (items, next_cursor) = dead_letters::list(&state, &filter, page).await?;
    Ok(axum::Json(DeadLetterListBody {
        data: items.into_iter().map(dead_letter_body).collect(),
        next_cursor,
    }))
}

/// One dead letter: the decoded job (or the raw payload) and its audit trail.
#[utoipa::path(get, path = "/admin/dead-letters/{id}", tag = "admin",
    params(("id" = i64, Path, description = "Dead letter id")),
    responses(
        (status = 200, description = "The dead letter", body = DeadLetterDetailBody),
        (status = 400, description = "invalid_id: the id is not a positive integer", body = Problem, content_type = PROBLEM),
        (status = 401, description = "Not the operator token (unauthenticated)", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such dead letter (not_found), or the admin API is disabled (operator_access_disabled)", body = Problem, content_type = PROBLEM),
    ),
    security(("operatorToken" = [])))]
pub async fn get_dead_letter(
    State(state): State<AppState>,
    _operator: Operator,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id)?;
    let detail = dead_letters::get(&state, id).await?;
    Ok(axum::Json(DeadLetterDetailBody::from(detail)))
}

/// Replay a dead letter: re-publish its job with a fresh message id, once.
#[utoipa::path(post, path = "/admin/dead-letters/{id}/replay", tag = "admin",
    params(("id" = i64, Path, description = "Dead letter id"),
        ("x-portico-operator" = Option<String>, Header, description = "Who is acting, for the audit record")),
    request_body = ResolveDeadLetterBody,
    responses(
        (status = 202, description = "Committed with its audit record; the job reaches JetStream through the outbox within moments", body = DeadLetterDetailBody),
        (status = 400, description = "invalid_reason, invalid_operator", body = Problem, content_type = PROBLEM),
        (status = 401, description = "Not the operator token (unauthenticated)", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such dead letter (not_found), or the admin API is disabled (operator_access_disabled)", body = Problem, content_type = PROBLEM),
        (status = 409, description = "Already replayed or discarded (dead_letter_resolved); the payload is no job this gateway can decode (dead_letter_undecodable)", body = Problem, content_type = PROBLEM),
    ),
    security(("operatorToken" = [])))]
pub async fn replay_dead_letter(
    State(state): State<AppState>,
    operator: Operator,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ResolveDeadLetterBody>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id)?;
    let detail =
        dead_letters::resolve(&state, &operator, id, Resolution::Replay, &body.reason).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(DeadLetterDetailBody::from(detail)),
    ))
}

/// Discard a dead letter: publish nothing, keep the record, once.
#[utoipa::path(post, path = "/admin/dead-letters/{id}/discard", tag = "admin",
    params(("id" = i64, Path, description = "Dead letter id"),
        ("x-portico-operator" = Option<String>, Header, description = "Who is acting, for the audit record")),
    request_body = ResolveDeadLetterBody,
    responses(
        (status = 200, description = "Discarded, with its audit record", body = DeadLetterDetailBody),
        (status = 400, description = "invalid_reason, invalid_operator", body = Problem, content_type = PROBLEM),
        (status = 401, description = "Not the operator token (unauthenticated)", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such dead letter (not_found), or the admin API is disabled (operator_access_disabled)", body = Problem, content_type = PROBLEM),
        (status = 409, description = "Already replayed or discarded (dead_letter_resolved)", body = Problem, content_type = PROBLEM),
    ),
    security(("operatorToken" = [])))]
pub async fn discard_dead_letter(
    State(state): State<AppState>,
    operator: Operator,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ResolveDeadLetterBody>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id)?;
    let detail =
        dead_letters::resolve(&state, &operator, id, Resolution::Discard, &body.reason).await?;
    Ok(axum::Json(DeadLetterDetailBody::from(detail)))
}
