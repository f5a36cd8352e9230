//! Portico's batch-processor: consumes bulk-order batch jobs, validates and records
//! every order in set-based chunks, keeps batch progress, and emits completion events.
//!
//! # Layout
//! - [`config`]: flags and environment.
//! - [`batches`]: processing one batch.
//!
//! [`run`] is the seam: the binary binds the admin listener and calls it.

pub mod batches;
pub mod config;

use std::sync::Arc;

use portico_queue::Topology;
use portico_queue::consumer::JobStream;
use portico_queue::jobs::Job;
use portico_queue::readiness::DependencyReadiness;
use portico_queue::setup::{ConsumerSettings, ensure_consumer};
use portico_queue::topology::JobKind;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

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
    });
    tracing::info!(http = %admin_listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "listening");
    let admin = tokio::spawn(portico_telemetry::admin::serve(
        admin_listener,
        portico_telemetry::admin::router(readiness, metrics),
        shutdown.clone(),
    ));

    let permits = Arc::new(Semaphore::new(config.batch_concurrency.max(1)));
    let mut stream = JobStream::open(&consumer, pool.clone(), "batch-processor", 1).await?;
    let mut tasks = tokio::task::JoinSet::new();
    tracing::info!("batch-processor consuming");
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let message = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = stream.next() => m,
        };
        let Some(message) = message else { break };
        let message = match message {
            Ok(m) => m,
            Err(err) => {
                tracing::warn!(%err, "pull failed; continuing");
                continue;
            }
        };
        let pool = pool.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let outcome = match &message.job {
                Job::BulkOrderBatchV1 { batch_id } => {
                    let _ = &shutdown;
                    batches::process(&pool, *batch_id, &message).await
                }
                other => {
                    portico_queue::consumer::Outcome::Poison(format!("unexpected job {other:?}"))
                }
            };
            if let Err(err) = message.finish(outcome).await {
                tracing::warn!(%err, "ack failed; the batch will be redelivered and resumed");
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    drop(stream);
    while tasks.join_next().await.is_some() {}
    let _ = admin.await;
    pool.close().await;
    tracing::info!("batch-processor stopped");
    Ok(())
}
