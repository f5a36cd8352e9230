//! Bulk-order batches behind both doors: submit (JSON array or streamed NDJSON),
//! validate-only, status, lists, per-order results and their download, cancel,
//! retry-failed, and reading a created order.
//!
//! Accepting a batch is cheap on purpose: the request checks only the structure (a
//! non-empty list within the limit, each order a JSON object) and commits the batch
//! row, its orders as raw JSON chunks of 1,000 and its job in ONE transaction (the
//! outbox), then answers 202. Validating and creating orders happens in the
//! batch-processor; an invalid order becomes a `failed` result there, never a refused
//! batch. A 100,000-order batch is about a hundred chunk rows written with a few
//! `unnest` statements.
//!
//! Idempotency: an `Idempotency-Key` is unique per owner; its batch stores a SHA-256
//! over the submitted orders (each order's JSON text and a newline, so JSON, NDJSON
//! and gRPC submissions of the same orders hash alike). The same key with the same
//! orders returns the first batch; with different orders it is a conflict.
//!
//! One module per concern: [`intake_json`] and [`intake_ndjson`] (the two ways in),
//! [`idempotency`], [`chunks`] (writing and committing), [`results`] (reading) and
//! [`lifecycle`] (cancel, retry-failed).

mod chunks;
mod idempotency;
mod intake_json;
mod intake_ndjson;
mod lifecycle;
mod results;
#[cfg(test)]
mod tests;

use chunks::*;
use idempotency::*;
pub use intake_json::submit;
use intake_json::*;
pub use intake_ndjson::submit_ndjson;
pub use lifecycle::{cancel, retry_failed};
use results::*;
pub use results::{
    ResultsPage, get_batch, list_batches, list_results, parse_batch_status, parse_result_status,
    stream_results,
};

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use portico_domain::FieldError;
use portico_domain::bulk_orders::{
    BatchStatus, IndexCursor, ORDERS_PER_CHUNK, ResultStatus, contains_nul_escape,
};
use portico_domain::ids::{BatchId, IntegrationId, OrderId};
use portico_domain::orders::parse_order;
use portico_domain::pagination::{self, Cursor, PageRequest};
use portico_domain::wire::WireName;
use portico_queue::jobs::Job;
use portico_storage::bulk_orders::{self as store, BatchRow, NewBatch, NewChunks};
use portico_storage::orders;
pub use portico_storage::orders::{StoredLineItem, StoredOrder};
use serde_json::value::RawValue;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::error::ApiError;
use crate::identity::{Caller, Scope};
use crate::state::AppState;
/// Longest `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// Largest single order (one NDJSON line), so one endless line cannot exhaust memory.
pub const MAX_ORDER_BYTES: usize = 1024 * 1024;
/// Chunks written per INSERT while streaming (bounds memory to a few MB per upload).
pub(super) const CHUNKS_PER_INSERT: usize = 8;
/// Results per page when streaming a download.
pub(super) const DOWNLOAD_PAGE: i64 = 5_000;

/// How a submission is to be handled.
#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    /// Validate every order and report, creating nothing.
    pub validate_only: bool,
    /// Makes a retried submission return the same batch.
    pub idempotency_key: Option<String>,
}

/// What a submission produced.
#[derive(Debug)]
pub enum Submitted {
    /// The batch is committed and queued (or, on replay, the earlier batch).
    Accepted {
        /// The batch.
        batch: BatchRow,
        /// True when the idempotency key matched an earlier submission.
        replay: bool,
    },
    /// validate-only: the report, nothing stored.
    Validated(ValidationReport),
}

/// The per-order report of a validate-only submission.
#[derive(Debug, Clone)]
pub struct ValidationReport {
    /// True when every order is valid.
    pub valid: bool,
    /// One result per order, in input order (`succeeded` = valid, `failed` = invalid).
    pub results: Vec<OrderResult>,
}

/// The outcome of one order.
#[derive(Debug, Clone)]
pub struct OrderResult {
    /// 0-based position in the submitted list.
    pub index: i64,
    /// The order's reference, when it had one.
    pub client_order_ref: Option<String>,
    /// What happened to it.
    pub status: ResultStatus,
    /// The created order (succeeded) or the existing one (duplicate).
    pub order_id: Option<Uuid>,
    /// Why it failed.
    pub errors: Vec<FieldError>,
}

/// Download formats of a batch's results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownloadFormat {
    /// One JSON result per line.
    Ndjson,
    /// Comma-separated with a header row.
    Csv,
}

/// One order of the caller's user, with its line items.
pub async fn get_order(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<StoredOrder, ApiError> {
    caller.require(Scope::OrdersRead)?;
    let id = OrderId(id);
    let mut order = orders::get_for_user(state.pool(), caller.user_id(), id)
        .await?
        .ok_or(ApiError::NotFound("order"))?;
    order.line_items = orders::line_items(state.pool(), id).await?;
    Ok(order)
}

/// The error summary as an ordered map (stable JSON output).
pub fn error_summary_map(batch: &BatchRow) -> BTreeMap<String, i64> {
    batch.error_summary().into_iter().collect()
}
