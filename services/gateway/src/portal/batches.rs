//! Batch pages: the list with progress bars, a batch's counts, error summary and
//! results filtered by status, downloads (through the API's own download route),
//! upload (NDJSON or a JSON array, sent by the page's script), cancel and
//! retry-failed. A partner sees only the batches its integration submitted.

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use futures::TryStreamExt;
use portico_domain::bulk_orders::ResultStatus;
use portico_domain::pagination::PageRequest;
use portico_storage::bulk_orders::BatchRow;
use serde::Deserialize;
use tower::ServiceExt;
use uuid::Uuid;

use super::html::Html;
use super::pages::{self, CsrfForm, Nav, badge, error_page, notice, post_button, time};
use super::sessions::PortalSession;
use crate::app::bulk_orders::{self as app, ResultsPage, SubmitOptions, Submitted};
use crate::error::ApiError;
use crate::state::AppState;

/// Results per page on a batch's page.
const RESULTS_PAGE: u32 = 100;

/// The API router, for downloads: the portal hands the request to the existing API
/// route with the session's caller, so the file is exactly what the API serves.
#[derive(Clone)]
pub struct ApiRoutes(pub axum::Router);

fn parse_uuid(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| ApiError::NotFound("batch"))
}

/// A batch of the session: the user's, or for a partner only its integration's.
async fn visible(
    state: &AppState,
    session: &PortalSession,
    id: &str,
) -> Result<BatchRow, ApiError> {
    let batch = app::get_batch(state, &session.caller, parse_uuid(id)?).await?;
    if let Some(integration) = session.integration_id()
        && batch.integration_id.map(|i| i.as_uuid()) != Some(integration)
    {
        return Err(ApiError::NotFound("batch"));
    }
    Ok(batch)
}

fn progress(h: &mut Html, b: &BatchRow) {
    let max = b.total.max(1).to_string();
    let now = b.processed.to_string();
    h.raw("<progress role=\"progressbar\" aria-valuemin=\"0\"")
        .attr("data-batch-id", &b.id.as_uuid().to_string())
        .attr("max", &max)
        .attr("value", &now)
        .attr("aria-valuemax", &max)
        .attr("aria-valuenow", &now)
        .attr(
            "aria-label",
            &format!("{} of {} orders processed", b.processed, b.total),
        )
        .raw("></progress> <span class=\"progress-text\">")
        .num(b.processed)
        .raw(" / ")
        .num(b.total)
        .raw("</span>");
}

/// The list query.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    done: Option<String>,
}

/// `GET /portal/batches`.
pub async fn list(
    State(state): State<AppState>,
    session: PortalSession,
    Query(q): Query<ListQuery>,
) -> Response {
    let result = async {
        let (rows, _) =
            app::list_batches(&state, &session.caller, None, PageRequest::parse(Some(100), None)?)
                .await?;
        let mut body = Html::new();
        notice(&mut body, q.done.as_deref());
        upload_form(&mut body, &session);
        let rows: Vec<&BatchRow> = rows
            .iter()
            .filter(|b| match session.integration_id() {
                Some(i) => b.integration_id.map(|x| x.as_uuid()) == Some(i),
                None => true,
            })
            .collect();
        if rows.is_empty() {
            body.raw("<p class=\"empty\">No batches yet. Upload an NDJSON file (one order per line) or a JSON array of orders above.</p>");
        } else {
            body.raw("<div class=\"scroll\" role=\"region\" tabindex=\"0\" aria-label=\"Batches\"><table class=\"list\"><caption>Batches, newest first</caption><thead><tr><th scope=\"col\">Submitted</th><th scope=\"col\">Status</th><th scope=\"col\">Progress</th><th scope=\"col\">Failed</th></tr></thead><tbody>");
            for b in rows {
                body.raw("<tr><td><a")
                    .attr("href", &format!("/portal/batches/{}", b.id.as_uuid()))
                    .raw(">")
                    .text(&time(b.created_at))
                    .raw("</a></td><td class=\"status\">");
                badge(&mut body, &b.status);
                body.raw("</td><td>");
                progress(&mut body, b);
                body.raw("</td><td>").num(b.failed).raw("</td></tr>");
            }
            body.raw("</tbody></table></div>");
        }
        Ok::<_, ApiError>(pages::respond(
            StatusCode::OK,
            pages::page(Some(&session), "Batches", Nav::Batches, &body),
        ))
    }
    .await;
    result.unwrap_or_else(|e| error_page(&e))
}

fn upload_form(h: &mut Html, session: &PortalSession) {
    h.raw("<section aria-labelledby=\"upload\"><h2 id=\"upload\">Submit a batch</h2><form id=\"upload-form\" class=\"stack\" action=\"/portal/batches/upload\" method=\"post\"")
        .attr("data-csrf", &session.csrf)
        .raw("><label for=\"batch-file\">NDJSON (one order per line) or JSON array file</label><input id=\"batch-file\" name=\"file\" type=\"file\" accept=\".ndjson,.jsonl,.json,application/json,application/x-ndjson\" required><button type=\"submit\">Upload</button><progress id=\"upload-progress\" role=\"progressbar\" aria-label=\"Upload progress (per cent)\" aria-valuemin=\"0\" aria-valuemax=\"100\" aria-valuenow=\"0\" max=\"100\" value=\"0\" hidden></progress><p id=\"upload-status\" role=\"status\"></p></form><p class=\"muted\">Uploading needs JavaScript; the API takes the same files at <code>POST /api/bulk-orders</code>.</p></section>");
}

/// The batch page's query.
#[derive(Debug, Default, Deserialize)]
pub struct DetailQuery {
    done: Option<String>,
    status: Option<String>,
    cursor: Option<String>,
}

/// `GET /portal/batches/{id}`.
pub async fn detail(
    State(state): State<AppState>,
    session: PortalSession,
    Path(id): Path<String>,
    Query(q): Query<DetailQuery>,
) -> Response {
    let result = async {
        let b = visible(&state, &session, &id).await?;
        let id = b.id.as_uuid();
        let base = format!("/portal/batches/{id}");
        let status = q
            .status
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(app::parse_result_status)
            .transpose()?;
        let mut body = Html::new();
        notice(&mut body, q.done.as_deref());
        // The status is announced when the live updates change it.
        body.raw("<dl class=\"facts\"><dt>Status</dt><dd class=\"status\" aria-live=\"polite\">");
        badge(&mut body, &b.status);
        body.raw("</dd><dt>Progress</dt><dd>");
        progress(&mut body, &b);
        body.raw("</dd><dt>Succeeded</dt><dd>")
            .num(b.succeeded)
            .raw("</dd><dt>Failed</dt><dd>")
            .num(b.failed)
            .raw("</dd><dt>Duplicate</dt><dd>")
            .num(b.duplicate)
            .raw("</dd><dt>Unprocessed</dt><dd>")
            .num(b.unprocessed)
            .raw("</dd><dt>Submitted</dt><dd>")
            .text(&time(b.created_at))
            .raw("</dd></dl>");
        let summary = app::error_summary_map(&b);
        if !summary.is_empty() {
            body.raw("<h2>Errors</h2><ul>");
            for (code, n) in &summary {
                body.raw("<li><code>").text(code).raw("</code>: ").num(*n).raw("</li>");
            }
            body.raw("</ul>");
        }
        body.raw("<div class=\"actions\"><a class=\"button\"")
            .attr("href", &format!("{base}/download?format=csv"))
            .raw(">Download CSV</a> <a class=\"button\"")
            .attr("href", &format!("{base}/download?format=ndjson"))
            .raw(">Download NDJSON</a>");
        if !b.status().is_final() {
            post_button(&mut body, &format!("{base}/cancel"), &session.csrf, "Cancel");
        } else if b.failed + b.unprocessed > 0 {
            post_button(
                &mut body,
                &format!("{base}/retry-failed"),
                &session.csrf,
                "Retry failed orders",
            );
        }
        body.raw("</div>");
        body.raw("<h2>Results</h2><form method=\"get\" class=\"inline\"")
            .attr("action", &base)
            .raw("><label for=\"status\">Status</label> <select id=\"status\" name=\"status\"><option value=\"\">all</option>");
        for s in ResultStatus::ALL {
            body.raw("<option").attr("value", s.as_str());
            if status == Some(s) {
                body.raw(" selected");
            }
            body.raw(">").text(s.as_str()).raw("</option>");
        }
        body.raw("</select> <button type=\"submit\">Filter</button></form>");
        let page = ResultsPage::parse(Some(RESULTS_PAGE), q.cursor.as_deref())?;
        let (results, next) = app::list_results(&state, &session.caller, id, status, page).await?;
        if results.is_empty() {
            body.raw("<p class=\"empty\">No results to show yet; they appear as the batch is processed.</p>");
        } else {
            body.raw("<div class=\"scroll\" role=\"region\" tabindex=\"0\" aria-label=\"Order results\"><table class=\"list\"><thead><tr><th scope=\"col\">#</th><th scope=\"col\">Reference</th><th scope=\"col\">Status</th><th scope=\"col\">Order / errors</th></tr></thead><tbody>");
            for r in &results {
                body.raw("<tr><td>")
                    .num(r.index)
                    .raw("</td><td>")
                    .text(r.client_order_ref.as_deref().unwrap_or("—"))
                    .raw("</td><td>");
                badge(&mut body, r.status.as_str());
                body.raw("</td><td>");
                if let Some(order) = r.order_id {
                    body.raw("<code>").text(&order.to_string()).raw("</code>");
                }
                for e in &r.errors {
                    body.raw("<div><code>")
                        .text(&e.code)
                        .raw("</code> ")
                        .text(&e.path)
                        .raw(": ")
                        .text(&e.message)
                        .raw("</div>");
                }
                body.raw("</td></tr>");
            }
            body.raw("</tbody></table></div>");
        }
        if let Some(next) = next {
            let mut href = format!("{base}?cursor={}", super::html::url_encode(&next));
            if let Some(s) = status {
                href.push_str("&status=");
                href.push_str(s.as_str());
            }
            body.raw("<p><a").attr("href", &href).raw(">More results</a></p>");
        }
        Ok::<_, ApiError>(pages::respond(
            StatusCode::OK,
            pages::page(Some(&session), "Batch", Nav::Batches, &body),
        ))
    }
    .await;
    result.unwrap_or_else(|e| error_page(&e))
}

/// The download query.
#[derive(Debug, Deserialize)]
pub struct DownloadQuery {
    format: Option<String>,
    status: Option<String>,
}

/// `GET /portal/batches/{id}/download?format=csv|ndjson`: served by the API's
/// `GET /bulk-orders/{id}/results/download` with the session's caller.
pub async fn download(
    State(state): State<AppState>,
    session: PortalSession,
    axum::Extension(api): axum::Extension<ApiRoutes>,
    Path(id): Path<String>,
    Query(q): Query<DownloadQuery>,
) -> Response {
    let result = async {
        let b = visible(&state, &session, &id).await?;
        let mut uri = format!(
            "/bulk-orders/{}/results/download?format={}",
            b.id.as_uuid(),
            if q.format.as_deref() == Some("csv") {
                "csv"
            } else {
                "ndjson"
            }
        );
        if let Some(s) = q.status.as_deref().filter(|s| !s.is_empty()) {
            uri.push_str("&status=");
            uri.push_str(app::parse_result_status(s)?.as_str());
        }
        let mut request = Request::get(uri)
            .body(Body::empty())
            .map_err(ApiError::internal)?;
        request.extensions_mut().insert(session.caller.clone());
        let response = api.0.oneshot(request).await.map_err(ApiError::internal)?;
        Ok::<_, ApiError>(response)
    }
    .await;
    result.unwrap_or_else(|e| error_page(&e))
}

/// `POST /portal/batches/upload`: the body is the file (NDJSON, or a JSON array with
/// `Content-Type: application/json`), the CSRF token in `x-csrf-token`. Answers JSON
/// for the page's script: `{"batchId": ...}` or `{"error": ...}`.
pub async fn upload(
    State(state): State<AppState>,
    session: PortalSession,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        session.check_csrf(
            headers
                .get(super::security::CSRF_HEADER)
                .and_then(|v| v.to_str().ok()),
        )?;
        let is_json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let submitted = if is_json {
            let bytes = axum::body::to_bytes(body, state.config().max_body_bytes)
                .await
                .map_err(|_| {
                    ApiError::PayloadTooLarge(
                        "the file is too large for a JSON array; send it as NDJSON".into(),
                    )
                })?;
            let orders = parse_orders(&bytes)?;
            let texts: Vec<&str> = orders.iter().map(|o| o.get()).collect();
            app::submit(&state, &session.caller, &texts, SubmitOptions::default()).await?
        } else {
            let stream = body.into_data_stream().map_err(|e| e.to_string());
            app::submit_ndjson(&state, &session.caller, stream, SubmitOptions::default()).await?
        };
        match submitted {
            Submitted::Accepted { batch, .. } => Ok(batch.id.as_uuid()),
            Submitted::Validated(_) => Err(ApiError::internal("unexpected validation report")),
        }
    }
    .await;
    match result {
        Ok(id) => (
            StatusCode::ACCEPTED,
            axum::Json(
                serde_json::json!({ "batchId": id, "location": format!("/portal/batches/{id}") }),
            ),
        )
            .into_response(),
        Err(e) => {
            let message = match &e {
                ApiError::Validation(errors) => errors
                    .iter()
                    .map(|e| e.message.clone())
                    .collect::<Vec<_>>()
                    .join(" "),
                ApiError::Internal(_) => "something went wrong on our side; try again".to_owned(),
                other => other.to_string(),
            };
            (
                e.status(),
                axum::Json(serde_json::json!({ "error": message })),
            )
                .into_response()
        }
    }
}

/// The orders of a JSON upload: an array of orders, or the API's `{"orders": [...]}`.
fn parse_orders(bytes: &[u8]) -> Result<Vec<Box<serde_json::value::RawValue>>, ApiError> {
    /// The API's request body shape.
    #[derive(Deserialize)]
    struct Wrapped {
        orders: Vec<Box<serde_json::value::RawValue>>,
    }
    serde_json::from_slice::<Vec<Box<serde_json::value::RawValue>>>(bytes)
        .or_else(|_| serde_json::from_slice::<Wrapped>(bytes).map(|w| w.orders))
        .map_err(|e| {
            ApiError::MalformedBody(format!(
                "the file is neither a JSON array of orders nor {{\"orders\": [...]}}: {e}"
            ))
        })
}

/// `POST /portal/batches/{id}/cancel`.
pub async fn cancel(
    State(state): State<AppState>,
    session: PortalSession,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Response {
    let result = async {
        session.check_csrf(form.csrf.as_deref())?;
        let b = visible(&state, &session, &id).await?;
        app::cancel(&state, &session.caller, b.id.as_uuid()).await?;
        Ok::<_, ApiError>(format!(
            "/portal/batches/{}?done=cancel_requested",
            b.id.as_uuid()
        ))
    }
    .await;
    match result {
        Ok(to) => Redirect::to(&to).into_response(),
        Err(e) => error_page(&e),
    }
}

/// `POST /portal/batches/{id}/retry-failed`: a child batch of the failed and
/// unprocessed orders.
pub async fn retry_failed(
    State(state): State<AppState>,
    session: PortalSession,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Response {
    let result = async {
        session.check_csrf(form.csrf.as_deref())?;
        let b = visible(&state, &session, &id).await?;
        let (child, _) = app::retry_failed(&state, &session.caller, b.id.as_uuid(), None).await?;
        Ok::<_, ApiError>(format!(
            "/portal/batches/{}?done=retry_batch",
            child.id.as_uuid()
        ))
    }
    .await;
    match result {
        Ok(to) => Redirect::to(&to).into_response(),
        Err(e) => error_page(&e),
    }
}
