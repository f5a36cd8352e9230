//! Bulk-order batches and orders: `POST /bulk-orders` (JSON or NDJSON), the batch
//! list and detail, results (paged and downloaded), cancel, retry-failed, and
//! `GET /orders/{id}`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use portico_domain::FieldError;
use portico_domain::bulk_orders::{BatchStatus, ResultStatus};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// A batch submission as JSON (documentation shape; orders are parsed by the processor).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(examples(crate::examples::submit_batch))]
pub struct SubmitBatchBody {
    /// 1 to `PORTICO_MAX_BATCH_ORDERS` (default 10,000) orders.
    pub orders: Vec<OrderInput>,
    /// Validate every order and report, without storing anything (also `?validateOnly=true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validate_only: Option<bool>,
}

/// One order as submitted.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderInput {
    /// 1-100 characters of `A-Z a-z 0-9 . _ : -`, unique per owner.
    #[schema(example = "PO-1001")]
    pub client_order_ref: String,
    /// ISO 4217 code.
    #[schema(example = "EUR")]
    pub currency: String,
    /// `{"email", "name", "phone"?}`.
    #[schema(value_type = Object)]
    pub customer: serde_json::Value,
    /// `{"line1", "line2"?, "city", "region"?, "postalCode", "country"}` (ISO 3166-1 alpha-2).
    #[schema(value_type = Object)]
    pub shipping_address: serde_json::Value,
    /// 1 to 500 lines.
    pub line_items: Vec<LineItemInput>,
    /// Optional object, at most 16 KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
}

/// One line of a submitted order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LineItemInput {
    /// 1-64 characters.
    pub sku: String,
    /// 1 to 1,000,000.
    pub quantity: u32,
    /// An integer in minor units (`1250`) or a decimal string in major units (`"12.50"`)
    /// with at most the currency's decimals; never a floating-point number.
    #[schema(value_type = String, example = "12.50")]
    pub unit_price: serde_json::Value,
}

/// Query of `POST /bulk-orders`.
#[derive(Debug, Default, Clone, Serialize, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct SubmitQuery {
    /// Validate only (the way to ask for it with NDJSON).
    pub validate_only: Option<bool>,
}

/// Batch progress counters.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CountsBody {
    /// Orders in the batch.
    pub total: i64,
    /// Orders with a final result (succeeded + failed + duplicate).
    pub processed: i64,
    /// Orders created.
    pub succeeded: i64,
    /// Orders refused by validation.
    pub failed: i64,
    /// Orders whose clientOrderRef already existed.
    pub duplicate: i64,
    /// Orders a cancel (or a batch failure) left unprocessed.
    pub unprocessed: i64,
}

/// A batch.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(examples(crate::examples::batch))]
pub struct BatchBody {
    /// The batch id.
    pub id: Uuid,
    /// Where the batch is in its life.
    pub status: BatchStatus,
    /// Progress, visible while the batch runs.
    pub counts: CountsBody,
    /// Failed orders per error code (an order counts once per distinct code).
    pub error_summary: BTreeMap<String, i64>,
    /// The batch this one retries (retry-failed), if any.
    pub parent_batch_id: Option<Uuid>,
    /// The integration whose credentials submitted it, if any.
    pub integration_id: Option<Uuid>,
    /// A cancel was requested and is being carried out.
    pub cancel_requested: bool,
    /// Submission time.
    pub created_at: DateTime<Utc>,
    /// When processing began.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a final status.
    pub completed_at: Option<DateTime<Utc>>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When the batch and its results are deleted (orders stay).
    pub expires_at: DateTime<Utc>,
}

/// The result of one order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResultBody {
    /// 0-based position in the submitted list.
    pub index: i64,
    /// The order's reference, when it had one.
    pub client_order_ref: Option<String>,
    /// The order's outcome (validate-only: succeeded = valid).
    pub status: ResultStatus,
    /// The created order (succeeded) or the existing one (duplicate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<Uuid>,
    /// Why it failed: `{"code", "path", "message"}`, paths relative to the order.
    #[schema(value_type = Vec<Object>)]
    pub errors: Vec<FieldError>,
}

/// A validate-only report; nothing was stored.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ValidationBody {
    /// True when every order is valid.
    pub valid: bool,
    /// One result per order, in input order.
    pub results: Vec<ResultBody>,
}

/// The 200 answers of `POST /bulk-orders`: the earlier batch of an idempotent replay,
/// or the validate-only report.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum SubmitOkBody {
    /// Idempotent replay: the batch this Idempotency-Key created.
    Replay(BatchBody),
    /// Validate-only: one result per order; nothing was stored.
    Validation(ValidationBody),
}

/// A page of batches.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(examples(crate::examples::batch_list))]
pub struct BatchListBody {
    /// Newest first.
    pub data: Vec<BatchBody>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// A page of results.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResultListBody {
    /// In input order.
    pub data: Vec<ResultBody>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// A stored order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderBody {
    /// The order id.
    pub id: Uuid,
    /// The batch that created it (null once the batch's retention ended).
    pub batch_id: Option<Uuid>,
    /// The integration whose batch created it.
    pub integration_id: Option<Uuid>,
    /// The client's reference.
    pub client_order_ref: String,
    /// ISO 4217 code.
    pub currency: String,
    /// `{"email", "name", "phone"?}`.
    #[schema(value_type = Object)]
    pub customer: serde_json::Value,
    /// `{"line1", "line2"?, "city", "region"?, "postalCode", "country"}`.
    #[schema(value_type = Object)]
    pub shipping_address: serde_json::Value,
    /// The lines, in order.
    pub line_items: Vec<OrderLineBody>,
    /// Sum of quantity times unit price, in minor units.
    pub total_minor: i64,
    /// The same total as a decimal string in major units.
    pub total: String,
    /// The client's free-form object.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// One line of a stored order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderLineBody {
    /// Stock-keeping unit.
    pub sku: String,
    /// Units.
    pub quantity: i32,
    /// Price of one unit, in minor units.
    pub unit_price_minor: i64,
}

/// Filters and page of `GET /bulk-orders`.
#[derive(Debug, Default, Clone, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListBatchesQuery {
    /// Only batches in this status.
    #[param(value_type = Option<BatchStatus>)]
    pub status: Option<String>,
    /// Page size (default 50, at most 500).
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// Filters and page of `GET /bulk-orders/{id}/results`.
#[derive(Debug, Default, Clone, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResultsQuery {
    /// Only results with this status.
    #[param(value_type = Option<ResultStatus>)]
    pub status: Option<String>,
    /// Page size (default 50, at most 500).
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// The file formats of `GET /bulk-orders/{id}/results/download`, so the OpenAPI
/// document lists them as an enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DownloadFormat {
    /// One JSON result per line (the default).
    Ndjson,
    /// Comma-separated values with a header line.
    Csv,
}

/// Options of `GET /bulk-orders/{id}/results/download`.
#[derive(Debug, Default, Clone, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DownloadQuery {
    /// `ndjson` (default) or `csv`. Documented as [`DownloadFormat`]; read as text so
    /// an unknown value keeps its own error code.
    #[param(value_type = Option<DownloadFormat>, inline)]
    pub format: Option<String>,
    /// Only results with this status.
    #[param(value_type = Option<ResultStatus>)]
    pub status: Option<String>,
}
