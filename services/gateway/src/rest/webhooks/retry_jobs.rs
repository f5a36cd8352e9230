//! Retry-failed and its durable jobs: start (or dry-run), read, cancel.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use portico_api::retry_jobs::{
    DryRunBody, RetryFailedBody, RetryFailedOkBody, RetryJobBody, RetryJobFiltersBody,
};
use portico_domain::FieldError;
use portico_domain::webhooks::DeliveryStatus;
use portico_domain::wire::WireName;

use super::{OptionalJson, collect_field, parse_id, parse_time};
use crate::app::webhook_deliveries::{self, RetryFailedOutcome, RetryFailedRequest, RetryJob};
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::rest::openapi::PROBLEM;
use crate::state::AppState;

/// The one mapping of the application's retry job to its REST body.
fn retry_job_body(j: RetryJob) -> RetryJobBody {
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
            DeliveryStatus::parse_field(s, &format!("/statuses/{i}"))
                .map_err(|e| errors.push(e))
                .ok()
        })
        .collect();
    let since = collect_field(&mut errors, parse_time(body.since.as_deref(), "/since")).flatten();
    let until = collect_field(&mut errors, parse_time(body.until.as_deref(), "/until")).flatten();
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
                (StatusCode::ACCEPTED, axum::Json(retry_job_body(job))).into_response()
            }
            RetryFailedOutcome::Existing(job) => {
                (StatusCode::OK, axum::Json(retry_job_body(job))).into_response()
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
    Ok(axum::Json(retry_job_body(job)))
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
    Ok(axum::Json(retry_job_body(job)))
}
