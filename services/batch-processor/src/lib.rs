//! Portico's batch-processor: consumes bulk-order batch jobs, validates and records
//! every order in set-based chunks, keeps batch progress, and emits completion events.
//!
//! # Layout
//! - [`config`]: flags and environment.
//! - [`context`]: what the steps below share: the [`context::Processor`], the batch
//!   being processed ([`context::BatchRef`]) and [`context::ProcessError`].
//! - [`batches`]: processing one batch: claim, chunks, cancel, finish.
//! - [`chunks`]: one chunk of orders in one transaction (validate, dedupe, insert).
//! - [`events`]: `order.created` and `bulk_order.completed`, through the outbox.
//! - [`retention`]: deleting batches whose results have expired.
//!
//! The processor runs its own outbox relay beside the gateway's, so the events it
//! commits are published promptly even when no gateway replica is running; relays
//! share the outbox table safely (`FOR UPDATE SKIP LOCKED`, deduplicated message ids).
//!
//! [`run`] is the seam: the binary binds the admin listener and calls it.

pub mod batches;
pub mod chunks;
pub mod config;
pub mod context;
pub mod events;
pub mod retention;

use std::sync::Arc;

use portico_queue::consumer::{JobStream, Outcome, run_bounded};
use portico_queue::jobs::Job;
use portico_queue::outbox::OutboxSignal;
use portico_queue::setup::{ConsumerSettings, ensure_consumer};
use portico_queue::topology::JobKind;
use portico_runtime::Foundation;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::ProcessorConfig;
use crate::context::Processor;

/// Why the processor stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    /// Connecting at start-up failed.
    #[error(transparent)]
    Start(#[from] portico_runtime::RuntimeError),
    /// NATS or JetStream failed.
    #[error(transparent)]
    Queue(#[from] portico_queue::QueueError),
    /// The admin listener failed.
    #[error("admin server: {0}")]
    Admin(#[from] std::io::Error),
}

/// Runs until `shutdown`: stops pulling, lets batches in hand finish their current
/// chunk, then returns.
pub async fn run(
    config: ProcessorConfig,
    admin_listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ProcessorError> {
    let base = Foundation::connect(&config.common, "portico-batch-processor").await?;
    let pool = base.pool.clone();
    let settings = ConsumerSettings {
        max_ack_pending: 64,
        ack_wait: std::time::Duration::from_secs(config.common.ack_wait_secs.max(1)),
        ..ConsumerSettings::default()
    };
    let consumer = ensure_consumer(
        &base.jetstream,
        &base.topology,
        JobKind::BulkOrderBatch,
        &settings,
    )
    .await?;
    let admin = base.spawn_admin(admin_listener, shutdown.clone());

    let outbox = OutboxSignal::default();
    // Stopped only after the batch tasks finished, so their last events are drained.
    let relay_stop = CancellationToken::new();
    let relay = base.spawn_relay(outbox.clone(), relay_stop.clone());
    let retention = tokio::spawn(retention::run(
        pool.clone(),
        std::time::Duration::from_secs(config.retention_interval_secs),
        config.retention(),
        config.rollup_retention(),
        shutdown.child_token(),
    ));
    let pending = tokio::spawn(portico_queue::consumer::report_pending(
        base.jetstream.clone(),
        vec![("batch-processor", consumer.clone())],
        shutdown.child_token(),
    ));
    let processor = Arc::new(Processor {
        pool: pool.clone(),
        topology: base.topology.clone(),
        outbox,
        live: portico_queue::live::LivePublisher::new(base.nats.clone(), base.topology.clone()),
        chunk_concurrency: config.chunk_concurrency,
        keep_alive_every: (settings.ack_wait / 3).max(std::time::Duration::from_millis(300)),
    });

    let stream = JobStream::open(&consumer, pool.clone(), "batch-processor", 1).await?;
    tracing::info!("batch-processor consuming");
    let stopping = shutdown.clone();
    run_bounded(
        stream,
        config.batch_concurrency,
        shutdown.clone(),
        move |message| {
            let processor = Arc::clone(&processor);
            let shutdown = stopping.clone();
            async move {
                let outcome = match &message.job {
                    Job::BulkOrderBatchV1 { batch_id } => {
                        batches::process(&processor, *batch_id, &message, &shutdown).await
                    }
                    other => Outcome::Poison(format!("unexpected job {other:?}")),
                };
                (message, outcome)
            }
        },
    )
    .await;
    relay_stop.cancel();
    let _ = relay.await;
    let _ = retention.await;
    let _ = pending.await;
    let _ = admin.await;
    pool.close().await;
    tracing::info!("batch-processor stopped");
    Ok(())
}
