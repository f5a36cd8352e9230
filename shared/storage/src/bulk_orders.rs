//! Bulk-order batches, their stored chunks of raw orders and their per-order results
//! (`bulk_order_batches`, `bulk_order_batch_chunks`, `bulk_order_results`): every
//! statement the gateway (submission, reads, cancel, retry-failed) and the
//! batch-processor (claim, chunks, finish, retention) run on them.
//!
//! The batch row is read by both services (the gateway renders it, the processor builds
//! the `bulk_order.completed` event from it), so there is one row type, [`BatchRow`],
//! and every statement that returns a batch selects the same columns into it.
//!
//! Statements stay set-based: chunks and results are written with one `unnest`
//! statement per set, retry-failed copies orders between chunks in one statement, and
//! functions that belong to a caller's transaction take a connection, so the caller
//! decides what commits together (a batch with its job; a chunk with its results and
//! counts). Orders and their items are in [`crate::orders`].

use chrono::{DateTime, Utc};
use portico_domain::bulk_orders::{BatchCounts, BatchStatus, ORDERS_PER_CHUNK, ResultStatus};
use portico_domain::ids::{BatchId, IntegrationId, OrderId};
use sqlx::PgExecutor;
use uuid::Uuid;

/// One `bulk_order_batches` row.
#[derive(Debug, Clone)]
pub struct BatchRow {
    /// The batch id.
    pub id: BatchId,
    /// The owner.
    pub user_id: String,
    /// The integration whose credentials submitted it.
    pub integration_id: Option<IntegrationId>,
    /// The batch this one retries (retry-failed).
    pub parent_batch_id: Option<BatchId>,
    /// One of [`BatchStatus`]'s names.
    pub status: String,
    /// Orders in the batch.
    pub total: i32,
    /// Orders with a final result.
    pub processed: i32,
    /// Orders created.
    pub succeeded: i32,
    /// Orders refused.
    pub failed: i32,
    /// Orders that already existed.
    pub duplicate: i32,
    /// Orders a cancel or a failure left unprocessed.
    pub unprocessed: i32,
    /// Failed orders per error code.
    pub error_summary: serde_json::Value,
    /// The owner asked to stop it.
    pub cancel_requested: bool,
    /// Submission time.
    pub created_at: DateTime<Utc>,
    /// When processing began.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a final status.
    pub completed_at: Option<DateTime<Utc>>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When the retention job deletes it with its results.
    pub expires_at: DateTime<Utc>,
}

impl BatchRow {
    /// The status as a type (an unknown name, impossible under the CHECK constraint,
    /// reads as failed rather than panicking).
    pub fn status(&self) -> BatchStatus {
        BatchStatus::parse(&self.status).unwrap_or(BatchStatus::Failed)
    }

    /// The progress counters.
    pub fn counts(&self) -> BatchCounts {
        BatchCounts {
            total: i64::from(self.total),
            processed: i64::from(self.processed),
            succeeded: i64::from(self.succeeded),
            failed: i64::from(self.failed),
            duplicate: i64::from(self.duplicate),
            unprocessed: i64::from(self.unprocessed),
        }
    }

    /// The error summary as (code, count) pairs, sorted by code.
    pub fn error_summary(&self) -> Vec<(String, i64)> {
        let mut pairs: Vec<(String, i64)> = match &self.error_summary {
            serde_json::Value::Object(map) => map
                .iter()
                .map(|(k, v)| (k.clone(), v.as_i64().unwrap_or(0)))
                .collect(),
            _ => Vec::new(),
        };
        pairs.sort();
        pairs
    }
}

/// The batch row as the query macros read it (plain UUIDs); every statement that
/// returns a batch selects exactly these columns, and the macros check that they match.
struct BatchRecord {
    id: Uuid,
    user_id: String,
    integration_id: Option<Uuid>,
    parent_batch_id: Option<Uuid>,
    status: String,
    total: i32,
    processed: i32,
    succeeded: i32,
    failed: i32,
    duplicate: i32,
    unprocessed: i32,
    error_summary: serde_json::Value,
    cancel_requested: bool,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

impl From<BatchRecord> for BatchRow {
    fn from(r: BatchRecord) -> Self {
        Self {
            id: BatchId(r.id),
            user_id: r.user_id,
            integration_id: r.integration_id.map(IntegrationId),
            parent_batch_id: r.parent_batch_id.map(BatchId),
            status: r.status,
            total: r.total,
            processed: r.processed,
            succeeded: r.succeeded,
            failed: r.failed,
            duplicate: r.duplicate,
            unprocessed: r.unprocessed,
            error_summary: r.error_summary,
            cancel_requested: r.cancel_requested,
            created_at: r.created_at,
            started_at: r.started_at,
            completed_at: r.completed_at,
            updated_at: r.updated_at,
            expires_at: r.expires_at,
        }
    }
}

// ---------------------------------------------------------------------------
// Submission (gateway)
// ---------------------------------------------------------------------------

/// A batch as the gateway opens it: its chunks and total follow in the same
/// transaction ([`insert_chunks`], [`seal`]).
#[derive(Debug, Clone, Copy)]
pub struct NewBatch<'a> {
    /// The new batch's id.
    pub id: BatchId,
    /// The owner.
    pub user_id: &'a str,
    /// The integration whose credentials submitted it.
    pub integration_id: Option<IntegrationId>,
    /// The batch it retries (retry-failed), if any.
    pub parent_batch_id: Option<BatchId>,
    /// Unique per owner; a second submission with it finds this batch.
    pub idempotency_key: Option<&'a str>,
    /// Days until retention deletes the batch and its results.
    pub retention_days: i32,
}

/// Inserts a `pending` batch with no orders yet; returns false (and inserts nothing)
/// when the owner's idempotency key is already taken, so a concurrent submission with
/// the same key is found instead of failing on the unique constraint.
pub async fn insert_pending(
    executor: impl PgExecutor<'_>,
    batch: &NewBatch<'_>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query_scalar!(
        "INSERT INTO bulk_order_batches
             (id, user_id, integration_id, parent_batch_id, status, idempotency_key, total, expires_at)
         VALUES ($1, $2, $3, $4, 'pending', $5, 0, now() + make_interval(days => $6))
         ON CONFLICT (user_id, idempotency_key) DO NOTHING
         RETURNING id",
        batch.id.as_uuid(),
        batch.user_id,
        batch.integration_id.map(IntegrationId::as_uuid),
        batch.parent_batch_id.map(BatchId::as_uuid),
        batch.idempotency_key,
        batch.retention_days
    )
    .fetch_optional(executor)
    .await?;
    Ok(inserted.is_some())
}

/// The owner's batch submitted with `key`: an idempotent replay returns it.
pub async fn find_by_idempotency_key(
    executor: impl PgExecutor<'_>,
    user_id: &str,
    key: &str,
) -> Result<Option<BatchRow>, sqlx::Error> {
    let row = sqlx::query_as!(
        BatchRecord,
        "SELECT id, user_id, integration_id, parent_batch_id, status, total, processed,
                succeeded, failed, duplicate, unprocessed, error_summary, cancel_requested,
                created_at, started_at, completed_at, updated_at, expires_at
         FROM bulk_order_batches WHERE user_id = $1 AND idempotency_key = $2",
        user_id,
        key
    )
    .fetch_optional(executor)
    .await?;
    Ok(row.map(BatchRow::from))
}

/// The SHA-256 of the orders a batch was submitted with (none while it is being
/// written), which a replay compares with its own to tell a retry from a conflict.
pub async fn request_hash(
    executor: impl PgExecutor<'_>,
    id: BatchId,
) -> Result<Option<Vec<u8>>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT request_hash FROM bulk_order_batches WHERE id = $1",
        id.as_uuid()
    )
    .fetch_one(executor)
    .await
}

/// Chunk rows of one batch, as the gateway cuts them: raw JSON arrays of orders, each
/// numbered from 0 with the index of its first order. Written with one statement.
#[derive(Debug, Default)]
pub struct NewChunks {
    chunk_indexes: Vec<i32>,
    first_indexes: Vec<i32>,
    orders: Vec<String>,
}

impl NewChunks {
    /// Adds chunk `chunk_index`, whose first order has index `first_index`; `orders`
    /// is the text of a JSON array.
    pub fn push(&mut self, chunk_index: i32, first_index: i32, orders: String) {
        self.chunk_indexes.push(chunk_index);
        self.first_indexes.push(first_index);
        self.orders.push(orders);
    }

    /// Chunks added so far.
    pub fn len(&self) -> usize {
        self.orders.len()
    }

    /// True when no chunk was added.
    pub fn is_empty(&self) -> bool {
        self.orders.is_empty()
    }
}

/// Writes chunks of a batch with one `unnest` statement, in the submission's
/// transaction.
pub async fn insert_chunks(
    executor: impl PgExecutor<'_>,
    batch_id: BatchId,
    chunks: &NewChunks,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO bulk_order_batch_chunks (batch_id, chunk_index, first_index, orders)
         SELECT $1, t.chunk_index, t.first_index, t.orders::jsonb
         FROM unnest($2::int4[], $3::int4[], $4::text[]) AS t(chunk_index, first_index, orders)",
        batch_id.as_uuid(),
        &chunks.chunk_indexes,
        &chunks.first_indexes,
        &chunks.orders
    )
    .execute(executor)
    .await?;
    Ok(())
}

/// Sets a new batch's total and request hash once every chunk is written; returns the
/// row to answer with. The caller enqueues the batch's job in the same transaction.
pub async fn seal(
    executor: impl PgExecutor<'_>,
    id: BatchId,
    total: i32,
    request_hash: &[u8],
) -> Result<BatchRow, sqlx::Error> {
    let row = sqlx::query_as!(
        BatchRecord,
        "UPDATE bulk_order_batches SET total = $2, request_hash = $3 WHERE id = $1
         RETURNING id, user_id, integration_id, parent_batch_id, status, total, processed,
                   succeeded, failed, duplicate, unprocessed, error_summary, cancel_requested,
                   created_at, started_at, completed_at, updated_at, expires_at",
        id.as_uuid(),
        total,
        request_hash
    )
    .fetch_one(executor)
    .await?;
    Ok(row.into())
}

/// Writes a retry-failed child batch's chunks: the orders of `parent` whose result is
/// `failed` or `unprocessed`, copied from the parent's stored chunks in input order and
/// cut into chunks again, in one statement. Returns how many orders were copied.
pub async fn copy_retried_orders(
    executor: impl PgExecutor<'_>,
    child: BatchId,
    parent: BatchId,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"WITH retried AS (
             SELECT row_number() OVER (ORDER BY r.order_index) - 1 AS position,
                    c.orders -> (r.order_index - c.first_index) AS order_json
             FROM bulk_order_results r
             JOIN bulk_order_batch_chunks c
               ON c.batch_id = r.batch_id AND c.chunk_index = r.order_index / $3
             WHERE r.batch_id = $2 AND r.status IN ('failed', 'unprocessed')
         ), written AS (
             INSERT INTO bulk_order_batch_chunks (batch_id, chunk_index, first_index, orders)
             SELECT $1, (position / $3)::int, ((position / $3) * $3)::int,
                    jsonb_agg(order_json ORDER BY position)
             FROM retried GROUP BY position / $3
             RETURNING jsonb_array_length(orders) AS n
         )
         SELECT COALESCE(sum(n), 0)::int8 AS "total!" FROM written"#,
        child.as_uuid(),
        parent.as_uuid(),
        ORDERS_PER_CHUNK as i64
    )
    .fetch_one(executor)
    .await
}

// ---------------------------------------------------------------------------
// Reading and lifecycle (gateway)
// ---------------------------------------------------------------------------

/// One batch of `user_id` (another user's batch reads as none).
pub async fn get_for_user(
    executor: impl PgExecutor<'_>,
    user_id: &str,
    id: BatchId,
) -> Result<Option<BatchRow>, sqlx::Error> {
    let row = sqlx::query_as!(
        BatchRecord,
        "SELECT id, user_id, integration_id, parent_batch_id, status, total, processed,
                succeeded, failed, duplicate, unprocessed, error_summary, cancel_requested,
                created_at, started_at, completed_at, updated_at, expires_at
         FROM bulk_order_batches WHERE id = $1 AND user_id = $2",
        id.as_uuid(),
        user_id
    )
    .fetch_optional(executor)
    .await?;
    Ok(row.map(BatchRow::from))
}

/// A page of `user_id`'s batches, newest first, optionally of one status, starting
/// after the `(created_at, id)` keyset cursor `after`; at most `limit` rows.
pub async fn list_for_user(
    executor: impl PgExecutor<'_>,
    user_id: &str,
    status: Option<BatchStatus>,
    after: Option<(DateTime<Utc>, BatchId)>,
    limit: i64,
) -> Result<Vec<BatchRow>, sqlx::Error> {
    let rows = sqlx::query_as!(
        BatchRecord,
        "SELECT id, user_id, integration_id, parent_batch_id, status, total, processed,
                succeeded, failed, duplicate, unprocessed, error_summary, cancel_requested,
                created_at, started_at, completed_at, updated_at, expires_at
         FROM bulk_order_batches
         WHERE user_id = $1 AND ($2::text IS NULL OR status = $2)
           AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
         ORDER BY created_at DESC, id DESC LIMIT $5",
        user_id,
        status.map(BatchStatus::as_str),
        after.map(|(created_at, _)| created_at),
        after.map(|(_, id)| id.as_uuid()),
        limit
    )
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().map(BatchRow::from).collect())
}

/// Flags `user_id`'s batch for cancellation while it is still pending or processing;
/// the processor honours the flag between chunks. None when the batch is not the
/// user's, or already finished.
pub async fn request_cancel(
    executor: impl PgExecutor<'_>,
    user_id: &str,
    id: BatchId,
) -> Result<Option<BatchRow>, sqlx::Error> {
    let row = sqlx::query_as!(
        BatchRecord,
        "UPDATE bulk_order_batches SET cancel_requested = true, updated_at = now()
         WHERE id = $1 AND user_id = $2 AND status IN ('pending', 'processing')
         RETURNING id, user_id, integration_id, parent_batch_id, status, total, processed,
                   succeeded, failed, duplicate, unprocessed, error_summary, cancel_requested,
                   created_at, started_at, completed_at, updated_at, expires_at",
        id.as_uuid(),
        user_id
    )
    .fetch_optional(executor)
    .await?;
    Ok(row.map(BatchRow::from))
}

/// One `bulk_order_results` row: what happened to one order of a batch.
#[derive(Debug, Clone)]
pub struct ResultRow {
    /// 0-based position of the order in its batch.
    pub order_index: i32,
    /// The order's reference, when it had one.
    pub client_order_ref: Option<String>,
    /// One of [`ResultStatus`]'s names.
    pub status: String,
    /// The created order (succeeded) or the existing one (duplicate).
    pub order_id: Option<OrderId>,
    /// The order's field errors (a JSON array; empty unless failed).
    pub errors: serde_json::Value,
}

impl ResultRow {
    /// The status as a type (an unknown name, impossible under the CHECK constraint,
    /// reads as failed rather than panicking).
    pub fn status(&self) -> ResultStatus {
        ResultStatus::parse(&self.status).unwrap_or(ResultStatus::Failed)
    }
}

/// Up to `limit` results of a batch in input order, after order index `after` (-1 for
/// the first page), optionally of one status. The caller checks the batch's owner.
pub async fn list_results(
    executor: impl PgExecutor<'_>,
    batch_id: BatchId,
    status: Option<ResultStatus>,
    after: i32,
    limit: i64,
) -> Result<Vec<ResultRow>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT order_index, client_order_ref, status, order_id, errors
         FROM bulk_order_results
         WHERE batch_id = $1 AND ($2::text IS NULL OR status = $2) AND order_index > $3
         ORDER BY order_index LIMIT $4",
        batch_id.as_uuid(),
        status.map(ResultStatus::as_str),
        after,
        limit
    )
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| ResultRow {
            order_index: r.order_index,
            client_order_ref: r.client_order_ref,
            status: r.status,
            order_id: r.order_id.map(OrderId),
            errors: r.errors,
        })
        .collect())
}

// ---------------------------------------------------------------------------
// Processing (batch-processor)
// ---------------------------------------------------------------------------

/// What the processor needs of a batch it claimed.
#[derive(Debug, Clone)]
pub struct ClaimedBatch {
    /// The owner; every order is created for this user.
    pub user_id: String,
    /// The integration that submitted it, recorded on every order.
    pub integration_id: Option<IntegrationId>,
    /// The owner asked to cancel it before or while it ran.
    pub cancel_requested: bool,
}

/// Moves a batch `pending → processing` (a batch already `processing` is resumed);
/// none when it is finished or gone, which means its job is a redelivery.
pub async fn claim(
    executor: impl PgExecutor<'_>,
    id: BatchId,
) -> Result<Option<ClaimedBatch>, sqlx::Error> {
    let row = sqlx::query!(
        "UPDATE bulk_order_batches
         SET status = 'processing', started_at = COALESCE(started_at, now()), updated_at = now()
         WHERE id = $1 AND status IN ('pending', 'processing')
         RETURNING user_id, integration_id, cancel_requested",
        id.as_uuid()
    )
    .fetch_optional(executor)
    .await?;
    Ok(row.map(|r| ClaimedBatch {
        user_id: r.user_id,
        integration_id: r.integration_id.map(IntegrationId),
        cancel_requested: r.cancel_requested,
    }))
}

/// The indexes of a batch's chunks not processed yet, in order: what a (resumed) run
/// still has to do.
pub async fn unprocessed_chunks(
    executor: impl PgExecutor<'_>,
    batch_id: BatchId,
) -> Result<Vec<i32>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT chunk_index FROM bulk_order_batch_chunks
         WHERE batch_id = $1 AND NOT processed ORDER BY chunk_index",
        batch_id.as_uuid()
    )
    .fetch_all(executor)
    .await
}

/// How many chunks of a batch are not processed yet; finishing requires none.
pub async fn count_unprocessed_chunks(
    executor: impl PgExecutor<'_>,
    batch_id: BatchId,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM bulk_order_batch_chunks
           WHERE batch_id = $1 AND NOT processed"#,
        batch_id.as_uuid()
    )
    .fetch_one(executor)
    .await
}

/// Locks the batch while it is `processing` (none otherwise: someone else finished
/// it), so only the first finisher writes the final status and the event.
pub async fn lock_processing(
    executor: impl PgExecutor<'_>,
    id: BatchId,
) -> Result<Option<BatchRow>, sqlx::Error> {
    let row = sqlx::query_as!(
        BatchRecord,
        "SELECT id, user_id, integration_id, parent_batch_id, status, total, processed,
                succeeded, failed, duplicate, unprocessed, error_summary, cancel_requested,
                created_at, started_at, completed_at, updated_at, expires_at
         FROM bulk_order_batches WHERE id = $1 AND status = 'processing' FOR UPDATE",
        id.as_uuid()
    )
    .fetch_optional(executor)
    .await?;
    Ok(row.map(BatchRow::from))
}

/// Locks the batch while it is not finished (`pending` or `processing`), for cancel
/// and give-up; none when it already finished.
pub async fn lock_unfinished(
    executor: impl PgExecutor<'_>,
    id: BatchId,
) -> Result<Option<BatchRow>, sqlx::Error> {
    let row = sqlx::query_as!(
        BatchRecord,
        "SELECT id, user_id, integration_id, parent_batch_id, status, total, processed,
                succeeded, failed, duplicate, unprocessed, error_summary, cancel_requested,
                created_at, started_at, completed_at, updated_at, expires_at
         FROM bulk_order_batches
         WHERE id = $1 AND status IN ('pending', 'processing') FOR UPDATE",
        id.as_uuid()
    )
    .fetch_optional(executor)
    .await?;
    Ok(row.map(BatchRow::from))
}

/// Locks a batch's chunks not processed yet and returns their indexes. Chunks are
/// locked before the batch row (the order chunk transactions lock in), so a chunk in
/// flight elsewhere finishes before a cancel looks at it.
pub async fn lock_unprocessed_chunks(
    executor: impl PgExecutor<'_>,
    batch_id: BatchId,
) -> Result<Vec<i32>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT chunk_index FROM bulk_order_batch_chunks
         WHERE batch_id = $1 AND NOT processed ORDER BY chunk_index FOR UPDATE",
        batch_id.as_uuid()
    )
    .fetch_all(executor)
    .await
}

/// Reports every order of `chunks` `unprocessed` (keeping a result already written),
/// with the reference read from the stored order when it has one, in one statement;
/// returns how many results were written.
pub async fn write_unprocessed_results(
    executor: impl PgExecutor<'_>,
    batch_id: BatchId,
    chunks: &[i32],
) -> Result<u64, sqlx::Error> {
    let written = sqlx::query!(
        "INSERT INTO bulk_order_results (batch_id, order_index, client_order_ref, status)
         SELECT c.batch_id, c.first_index + (e.ord::int - 1),
                CASE WHEN jsonb_typeof(e.value -> 'clientOrderRef') = 'string'
                     THEN left(e.value ->> 'clientOrderRef', 100) END,
                'unprocessed'
         FROM bulk_order_batch_chunks c
         CROSS JOIN LATERAL jsonb_array_elements(c.orders) WITH ORDINALITY AS e(value, ord)
         WHERE c.batch_id = $1 AND c.chunk_index = ANY($2)
         ON CONFLICT (batch_id, order_index) DO NOTHING",
        batch_id.as_uuid(),
        chunks
    )
    .execute(executor)
    .await?;
    Ok(written.rows_affected())
}

/// Marks `chunks` of a batch processed, so no run does them again.
pub async fn mark_chunks_processed(
    executor: impl PgExecutor<'_>,
    batch_id: BatchId,
    chunks: &[i32],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE bulk_order_batch_chunks SET processed = true
         WHERE batch_id = $1 AND chunk_index = ANY($2)",
        batch_id.as_uuid(),
        chunks
    )
    .execute(executor)
    .await?;
    Ok(())
}

/// Adds `n` to the batch's `unprocessed` count.
pub async fn add_unprocessed(
    executor: impl PgExecutor<'_>,
    id: BatchId,
    n: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE bulk_order_batches SET unprocessed = unprocessed + $2, updated_at = now() WHERE id = $1",
        id.as_uuid(),
        n
    )
    .execute(executor)
    .await?;
    Ok(())
}

/// Sets the batch's final status; returns the row the completion event is built from.
pub async fn complete(
    executor: impl PgExecutor<'_>,
    id: BatchId,
    status: BatchStatus,
) -> Result<BatchRow, sqlx::Error> {
    let row = sqlx::query_as!(
        BatchRecord,
        "UPDATE bulk_order_batches SET status = $2, completed_at = now(), updated_at = now()
         WHERE id = $1
         RETURNING id, user_id, integration_id, parent_batch_id, status, total, processed,
                   succeeded, failed, duplicate, unprocessed, error_summary, cancel_requested,
                   created_at, started_at, completed_at, updated_at, expires_at",
        id.as_uuid(),
        status.as_str()
    )
    .fetch_one(executor)
    .await?;
    Ok(row.into())
}

/// A chunk locked for processing.
#[derive(Debug, Clone)]
pub struct LockedChunk {
    /// The batch index of its first order.
    pub first_index: i32,
    /// Its orders, as the text of a JSON array (parsed without copying each order).
    pub orders: String,
}

/// Locks chunk `chunk_index` of a batch unless it is already processed (none then: an
/// earlier delivery or another replica did it). The lock is held to the chunk's commit.
pub async fn lock_chunk(
    executor: impl PgExecutor<'_>,
    batch_id: BatchId,
    chunk_index: i32,
) -> Result<Option<LockedChunk>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT first_index, orders::text AS "orders!" FROM bulk_order_batch_chunks
           WHERE batch_id = $1 AND chunk_index = $2 AND NOT processed
           FOR UPDATE"#,
        batch_id.as_uuid(),
        chunk_index
    )
    .fetch_optional(executor)
    .await?;
    Ok(row.map(|r| LockedChunk {
        first_index: r.first_index,
        orders: r.orders,
    }))
}

/// The results of one chunk, one per order, written with one statement.
#[derive(Debug, Default)]
pub struct NewResults<'a> {
    order_indexes: Vec<i32>,
    client_order_refs: Vec<Option<&'a str>>,
    statuses: Vec<&'static str>,
    order_ids: Vec<Option<Uuid>>,
    errors: Vec<Option<String>>,
}

impl<'a> NewResults<'a> {
    /// Room for `n` results.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            order_indexes: Vec::with_capacity(n),
            client_order_refs: Vec::with_capacity(n),
            statuses: Vec::with_capacity(n),
            order_ids: Vec::with_capacity(n),
            errors: Vec::with_capacity(n),
        }
    }

    /// Adds the result of order `order_index`; `errors` is the text of a JSON array
    /// of field errors (none reads as `[]`).
    pub fn push(
        &mut self,
        order_index: i32,
        client_order_ref: Option<&'a str>,
        status: ResultStatus,
        order_id: Option<OrderId>,
        errors: Option<String>,
    ) {
        self.order_indexes.push(order_index);
        self.client_order_refs.push(client_order_ref);
        self.statuses.push(status.as_str());
        self.order_ids.push(order_id.map(OrderId::as_uuid));
        self.errors.push(errors);
    }
}

/// Writes a chunk's results with one statement; an order that already has a result
/// keeps it (`ON CONFLICT DO NOTHING`), so every order ends with exactly one.
pub async fn insert_results(
    executor: impl PgExecutor<'_>,
    batch_id: BatchId,
    results: &NewResults<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO bulk_order_results (batch_id, order_index, client_order_ref, status, order_id, errors)
         SELECT $1, t.idx, t.ref, t.status, t.order_id, COALESCE(t.errors::jsonb, '[]'::jsonb)
         FROM unnest($2::int4[], $3::text[], $4::text[], $5::uuid[], $6::text[])
             AS t(idx, ref, status, order_id, errors)
         ON CONFLICT (batch_id, order_index) DO NOTHING",
        batch_id.as_uuid(),
        &results.order_indexes,
        &results.client_order_refs as &[Option<&str>],
        &results.statuses as &[&str],
        &results.order_ids as &[Option<Uuid>],
        &results.errors as &[Option<String>]
    )
    .execute(executor)
    .await?;
    Ok(())
}

/// Marks one chunk processed, in the chunk's transaction: committed with its results,
/// so a redelivered job skips it.
pub async fn mark_chunk_processed(
    executor: impl PgExecutor<'_>,
    batch_id: BatchId,
    chunk_index: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE bulk_order_batch_chunks SET processed = true WHERE batch_id = $1 AND chunk_index = $2",
        batch_id.as_uuid(),
        chunk_index
    )
    .execute(executor)
    .await?;
    Ok(())
}

/// What one chunk adds to its batch's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkCounts {
    /// Orders given a result.
    pub processed: i32,
    /// Orders created.
    pub succeeded: i32,
    /// Orders refused.
    pub failed: i32,
    /// Orders that already existed.
    pub duplicate: i32,
}

/// A batch's counters right after a chunk's counts were added (read in the same
/// statement, so the batch-processor can announce progress without another query).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountsAfterChunk {
    /// The owner asked to cancel the batch.
    pub cancel_requested: bool,
    /// Orders in the batch.
    pub total: i32,
    /// Orders given a result so far.
    pub processed: i32,
    /// Orders created so far.
    pub succeeded: i32,
    /// Orders refused so far.
    pub failed: i32,
    /// Orders that already existed so far.
    pub duplicate: i32,
}

/// Adds a chunk's counts and error summary (`{"code": n}` as JSON text) to its batch
/// and returns the counters after it, with whether the owner asked to cancel. Run last
/// in the chunk's transaction: the batch row stays locked (concurrent chunks of the
/// batch wait on it) only from here to the commit.
pub async fn add_chunk_counts(
    executor: impl PgExecutor<'_>,
    id: BatchId,
    counts: ChunkCounts,
    error_summary: &str,
) -> Result<CountsAfterChunk, sqlx::Error> {
    sqlx::query_as!(
        CountsAfterChunk,
        "UPDATE bulk_order_batches SET
             processed = processed + $2,
             succeeded = succeeded + $3,
             failed = failed + $4,
             duplicate = duplicate + $5,
             error_summary = CASE WHEN $6::jsonb = '{}'::jsonb THEN error_summary ELSE (
                 SELECT COALESCE(jsonb_object_agg(code, n), '{}'::jsonb) FROM (
                     SELECT code, sum(n::bigint) AS n FROM (
                         SELECT key AS code, value AS n FROM jsonb_each_text(error_summary)
                         UNION ALL
                         SELECT key, value FROM jsonb_each_text($6::jsonb)
                     ) AS both_summaries GROUP BY code
                 ) AS merged) END,
             updated_at = now()
         WHERE id = $1
         RETURNING cancel_requested, total, processed, succeeded, failed, duplicate",
        id.as_uuid(),
        counts.processed,
        counts.succeeded,
        counts.failed,
        counts.duplicate,
        error_summary as &str
    )
    .fetch_one(executor)
    .await
}

// ---------------------------------------------------------------------------
// Retention (batch-processor)
// ---------------------------------------------------------------------------

/// Deletes up to `limit` batches whose retention has passed and that are finished
/// (with their chunks and results, by cascade; their orders stay and lose the link);
/// returns how many. A batch another replica is deleting is skipped (`SKIP LOCKED`).
pub async fn delete_expired(executor: impl PgExecutor<'_>, limit: i64) -> Result<u64, sqlx::Error> {
    let deleted = sqlx::query!(
        "DELETE FROM bulk_order_batches WHERE id IN (
             SELECT id FROM bulk_order_batches
             WHERE expires_at < now() AND status NOT IN ('pending', 'processing')
             ORDER BY expires_at LIMIT $1
             FOR UPDATE SKIP LOCKED)",
        limit
    )
    .execute(executor)
    .await?;
    Ok(deleted.rows_affected())
}
