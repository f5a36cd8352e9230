//! The transactional outbox.
//!
//! Where committed PostgreSQL state must lead to a job (a batch to process, a retry job
//! to run), the job is written to the `outbox` table in the same transaction as the
//! state, so the two cannot diverge. The [`OutboxRelay`] publishes rows to JetStream
//! with `Nats-Msg-Id` = the row's message id and deletes them only after JetStream
//! acknowledged; a crash in between re-publishes, and JetStream drops the duplicate.
//! Several relays (one per replica) share the table through `FOR UPDATE SKIP LOCKED`.
//! The statements are [`portico_storage::outbox`]'s; this module decides what a row
//! holds (subject, message id, encoded job, trace headers) and publishes it.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use portico_storage::outbox::{NewOutboxRow, NewOutboxRows};
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::QueueError;
use crate::jobs::Job;
use crate::publisher::{JobPublisher, confirm};

/// Rows published per relay round.
const BATCH: i64 = 500;
/// How often the relay sweeps when nobody woke it (catches other replicas' crashes).
const SWEEP_INTERVAL: Duration = Duration::from_millis(500);

/// Adds `job` to the outbox inside the caller's transaction.
pub async fn enqueue(
    tx: &mut Transaction<'_, Postgres>,
    publisher_topology: &crate::Topology,
    job: &Job,
) -> Result<(), QueueError> {
    enqueue_as(tx, publisher_topology, job, &job.message_id()).await
}

/// Adds `job` to the outbox under an explicit `Nats-Msg-Id` instead of the job's own:
/// a replayed dead letter must not reuse the id JetStream may still hold in its
/// duplicate window, or the replay would be dropped as a duplicate.
pub async fn enqueue_as(
    tx: &mut Transaction<'_, Postgres>,
    publisher_topology: &crate::Topology,
    job: &Job,
    message_id: &str,
) -> Result<(), QueueError> {
    portico_storage::outbox::insert(
        &mut **tx,
        &publisher_topology.subject(job.kind()),
        message_id,
        &job.encode()?,
        &current_headers_json(),
    )
    .await?;
    Ok(())
}

/// Adds many jobs to the outbox inside the caller's transaction with one statement,
/// so a thousand jobs (a chunk of orders' `order.created` events) cost one round trip.
pub async fn enqueue_all(
    tx: &mut Transaction<'_, Postgres>,
    publisher_topology: &crate::Topology,
    jobs: &[Job],
) -> Result<(), QueueError> {
    if jobs.is_empty() {
        return Ok(());
    }
    let mut rows = NewOutboxRows::with_capacity(jobs.len());
    for job in jobs {
        rows.push(NewOutboxRow {
            subject: publisher_topology.subject(job.kind()),
            message_id: job.message_id(),
            payload: job.encode()?,
        });
    }
    portico_storage::outbox::insert_all(&mut **tx, &rows, &current_headers_json()).await?;
    Ok(())
}

/// The current span's trace context as the JSON object stored in `outbox.headers`.
fn current_headers_json() -> serde_json::Value {
    let mut headers = HeaderMap::new();
    portico_telemetry::propagation::inject_current(&mut headers);
    let headers_json: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .filter_map(|(k, v)| {
            v.first().map(|v| {
                (
                    k.to_string(),
                    serde_json::Value::String(v.as_str().to_owned()),
                )
            })
        })
        .collect();
    serde_json::Value::Object(headers_json)
}

/// A handle to wake the relay right after a commit, so outbox latency is a round
/// trip, not a sweep interval.
#[derive(Clone, Default)]
pub struct OutboxSignal(Arc<Notify>);

impl OutboxSignal {
    /// Wakes the relay.
    pub fn notify(&self) {
        self.0.notify_one();
    }
}

/// Publishes outbox rows until cancelled.
pub struct OutboxRelay {
    pool: PgPool,
    publisher: JobPublisher,
    signal: OutboxSignal,
}

impl OutboxRelay {
    /// A relay over `pool`, woken by `signal`.
    pub fn new(pool: PgPool, publisher: JobPublisher, signal: OutboxSignal) -> Self {
        Self {
            pool,
            publisher,
            signal,
        }
    }

    /// Runs until `shutdown`; on shutdown it drains what is left once more.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut gauge_tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            match self.drain_once().await {
                Ok(n) if n as i64 == BATCH => continue,
                Ok(_) => {}
                Err(err) => tracing::warn!(%err, "outbox relay round failed; will retry"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.signal.0.notified() => {}
                _ = tokio::time::sleep(SWEEP_INTERVAL) => {}
                _ = gauge_tick.tick() => self.report_backlog().await,
            }
        }
        if let Err(err) = self.drain_once().await {
            tracing::warn!(%err, "final outbox drain failed; rows stay for the next relay");
        }
    }

    /// Publishes one round of rows; returns how many were published.
    pub async fn drain_once(&self) -> Result<usize, QueueError> {
        let mut tx = self.pool.begin().await?;
        let rows = portico_storage::outbox::claim(&mut *tx, BATCH).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut acks = Vec::with_capacity(rows.len());
        let mut ids = Vec::with_capacity(rows.len());
        for row in rows {
            let mut headers = HeaderMap::new();
            if let serde_json::Value::Object(map) = row.headers {
                for (k, v) in map {
                    if let serde_json::Value::String(v) = v {
                        headers.insert(k.as_str(), v.as_str());
                    }
                }
            }
            acks.push(confirm(
                self.publisher
                    .publish_raw(row.subject, &row.message_id, row.payload, headers)
                    .await?,
            ));
            ids.push(row.id);
        }
        futures::future::try_join_all(acks).await?;
        portico_storage::outbox::delete(&mut *tx, &ids).await?;
        tx.commit().await?;
        Ok(ids.len())
    }

    async fn report_backlog(&self) {
        if let Ok(backlog) = portico_storage::outbox::backlog(&self.pool).await {
            metrics::gauge!(portico_telemetry::metrics::OUTBOX_PENDING).set(backlog.pending as f64);
            metrics::gauge!(portico_telemetry::metrics::OUTBOX_OLDEST_AGE)
                .set(backlog.oldest_age_secs.unwrap_or(0.0));
        }
    }
}
