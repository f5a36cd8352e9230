//! Portico's webhook-dispatcher: consumes accepted events from JetStream, records them,
//! signs and delivers them to every matching webhook, records every attempt, and
//! schedules retries.
//!
//! # Layout
//! - [`config`]: flags and environment.
//! - [`events`]: recording event jobs in set-based batches.
//!
//! [`run`] is the seam: the binary binds the admin listener and calls it.

pub mod config;
pub mod events;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use portico_queue::Topology;
use portico_queue::consumer::JobStream;
use portico_queue::readiness::DependencyReadiness;
use portico_queue::setup::{ConsumerSettings, ensure_consumer};
use portico_queue::topology::JobKind;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::DispatcherConfig;

/// Why the dispatcher stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DispatcherError {
    /// The configuration cannot run.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
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

/// How long shutdown waits for more already-pulled jobs before it stops draining.
const DRAIN_IDLE: Duration = Duration::from_millis(300);
/// The longest shutdown keeps draining under continuous load.
const DRAIN_LIMIT: Duration = Duration::from_secs(3);

fn successful(
    chunk: Vec<Result<portico_queue::consumer::JobMessage, portico_queue::QueueError>>,
) -> Vec<portico_queue::consumer::JobMessage> {
    chunk
        .into_iter()
        .filter_map(|item| {
            item.map_err(|err| tracing::warn!(%err, "pull failed; continuing"))
                .ok()
        })
        .collect()
}

/// Runs until `shutdown`: stops pulling, finishes the chunk in hand, then returns.
pub async fn run(
    config: DispatcherConfig,
    admin_listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), DispatcherError> {
    config.validate()?;
    let metrics = portico_telemetry::metrics::install()?;
    let pool = portico_storage::connect(
        &config.common.database_url,
        config.common.db_max_connections,
    )
    .await?;
    let nats =
        portico_queue::connect(&config.common.nats_url, "portico-webhook-dispatcher").await?;
    let js = async_nats::jetstream::new(nats.clone());
    let topology = Topology::new(&config.common.stream_prefix, config.common.stream_replicas)?;
    let consumer = ensure_consumer(
        &js,
        &topology,
        JobKind::EventDispatch,
        &ConsumerSettings::default(),
    )
    .await?;

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

    let stream = JobStream::open(
        &consumer,
        pool.clone(),
        "webhook-dispatcher.events",
        config.dispatch_batch,
    )
    .await?;
    let mut chunks = futures::stream::unfold(stream, |mut s| async move {
        s.next().await.map(|item| (item, s))
    })
    .ready_chunks(config.dispatch_batch)
    .boxed();
    tracing::info!("webhook-dispatcher consuming");
    loop {
        let chunk = tokio::select! {
            _ = shutdown.cancelled() => break,
            chunk = chunks.next() => chunk,
        };
        let Some(chunk) = chunk else { break };
        events::record_chunk(&pool, successful(chunk)).await;
    }
    // Jobs already pulled into this process would otherwise wait a full ack_wait
    // before JetStream hands them to another replica: record what keeps arriving
    // until the stream is quiet (bounded), then stop.
    let drain_until = tokio::time::Instant::now() + DRAIN_LIMIT;
    while tokio::time::Instant::now() < drain_until {
        match tokio::time::timeout(DRAIN_IDLE, chunks.next()).await {
            Ok(Some(chunk)) => events::record_chunk(&pool, successful(chunk)).await,
            Ok(None) | Err(_) => break,
        }
    }
    drop(chunks);
    let _ = admin.await;
    pool.close().await;
    tracing::info!("webhook-dispatcher stopped");
    Ok(())
}
