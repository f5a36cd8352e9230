//! The connections every service starts with (PostgreSQL pool, NATS, JetStream, the
//! stream topology, the metrics recorder) and the tasks every service runs on them (the
//! admin server with its readiness check, the outbox relay), so the three services
//! start, report readiness and drain the same way.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use portico_queue::Topology;
use portico_queue::outbox::{OutboxRelay, OutboxSignal};
use portico_queue::publisher::JobPublisher;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::RuntimeError;
use crate::config::CommonConfig;
use crate::readiness::DependencyReadiness;

/// A service's connections, made once at start.
#[derive(Clone)]
pub struct Foundation {
    /// PostgreSQL, `PORTICO_DB_MAX_CONNECTIONS` connections at most.
    pub pool: PgPool,
    /// Core NATS (cache invalidations and other plain subjects).
    pub nats: async_nats::Client,
    /// JetStream on that connection.
    pub jetstream: async_nats::jetstream::Context,
    /// Stream, subject and consumer names of this deployment.
    pub topology: Topology,
    /// The Prometheus recorder behind `/metrics`.
    pub metrics: PrometheusHandle,
}

impl Foundation {
    /// Installs the metrics recorder and connects to PostgreSQL and NATS as
    /// `client_name` (the name NATS monitoring shows).
    pub async fn connect(common: &CommonConfig, client_name: &str) -> Result<Self, RuntimeError> {
        crate::limits::raise_open_files();
        crate::allocator::tune();
        tracing::debug!(
            purge_delay_ms = crate::allocator::purge_delay_ms(),
            "allocator tuned"
        );
        let metrics = portico_telemetry::metrics::install()?;
        let pool =
            portico_storage::connect(&common.database_url, common.db_max_connections).await?;
        let nats = portico_queue::connect(&common.nats_url, client_name).await?;
        let jetstream = async_nats::jetstream::new(nats.clone());
        let topology = Topology::new(&common.stream_prefix, common.stream_replicas)?;
        Ok(Self {
            pool,
            nats,
            jetstream,
            topology,
            metrics,
        })
    }

    /// The readiness check of this service: PostgreSQL with a schema at least as new
    /// as this binary's migrations, and the JetStream server answering for the stream.
    pub fn readiness(&self) -> Arc<DependencyReadiness> {
        Arc::new(DependencyReadiness {
            pool: self.pool.clone(),
            jetstream: self.jetstream.clone(),
            stream: self.topology.jobs_stream(),
            schema_version: portico_storage::schema_version(),
        })
    }

    /// Serves `/healthz`, `/readyz` and `/metrics` on `listener` until `shutdown`
    /// (the workers' whole HTTP surface; the gateway merges [`crate::admin::router`]
    /// into its REST router instead).
    pub fn spawn_admin(
        &self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> JoinHandle<std::io::Result<()>> {
        tracing::info!(http = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "listening");
        let router = crate::admin::router(self.readiness(), self.metrics.clone());
        tokio::spawn(crate::admin::serve(listener, router, shutdown))
    }

    /// Runs this service's outbox relay until `stop`: it publishes the jobs the
    /// service's transactions enqueued (woken by `signal`) and sweeps for those of
    /// replicas that died before publishing.
    pub fn spawn_relay(&self, signal: OutboxSignal, stop: CancellationToken) -> JoinHandle<()> {
        let publisher = JobPublisher::new(self.jetstream.clone(), self.topology.clone());
        tokio::spawn(OutboxRelay::new(self.pool.clone(), publisher, signal).run(stop))
    }
}
