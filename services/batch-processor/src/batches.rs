//! Processing one bulk-order batch: claim it, work through its unprocessed chunks, and
//! finish it, all idempotently, so a job delivered twice (a redelivery after a crash, or
//! two replicas at once) never does anything twice.
//!
//! - **Claim**: `pending → processing` (a batch already `processing` is resumed; a
//!   finished one means the job is a redelivery and is acked without work).
//! - **Chunks**: each in its own transaction ([`crate::chunks`]), several at a time
//!   (a chunk inserts its orders only after every earlier chunk in flight that creates one
//!   of its references, see [`crate::chunks::InsertTurn`]);
//!   between chunks the job's ack timer is reset (`keep_alive`) and the cancel flag,
//!   read in each chunk's transaction, is honoured: chunks in flight finish, the rest
//!   is reported `unprocessed`.
//! - **Finish**: the final status follows from the counts; it is written together with
//!   the `bulk_order.completed` event, in one transaction, only by the first finisher.
//!
//! A batch that keeps failing for a reason other than an outage (after
//! [`GIVE_UP_AFTER_DELIVERIES`]) is finished as `failed` with its remaining orders
//! `unprocessed`, rather than being redelivered forever.

use std::sync::Arc;
use std::time::Duration;

use portico_domain::bulk_orders::BatchStatus;
use portico_domain::ids::BatchId;
use portico_queue::consumer::{JobMessage, Outcome};
use portico_storage::bulk_orders as store;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::chunks::{ChunkOutcome, InsertTurn, TurnState, process_chunk};
use crate::context::{BatchRef, ProcessError, Processor};
use crate::events;

/// After this many deliveries of one batch's job ending in an error, the batch is
/// finished as `failed` instead of being retried again.
pub const GIVE_UP_AFTER_DELIVERIES: i64 = 10;

/// Counts the batches this replica is working on while it exists.
struct InProgress;

impl InProgress {
    fn start() -> Self {
        metrics::gauge!(portico_telemetry::metrics::BATCHES_IN_PROGRESS).increment(1.0);
        InProgress
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        metrics::gauge!(portico_telemetry::metrics::BATCHES_IN_PROGRESS).decrement(1.0);
    }
}

/// How the chunk loop ended.
enum Stop {
    /// Every chunk is processed.
    Done,
    /// The owner cancelled.
    Cancelled,
    /// This replica is shutting down; another delivery resumes the batch.
    ShuttingDown,
}

/// Processes the batch `batch_id` and returns what to do with its job.
pub async fn process(
    processor: &Arc<Processor>,
    batch_id: Uuid,
    message: &JobMessage,
    shutdown: &CancellationToken,
) -> Outcome {
    let batch_id = BatchId(batch_id);
    match run(processor, batch_id, message, shutdown).await {
        Ok(outcome) => outcome,
        Err(err) if message.delivered >= GIVE_UP_AFTER_DELIVERIES => {
            tracing::error!(%batch_id, %err, delivered = message.delivered,
                "batch keeps failing; finishing it as failed");
            match finish_unprocessed(processor, batch_id, BatchStatus::Failed).await {
                Ok(()) => Outcome::Done,
                Err(err) => {
                    tracing::error!(%batch_id, %err, "could not mark the batch failed; will retry");
                    Outcome::RetryAfter(message.backoff())
                }
            }
        }
        Err(err) => {
            tracing::warn!(%batch_id, %err, delivered = message.delivered,
                "batch processing failed; it resumes on redelivery");
            Outcome::RetryAfter(message.backoff())
        }
    }
}

async fn run(
    processor: &Arc<Processor>,
    batch_id: BatchId,
    message: &JobMessage,
    shutdown: &CancellationToken,
) -> Result<Outcome, ProcessError> {
    let claimed = store::claim(&processor.pool, batch_id).await?;
    let Some(store::ClaimedBatch {
        user_id,
        integration_id,
        cancel_requested,
    }) = claimed
    else {
        tracing::info!(%batch_id, "batch already finished or gone; acking the redelivered job");
        return Ok(Outcome::Done);
    };
    let _in_progress = InProgress::start();
    let batch = Arc::new(BatchRef {
        id: batch_id,
        user_id,
        integration_id,
    });
    let started = std::time::Instant::now();

    let stop = if cancel_requested {
        Stop::Cancelled
    } else {
        let chunks = store::unprocessed_chunks(&processor.pool, batch_id).await?;
        run_chunks(processor, &batch, chunks, message, shutdown).await?
    };
    match stop {
        Stop::ShuttingDown => {
            tracing::info!(%batch_id, "stopping between chunks for shutdown; the batch resumes elsewhere");
            Ok(Outcome::RetryAfter(Duration::from_millis(100)))
        }
        Stop::Cancelled => {
            finish_unprocessed(processor, batch_id, BatchStatus::Cancelled).await?;
            tracing::info!(%batch_id, "batch cancelled");
            Ok(Outcome::Done)
        }
        Stop::Done => {
            finish(processor, batch_id).await?;
            tracing::info!(%batch_id, elapsed_ms = started.elapsed().as_millis() as u64, "batch finished");
            Ok(Outcome::Done)
        }
    }
}

/// Processes `chunks` in order with up to `chunk_concurrency` transactions in flight.
/// Stops launching new chunks on cancel, shutdown or error; chunks in flight finish.
async fn run_chunks(
    processor: &Arc<Processor>,
    batch: &Arc<BatchRef>,
    chunks: Vec<i32>,
    message: &JobMessage,
    shutdown: &CancellationToken,
) -> Result<Stop, ProcessError> {
    let mut pending = chunks.into_iter();
    let mut in_flight = JoinSet::new();
    // The chunks launched so far whose orders INSERT may not have run yet.
    let mut unfinished: Vec<tokio::sync::watch::Receiver<TurnState>> = Vec::new();
    let mut stop = Stop::Done;
    let mut failure: Option<ProcessError> = None;
    let limit = processor.chunk_concurrency.max(1);
    loop {
        while matches!(stop, Stop::Done) && failure.is_none() && in_flight.len() < limit {
            if shutdown.is_cancelled() {
                stop = Stop::ShuttingDown;
                break;
            }
            let Some(chunk) = pending.next() else { break };
            let processor = Arc::clone(processor);
            let batch = Arc::clone(batch);
            // Chunks that have inserted (or ended) no longer hold anyone up.
            unfinished.retain(|rx| {
                rx.has_changed().is_ok() && !matches!(*rx.borrow(), TurnState::Inserted)
            });
            let (mine, progress) = tokio::sync::watch::channel(TurnState::Parsing);
            let turn = InsertTurn {
                earlier: unfinished.clone(),
                mine,
            };
            unfinished.push(progress);
            in_flight.spawn(async move { process_chunk(&processor, &batch, chunk, turn).await });
        }
        let joined = loop {
            tokio::select! {
                joined = in_flight.join_next() => break joined,
                _ = tokio::time::sleep(processor.keep_alive_every) => {
                    // A chunk is taking long (locks, a slow disk): keep the job.
                    if let Err(err) = message.keep_alive().await {
                        tracing::debug!(%err, "keep-alive failed; the job may be redelivered and resumed");
                    }
                }
            }
        };
        let Some(joined) = joined else {
            break;
        };
        match joined {
            Ok(Ok(ChunkOutcome::Committed {
                cancel_requested, ..
            })) => {
                if cancel_requested && matches!(stop, Stop::Done) {
                    stop = Stop::Cancelled;
                }
            }
            Ok(Ok(ChunkOutcome::AlreadyProcessed)) => {}
            Ok(Err(err)) => {
                failure.get_or_insert(err);
            }
            Err(join) => {
                failure.get_or_insert(ProcessError::Corrupt(format!("chunk task: {join}")));
            }
        }
        if let Err(err) = message.keep_alive().await {
            tracing::debug!(%err, "keep-alive failed; the job may be redelivered and resumed");
        }
    }
    match failure {
        Some(err) => Err(err),
        None => Ok(stop),
    }
}

/// Writes the final status (from the counts) and the completion event, once.
async fn finish(processor: &Processor, batch_id: BatchId) -> Result<(), ProcessError> {
    let mut tx = processor.pool.begin().await?;
    let remaining = store::count_unprocessed_chunks(&mut *tx, batch_id).await?;
    if remaining > 0 {
        // Another replica still holds a chunk; it (or a redelivery) finishes the batch.
        return Err(ProcessError::Corrupt(format!(
            "{remaining} chunks still unprocessed at finish"
        )));
    }
    let Some(row) = store::lock_processing(&mut *tx, batch_id).await? else {
        return Ok(());
    };
    let status = BatchStatus::finished(&row.counts());
    if row.processed + row.unprocessed != row.total {
        tracing::error!(%batch_id, total = row.total, processed = row.processed,
            unprocessed = row.unprocessed, "batch counts do not add up");
    }
    complete(processor, tx, batch_id, status).await
}

/// Reports every order not yet processed as `unprocessed` and finishes the batch with
/// `status` (cancelled, or failed when giving up). The remaining chunks are locked
/// first (the same order chunk transactions lock in: chunk, then batch), so a chunk
/// in flight elsewhere finishes before this looks at it.
pub async fn finish_unprocessed(
    processor: &Processor,
    batch_id: BatchId,
    status: BatchStatus,
) -> Result<(), ProcessError> {
    let mut tx = processor.pool.begin().await?;
    let chunks = store::lock_unprocessed_chunks(&mut *tx, batch_id).await?;
    let Some(row) = store::lock_unfinished(&mut *tx, batch_id).await? else {
        return Ok(());
    };
    if chunks.is_empty() {
        // Everything was processed before the cancel (or the failure) took effect:
        // the batch ends as its results say.
        let status = BatchStatus::finished(&row.counts());
        return complete(processor, tx, batch_id, status).await;
    }
    let written = store::write_unprocessed_results(&mut *tx, batch_id, &chunks).await?;
    store::mark_chunks_processed(&mut *tx, batch_id, &chunks).await?;
    store::add_unprocessed(&mut *tx, batch_id, written as i32).await?;
    if written > 0 {
        metrics::counter!(portico_telemetry::metrics::BATCH_ORDERS, "outcome" => "unprocessed")
            .increment(written);
    }
    complete(processor, tx, batch_id, status).await
}

/// Sets the final status and enqueues `bulk_order.completed` in the caller's
/// transaction, then commits.
async fn complete(
    processor: &Processor,
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    batch_id: BatchId,
    status: BatchStatus,
) -> Result<(), ProcessError> {
    let row = store::complete(&mut *tx, batch_id, status).await?;
    let job = events::batch_completed(&row).map_err(ProcessError::encoding)?;
    portico_queue::outbox::enqueue(&mut tx, &processor.topology, &job).await?;
    tx.commit().await?;
    processor.outbox.notify();
    // Live: the final counts and status, after the commit, fire-and-forget.
    processor
        .live
        .announce(&portico_queue::live::LiveEvent::BatchProgress(
            portico_queue::live::BatchProgress {
                owner: row.user_id.as_str().into(),
                batch_id: row.id.as_uuid(),
                status,
                total: row.total,
                processed: row.processed,
                succeeded: row.succeeded,
                failed: row.failed,
                duplicate: row.duplicate,
                occurred_at: chrono::Utc::now(),
            },
        ));
    Ok(())
}
