//! The audit log over REST: `GET /audit-log` and `GET /audit-log/verify`, thin adapters
//! over [`crate::app::audit`]. Users and internal services read their own user's log;
//! partner credentials are refused (403).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use portico_api::audit::{
    AuditActorBody, AuditLogListBody, AuditLogQuery, AuditRecordBody, AuditVerificationBody,
    AuditVerifyQuery,
};
use portico_domain::pagination::PageRequest;
use portico_storage::audit::hex;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::audit::{self, AuditListFilter, AuditRecord, ChainVerification};
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::rest::openapi::PROBLEM;
use crate::rest::webhooks::{collect_field, parse_time, query};
use crate::state::AppState;

/// The routes, with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_audit_log))
        .routes(routes!(verify_audit_log))
}

/// The one mapping of a stored record to its REST body.
fn record_body(r: AuditRecord) -> AuditRecordBody {
    AuditRecordBody {
        id: r.id.to_string(),
        seq: r.seq,
        at: r.at,
        actor: AuditActorBody {
            kind: r.actor_kind,
            id: r.actor_id,
            client_addr: r.client_addr,
            request_id: r.request_id,
        },
        action: r.action,
        resource_type: r.resource_type,
        resource_id: r.resource_id,
        changes: r.changes,
        prev_hash: hex(&r.prev_hash),
        hash: hex(&r.hash),
    }
}

/// The one mapping of a verification to its REST body.
impl From<ChainVerification> for AuditVerificationBody {
    fn from(v: ChainVerification) -> Self {
        Self {
            valid: v.valid,
            records: v.records,
            from_seq: v.from_seq,
            head_seq: v.head_seq,
            head: v.head,
            broken_at: v.broken_at,
            reason: v.reason.map(str::to_owned),
            detail: v.detail,
        }
    }
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

/// List the caller's audit records, newest first, with filters.
#[utoipa::path(get, path = "/audit-log", tag = "audit",
    params(AuditLogQuery),
    responses(
        (status = 200, description = "One page", body = AuditLogListBody),
        (status = 400, description = "Invalid filter (invalid_timestamp, invalid_actor_kind, invalid_filter, invalid_cursor, invalid_limit, invalid_query)", body = Problem, content_type = PROBLEM),
        (status = 401, description = "Not authenticated", body = Problem, content_type = PROBLEM),
        (status = 403, description = "Partner credentials (forbidden): the log is the owner's", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = [])))]
pub async fn list_audit_log(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<AuditLogQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let params = query(params)?;
    let mut errors = Vec::new();
    let since = collect_field(&mut errors, parse_time(params.since.as_deref(), "/since")).flatten();
    let until = collect_field(&mut errors, parse_time(params.until.as_deref(), "/until")).flatten();
    let page = collect_field(
        &mut errors,
        PageRequest::parse(params.limit, params.cursor.as_deref()),
    );
    let filter = AuditListFilter {
        action: non_empty(params.action),
        resource_type: non_empty(params.resource_type),
        resource_id: non_empty(params.resource_id),
        actor_kind: non_empty(params.actor_kind),
        actor_id: non_empty(params.actor_id),
        since,
        until,
    };
    errors.extend(filter.validate());
    let Some(page) = page.filter(|_| errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let (records, next_cursor) = audit::list(&state, &caller, &filter, page).await?;
    Ok(axum::Json(AuditLogListBody {
        data: records.into_iter().map(record_body).collect(),
        next_cursor,
    }))
}

/// Recompute the caller's hash chain: valid, or the first record edited or removed.
#[utoipa::path(get, path = "/audit-log/verify", tag = "audit",
    params(AuditVerifyQuery),
    responses(
        (status = 200, description = "The verification (`valid: false` names the first broken record)", body = AuditVerificationBody),
        (status = 400, description = "invalid_from_seq, invalid_query", body = Problem, content_type = PROBLEM),
        (status = 401, description = "Not authenticated", body = Problem, content_type = PROBLEM),
        (status = 403, description = "Partner credentials (forbidden)", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = [])))]
pub async fn verify_audit_log(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<AuditVerifyQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let params = query(params)?;
    let verification = audit::verify(&state, &caller, params.from_seq).await?;
    Ok(axum::Json(AuditVerificationBody::from(verification)))
}
