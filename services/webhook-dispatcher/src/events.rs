//! The hot path: event jobs, pulled in chunks, become recorded events, first delivery
//! attempts and delivery rows, and only then acknowledgements.
//!
//! Per chunk: one set-based INSERT of the events (a redelivered or re-published event
//! is left as it is); the owners' endpoints from the cache (one query for the users
//! it lacks); then the new deliveries in groups of at most `PORTICO_DISPATCH_BATCH`:
//! each group's first attempts, concurrently, then one transaction writing its
//! delivery rows in their resulting state (succeeded, retrying with its next attempt
//! time, failed, or pending) with their attempt rows. The chunk's messages are acked
//! only after every group's commit; if any write fails they are nak'ed and come back,
//! and nothing is acked that is not committed. A redelivered event whose deliveries
//! already exist is not delivered again to those endpoints, so the groups a failed
//! chunk did commit are not sent twice. A delivery's id is derived from (event,
//! webhook, acceptance time) ([`portico_domain::ids::delivery_id`]): two replicas
//! handling the same redelivered job make the same ids and the primary key keeps one
//! row of each.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use portico_domain::ids::{DeliveryId, EventId, WebhookId};
use portico_domain::webhooks::DeliveryStatus;
use portico_queue::consumer::{JobMessage, Outcome};
use portico_queue::jobs::{EventDispatch, Job};
use portico_storage::deliveries::{self, IdArray, NewDelivery, NewDeliveryRows};
use portico_storage::events::{NewEvent, NewEvents};

use crate::delivery::{self, Handled, Planned};
use crate::envelope::PreparedEvent;
use crate::record::{self, BatchResults, Rows};
use crate::{Counted, Dispatcher};

/// Why a chunk could not be committed.
#[derive(Debug, thiserror::Error)]
enum ChunkError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl ChunkError {
    /// Whether the same statement would fail the same way again: one of the chunk's
    /// items is at fault, not the database's health.
    fn is_item_fault(&self) -> bool {
        match self {
            ChunkError::Database(e) => portico_storage::is_data_error(e),
        }
    }
}

/// Handles one chunk of event jobs end to end and acks (or naks) every message.
///
/// One bad item never holds up the others: when the chunk fails because of its data
/// (not because PostgreSQL is unreachable), every event is tried again alone; those
/// that commit are acked, and one that still fails for its data is dead-lettered with
/// a record and a `portico.event.dead_lettered` event to its owner. A transient failure
/// naks the chunk with backoff, and an event that reaches its last delivery is
/// dead-lettered rather than silently dropped by the redelivery limit.
///
/// `estimate` counts the chunk in the dispatcher's planned deliveries until the chunk
/// has counted the deliveries it actually plans.
pub async fn handle_chunk(dispatcher: &Dispatcher, messages: Vec<JobMessage>, estimate: Counted) {
    let work = process(dispatcher, &messages, Some(estimate));
    let err = match kept_alive(dispatcher, &messages, work).await {
        Ok(()) => {
            finish_all(messages, Outcome::Done).await;
            return;
        }
        Err(err) => err,
    };
    if err.is_item_fault() && messages.len() > 1 {
        tracing::warn!(%err, count = messages.len(), "event chunk refused by PostgreSQL; trying its events one by one");
        metrics::counter!(CHUNKS_ISOLATED, "consumer" => CONSUMER).increment(1);
        for message in messages {
            let alone = std::slice::from_ref(&message);
            let result = kept_alive(dispatcher, alone, process(dispatcher, alone, None)).await;
            match result {
                Ok(()) => finish_all(vec![message], Outcome::Done).await,
                Err(err) => fail(dispatcher, message, &err).await,
            }
        }
        return;
    }
    let backoff = messages
        .iter()
        .map(JobMessage::backoff)
        .max()
        .unwrap_or(Duration::from_secs(1));
    tracing::warn!(%err, count = messages.len(), ?backoff, "event chunk not committed; will retry");
    for message in messages {
        fail(dispatcher, message, &err).await;
    }
}

/// Runs `work` while telling JetStream, every third of the ack wait, that `messages`
/// are still being worked on: the ack wait can stay short (a killed replica's events
/// come back within seconds) while a chunk waiting on a slow endpoint keeps its jobs.
/// A chunk that finishes within the first third (nearly all) sends nothing extra.
async fn kept_alive<F: std::future::Future>(
    dispatcher: &Dispatcher,
    messages: &[JobMessage],
    work: F,
) -> F::Output {
    let every = (dispatcher.ack_wait / 3).max(Duration::from_millis(300));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick() => {
                let progress = messages.iter().map(JobMessage::keep_alive);
                for r in futures::future::join_all(progress).await {
                    if let Err(err) = r {
                        tracing::debug!(%err, "in-progress ack failed; the event may be redelivered and deduplicated");
                    }
                }
            }
        }
    }
}

/// The name of the events consumer in metrics and dead letters.
const CONSUMER: &str = "webhook-dispatcher.events";
/// Chunks that failed for one item's data and were retried item by item.
const CHUNKS_ISOLATED: &str = "portico_chunks_isolated_total";

/// Finishes one event whose processing failed: dead-lettered when its data is at fault
/// or this was its last delivery, otherwise handed back with backoff.
async fn fail(dispatcher: &Dispatcher, message: JobMessage, err: &ChunkError) {
    let last_delivery = message.delivered >= dispatcher.max_deliver - 1;
    if !(err.is_item_fault() || last_delivery) {
        let backoff = message.backoff();
        finish_all(vec![message], Outcome::RetryAfter(backoff)).await;
        return;
    }
    let reason = if err.is_item_fault() {
        format!("event could not be stored: {err}")
    } else {
        format!("gave up after {} deliveries: {err}", message.delivered)
    };
    tracing::error!(%reason, "dead-lettering event");
    let outcome = match dead_letter(dispatcher, &message.job, &reason).await {
        Ok(()) => Outcome::Poison(reason),
        // Not recorded: let it come back and try again rather than lose it.
        Err(e) => {
            tracing::error!(%e, "dead letter not recorded; the event will come back");
            Outcome::RetryAfter(message.backoff())
        }
    };
    finish_all(vec![message], outcome).await;
}

/// Records the dead letter and tells the owner, in one transaction.
async fn dead_letter(
    dispatcher: &Dispatcher,
    job: &Job,
    reason: &str,
) -> Result<(), portico_queue::QueueError> {
    let mut tx = dispatcher.pool.begin().await?;
    portico_queue::consumer::dead_letter_job(&mut tx, CONSUMER, &dispatcher.topology, job, reason)
        .await?;
    if let Job::EventDispatchV1(e) = job
        && let Some(notice) = crate::operational::dead_letter_event(e, reason)
    {
        portico_queue::outbox::enqueue(&mut tx, &dispatcher.topology, &notice).await?;
    }
    tx.commit().await?;
    dispatcher.outbox.notify();
    Ok(())
}

/// Acks, naks or terminates every message with the same outcome.
async fn finish_all(messages: Vec<JobMessage>, outcome: Outcome) {
    let acks = messages.into_iter().map(|m| {
        let outcome = match (&m.job, &outcome) {
            (Job::EventDispatchV1(_), o) => o.clone(),
            (other, _) => Outcome::Poison(format!("not an event job: {other:?}")),
        };
        m.finish(outcome)
    });
    for r in futures::future::join_all(acks).await {
        if let Err(err) = r {
            tracing::warn!(%err, "ack failed; the job will be redelivered and deduplicated");
        }
    }
}

async fn process(
    dispatcher: &Dispatcher,
    messages: &[JobMessage],
    estimate: Option<Counted>,
) -> Result<(), ChunkError> {
    // One entry per distinct event (the same event twice in a chunk is handled once).
    let mut seen = HashSet::with_capacity(messages.len());
    let mut jobs: Vec<(&EventDispatch, &JobMessage)> = Vec::with_capacity(messages.len());
    for m in messages {
        if let Job::EventDispatchV1(e) = &m.job
            && seen.insert(e.event_id)
        {
            jobs.push((e, m));
        }
    }
    if jobs.is_empty() {
        return Ok(());
    }
    let events: Vec<&EventDispatch> = jobs.iter().map(|(e, _)| *e).collect();
    let mut records = NewEvents::with_capacity(events.len());
    for e in &events {
        records.push(NewEvent {
            id: EventId(e.event_id),
            user_id: &e.user_id,
            event_type: &e.event_type,
            payload: e.data.get(),
            idempotency_key: &e.idempotency_key,
            ordering_key: e.ordering_key.as_deref(),
            accepted_at: e.accepted_at,
        });
    }
    let new_events = portico_storage::events::insert(&dispatcher.events_pool, &records).await?;
    let replayed: IdArray<EventId> = events
        .iter()
        .map(|e| EventId(e.event_id))
        .filter(|id| !new_events.contains(id))
        .collect();
    let existing = deliveries::existing(&dispatcher.pool, &replayed).await?;
    let endpoints = dispatcher
        .cache
        .for_users(events.iter().map(|e| e.user_id.as_str()))
        .await?;

    let mut planned: Vec<Planned> = Vec::new();
    let mut waiting = NewDeliveryRows::default();
    for (e, m) in &jobs {
        let Some(user_endpoints) = endpoints.get(&e.user_id) else {
            continue;
        };
        let mut prepared: Option<Arc<PreparedEvent>> = None;
        for endpoint in user_endpoints.iter() {
            let wanted = match e.only_webhook_id {
                Some(only) => endpoint.id == only,
                None => endpoint.matches(&e.event_type),
            };
            if !wanted || existing.contains(&(WebhookId(endpoint.id), EventId(e.event_id))) {
                continue;
            }
            let event = prepared
                .get_or_insert_with(|| Arc::new(prepare(e, m)))
                .clone();
            // Derived, not random: a redelivered job makes the same id, which the
            // insert skips (`ON CONFLICT DO NOTHING`), whatever replica handles it.
            let delivery_id = portico_domain::ids::delivery_id(
                e.event_id,
                endpoint.id,
                e.accepted_at.timestamp_millis(),
            );
            if endpoint.ordering_enabled && e.ordering_key.is_some() {
                // Ordered: recorded as pending and released by the retry poller when
                // every earlier delivery of its key has finished.
                push_row(
                    &mut waiting,
                    delivery_id,
                    endpoint.id,
                    &event,
                    endpoint.policy.max_retries,
                    Some(m.stream_sequence.min(i64::MAX as u64) as i64),
                    None,
                );
                continue;
            }
            planned.push(Planned {
                delivery_id,
                endpoint: endpoint.clone(),
                event,
                attempts_before: 0,
                max_retries: endpoint.policy.max_retries,
            });
        }
    }

    // The deliveries go in groups of at most `dispatch_batch`, each sent and committed
    // on its own (the ordered ones waiting for their turn are written with the first):
    // what a group holds until its commit (attempt records, the statement's buffers)
    // stays the size of a one-endpoint chunk however far an event fans out, and one
    // group's commit overlaps the next one's requests. The chunk's jobs are acked only
    // when every group has committed.
    let size = dispatcher.group_size.max(1);
    let mut waiting = Some(waiting);
    let mut groups: Vec<&[Planned]> = planned.chunks(size).collect();
    if groups.is_empty() {
        groups.push(&[]);
    }
    let work: Vec<_> = groups
        .into_iter()
        .map(|group| {
            let counted = dispatcher.planned.count(group.len());
            deliver_group(
                dispatcher,
                group,
                waiting.take().unwrap_or_default(),
                counted,
            )
        })
        .collect();
    drop(estimate);
    futures::future::join_all(work)
        .await
        .into_iter()
        .collect::<Result<(), ChunkError>>()
}

/// Sends one group of a chunk's deliveries and commits them with `rows` (the ordered
/// deliveries recorded as pending). The group first waits for room in the replica's
/// memory budget and holds it until its commit; meanwhile its chunk's jobs are kept
/// alive (in-progress acks). `_counted` keeps the group in the planned deliveries
/// until it is done.
async fn deliver_group(
    dispatcher: &Dispatcher,
    planned: &[Planned],
    rows: NewDeliveryRows,
    _counted: Counted,
) -> Result<(), ChunkError> {
    let _held = dispatcher.hold(planned.len()).await;
    let handled = delivery::run_all(
        &dispatcher.transport,
        &dispatcher.global,
        dispatcher.retry_jitter,
        planned,
    )
    .await;
    let deferred = handled.iter().any(|h| matches!(h, Handled::Deferred(_)));
    let mut results = BatchResults::default();
    let mut rows = rows;
    for (p, h) in planned.iter().zip(handled) {
        let state = results.add(p, h);
        push_row(
            &mut rows,
            p.delivery_id,
            p.endpoint.id,
            &p.event,
            p.max_retries,
            None,
            Some(&state),
        );
    }
    if rows.is_empty() {
        return Ok(());
    }
    record::commit(dispatcher, Rows::New(rows), results).await?;
    if deferred {
        dispatcher.retry_signal.notify_one();
    }
    Ok(())
}

fn prepare(e: &EventDispatch, m: &JobMessage) -> PreparedEvent {
    let mut event = PreparedEvent::new(
        e.event_id,
        e.user_id.clone(),
        e.event_type.clone(),
        e.accepted_at,
        e.data.get(),
    );
    event.ordering_key = e.ordering_key.clone();
    event.stream_sequence = m.stream_sequence;
    event.trace = m.headers.clone();
    event
}

/// Adds one delivery row: `None` for `state` is an ordered delivery waiting for its
/// turn (pending, no attempt), with its stream sequence in `ordering_seq`.
fn push_row(
    rows: &mut NewDeliveryRows,
    id: uuid::Uuid,
    webhook_id: uuid::Uuid,
    event: &PreparedEvent,
    max_retries: u32,
    ordering_seq: Option<i64>,
    state: Option<&record::RowState>,
) {
    let (status, attempts, next_attempt_at, last_status_code, last_error) = match state {
        None => (DeliveryStatus::Pending, 0, None, None, None),
        Some(s) => (
            s.status,
            s.attempts,
            s.next_attempt_at,
            s.last_status_code,
            s.last_error.clone(),
        ),
    };
    rows.push(NewDelivery {
        id: DeliveryId(id),
        webhook_id: WebhookId(webhook_id),
        event_id: EventId(event.id),
        user_id: event.user_id.clone(),
        event_type: event.event_type.clone(),
        ordering_key: event.ordering_key.clone(),
        ordering_seq,
        status,
        attempts,
        max_retries: max_retries.min(i32::MAX as u32) as i32,
        next_attempt_at,
        last_status_code,
        last_error,
    });
}
