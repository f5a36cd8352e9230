//! The usage log: every call authenticated by an integration's credentials (and every
//! failed attempt with a known key) is written to `integration_usage_logs` without
//! slowing the request.
//!
//! Requests hand entries to a bounded channel with `try_send` and never wait. One
//! writer task drains it in batches (every 250 ms by default, or 1,000 entries, whichever
//! comes first) with one `unnest` INSERT, one set-based `last_used_at` UPDATE and one upsert
//! of the daily quota counters, in one transaction. When the buffer is full an entry
//! is dropped and counted (`portico_usage_log_dropped_total`): losing a log line beats
//! stalling partners' requests. On graceful shutdown the gateway stops serving HTTP
//! first and then [`UsageWriter::finish`] drains every buffered entry before exiting.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use portico_domain::ids::IntegrationId;
use portico_storage::integrations::{self, DailyCalls};
use portico_storage::usage::{self, NewUsageLog};
use portico_telemetry::metrics::{USAGE_LOG_BUFFER, USAGE_LOG_DROPPED};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::limiter::Limiter;

/// Entries written per statement.
pub const MAX_BATCH: usize = 1_000;
/// Attempts at writing one batch before it is given up (and counted as dropped).
const WRITE_ATTEMPTS: u32 = 5;

/// One logged call.
#[derive(Debug, Clone)]
pub struct UsageEntry {
    /// Whose credentials were presented.
    pub integration_id: Uuid,
    /// HTTP method.
    pub method: String,
    /// Route template (`/api/integrations/{id}`), never the raw path.
    pub route: String,
    /// Status answered.
    pub status: u16,
    /// Time to the response head, in microseconds.
    pub latency_us: u64,
    /// The client's address.
    pub client_ip: Option<String>,
    /// When the call arrived.
    pub occurred_at: DateTime<Utc>,
    /// True when the call was authenticated and admitted: it counts against the daily
    /// quota and sets `last_used_at`. Failed attempts are logged but do neither.
    pub admitted: bool,
}

/// The sending side, held by the credential service. Cheap to clone.
#[derive(Clone)]
pub struct UsageLog {
    tx: mpsc::Sender<UsageEntry>,
    capacity: usize,
    limiter: Arc<Limiter>,
}

/// The writer task; [`UsageWriter::finish`] drains it.
pub struct UsageWriter {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Creates the buffer and starts the writer, which writes a batch once it is
/// `flush_interval` old or [`MAX_BATCH`] long.
pub fn start(
    pool: PgPool,
    capacity: usize,
    flush_interval: Duration,
    limiter: Arc<Limiter>,
) -> (UsageLog, UsageWriter) {
    let capacity = capacity.max(1);
    let (tx, rx) = mpsc::channel(capacity);
    let stop = CancellationToken::new();
    let task = tokio::spawn(run_writer(
        pool,
        rx,
        flush_interval,
        limiter.clone(),
        stop.clone(),
    ));
    (
        UsageLog {
            tx,
            capacity,
            limiter,
        },
        UsageWriter { stop, task },
    )
}

impl UsageLog {
    /// Buffers `entry` without waiting; drops and counts it when the buffer is full.
    pub fn record(&self, entry: UsageEntry) {
        match self.tx.try_send(entry) {
            Ok(()) => {}
            Err(
                mpsc::error::TrySendError::Full(entry) | mpsc::error::TrySendError::Closed(entry),
            ) => {
                metrics::counter!(USAGE_LOG_DROPPED).increment(1);
                if entry.admitted {
                    self.limiter
                        .forget(entry.integration_id, entry.occurred_at.date_naive());
                }
            }
        }
    }

    /// Entries waiting to be written.
    pub fn buffered(&self) -> usize {
        self.capacity - self.tx.capacity()
    }
}

impl UsageWriter {
    /// Writes everything still buffered and stops. Call after the HTTP server has
    /// stopped, so no request can add an entry afterwards.
    pub async fn finish(self) {
        self.stop.cancel();
        if let Err(err) = self.task.await {
            tracing::error!(%err, "usage-log writer panicked");
        }
    }
}

async fn run_writer(
    pool: PgPool,
    mut rx: mpsc::Receiver<UsageEntry>,
    flush_interval: Duration,
    limiter: Arc<Limiter>,
    stop: CancellationToken,
) {
    let mut batch: Vec<UsageEntry> = Vec::with_capacity(MAX_BATCH);
    loop {
        let stopping = tokio::select! {
            biased;
            _ = stop.cancelled() => true,
            n = rx.recv_many(&mut batch, MAX_BATCH) => n == 0,
        };
        if stopping {
            break;
        }
        // Linger so light traffic still makes batches, but never past the interval.
        let deadline = tokio::time::Instant::now() + flush_interval;
        while batch.len() < MAX_BATCH {
            let room = MAX_BATCH - batch.len();
            tokio::select! {
                biased;
                // Stopping: write this batch now, then drain below.
                _ = stop.cancelled() => break,
                received = tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, room)) => {
                    if matches!(received, Ok(0) | Err(_)) {
                        break;
                    }
                }
            }
        }
        metrics::gauge!(USAGE_LOG_BUFFER).set(rx.len() as f64);
        write_with_retries(&pool, &limiter, &mut batch).await;
    }
    // Draining: no sender can add more once the HTTP server has stopped; close the
    // channel anyway so a straggler fails fast instead of waiting for us.
    rx.close();
    loop {
        let n = rx.recv_many(&mut batch, MAX_BATCH).await;
        if n == 0 && batch.is_empty() {
            break;
        }
        write_with_retries(&pool, &limiter, &mut batch).await;
        if n == 0 {
            break;
        }
    }
    metrics::gauge!(USAGE_LOG_BUFFER).set(0.0);
    tracing::info!("usage log drained");
}

async fn write_with_retries(pool: &PgPool, limiter: &Limiter, batch: &mut Vec<UsageEntry>) {
    if batch.is_empty() {
        return;
    }
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=WRITE_ATTEMPTS {
        match write_batch(pool, batch).await {
            Ok(totals) => {
                let flushed = admitted_per_day(batch);
                for (integration_id, day, total) in totals {
                    let mine = flushed.get(&(integration_id, day)).copied().unwrap_or(0);
                    limiter.synced(integration_id, day, total, mine);
                }
                batch.clear();
                return;
            }
            Err(err) if attempt < WRITE_ATTEMPTS => {
                tracing::warn!(%err, attempt, entries = batch.len(), "writing the usage log failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(err) => {
                tracing::error!(%err, entries = batch.len(), "writing the usage log failed; entries dropped");
                metrics::counter!(USAGE_LOG_DROPPED).increment(batch.len() as u64);
                batch.clear();
            }
        }
    }
}

fn admitted_per_day(batch: &[UsageEntry]) -> HashMap<(Uuid, NaiveDate), u64> {
    let mut counts = HashMap::new();
    for e in batch.iter().filter(|e| e.admitted) {
        *counts
            .entry((e.integration_id, e.occurred_at.date_naive()))
            .or_insert(0) += 1;
    }
    counts
}

/// Writes one batch in one transaction (the log rows, then `last_used_at`, then the
/// daily counters); returns the daily totals PostgreSQL now holds for the
/// (integration, day) pairs it counted.
async fn write_batch(
    pool: &PgPool,
    batch: &[UsageEntry],
) -> Result<Vec<(Uuid, NaiveDate, u64)>, sqlx::Error> {
    let mut last_used: HashMap<Uuid, DateTime<Utc>> = HashMap::new();
    let mut logs = Vec::with_capacity(batch.len());
    for e in batch {
        logs.push(NewUsageLog {
            integration_id: IntegrationId::from(e.integration_id),
            method: &e.method,
            route: &e.route,
            status: i32::from(e.status),
            latency_us: i64::try_from(e.latency_us).unwrap_or(i64::MAX),
            client_ip: e.client_ip.as_deref(),
            occurred_at: e.occurred_at,
        });
        if e.admitted {
            let t = last_used.entry(e.integration_id).or_insert(e.occurred_at);
            *t = (*t).max(e.occurred_at);
        }
    }
    // Sorted so concurrent writers on several replicas lock rows in the same order.
    let mut used: Vec<(IntegrationId, DateTime<Utc>)> = last_used
        .into_iter()
        .map(|(id, at)| (IntegrationId::from(id), at))
        .collect();
    used.sort_unstable_by_key(|(id, _)| *id);
    let mut counts: Vec<DailyCalls> = admitted_per_day(batch)
        .into_iter()
        .map(|((id, day), n)| DailyCalls {
            integration_id: IntegrationId::from(id),
            day,
            calls: i64::try_from(n).unwrap_or(i64::MAX),
        })
        .collect();
    counts.sort_unstable_by_key(|c| (c.integration_id, c.day));

    let mut tx = pool.begin().await?;
    // Entries of an integration deleted meanwhile are skipped (its log went with it).
    usage::insert_logs(&mut *tx, &logs).await?;
    let mut totals = Vec::new();
    if !used.is_empty() {
        integrations::touch_last_used(&mut *tx, &used).await?;
        totals = integrations::add_daily_calls(&mut *tx, &counts)
            .await?
            .into_iter()
            .map(|c| {
                let calls = u64::try_from(c.calls).unwrap_or(0);
                (c.integration_id.as_uuid(), c.day, calls)
            })
            .collect();
    }
    tx.commit().await?;
    Ok(totals)
}
