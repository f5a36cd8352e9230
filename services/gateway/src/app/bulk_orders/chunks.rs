//! Writing a batch: chunk rows built from the orders' raw JSON (hashed as they go),
//! inserted by a task of their own, and the commit that makes the batch and its job
//! durable together.

use super::*;

/// Builds chunk rows from orders' raw JSON and hashes the orders as it goes.
pub(super) struct ChunkWriter {
    pub(super) hasher: ring::digest::Context,
    pub(super) store: bool,
    pub(super) current: String,
    pub(super) in_current: usize,
    pub(super) next_chunk: i32,
    pub(super) total: usize,
    pub(super) ready_indexes: Vec<i32>,
    pub(super) ready_firsts: Vec<i32>,
    pub(super) ready_orders: Vec<String>,
}

impl ChunkWriter {
    /// `store: false` only hashes (an idempotent replay must still compare bodies).
    pub(super) fn new(store: bool) -> Self {
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

    pub(super) fn push(&mut self, raw: &str) {
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

    pub(super) fn close_chunk(&mut self) {
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
    pub(super) fn take_ready(&mut self) -> Option<NewChunks> {
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

    pub(super) fn finish_hash(self) -> Vec<u8> {
        self.hasher.finish().as_ref().to_vec()
    }
}

/// Writes chunks in a task of its own that owns the batch's transaction, so the
/// request keeps reading and splitting the body while PostgreSQL stores the previous
/// chunks: on two cores, parsing and storing overlap instead of taking turns. At most
/// two sets of chunks wait in the channel, which bounds memory whatever the upload size.
/// If the request is abandoned, the task ends and drops the transaction: rolled back.
pub(super) struct ChunkInserter {
    pub(super) sender: tokio::sync::mpsc::Sender<NewChunks>,
    pub(super) task: tokio::task::JoinHandle<Result<Transaction<'static, Postgres>, ApiError>>,
}

impl ChunkInserter {
    pub(super) fn start(mut tx: Transaction<'static, Postgres>, batch_id: BatchId) -> Self {
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
    pub(super) async fn send(&self, chunks: NewChunks) -> bool {
        self.sender.send(chunks).await.is_ok()
    }

    /// Waits for every queued chunk and returns the transaction.
    pub(super) async fn finish(self) -> Result<Transaction<'static, Postgres>, ApiError> {
        drop(self.sender);
        self.task.await.map_err(ApiError::internal)?
    }
}

/// Sets the batch's total and hash, enqueues its job and commits: the batch and its
/// job become durable together, or not at all.
pub(super) async fn commit_batch(
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
