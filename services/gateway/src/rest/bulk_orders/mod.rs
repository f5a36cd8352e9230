//! REST routes of bulk-order batches and orders, thin adapters over
//! [`crate::app::bulk_orders`]:
//!
//! - `POST /bulk-orders` (JSON `{"orders": [...]}` or streamed NDJSON)
//! - `GET /bulk-orders`, `GET /bulk-orders/{id}`
//! - `GET /bulk-orders/{id}/results`, `GET /bulk-orders/{id}/results/download`
//! - `POST /bulk-orders/{id}/cancel`, `POST /bulk-orders/{id}/retry-failed`
//! - `GET /orders/{id}`
//!
//! The submission is [`submit`], the download [`download`]; the rest is here.

mod download;
mod submit;

use download::*;
use submit::*;

use axum::body::Body;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use portico_api::bulk_orders::{
    BatchBody, BatchListBody, CountsBody, DownloadQuery, ListBatchesQuery, OrderBody,
    OrderLineBody, ResultBody, ResultListBody, ResultsQuery, SubmitBatchBody, SubmitOkBody,
    SubmitQuery, ValidationBody,
};
use portico_domain::orders::{currency, format_minor};
use portico_domain::pagination::PageRequest;
use portico_storage::bulk_orders::BatchRow;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::bulk_orders::{
    self as app, DownloadFormat, OrderResult, ResultsPage, StoredOrder, SubmitOptions, Submitted,
    ValidationReport,
};
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::rest::openapi::PROBLEM;
use crate::state::AppState;

/// The routes, with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(submit_batch, list_batches))
        .routes(routes!(get_batch))
        .routes(routes!(list_results))
        .routes(routes!(download_results))
        .routes(routes!(cancel_batch))
        .routes(routes!(retry_failed))
        .routes(routes!(get_order))
}

// ---------------------------------------------------------------------------
// Request and response shapes
// ---------------------------------------------------------------------------

// The bodies are portico_api::bulk_orders; the conversions from application and
// storage types are here, once.

/// The one mapping of a stored batch to its REST body.
pub(crate) fn batch_body(row: BatchRow) -> BatchBody {
    let counts = row.counts();
    BatchBody {
        error_summary: app::error_summary_map(&row),
        id: row.id.as_uuid(),
        status: row.status(),
        counts: CountsBody {
            total: counts.total,
            processed: counts.processed,
            succeeded: counts.succeeded,
            failed: counts.failed,
            duplicate: counts.duplicate,
            unprocessed: counts.unprocessed,
        },
        parent_batch_id: row.parent_batch_id.map(Into::into),
        integration_id: row.integration_id.map(Into::into),
        cancel_requested: row.cancel_requested,
        created_at: row.created_at,
        started_at: row.started_at,
        completed_at: row.completed_at,
        updated_at: row.updated_at,
        expires_at: row.expires_at,
    }
}

impl From<OrderResult> for ResultBody {
    fn from(r: OrderResult) -> Self {
        Self {
            index: r.index,
            client_order_ref: r.client_order_ref,
            status: r.status,
            order_id: r.order_id,
            errors: r.errors,
        }
    }
}

impl From<ValidationReport> for ValidationBody {
    fn from(r: ValidationReport) -> Self {
        Self {
            valid: r.valid,
            results: r.results.into_iter().map(Into::into).collect(),
        }
    }
}

/// The one mapping of a stored order to its REST body.
fn order_body(o: StoredOrder) -> OrderBody {
    let exponent = currency(&o.currency).map(|c| c.exponent).unwrap_or(2);
    OrderBody {
        total: format_minor(o.total_minor, exponent),
        id: o.id.as_uuid(),
        batch_id: o.batch_id.map(Into::into),
        integration_id: o.integration_id.map(Into::into),
        client_order_ref: o.client_order_ref,
        currency: o.currency,
        customer: o.customer,
        shipping_address: o.shipping_address,
        line_items: o
            .line_items
            .into_iter()
            .map(|l| OrderLineBody {
                sku: l.sku,
                quantity: l.quantity,
                unit_price_minor: l.unit_price_minor,
            })
            .collect(),
        total_minor: o.total_minor,
        metadata: o.metadata,
        created_at: o.created_at,
    }
}

// ---------------------------------------------------------------------------
// Extraction helpers
// ---------------------------------------------------------------------------

/// `Query<T>` whose rejection is problem+json.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e| ApiError::field("invalid_query", "/query", e.body_text()))
    }
}

fn parse_id(text: &str) -> Result<Uuid, ApiError> {
    text.parse()
        .map_err(|_| ApiError::field("invalid_id", "/id", "the id must be a UUID"))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => v.to_str().map(|s| Some(s.to_owned())).map_err(|_| {
            ApiError::field(
                "invalid_idempotency_key",
                "/headers/idempotency-key",
                "Idempotency-Key must be visible ASCII",
            )
        }),
    }
}

// ---------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------

/// List the caller's batches, newest first.
#[utoipa::path(get, path = "/bulk-orders", tag = "bulk-orders",
    params(ListBatchesQuery),
    responses(
        (status = 200, description = "A page of batches", body = BatchListBody),
        (status = 400, description = "Invalid filter or cursor", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn list_batches(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListBatchesQuery>,
) -> Result<axum::Json<BatchListBody>, ApiError> {
    let status = query
        .status
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(app::parse_batch_status)
        .transpose()?;
    let page = PageRequest::parse(query.limit, query.cursor.as_deref())?;
    let (rows, next_cursor) = app::list_batches(&state, &caller, status, page).await?;
    Ok(axum::Json(BatchListBody {
        data: rows.into_iter().map(batch_body).collect(),
        next_cursor,
    }))
}

/// Get a batch with its progress counts and error summary (also while it runs).
#[utoipa::path(get, path = "/bulk-orders/{id}", tag = "bulk-orders",
    params(("id" = Uuid, Path, description = "Batch id")),
    responses(
        (status = 200, description = "The batch", body = BatchBody),
        (status = 404, description = "No such batch for this user", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn get_batch(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<BatchBody>, ApiError> {
    let batch = app::get_batch(&state, &caller, parse_id(&id)?).await?;
    Ok(axum::Json(batch_body(batch)))
}

/// List per-order results in input order, optionally of one status.
#[utoipa::path(get, path = "/bulk-orders/{id}/results", tag = "bulk-orders",
    params(("id" = Uuid, Path, description = "Batch id"), ResultsQuery),
    responses(
        (status = 200, description = "A page of results", body = ResultListBody),
        (status = 404, description = "No such batch for this user", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn list_results(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<ResultsQuery>,
) -> Result<axum::Json<ResultListBody>, ApiError> {
    let id = parse_id(&id)?;
    let status = query
        .status
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(app::parse_result_status)
        .transpose()?;
    let page = ResultsPage::parse(query.limit, query.cursor.as_deref())?;
    let (rows, next_cursor) = app::list_results(&state, &caller, id, status, page).await?;
    Ok(axum::Json(ResultListBody {
        data: rows.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

const CSV_HEADER: &str = "index,clientOrderRef,status,orderId,errorCodes,errors\n";

/// Cancel a pending or processing batch: the chunk in flight finishes, the remaining
/// orders are reported `unprocessed`, and the batch ends `cancelled`.
#[utoipa::path(post, path = "/bulk-orders/{id}/cancel", tag = "bulk-orders",
    params(("id" = Uuid, Path, description = "Batch id")),
    responses(
        (status = 202, description = "Cancel requested (cancelRequested: true)", body = BatchBody),
        (status = 404, description = "No such batch for this user", body = Problem, content_type = PROBLEM),
        (status = 409, description = "The batch has already finished (failed_precondition)", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn cancel_batch(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let batch = app::cancel(&state, &caller, parse_id(&id)?).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(batch_body(batch))).into_response())
}

/// Create a child batch of this finished batch's failed and unprocessed orders.
#[utoipa::path(post, path = "/bulk-orders/{id}/retry-failed", tag = "bulk-orders",
    params(
        ("id" = Uuid, Path, description = "Batch id"),
        ("Idempotency-Key" = Option<String>, Header, description = "The same key returns the same child batch"),
    ),
    responses(
        (status = 202, description = "The child batch, committed and queued", body = BatchBody),
        (status = 200, description = "Idempotent replay: the earlier child batch", body = BatchBody),
        (status = 404, description = "No such batch for this user", body = Problem, content_type = PROBLEM),
        (status = 409, description = "Not finished, or nothing to retry (failed_precondition)", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn retry_failed(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let (batch, replay) = app::retry_failed(&state, &caller, parse_id(&id)?, key).await?;
    Ok(accepted(batch, replay))
}

/// Get an order created by a batch, with its line items.
#[utoipa::path(get, path = "/orders/{id}", tag = "orders",
    params(("id" = Uuid, Path, description = "Order id")),
    responses(
        (status = 200, description = "The order", body = OrderBody),
        (status = 404, description = "No such order for this user", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn get_order(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<OrderBody>, ApiError> {
    let order = app::get_order(&state, &caller, parse_id(&id)?).await?;
    Ok(axum::Json(order_body(order)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Orders are kept as their exact JSON text, whitespace around them excluded, so
    /// the structure check and the request hash see the order and nothing else.
    #[test]
    fn orders_are_borrowed_as_raw_json() {
        let body = br#"{ "orders" : [ {"a": 1} ,
            42 ], "validateOnly": true }"#;
        let wire = parse_wire(body).unwrap();
        let raws: Vec<&str> = wire.orders.iter().map(|r| r.get()).collect();
        assert_eq!(raws, [r#"{"a": 1}"#, "42"]);
        assert_eq!(wire.validate_only, Some(true));
        assert_eq!(
            parse_wire(b"{\"orders\": [").unwrap_err().code(),
            "malformed_body"
        );
        assert_eq!(
            parse_wire(br#"{"orders": [], "x": 1}"#).unwrap_err().code(),
            "malformed_body"
        );
    }

    /// CSV fields with separators, quotes or newlines are quoted.
    #[test]
    fn csv_fields_are_quoted_when_needed() {
        let mut out = String::new();
        csv_field(&mut out, "plain");
        out.push('|');
        csv_field(&mut out, "a,\"b\"");
        assert_eq!(out, "plain|\"a,\"\"b\"\"\"");
    }

    /// Text a spreadsheet would run as a formula (leading `=`, `+`, `-`, `@`, tab or
    /// carriage return) gets a leading single quote inside a quoted field; the same
    /// characters elsewhere in the text change nothing.
    #[test]
    fn csv_formulas_are_neutralised() {
        for (value, written) in [
            (
                "=HYPERLINK(\"http://x.test\",\"y\")",
                "\"'=HYPERLINK(\"\"http://x.test\"\",\"\"y\"\")\"",
            ),
            ("+1+2", "\"'+1+2\""),
            ("-2-3", "\"'-2-3\""),
            ("@SUM(A1)", "\"'@SUM(A1)\""),
            ("\t=1", "\"'\t=1\""),
            ("\r=1", "\"'\r=1\""),
            ("PO-1=2", "PO-1=2"),
            ("", ""),
        ] {
            let mut out = String::new();
            csv_field(&mut out, value);
            assert_eq!(out, written, "{value:?}");
        }
        let failed = OrderResult {
            index: 3,
            client_order_ref: Some("=cmd|' /C calc'!A0".to_owned()),
            status: portico_domain::bulk_orders::ResultStatus::Failed,
            order_id: None,
            errors: Vec::new(),
        };
        let csv = encode_page(DownloadFormat::Csv, vec![failed]);
        assert_eq!(&csv[..], b"3,\"'=cmd|' /C calc'!A0\",failed,,,\n");
    }
}
