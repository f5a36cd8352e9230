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
const CHUNKS_PER_INSERT: usize = 8;
/// Results per page when streaming a download.
const DOWNLOAD_PAGE: i64 = 5_000;

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

// ---------------------------------------------------------------------------
// Submission
// ---------------------------------------------------------------------------

fn check_idempotency_key(key: Option<&str>) -> Result<(), ApiError> {
    match key {
        Some(k)
            if k.is_empty()
                || k.len() > MAX_IDEMPOTENCY_KEY_LEN
                || !k.bytes().all(|b| (0x21..=0x7e).contains(&b)) =>
        {
            Err(ApiError::field(
                "invalid_idempotency_key",
                "/headers/idempotency-key",
                format!(
                    "Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// The cheap structural check of one order at submission: a JSON object without the
/// NUL character (which PostgreSQL cannot store). Everything else is the processor's
/// validation. `path` is the order's position in the request (`/orders/3`, `/lines/4`).
fn check_order_structure(raw: &str, path: impl Fn() -> String) -> Result<(), ApiError> {
    if !raw.starts_with('{') {
        return Err(ApiError::field(
            "invalid_order",
            &path(),
            "each order must be a JSON object",
        ));
    }
    if contains_nul_escape(raw) {
        return Err(ApiError::field(
            "invalid_order",
            &path(),
            "orders must not contain the NUL character (\\u0000)",
        ));
    }
    Ok(())
}

fn empty_batch(path: &str) -> ApiError {
    ApiError::field("empty_batch", path, "a batch needs at least one order")
}

fn too_many_orders(path: &str, max: usize) -> ApiError {
    ApiError::field(
        "too_many_orders",
        path,
        format!("a batch has at most {max} orders in this format"),
    )
}

/// Validates every order of a validate-only submission.
fn validation_report<'a>(orders: impl Iterator<Item = &'a str>) -> ValidationReport {
    let mut valid = true;
    let results = orders
        .enumerate()
        .map(|(index, raw)| {
            let parsed = parse_order(raw);
            let client_order_ref = parsed.client_order_ref.map(|r| r.into_owned());
            match parsed.outcome {
                Ok(_) => OrderResult {
                    index: index as i64,
                    client_order_ref,
                    status: ResultStatus::Succeeded,
                    order_id: None,
                    errors: Vec::new(),
                },
                Err(errors) => {
                    valid = false;
                    OrderResult {
                        index: index as i64,
                        client_order_ref,
                        status: ResultStatus::Failed,
                        order_id: None,
                        errors,
                    }
                }
            }
        })
        .collect();
    ValidationReport { valid, results }
}

/// Builds chunk rows from orders' raw JSON and hashes the orders as it goes.
struct ChunkWriter {
    hasher: ring::digest::Context,
    store: bool,
    current: String,
    in_current: usize,
    next_chunk: i32,
    total: usize,
    ready_indexes: Vec<i32>,
    ready_firsts: Vec<i32>,
    ready_orders: Vec<String>,
}

impl ChunkWriter {
    /// `store: false` only hashes (an idempotent replay must still compare bodies).
    fn new(store: bool) -> Self {
        Self {
            hasher: ring::digest::Context::new(&ring::digest::SHA256),
            store,
            current: String::new(),
            in_current: 0,
            next_chunk: 0,
            total: 0,
            ready_indexes: Vec::new(),
            ready_firsts: Vec::new(),
            ready_orders: Vec::new(),
        }
    }

    fn push(&mut self, raw: &str) {
        self.hasher.update(raw.as_bytes());
        self.hasher.update(b"\n");
        self.total += 1;
        if !self.store {
            return;
        }
        if self.in_current == 0 {
            self.current.reserve(raw.len() * ORDERS_PER_CHUNK + 2);
            self.current.push('[');
        } else {
            self.current.push(',');
        }
        self.current.push_str(raw);
        self.in_current += 1;
        if self.in_current == ORDERS_PER_CHUNK {
            self.close_chunk();
        }
    }

    fn close_chunk(&mut self) {
        if self.in_current == 0 {
            return;
        }
        self.current.push(']');
        self.ready_indexes.push(self.next_chunk);
        self.ready_firsts
            .push(self.next_chunk * ORDERS_PER_CHUNK as i32);
        self.ready_orders.push(std::mem::take(&mut self.current));
        self.next_chunk += 1;
        self.in_current = 0;
    }

    /// Hands over the completed chunks, if any.
    fn take_ready(&mut self) -> Option<NewChunks> {
        if self.ready_orders.is_empty() {
            return None;
        }
        let mut chunks = NewChunks::default();
        let orders = std::mem::take(&mut self.ready_orders);
        for ((index, first), orders) in self
            .ready_indexes
            .drain(..)
            .zip(self.ready_firsts.drain(..))
            .zip(orders)
        {
            chunks.push(index, first, orders);
        }
        Some(chunks)
    }

    fn finish_hash(self) -> Vec<u8> {
        self.hasher.finish().as_ref().to_vec()
    }
}

/// Writes chunks in a task of its own that owns the batch's transaction, so the
/// request keeps reading and splitting the body while PostgreSQL stores the previous
/// chunks: on two cores, parsing and storing overlap instead of taking turns. At most
/// two sets of chunks wait in the channel, which bounds memory whatever the upload size.
/// If the request is abandoned, the task ends and drops the transaction: rolled back.
struct ChunkInserter {
    sender: tokio::sync::mpsc::Sender<NewChunks>,
    task: tokio::task::JoinHandle<Result<Transaction<'static, Postgres>, ApiError>>,
}

impl ChunkInserter {
    fn start(mut tx: Transaction<'static, Postgres>, batch_id: BatchId) -> Self {
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<NewChunks>(2);
        let task = tokio::spawn(async move {
            while let Some(chunks) = receiver.recv().await {
                store::insert_chunks(&mut *tx, batch_id, &chunks).await?;
            }
            Ok(tx)
        });
        Self { sender, task }
    }

    /// Queues chunks; fails (with the insert's error, via [`Self::finish`]) when the
    /// writer stopped.
    async fn send(&self, chunks: NewChunks) -> bool {
        self.sender.send(chunks).await.is_ok()
    }

    /// Waits for every queued chunk and returns the transaction.
    async fn finish(self) -> Result<Transaction<'static, Postgres>, ApiError> {
        drop(self.sender);
        self.task.await.map_err(ApiError::internal)?
    }
}

/// A new batch's open transaction, or the batch an idempotency key already names.
enum Begun {
    Fresh {
        tx: Transaction<'static, Postgres>,
        batch_id: BatchId,
    },
    Existing(BatchRow),
}

async fn find_by_key(
    state: &AppState,
    user_id: &str,
    key: &str,
) -> Result<Option<BatchRow>, ApiError> {
    Ok(store::find_by_idempotency_key(state.pool(), user_id, key).await?)
}

/// Opens the transaction of a new batch and inserts its row; if the idempotency key is
/// taken (now, or by a concurrent submission that just committed), returns that batch.
async fn begin_batch(
    state: &AppState,
    caller: &Caller,
    key: Option<&str>,
    parent_batch_id: Option<BatchId>,
) -> Result<Begun, ApiError> {
    if let Some(key) = key
        && let Some(existing) = find_by_key(state, caller.user_id(), key).await?
    {
        return Ok(Begun::Existing(existing));
    }
    let mut tx = state.pool().begin().await?;
    let batch_id = BatchId::generate();
    let batch = NewBatch {
        id: batch_id,
        user_id: caller.user_id(),
        integration_id: caller.integration_id().map(IntegrationId::from),
        parent_batch_id,
        idempotency_key: key,
        retention_days: i32::try_from(state.config().results_retention_days).unwrap_or(i32::MAX),
    };
    if store::insert_pending(&mut *tx, &batch).await? {
        return Ok(Begun::Fresh { tx, batch_id });
    }
    tx.rollback().await?;
    let key = key.unwrap_or_default();
    match find_by_key(state, caller.user_id(), key).await? {
        Some(existing) => Ok(Begun::Existing(existing)),
        None => Err(ApiError::Conflict(
            "a submission with this Idempotency-Key was just removed; retry".into(),
        )),
    }
}

/// An idempotent replay: the same orders return the earlier batch, others conflict.
async fn replay(state: &AppState, existing: BatchRow, hash: &[u8]) -> Result<Submitted, ApiError> {
    let stored = store::request_hash(state.pool(), existing.id).await?;
    if stored.as_deref() == Some(hash) {
        Ok(Submitted::Accepted {
            batch: existing,
            replay: true,
        })
    } else {
        Err(ApiError::Conflict(
            "this Idempotency-Key was already used with a different request".into(),
        ))
    }
}

/// Sets the batch's total and hash, enqueues its job and commits: the batch and its
/// job become durable together, or not at all.
async fn commit_batch(
    state: &AppState,
    mut tx: Transaction<'static, Postgres>,
    batch_id: BatchId,
    total: usize,
    hash: &[u8],
) -> Result<BatchRow, ApiError> {
    let total = i32::try_from(total).map_err(ApiError::internal)?;
    let row = store::seal(&mut *tx, batch_id, total, hash).await?;
    portico_queue::outbox::enqueue(
        &mut tx,
        state.publisher().topology(),
        &Job::BulkOrderBatchV1 {
            batch_id: batch_id.as_uuid(),
        },
    )
    .await?;
    tx.commit().await?;
    portico_queue::failpoint::hit("after_outbox_commit");
    state.outbox().notify();
    Ok(row)
}

/// Submits a batch whose orders are already in memory as raw JSON texts (the JSON
/// array of REST, the converted orders of gRPC). Error paths name the list `/orders`.
pub async fn submit(
    state: &AppState,
    caller: &Caller,
    orders: &[&str],
    options: SubmitOptions,
) -> Result<Submitted, ApiError> {
    caller.require(Scope::BulkOrdersWrite)?;
    let max = state.config().max_batch_orders;
    if orders.is_empty() {
        return Err(empty_batch("/orders"));
    }
    if orders.len() > max {
        return Err(too_many_orders("/orders", max));
    }
    for (i, raw) in orders.iter().enumerate() {
        check_order_structure(raw, || format!("/orders/{i}"))?;
    }
    if options.validate_only {
        return Ok(Submitted::Validated(validation_report(
            orders.iter().copied(),
        )));
    }
    let key = options.idempotency_key.as_deref();
    check_idempotency_key(key)?;
    match begin_batch(state, caller, key, None).await? {
        Begun::Existing(existing) => {
            let mut writer = ChunkWriter::new(false);
            orders.iter().for_each(|raw| writer.push(raw));
            replay(state, existing, &writer.finish_hash()).await
        }
        Begun::Fresh { tx, batch_id } => {
            let inserter = ChunkInserter::start(tx, batch_id);
            let mut writer = ChunkWriter::new(true);
            for raw in orders {
                writer.push(raw);
                if writer.ready_orders.len() >= CHUNKS_PER_INSERT
                    && let Some(chunks) = writer.take_ready()
                    && !inserter.send(chunks).await
                {
                    break;
                }
            }
            writer.close_chunk();
            if let Some(chunks) = writer.take_ready() {
                inserter.send(chunks).await;
            }
            let tx = inserter.finish().await?;
            let total = writer.total;
            let batch = commit_batch(state, tx, batch_id, total, &writer.finish_hash()).await?;
            Ok(Submitted::Accepted {
                batch,
                replay: false,
            })
        }
    }
}

/// Splits a byte stream into NDJSON lines without holding more than one partial line.
struct LineSplitter {
    pending: Vec<u8>,
    line: usize,
    bytes: u64,
    max_bytes: u64,
}

impl LineSplitter {
    fn new(max_bytes: u64) -> Self {
        Self {
            pending: Vec::new(),
            line: 0,
            bytes: 0,
            max_bytes,
        }
    }

    /// Feeds one frame; calls `each(line_number, order_text)` for every complete,
    /// non-blank line.
    fn feed(
        &mut self,
        frame: &[u8],
        each: &mut impl FnMut(usize, &str) -> Result<(), ApiError>,
    ) -> Result<(), ApiError> {
        self.bytes += frame.len() as u64;
        if self.bytes > self.max_bytes {
            return Err(ApiError::PayloadTooLarge(format!(
                "an NDJSON batch is at most {} bytes",
                self.max_bytes
            )));
        }
        let mut rest = frame;
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            let (head, tail) = rest.split_at(end);
            if self.pending.is_empty() {
                self.line(head, each)?;
            } else {
                self.pending.extend_from_slice(head);
                let joined = std::mem::take(&mut self.pending);
                self.line(&joined, each)?;
            }
            rest = &tail[1..];
        }
        self.pending.extend_from_slice(rest);
        if self.pending.len() > MAX_ORDER_BYTES {
            return Err(ApiError::PayloadTooLarge(format!(
                "line {} is longer than {MAX_ORDER_BYTES} bytes",
                self.line + 1
            )));
        }
        Ok(())
    }

    /// The last line, when the body does not end with a newline.
    fn finish(
        &mut self,
        each: &mut impl FnMut(usize, &str) -> Result<(), ApiError>,
    ) -> Result<(), ApiError> {
        let last = std::mem::take(&mut self.pending);
        if !last.is_empty() {
            self.line(&last, each)?;
        }
        Ok(())
    }

    fn line(
        &mut self,
        bytes: &[u8],
        each: &mut impl FnMut(usize, &str) -> Result<(), ApiError>,
    ) -> Result<(), ApiError> {
        self.line += 1;
        let line = self.line;
        let text = std::str::from_utf8(bytes)
            .map_err(|_| ApiError::MalformedBody(format!("line {line} is not valid UTF-8")))?;
        let text = text.trim();
        if text.is_empty() {
            return Ok(());
        }
        if let Err(e) = serde_json::from_str::<&RawValue>(text) {
            return Err(ApiError::MalformedBody(format!(
                "line {line} is not valid JSON: {e}"
            )));
        }
        each(line, text)
    }
}

/// Submits a batch streamed as NDJSON (one order per line), reading the body frame by
/// frame: chunks are written while the upload is still arriving, so memory stays at a
/// few chunks whatever the size. A line that is not JSON refuses the whole batch
/// (`malformed_body`, naming the line); an order that is JSON but invalid becomes a
/// `failed` result like in a JSON batch.
pub async fn submit_ndjson<S, E>(
    state: &AppState,
    caller: &Caller,
    mut body: S,
    options: SubmitOptions,
) -> Result<Submitted, ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    caller.require(Scope::BulkOrdersWrite)?;
    let max = state.config().max_ndjson_orders;
    let mut splitter = LineSplitter::new(state.config().max_ndjson_bytes);
    let read_error = |e: E| ApiError::MalformedBody(format!("reading the request body: {e}"));

    if options.validate_only {
        let mut texts: Vec<String> = Vec::new();
        let mut collect = |line: usize, text: &str| {
            check_order_structure(text, || format!("/lines/{line}"))?;
            if texts.len() == max {
                return Err(too_many_orders("/lines", max));
            }
            texts.push(text.to_owned());
            Ok(())
        };
        while let Some(frame) = body.next().await {
            splitter.feed(&frame.map_err(read_error)?, &mut collect)?;
        }
        splitter.finish(&mut collect)?;
        if texts.is_empty() {
            return Err(empty_batch("/lines"));
        }
        return Ok(Submitted::Validated(validation_report(
            texts.iter().map(String::as_str),
        )));
    }

    let key = options.idempotency_key.as_deref();
    check_idempotency_key(key)?;
    let (mut tx, batch_id, existing) = match begin_batch(state, caller, key, None).await? {
        Begun::Fresh { tx, batch_id } => (Some(tx), batch_id, None),
        Begun::Existing(existing) => (None, existing.id, Some(existing)),
    };
    let mut writer = ChunkWriter::new(tx.is_some());
    let inserter = tx.take().map(|tx| ChunkInserter::start(tx, batch_id));
    while let Some(frame) = body.next().await {
        let frame = frame.map_err(read_error)?;
        splitter.feed(&frame, &mut |line, text| {
            push_line(&mut writer, max, line, text)
        })?;
        if let Some(inserter) = &inserter
            && writer.ready_orders.len() >= CHUNKS_PER_INSERT
            && let Some(chunks) = writer.take_ready()
            && !inserter.send(chunks).await
        {
            break;
        }
    }
    splitter.finish(&mut |line, text| push_line(&mut writer, max, line, text))?;
    if writer.total == 0 {
        return Err(empty_batch("/lines"));
    }
    let Some(inserter) = inserter else {
        let existing = existing.ok_or_else(|| ApiError::internal("no batch and no transaction"))?;
        return replay(state, existing, &writer.finish_hash()).await;
    };
    writer.close_chunk();
    if let Some(chunks) = writer.take_ready() {
        inserter.send(chunks).await;
    }
    let tx = inserter.finish().await?;
    let total = writer.total;
    let batch = commit_batch(state, tx, batch_id, total, &writer.finish_hash()).await?;
    Ok(Submitted::Accepted {
        batch,
        replay: false,
    })
}

fn push_line(
    writer: &mut ChunkWriter,
    max: usize,
    line: usize,
    text: &str,
) -> Result<(), ApiError> {
    check_order_structure(text, || format!("/lines/{line}"))?;
    if writer.total == max {
        return Err(too_many_orders("/lines", max));
    }
    writer.push(text);
    Ok(())
}

// ---------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------

async fn get_batch_row(state: &AppState, user_id: &str, id: BatchId) -> Result<BatchRow, ApiError> {
    store::get_for_user(state.pool(), user_id, id)
        .await?
        .ok_or(ApiError::NotFound("batch"))
}

/// One batch of the caller's user, with its progress (also mid-run).
pub async fn get_batch(state: &AppState, caller: &Caller, id: Uuid) -> Result<BatchRow, ApiError> {
    caller.require(Scope::BulkOrdersRead)?;
    get_batch_row(state, caller.user_id(), BatchId(id)).await
}

/// Parses a batch status filter.
pub fn parse_batch_status(text: &str) -> Result<BatchStatus, ApiError> {
    BatchStatus::parse(text).ok_or_else(|| {
        ApiError::field(
            "invalid_status",
            "/status",
            "status must be one of pending, processing, completed, completed_with_errors, failed, cancelled",
        )
    })
}

/// Parses a result status filter.
pub fn parse_result_status(text: &str) -> Result<ResultStatus, ApiError> {
    ResultStatus::parse(text).ok_or_else(|| {
        ApiError::field(
            "invalid_status",
            "/status",
            "status must be one of succeeded, failed, duplicate, unprocessed",
        )
    })
}

/// The caller's batches, newest first, optionally of one status.
pub async fn list_batches(
    state: &AppState,
    caller: &Caller,
    status: Option<BatchStatus>,
    page: PageRequest,
) -> Result<(Vec<BatchRow>, Option<String>), ApiError> {
    caller.require(Scope::BulkOrdersRead)?;
    let rows = store::list_for_user(
        state.pool(),
        caller.user_id(),
        status,
        page.after.map(|c| (c.created_at, BatchId(c.id))),
        page.fetch_limit(),
    )
    .await?;
    Ok(pagination::finish_page(rows, &page, |r| Cursor {
        created_at: r.created_at,
        id: r.id.as_uuid(),
    }))
}

/// A page request over results: limit as for every list, cursor on the order index.
#[derive(Debug, Clone, Copy)]
pub struct ResultsPage {
    /// Results to return.
    pub limit: u32,
    /// Start after this index.
    pub after: Option<IndexCursor>,
}

impl ResultsPage {
    /// Validates raw `limit` and `cursor` parameters.
    pub fn parse(limit: Option<u32>, cursor: Option<&str>) -> Result<Self, ApiError> {
        let limit = pagination::parse_limit(limit)?;
        let after = match cursor {
            None | Some("") => None,
            Some(c) => Some(IndexCursor::decode(c)?),
        };
        Ok(Self { limit, after })
    }
}

fn to_result(row: store::ResultRow) -> OrderResult {
    OrderResult {
        index: i64::from(row.order_index),
        status: row.status(),
        client_order_ref: row.client_order_ref,
        order_id: row.order_id.map(OrderId::as_uuid),
        errors: serde_json::from_value(row.errors).unwrap_or_default(),
    }
}

async fn fetch_results(
    state: &AppState,
    batch_id: BatchId,
    status: Option<ResultStatus>,
    after: Option<i32>,
    limit: i64,
) -> Result<Vec<OrderResult>, ApiError> {
    let rows =
        store::list_results(state.pool(), batch_id, status, after.unwrap_or(-1), limit).await?;
    Ok(rows.into_iter().map(to_result).collect())
}

/// Per-order results of a batch in input order, optionally of one status.
pub async fn list_results(
    state: &AppState,
    caller: &Caller,
    batch_id: Uuid,
    status: Option<ResultStatus>,
    page: ResultsPage,
) -> Result<(Vec<OrderResult>, Option<String>), ApiError> {
    caller.require(Scope::BulkOrdersRead)?;
    let batch_id = BatchId(batch_id);
    get_batch_row(state, caller.user_id(), batch_id).await?;
    let mut rows = fetch_results(
        state,
        batch_id,
        status,
        page.after.map(|c| c.0),
        i64::from(page.limit) + 1,
    )
    .await?;
    let next = if rows.len() > page.limit as usize {
        rows.truncate(page.limit as usize);
        rows.last().map(|r| IndexCursor(r.index as i32).encode())
    } else {
        None
    };
    Ok((rows, next))
}

/// Every result of a batch (optionally of one status), in input order, as a stream of
/// pages read with a keyset cursor: a million results never sit in memory at once.
/// Ownership is checked before the stream is returned.
pub async fn stream_results(
    state: &AppState,
    caller: &Caller,
    batch_id: Uuid,
    status: Option<ResultStatus>,
) -> Result<impl Stream<Item = Result<Vec<OrderResult>, ApiError>> + Send + 'static, ApiError> {
    caller.require(Scope::BulkOrdersRead)?;
    let batch_id = BatchId(batch_id);
    get_batch_row(state, caller.user_id(), batch_id).await?;
    let state = state.clone();
    Ok(futures::stream::unfold(Some(-1), move |after| {
        let state = state.clone();
        async move {
            let after = after?;
            match fetch_results(&state, batch_id, status, Some(after), DOWNLOAD_PAGE).await {
                Ok(page) if page.is_empty() => None,
                Ok(page) => {
                    let next = (page.len() as i64 == DOWNLOAD_PAGE)
                        .then(|| page.last().map(|r| r.index as i32))
                        .flatten();
                    Some((Ok(page), next))
                }
                Err(err) => Some((Err(err), None)),
            }
        }
    }))
}

// ---------------------------------------------------------------------------
// Cancel and retry
// ---------------------------------------------------------------------------

/// Asks a pending or processing batch to stop: the processor finishes the chunks in
/// flight and reports the rest `unprocessed`. A finished batch cannot be cancelled.
pub async fn cancel(state: &AppState, caller: &Caller, id: Uuid) -> Result<BatchRow, ApiError> {
    caller.require(Scope::BulkOrdersWrite)?;
    let id = BatchId(id);
    match store::request_cancel(state.pool(), caller.user_id(), id).await? {
        Some(row) => Ok(row),
        None => {
            let existing = get_batch_row(state, caller.user_id(), id).await?;
            Err(ApiError::FailedPrecondition(format!(
                "the batch is {} and can no longer be cancelled",
                existing.status
            )))
        }
    }
}

/// Creates a child batch (parent = `id`) of the orders of a finished batch whose result
/// is `failed` or `unprocessed`, copied from the stored chunks in one statement.
pub async fn retry_failed(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    idempotency_key: Option<String>,
) -> Result<(BatchRow, bool), ApiError> {
    caller.require(Scope::BulkOrdersWrite)?;
    let id = BatchId(id);
    let parent = get_batch_row(state, caller.user_id(), id).await?;
    if !parent.status().is_final() {
        return Err(ApiError::FailedPrecondition(format!(
            "the batch is {}; retry-failed needs a finished batch",
            parent.status
        )));
    }
    let key = idempotency_key.as_deref();
    check_idempotency_key(key)?;
    let hash = ring::digest::digest(
        &ring::digest::SHA256,
        format!("retry-failed:{id}").as_bytes(),
    );
    let (mut tx, child_id) = match begin_batch(state, caller, key, Some(id)).await? {
        Begun::Existing(existing) => {
            return match replay(state, existing, hash.as_ref()).await? {
                Submitted::Accepted { batch, .. } => Ok((batch, true)),
                Submitted::Validated(_) => Err(ApiError::internal("unexpected report")),
            };
        }
        Begun::Fresh { tx, batch_id } => (tx, batch_id),
    };
    let total = store::copy_retried_orders(&mut *tx, child_id, id).await?;
    if total == 0 {
        tx.rollback().await?;
        return Err(ApiError::FailedPrecondition(
            "the batch has no failed or unprocessed orders to retry".into(),
        ));
    }
    let batch = commit_batch(state, tx, child_id, total as usize, hash.as_ref()).await?;
    Ok((batch, false))
}

// ---------------------------------------------------------------------------
// Orders
// ---------------------------------------------------------------------------

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

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[&[u8]]) -> Result<Vec<(usize, String)>, ApiError> {
        let mut splitter = LineSplitter::new(1 << 20);
        let mut out = Vec::new();
        let mut each = |line: usize, text: &str| {
            out.push((line, text.to_owned()));
            Ok(())
        };
        for frame in input {
            splitter.feed(frame, &mut each)?;
        }
        splitter.finish(&mut each)?;
        Ok(out)
    }

    /// Lines split across frames are joined; blank lines and CRLF are tolerated; the
    /// last line needs no newline; line numbers count every physical line.
    #[test]
    fn ndjson_lines_are_split_across_frames() {
        let got = lines(&[b"{\"a\":1}\r\n\n{\"b\"", b":2}\n  \n{\"c\":3}"]).unwrap();
        assert_eq!(
            got,
            vec![
                (1, "{\"a\":1}".to_owned()),
                (3, "{\"b\":2}".to_owned()),
                (5, "{\"c\":3}".to_owned())
            ]
        );
    }

    /// A line that is not JSON refuses the batch and names the line.
    #[test]
    fn a_malformed_line_is_named() {
        let err = lines(&[b"{\"a\":1}\n{nope\n"]).unwrap_err();
        assert_eq!(err.code(), "malformed_body");
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    /// The body limit and the per-line limit are enforced while streaming.
    #[test]
    fn limits_are_enforced_while_streaming() {
        let mut splitter = LineSplitter::new(10);
        let mut each = |_: usize, _: &str| Ok(());
        assert_eq!(
            splitter
                .feed(b"{\"a\":12345678}\n", &mut each)
                .unwrap_err()
                .code(),
            "payload_too_large"
        );
        let mut splitter = LineSplitter::new(u64::MAX);
        let long = vec![b'x'; MAX_ORDER_BYTES + 1];
        assert_eq!(
            splitter.feed(&long, &mut each).unwrap_err().code(),
            "payload_too_large"
        );
    }

    /// Chunks hold 1,000 orders each, numbered from 0, and the hash covers every order
    /// whether or not it is stored.
    #[test]
    fn chunks_are_built_from_raw_orders() {
        let mut stored = ChunkWriter::new(true);
        let mut hashed = ChunkWriter::new(false);
        for i in 0..2_500 {
            let raw = format!("{{\"i\":{i}}}");
            stored.push(&raw);
            hashed.push(&raw);
        }
        stored.close_chunk();
        assert_eq!(stored.ready_indexes, vec![0, 1, 2]);
        assert_eq!(stored.ready_firsts, vec![0, 1000, 2000]);
        let last: Vec<serde_json::Value> = serde_json::from_str(&stored.ready_orders[2]).unwrap();
        assert_eq!(last.len(), 500);
        assert_eq!(last[0]["i"], 2000);
        assert!(hashed.ready_orders.is_empty());
        assert_eq!(stored.finish_hash(), hashed.finish_hash());
    }

    /// Structure checks: objects only, no NUL; idempotency keys are visible ASCII.
    #[test]
    fn structural_checks() {
        assert!(check_order_structure("{}", || "/orders/0".into()).is_ok());
        assert!(check_order_structure("[1]", || "/orders/0".into()).is_err());
        assert!(check_order_structure(r#"{"a":"\u0000"}"#, || "/orders/0".into()).is_err());
        assert!(check_idempotency_key(Some("key-1")).is_ok());
        assert!(check_idempotency_key(None).is_ok());
        assert!(check_idempotency_key(Some("")).is_err());
        assert!(check_idempotency_key(Some("has space")).is_err());
    }

    /// Property tests of NDJSON line splitting, the parser every streamed upload
    /// goes through.
    mod properties {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, RngSeed};

        use super::*;

        /// Fixed seed unless `PROPTEST_RNG_SEED` is set; no regression files.
        fn config(cases: u32) -> Config {
            let default = Config::default();
            Config {
                cases: std::env::var_os("PROPTEST_CASES").map_or(cases, |_| default.cases),
                rng_seed: match default.rng_seed {
                    RngSeed::Random => RngSeed::Fixed(0x4E44_4A53),
                    fixed => fixed,
                },
                failure_persistence: None,
                ..default
            }
        }

        /// `body` cut into frames at `cuts` (positions taken modulo its length).
        fn frames(body: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
            let mut at: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
            at.sort_unstable();
            let mut out = Vec::new();
            let mut start = 0;
            for cut in at.into_iter().chain([body.len()]) {
                out.push(body[start..cut].to_vec());
                start = cut;
            }
            out
        }

        /// The lines, or the error code, of a body fed in `frames`.
        fn split(frames: &[Vec<u8>]) -> Result<Vec<(usize, String)>, &'static str> {
            let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
            lines(&refs).map_err(|e| e.code())
        }

        proptest! {
            #![proptest_config(config(256))]

            /// Any bytes, in any framing, are split or refused without panicking,
            /// and the outcome does not depend on where the frames end.
            #[test]
            fn any_body_in_any_framing_gives_the_same_outcome(
                body in prop_oneof![
                    prop::collection::vec(any::<u8>(), 0..300),
                    "([{}\\[\\]\":,0-9a-z \\r\\t]{0,20}\n){0,8}".prop_map(String::into_bytes),
                ],
                cuts in prop::collection::vec(any::<usize>(), 0..8),
            ) {
                let whole = split(std::slice::from_ref(&body));
                if let Err(code) = whole {
                    prop_assert!(matches!(code, "malformed_body" | "payload_too_large"), "{}", code);
                }
                prop_assert_eq!(split(&frames(&body, &cuts)), whole);
            }

            /// JSON objects written one per line, with CRLF endings, blank lines and
            /// no final newline mixed in, come back in order, each numbered by its
            /// physical line.
            #[test]
            fn objects_come_back_line_by_line(
                objects in prop::collection::vec(
                    prop::collection::btree_map("[a-z]{1,6}", ".{0,12}", 0..4),
                    1..12,
                ),
                endings in prop::collection::vec(0usize..4, 12),
                cuts in prop::collection::vec(any::<usize>(), 0..8),
            ) {
                let mut body = String::new();
                let mut expected = Vec::new();
                let mut line = 0;
                for (object, ending) in objects.iter().zip(&endings) {
                    let text = serde_json::to_string(object).expect("a JSON object");
                    line += 1;
                    expected.push((line, text.clone()));
                    body.push_str(&text);
                    body.push_str(match ending {
                        0 => "\n",
                        1 => "\r\n",
                        2 => "\n\n",
                        _ => "\n  \t\n",
                    });
                    line += usize::from(*ending >= 2);
                }
                if endings[objects.len() - 1] == 0 {
                    body.pop();
                }
                prop_assert_eq!(split(&frames(body.as_bytes(), &cuts)), Ok(expected));
            }
        }
    }
}
