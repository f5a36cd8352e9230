//! Portico's batch-processor: consumes bulk-order batch jobs, validates and records
//! every order in set-based chunks, keeps batch progress, and emits completion events.
//!
//! # Layout
//! - [`config`]: flags and environment.
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
pub mod events;
pub mod retention;

use std::sync::Arc;

use portico_queue::Topology;
use portico_queue::consumer::{JobStream, Outcome, run_bounded};
use portico_queue::jobs::Job;
use portico_queue::outbox::{OutboxRelay, OutboxSignal};
use portico_queue::publisher::JobPublisher;
use portico_queue::readiness::DependencyReadiness;
use portico_queue::setup::{ConsumerSettings, ensure_consumer};
use portico_queue::topology::JobKind;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::batches::Processor;
use crate::config::ProcessorConfig;

/// Why the processor stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    /// PostgreSQL failed at start-up.
    #[error(transparent)]
    Storage(#[from] portico_storage::StorageError),
    /// NATS or JetStream failed.
    #[error(transparent)]
    Queue(#[from] portico_queue::QueueError),
    /// Telemetry could not be installed.
    #[error(transparent)]
    Telemetry(#[from] portico_telemetry::TelemetryError),
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
    let metrics = portico_telemetry::metrics::install()?;
    let pool = portico_storage::connect(
        &config.common.database_url,
        config.common.db_max_connections,
    )
    .await?;
    let nats = portico_queue::connect(&config.common.nats_url, "portico-batch-processor").await?;
    let js = async_nats::jetstream::new(nats.clone());
    let topology = Topology::new(&config.common.stream_prefix, config.common.stream_replicas)?;
    let settings = ConsumerSettings {
        max_ack_pending: 64,
        ack_wait: std::time::Duration::from_secs(config.common.ack_wait_secs.max(1)),
        ..ConsumerSettings::default()
    };
    let consumer = ensure_consumer(&js, &topology, JobKind::BulkOrderBatch, &settings).await?;
    let readiness = Arc::new(DependencyReadiness {
        pool: pool.clone(),
        jetstream: js.clone(),
        stream: topology.jobs_stream(),
        schema_version: portico_storage::schema_version(),
    });
    tracing::info!(http = %admin_listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "listening");
    let admin = tokio::spawn(portico_telemetry::admin::serve(
        admin_listener,
        portico_telemetry::admin::router(readiness, metrics),
        shutdown.clone(),
    ));

    let outbox = OutboxSignal::default();
    // Stopped only after the batch tasks finished, so their last events are drained.
    let relay_stop = CancellationToken::new();
    let relay = tokio::spawn(
        OutboxRelay::new(
            pool.clone(),
            JobPublisher::new(js.clone(), topology.clone()),
            outbox.clone(),
        )
        .run(relay_stop.clone()),
    );
    let retention = tokio::spawn(retention::run(
        pool.clone(),
        std::time::Duration::from_secs(config.retention_interval_secs),
        config.retention(),
        shutdown.child_token(),
    ));
    let pending = tokio::spawn(portico_queue::consumer::report_pending(
        vec![("batch-processor", consumer.clone())],
        shutdown.child_token(),
    ));
    let processor = Arc::new(Processor {
        pool: pool.clone(),
        topology: topology.clone(),
        outbox,
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
