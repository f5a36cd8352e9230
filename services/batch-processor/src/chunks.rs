//! Processing one chunk (up to 1,000 orders) of a batch in ONE transaction.
//!
//! The transaction locks the chunk row (`FOR UPDATE ... AND NOT processed`), validates
//! every order, creates the new ones with their items, writes one result per order,
//! adds the chunk's counts to the batch and marks the chunk processed. Either all of
//! that is committed or none of it, so a processor killed at any instant leaves each
//! chunk either untouched (it is redone after restart) or complete (it is skipped):
//! every order ends with exactly one result and no order is created twice.
//!
//! Every step is one set-based statement over the whole chunk (`unnest` arrays), never
//! a round trip per order. Duplicates are found by the unique index itself
//! (`ON CONFLICT DO NOTHING RETURNING`), so a chunk of new orders needs no lookup.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use portico_domain::FieldError;
use portico_domain::bulk_orders::{BatchStatus, ResultStatus};
use portico_domain::ids::OrderId;
use portico_domain::orders::{Order, parse_order};
use portico_queue::jobs::Job;
use portico_queue::live::{BatchProgress, LiveEvent};
use portico_storage::bulk_orders::{self as store, ChunkCounts, NewResults};
use portico_storage::orders::{self, NewLineItem, NewOrder, NewOrders, OrderOwner};
use serde_json::value::RawValue;
use sqlx::{Acquire, Postgres, Transaction};

use crate::context::{BatchRef, ProcessError, Processor};
use crate::events;

/// What one chunk contributed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkTally {
    /// Orders created.
    pub succeeded: i32,
    /// Orders refused by validation.
    pub failed: i32,
    /// Orders that already existed (in the database or earlier in the batch).
    pub duplicate: i32,
}

impl ChunkTally {
    /// Orders given a result.
    pub fn processed(&self) -> i32 {
        self.succeeded + self.failed + self.duplicate
    }
}

/// What happened to a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// Processed and committed now.
    Committed {
        /// Its counts.
        tally: ChunkTally,
        /// The owner asked to cancel the batch (read in the same transaction).
        cancel_requested: bool,
    },
    /// Already processed (by an earlier delivery or another replica).
    AlreadyProcessed,
}

/// The decision about one order of the chunk. Kept unboxed on purpose: a chunk's
/// decisions are one contiguous vector, not a thousand small allocations.
#[allow(clippy::large_enum_variant)]
enum Decision<'a> {
    /// Create it, with this new id.
    Create(OrderId, Order<'a>),
    /// Same clientOrderRef as an earlier order of this chunk (by position).
    SameAsEarlier(usize),
    /// Invalid.
    Fail(Vec<FieldError>),
}

/// How far a chunk in flight has got, as the later chunks of its batch see it.
#[derive(Debug, Clone)]
pub enum TurnState {
    /// Still reading and validating its orders.
    Parsing,
    /// Validated: these are the references it is about to create.
    Parsed(Arc<HashSet<String>>),
    /// Its orders INSERT has run (its unique-index entries exist, maybe uncommitted).
    Inserted,
}

/// The order in which concurrent chunks of one batch may insert their orders.
///
/// Chunks are validated in parallel. Before running its orders INSERT, a chunk waits
/// until every earlier chunk still in flight has published the references it creates,
/// and then waits for the INSERT of each earlier chunk that creates one of its own
/// references. That earlier chunk then holds its (possibly uncommitted) unique-index
/// entries, so the repeated reference waits for it and yields: across chunks, as within
/// one, the first occurrence in input order is created and the later one reported
/// `duplicate`. Chunks without a reference in common (the normal case) insert at the
/// same time, so the expensive statement is not serialised. A chunk that ends early
/// (error, already processed) drops its sender: nothing to wait for.
pub struct InsertTurn {
    /// The earlier chunks of the batch in flight when this one started.
    pub earlier: Vec<tokio::sync::watch::Receiver<TurnState>>,
    /// Where this chunk publishes its own progress.
    pub mine: tokio::sync::watch::Sender<TurnState>,
}

impl InsertTurn {
    /// Waits until no earlier chunk in flight may still create one of `refs`.
    async fn wait_for_earlier(&mut self, refs: &HashSet<String>) {
        for earlier in &mut self.earlier {
            // An error means the earlier chunk ended (its sender dropped): go on.
            let state = match earlier.wait_for(|s| !matches!(s, TurnState::Parsing)).await {
                Ok(state) => state.clone(),
                Err(_) => continue,
            };
            if let TurnState::Parsed(theirs) = state
                && !theirs.is_disjoint(refs)
            {
                let _ = earlier.wait_for(|s| matches!(s, TurnState::Inserted)).await;
            }
        }
    }
}

/// How a chunk's orders are inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inserts {
    /// All in one statement (the normal, fast path).
    Together,
    /// One at a time, each behind a savepoint, so an order PostgreSQL refuses becomes a
    /// `failed` result (`unstorable_order`) and the rest of the chunk commits.
    Isolated,
}

/// Chunks whose set-based insert PostgreSQL refused for one item's data and that were
/// redone item by item.
const CHUNKS_ISOLATED: &str = "portico_chunks_isolated_total";

/// Processes chunk `chunk_index` of `batch` in one transaction.
///
/// One bad order never holds up its chunk: when PostgreSQL refuses the chunk's orders
/// for their data (an order the validator let through but the database cannot store),
/// the chunk is redone with each order inserted alone; the one that fails gets a
/// `failed` result with the code `unstorable_order`, and every other order is created
/// as usual. Costs nothing on the normal path.
pub async fn process_chunk(
    processor: &Processor,
    batch: &BatchRef,
    chunk_index: i32,
    turn: InsertTurn,
) -> Result<ChunkOutcome, ProcessError> {
    match process_chunk_with(processor, batch, chunk_index, turn, Inserts::Together).await {
        Err(ProcessError::Database(err)) if portico_storage::is_data_error(&err) => {
            tracing::warn!(batch_id = %batch.id, chunk_index, %err,
                "chunk refused by PostgreSQL; inserting its orders one by one");
            metrics::counter!(CHUNKS_ISOLATED, "consumer" => "batch-processor").increment(1);
            // The failed attempt dropped its turn, so later chunks no longer wait on
            // it; this retry waits for none (the unique index still settles races).
            let (mine, _) = tokio::sync::watch::channel(TurnState::Parsing);
            let turn = InsertTurn {
                earlier: Vec::new(),
                mine,
            };
            process_chunk_with(processor, batch, chunk_index, turn, Inserts::Isolated).await
        }
        other => other,
    }
}

async fn process_chunk_with(
    processor: &Processor,
    batch: &BatchRef,
    chunk_index: i32,
    turn: InsertTurn,
    inserts: Inserts,
) -> Result<ChunkOutcome, ProcessError> {
    let mut tx = processor.pool.begin().await?;
    let Some(store::LockedChunk {
        first_index,
        orders: text,
    }) = store::lock_chunk(&mut *tx, batch.id, chunk_index).await?
    else {
        tx.rollback().await?;
        return Ok(ChunkOutcome::AlreadyProcessed);
    };
    let raws: Vec<&RawValue> = serde_json::from_str(&text)
        .map_err(|e| ProcessError::Corrupt(format!("chunk {chunk_index}: {e}")))?;

    let parsed: Vec<_> = raws.iter().map(|raw| parse_order(raw.get())).collect();
    let mut refs: Vec<Option<Cow<'_, str>>> = Vec::with_capacity(parsed.len());
    let mut decisions: Vec<Decision<'_>> = Vec::with_capacity(parsed.len());
    let mut first_by_ref: HashMap<Cow<'_, str>, usize> = HashMap::with_capacity(parsed.len());
    for (position, p) in parsed.into_iter().enumerate() {
        refs.push(p.client_order_ref);
        let decision = match p.outcome {
            Err(errors) => Decision::Fail(errors),
            Ok(order) => match first_by_ref.get(&order.client_order_ref) {
                Some(&earlier) => Decision::SameAsEarlier(earlier),
                None => {
                    first_by_ref.insert(order.client_order_ref.clone(), position);
                    Decision::Create(OrderId::generate(), order)
                }
            },
        };
        decisions.push(decision);
    }

    // Insert every new reference; the unique (user_id, client_order_ref) index decides
    // which already exist (earlier batches, earlier chunks, or a concurrent batch), so
    // the common case costs no lookup at all. Only the references that conflicted are
    // then looked up, for the existing order's id.
    let mut turn = turn;
    let to_create: HashSet<String> = decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Create(_, order) => Some(order.client_order_ref.to_string()),
            _ => None,
        })
        .collect();
    let to_create = Arc::new(to_create);
    turn.mine
        .send_replace(TurnState::Parsed(Arc::clone(&to_create)));
    turn.wait_for_earlier(&to_create).await;
    let created = match inserts {
        Inserts::Together => insert_orders(&mut tx, batch, &decisions).await?,
        Inserts::Isolated => insert_orders_one_by_one(&mut tx, batch, &mut decisions).await?,
    };
    turn.mine.send_replace(TurnState::Inserted);
    let conflicted: Vec<&str> = decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Create(id, order) if !created.contains(id) => {
                Some(order.client_order_ref.as_ref())
            }
            _ => None,
        })
        .collect();
    let existing = if conflicted.is_empty() {
        HashMap::new()
    } else {
        existing_orders(&mut tx, &batch.user_id, &conflicted).await?
    };

    // One result per order, in input order.
    let n = decisions.len();
    let mut results = NewResults::with_capacity(n);
    let mut tally = ChunkTally::default();
    let mut summary: HashMap<&str, i64> = HashMap::new();
    let mut new_orders: Vec<(OrderId, &Order<'_>)> = Vec::new();
    let mut resolved: Vec<Option<OrderId>> = Vec::with_capacity(n);
    for (position, decision) in decisions.iter().enumerate() {
        let (status, order_id, errors) = match decision {
            Decision::Create(id, order) if created.contains(id) => {
                new_orders.push((*id, order));
                (ResultStatus::Succeeded, Some(*id), None)
            }
            Decision::Create(_, order) => (
                ResultStatus::Duplicate,
                existing.get(order.client_order_ref.as_ref()).copied(),
                None,
            ),
            Decision::SameAsEarlier(earlier) => (
                ResultStatus::Duplicate,
                resolved.get(*earlier).copied().flatten(),
                None,
            ),
            Decision::Fail(errors) => {
                let mut codes: Vec<&str> = errors.iter().map(|e| e.code.as_str()).collect();
                codes.sort_unstable();
                codes.dedup();
                for code in codes {
                    *summary.entry(code).or_default() += 1;
                }
                (
                    ResultStatus::Failed,
                    None,
                    Some(serde_json::to_string(errors).map_err(ProcessError::encoding)?),
                )
            }
        };
        match status {
            ResultStatus::Succeeded => tally.succeeded += 1,
            ResultStatus::Failed => tally.failed += 1,
            _ => tally.duplicate += 1,
        }
        resolved.push(order_id);
        results.push(
            first_index + position as i32,
            refs[position].as_deref(),
            status,
            order_id,
            errors,
        );
    }
    store::insert_results(&mut *tx, batch.id, &results).await?;
    store::mark_chunk_processed(&mut *tx, batch.id, chunk_index).await?;

    // order.created, only when the owner has a webhook that wants it; committed with
    // the orders, so an order and its event cannot diverge.
    let mut enqueued = false;
    if !new_orders.is_empty() && events::wants_order_created(&mut tx, &batch.user_id).await? {
        let jobs: Vec<Job> = new_orders
            .iter()
            .map(|(id, order)| events::order_created(batch, *id, order))
            .collect::<Result<_, _>>()
            .map_err(ProcessError::encoding)?;
        portico_queue::outbox::enqueue_all(&mut tx, &processor.topology, &jobs).await?;
        enqueued = true;
    }
    // The counts last: the batch row stays locked (a concurrent chunk of this batch
    // waits on it) only from here to the commit, not while the chunk's other
    // statements run.
    let summary_json = serde_json::to_string(&summary).map_err(ProcessError::encoding)?;
    let counts = ChunkCounts {
        processed: tally.processed(),
        succeeded: tally.succeeded,
        failed: tally.failed,
        duplicate: tally.duplicate,
    };
    let after = store::add_chunk_counts(&mut *tx, batch.id, counts, &summary_json).await?;
    let cancel_requested = after.cancel_requested;
    tx.commit().await?;
    if enqueued {
        processor.outbox.notify();
    }
    // Live: after the commit, fire-and-forget (never waits on NATS).
    processor
        .live
        .announce(&LiveEvent::BatchProgress(BatchProgress {
            owner: batch.user_id.as_str().into(),
            batch_id: batch.id.as_uuid(),
            status: BatchStatus::Processing,
            total: after.total,
            processed: after.processed,
            succeeded: after.succeeded,
            failed: after.failed,
            duplicate: after.duplicate,
            occurred_at: chrono::Utc::now(),
        }));
    record_metrics(&tally);
    Ok(ChunkOutcome::Committed {
        tally,
        cancel_requested,
    })
}

/// The ids of this owner's orders with these references ([`orders::find_by_refs`]).
async fn existing_orders(
    tx: &mut Transaction<'_, Postgres>,
    user_id: &str,
    refs: &[&str],
) -> Result<HashMap<String, OrderId>, sqlx::Error> {
    Ok(orders::find_by_refs(&mut **tx, user_id, refs)
        .await?
        .into_iter()
        .collect())
}

/// Inserts the orders to create and their items in one statement; returns the ids
/// actually inserted (a reference taken concurrently is skipped, not an error).
async fn insert_orders(
    tx: &mut Transaction<'_, Postgres>,
    batch: &BatchRef,
    decisions: &[Decision<'_>],
) -> Result<HashSet<OrderId>, ProcessError> {
    let to_create: Vec<(OrderId, &Order<'_>)> = decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Create(id, order) => Some((*id, order)),
            _ => None,
        })
        .collect();
    if to_create.is_empty() {
        return Ok(Default::default());
    }
    let items = to_create.iter().map(|(_, o)| o.line_items.len()).sum();
    let mut new_orders = NewOrders::with_capacity(to_create.len(), items);
    for (id, order) in &to_create {
        let row = NewOrder {
            id: *id,
            client_order_ref: order.client_order_ref.as_ref(),
            currency: order.currency.code,
            customer: serde_json::to_string(&order.customer).map_err(ProcessError::encoding)?,
            shipping_address: serde_json::to_string(&order.shipping_address)
                .map_err(ProcessError::encoding)?,
            total_minor: order.total_minor,
            metadata: order.metadata.map(RawValue::get),
        };
        let items = order
            .line_items
            .iter()
            .enumerate()
            .map(|(line, item)| NewLineItem {
                line_number: line as i32 + 1,
                sku: item.sku.as_ref(),
                quantity: item.quantity,
                unit_price_minor: item.unit_price_minor,
            });
        new_orders.push(row, items);
    }
    let owner = OrderOwner {
        user_id: &batch.user_id,
        batch_id: batch.id,
        integration_id: batch.integration_id,
    };
    let inserted = orders::insert(&mut **tx, &owner, &new_orders).await?;
    Ok(inserted.into_iter().collect())
}

/// Inserts the chunk's new orders one at a time, each behind a savepoint (a nested
/// transaction: `SAVEPOINT`, then `RELEASE` or `ROLLBACK TO`); an order that
/// PostgreSQL refuses for its data becomes a `Fail` decision (`unstorable_order`).
async fn insert_orders_one_by_one(
    tx: &mut Transaction<'_, Postgres>,
    batch: &BatchRef,
    decisions: &mut [Decision<'_>],
) -> Result<HashSet<OrderId>, ProcessError> {
    let mut created = HashSet::new();
    for position in 0..decisions.len() {
        if !matches!(decisions[position], Decision::Create(..)) {
            continue;
        }
        let mut savepoint = tx.begin().await?;
        let single = insert_orders(&mut savepoint, batch, &decisions[position..=position]).await;
        match single {
            Ok(ids) => {
                savepoint.commit().await?;
                created.extend(ids);
            }
            Err(ProcessError::Database(err)) if portico_storage::is_data_error(&err) => {
                savepoint.rollback().await?;
                let message = err
                    .as_database_error()
                    .map(|d| d.message().replace('\0', ""))
                    .unwrap_or_else(|| err.to_string());
                decisions[position] = Decision::Fail(vec![FieldError::new(
                    UNSTORABLE_ORDER,
                    "",
                    format!("the order could not be stored: {message}"),
                )]);
            }
            Err(other) => return Err(other),
        }
    }
    Ok(created)
}

/// The result error code of an order that passed validation but that PostgreSQL
/// refused to store.
pub const UNSTORABLE_ORDER: &str = "unstorable_order";

fn record_metrics(tally: &ChunkTally) {
    for (outcome, n) in [
        ("succeeded", tally.succeeded),
        ("failed", tally.failed),
        ("duplicate", tally.duplicate),
    ] {
        if n > 0 {
            metrics::counter!(portico_telemetry::metrics::BATCH_ORDERS, "outcome" => outcome)
                .increment(n as u64);
        }
    }
}
