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
use portico_domain::bulk_orders::ResultStatus;
use portico_domain::orders::{Order, parse_order};
use portico_queue::jobs::Job;
use serde_json::value::RawValue;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::batches::{BatchRef, ProcessError, Processor};
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
    Create(Uuid, Order<'a>),
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
    let row: Option<(i32, String)> = sqlx::query_as(
        "SELECT first_index, orders::text FROM bulk_order_batch_chunks
         WHERE batch_id = $1 AND chunk_index = $2 AND NOT processed
         FOR UPDATE",
    )
    .bind(batch.id)
    .bind(chunk_index)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((first_index, text)) = row else {
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
                    Decision::Create(Uuid::now_v7(), order)
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
    let mut indexes = Vec::with_capacity(n);
    let mut result_refs: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut order_ids: Vec<Option<Uuid>> = Vec::with_capacity(n);
    let mut errors_json: Vec<Option<String>> = Vec::with_capacity(n);
    let mut tally = ChunkTally::default();
    let mut summary: HashMap<&str, i64> = HashMap::new();
    let mut new_orders: Vec<(Uuid, &Order<'_>)> = Vec::new();
    let mut resolved: Vec<Option<Uuid>> = Vec::with_capacity(n);
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
        indexes.push(first_index + position as i32);
        result_refs.push(refs[position].as_deref());
        statuses.push(status.as_str());
        order_ids.push(order_id);
        errors_json.push(errors);
    }
    sqlx::query(
        "INSERT INTO bulk_order_results (batch_id, order_index, client_order_ref, status, order_id, errors)
         SELECT $1, t.idx, t.ref, t.status, t.order_id, COALESCE(t.errors::jsonb, '[]'::jsonb)
         FROM unnest($2::int4[], $3::text[], $4::text[], $5::uuid[], $6::text[])
             AS t(idx, ref, status, order_id, errors)
         ON CONFLICT (batch_id, order_index) DO NOTHING",
    )
    .bind(batch.id)
    .bind(&indexes)
    .bind(&result_refs)
    .bind(&statuses)
    .bind(&order_ids)
    .bind(&errors_json)
    .execute(&mut *tx)
    .await?;

    sqlx::query(
        "UPDATE bulk_order_batch_chunks SET processed = true WHERE batch_id = $1 AND chunk_index = $2",
    )
    .bind(batch.id)
    .bind(chunk_index)
    .execute(&mut *tx)
    .await?;

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
    let (cancel_requested,): (bool,) = sqlx::query_as(
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
         RETURNING cancel_requested",
    )
    .bind(batch.id)
    .bind(tally.processed())
    .bind(tally.succeeded)
    .bind(tally.failed)
    .bind(tally.duplicate)
    .bind(&summary_json)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    if enqueued {
        processor.outbox.notify();
    }
    record_metrics(&tally);
    Ok(ChunkOutcome::Committed {
        tally,
        cancel_requested,
    })
}

/// The ids of this owner's orders with these references: one index probe per
/// reference (a scalar subquery runs per row, so a stale row estimate can never turn
/// it into a scan of all the owner's orders).
async fn existing_orders(
    tx: &mut Transaction<'_, Postgres>,
    user_id: &str,
    refs: &[&str],
) -> Result<HashMap<String, Uuid>, sqlx::Error> {
    let rows: Vec<(String, Option<Uuid>)> = sqlx::query_as(
        "SELECT r.ref, (SELECT o.id FROM orders o WHERE o.user_id = $1 AND o.client_order_ref = r.ref)
         FROM unnest($2::text[]) AS r(ref)",
    )
    .bind(user_id)
    .bind(refs)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(r, id)| id.map(|id| (r, id)))
        .collect())
}

/// Inserts the orders to create and their items in one statement; returns the ids
/// actually inserted (a reference taken concurrently is skipped, not an error).
async fn insert_orders(
    tx: &mut Transaction<'_, Postgres>,
    batch: &BatchRef,
    decisions: &[Decision<'_>],
) -> Result<std::collections::HashSet<Uuid>, ProcessError> {
    let to_create: Vec<(Uuid, &Order<'_>)> = decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Create(id, order) => Some((*id, order)),
            _ => None,
        })
        .collect();
    if to_create.is_empty() {
        return Ok(Default::default());
    }
    let n = to_create.len();
    let mut ids = Vec::with_capacity(n);
    let mut refs = Vec::with_capacity(n);
    let mut currencies = Vec::with_capacity(n);
    let mut customers = Vec::with_capacity(n);
    let mut addresses = Vec::with_capacity(n);
    let mut totals = Vec::with_capacity(n);
    let mut metadata: Vec<Option<&str>> = Vec::with_capacity(n);
    let items = to_create.iter().map(|(_, o)| o.line_items.len()).sum();
    let mut item_orders = Vec::with_capacity(items);
    let mut item_lines = Vec::with_capacity(items);
    let mut item_skus: Vec<&str> = Vec::with_capacity(items);
    let mut item_quantities = Vec::with_capacity(items);
    let mut item_prices = Vec::with_capacity(items);
    for (id, order) in &to_create {
        ids.push(*id);
        refs.push(order.client_order_ref.as_ref());
        currencies.push(order.currency.code);
        customers.push(serde_json::to_string(&order.customer).map_err(ProcessError::encoding)?);
        addresses
            .push(serde_json::to_string(&order.shipping_address).map_err(ProcessError::encoding)?);
        totals.push(order.total_minor);
        metadata.push(order.metadata.map(RawValue::get));
        for (line, item) in order.line_items.iter().enumerate() {
            item_orders.push(*id);
            item_lines.push(line as i32 + 1);
            item_skus.push(item.sku.as_ref());
            item_quantities.push(item.quantity);
            item_prices.push(item.unit_price_minor);
        }
    }
    let inserted: Vec<(Uuid,)> = sqlx::query_as(
        "WITH new_orders AS (
             INSERT INTO orders (id, user_id, batch_id, integration_id, client_order_ref, currency,
                                 customer, shipping_address, total_minor, metadata)
             SELECT t.id, $1, $2, $3, t.ref, t.currency, t.customer::jsonb, t.address::jsonb,
                    t.total, t.metadata::jsonb
             FROM unnest($4::uuid[], $5::text[], $6::text[], $7::text[], $8::text[], $9::int8[], $10::text[])
                 AS t(id, ref, currency, customer, address, total, metadata)
             ON CONFLICT (user_id, client_order_ref) DO NOTHING
             RETURNING id
         ), new_items AS (
             INSERT INTO order_items (order_id, line_number, sku, quantity, unit_price_minor)
             SELECT i.order_id, i.line_number, i.sku, i.quantity, i.price
             FROM unnest($11::uuid[], $12::int4[], $13::text[], $14::int4[], $15::int8[])
                 AS i(order_id, line_number, sku, quantity, price)
             WHERE i.order_id IN (SELECT id FROM new_orders)
         )
         SELECT id FROM new_orders",
    )
    .bind(&batch.user_id)
    .bind(batch.id)
    .bind(batch.integration_id)
    .bind(&ids)
    .bind(&refs)
    .bind(&currencies)
    .bind(&customers)
    .bind(&addresses)
    .bind(&totals)
    .bind(&metadata)
    .bind(&item_orders)
    .bind(&item_lines)
    .bind(&item_skus)
    .bind(&item_quantities)
    .bind(&item_prices)
    .fetch_all(&mut **tx)
    .await?;
    Ok(inserted.into_iter().map(|(id,)| id).collect())
}

/// Inserts the chunk's new orders one at a time behind savepoints; an order that
/// PostgreSQL refuses for its data becomes a `Fail` decision (`unstorable_order`).
async fn insert_orders_one_by_one(
    tx: &mut Transaction<'_, Postgres>,
    batch: &BatchRef,
    decisions: &mut [Decision<'_>],
) -> Result<HashSet<Uuid>, ProcessError> {
    let mut created = HashSet::new();
    for position in 0..decisions.len() {
        if !matches!(decisions[position], Decision::Create(..)) {
            continue;
        }
        sqlx::query("SAVEPOINT one_order").execute(&mut **tx).await?;
        let single = insert_orders(tx, batch, &decisions[position..=position]).await;
        match single {
            Ok(ids) => {
                sqlx::query("RELEASE SAVEPOINT one_order")
                    .execute(&mut **tx)
                    .await?;
                created.extend(ids);
            }
            Err(ProcessError::Database(err)) if portico_storage::is_data_error(&err) => {
                sqlx::query("ROLLBACK TO SAVEPOINT one_order")
                    .execute(&mut **tx)
                    .await?;
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
