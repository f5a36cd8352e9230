//! The batch-processor's configuration.

use std::net::SocketAddr;

use portico_telemetry::service_config::{CommonConfig, parse_addr};

/// Everything the batch-processor reads at start-up.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "portico-batch-processor",
    version,
    about = "Portico batch processor: validates and records bulk orders"
)]
pub struct ProcessorConfig {
    /// Shared settings (database, NATS, stream prefix, logs, dev mode).
    #[command(flatten)]
    pub common: CommonConfig,

    /// Admin endpoints: `/healthz`, `/readyz`, `/metrics`.
    #[arg(long, env = "PORTICO_HTTP_ADDR", default_value = "127.0.0.1:8081", value_parser = parse_addr)]
    pub http_addr: SocketAddr,

    /// Batches processed at the same time by this replica.
    #[arg(long, env = "PORTICO_BATCH_CONCURRENCY", default_value_t = 2)]
    pub batch_concurrency: usize,

    // Bulk orders.
    /// Chunks (1,000 orders each) of one batch processed at the same time, each in its
    /// own transaction.
    #[arg(long, env = "PORTICO_CHUNK_CONCURRENCY", default_value_t = 4)]
    pub chunk_concurrency: usize,

    /// How often expired batches and their results are deleted, in seconds.
    #[arg(long, env = "PORTICO_RETENTION_INTERVAL_SECS", default_value_t = 3600)]
    pub retention_interval_secs: u64,
}
