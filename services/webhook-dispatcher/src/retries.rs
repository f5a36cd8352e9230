//! The retry poller: every attempt after the first.
//!
//! Every ~200 ms (or sooner when woken) it releases ordered deliveries whose turn has
//! come, then claims due rows with one statement (`FOR UPDATE SKIP LOCKED`, status
//! `delivering` with a short lease named after this replica and claim, renewed while
//! the attempts run, so replicas never claim the same row and a killed replica's rows
//! come back within [`LEASE`], or at once when it restarts), attempts them with the
//! event rebuilt from its row (same bytes as the first attempt), and commits attempts
//! and new states in one batched transaction. Manual retries and retry-failed jobs
//! simply make rows due (`retrying`, `next_attempt_at = now()`); this loop does the rest.
//!
//! Ordered deliveries are released only up to the events consumer's ack floor: every
//! event job at or below that stream sequence has been recorded, so no earlier event
//! of the same key can still turn up after a later one was sent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use portico_storage::deliveries::{self, ClaimedRow, ClaimedUpdate, ClaimedUpdates};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::Dispatcher;
use crate::delivery::{self, Planned};
use crate::envelope::PreparedEvent;
use crate::record::{self, BatchResults, Rows};

/// Rows claimed per statement.
pub const CLAIM_BATCH: i64 = 500;
/// Claimed batches in flight at once per replica.
const BATCHES_IN_FLIGHT: usize = 4;
/// How long a claim holds its deliveries without renewal: the longest a killed
/// replica's claimed deliveries wait before another replica attempts them.
pub const LEASE: Duration = Duration::from_secs(15);
/// How often a claim still being attempted renews its lease.
const RENEW_EVERY: Duration = Duration::from_secs(5);

/// Runs until `shutdown`, then waits for the batches in hand to be committed.
pub async fn run(
    dispatcher: Arc<Dispatcher>,
    events_consumer: PullConsumer,
    poll: Duration,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(poll) => {}
            _ = dispatcher.retry_signal.notified() => {}
        }
        release_ordered(&dispatcher, &events_consumer).await;
        loop {
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                break;
            };
            let owner = format!("{}/{}", dispatcher.replica_id, uuid::Uuid::now_v7());
            let claimed =
                match deliveries::claim_due(&dispatcher.pool, CLAIM_BATCH, &owner, LEASE).await {
                    Ok(rows) => rows,
                    Err(err) => {
                        tracing::warn!(%err, "claiming due deliveries failed; will retry");
                        break;
                    }
                };
            let full = claimed.len() as i64 == CLAIM_BATCH;
            if !claimed.is_empty() {
                let d = dispatcher.clone();
                tasks.spawn(async move {
                    let _permit = permit;
                    renewing(&d, &owner, attempt_claimed(&d, claimed)).await;
                });
            }
            if !full {
                break;
            }
        }
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

async fn release_ordered(dispatcher: &Dispatcher, consumer: &PullConsumer) {
    let floor = match consumer.get_info().await {
        Ok(info) => info.ack_floor.stream_sequence,
        Err(err) => {
            tracing::debug!(%err, "consumer info unavailable; ordered releases wait");
            return;
        }
    };
    match deliveries::release_ordered(&dispatcher.pool, floor.min(i64::MAX as u64) as i64).await {
        Ok(n) if n > 0 => tracing::debug!(released = n, "ordered deliveries released"),
        Ok(_) => {}
        Err(err) => tracing::warn!(%err, "releasing ordered deliveries failed; will retry"),
    }
}

/// Runs `work` while renewing the lease of `owner`'s claim every [`RENEW_EVERY`].
async fn renewing(
    dispatcher: &Dispatcher,
    owner: &str,
    work: impl std::future::Future<Output = ()>,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + RENEW_EVERY, RENEW_EVERY);
    tokio::pin!(work);
    loop {
        tokio::select! {
            () = &mut work => return,
            _ = tick.tick() => {
                if let Err(err) = deliveries::renew_leases(&dispatcher.pool, owner, LEASE).await {
                    tracing::warn!(%err, "renewing delivery leases failed; they may be attempted again elsewhere");
                }
            }
        }
    }
}

/// Attempts claimed rows and commits their results. If the commit fails, the rows
/// stay `delivering` until their lease expires and are claimed again then.
async fn attempt_claimed(dispatcher: &Dispatcher, claimed: Vec<ClaimedRow>) {
    let users: Vec<&str> = claimed.iter().map(|r| r.user_id.as_str()).collect();
    let mut endpoints = match dispatcher.cache.for_users(users).await {
        Ok(e) => e,
        Err(err) => {
            tracing::warn!(%err, "loading endpoints failed; claimed rows retry when their lease expires");
            return;
        }
    };
    // A webhook the cache does not know may be newer than the cache entry: re-read
    // that user once before concluding the endpoint is gone.
    let mut reloaded: Vec<String> = Vec::new();
    for row in &claimed {
        let known = endpoints
            .get(&row.user_id)
            .is_some_and(|eps| eps.iter().any(|e| e.id == row.webhook_id.as_uuid()));
        if !known && !reloaded.contains(&row.user_id) {
            reloaded.push(row.user_id.clone());
            if let Ok(fresh) = dispatcher.cache.reload(&row.user_id).await {
                endpoints.insert(row.user_id.clone(), fresh);
            }
        }
    }

    let mut events: HashMap<uuid::Uuid, Arc<PreparedEvent>> = HashMap::new();
    let mut planned: Vec<Planned> = Vec::with_capacity(claimed.len());
    let mut planned_rows: Vec<&ClaimedRow> = Vec::with_capacity(claimed.len());
    let mut updates = ClaimedUpdates::default();
    let mut results = BatchResults::default();
    for row in &claimed {
        let endpoint = endpoints
            .get(&row.user_id)
            .and_then(|eps| eps.iter().find(|e| e.id == row.webhook_id.as_uuid()))
            .cloned();
        let Some(endpoint) = endpoint else {
            push_update(&mut updates, row, results.endpoint_inactive(row));
            continue;
        };
        let event = events
            .entry(row.event_id.as_uuid())
            .or_insert_with(|| {
                Arc::new(PreparedEvent::new(
                    row.event_id.as_uuid(),
                    row.user_id.clone(),
                    row.event_type.clone(),
                    row.accepted_at,
                    &row.payload,
                ))
            })
            .clone();
        planned.push(Planned {
            delivery_id: row.id.as_uuid(),
            endpoint,
            event,
            attempts_before: row.attempts.max(0) as u32,
            max_retries: row.max_retries.max(0) as u32,
        });
        planned_rows.push(row);
    }
    let handled = delivery::run_all(
        &dispatcher.transport,
        &dispatcher.global,
        dispatcher.retry_jitter,
        &planned,
    )
    .await;
    for ((p, row), h) in planned.iter().zip(planned_rows).zip(handled) {
        let state = results.add(p, h);
        push_update(&mut updates, row, state);
    }
    if let Err(err) = record::commit(dispatcher, Rows::Claimed(updates), results).await {
        tracing::warn!(%err, count = claimed.len(), "recording retries failed; they run again when their lease expires");
    }
}

fn push_update(u: &mut ClaimedUpdates, row: &ClaimedRow, state: record::RowState) {
    u.push(ClaimedUpdate {
        id: row.id,
        lease_owner: row.lease_owner.clone(),
        status: state.status,
        attempts: state.attempts,
        next_attempt_at: state.next_attempt_at,
        last_status_code: state.last_status_code,
        last_error: state.last_error,
        attempted: state.attempted,
    });
}
