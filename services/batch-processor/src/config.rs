//! The batch-processor's configuration.

use std::net::SocketAddr;

use portico_runtime::config::{CommonConfig, parse_addr};

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

    /// How often expired batches and their results, and history past its retention,
    /// are deleted, in seconds.
    #[arg(long, env = "PORTICO_RETENTION_INTERVAL_SECS", default_value_t = 3600)]
    pub retention_interval_secs: u64,

    /// Days a final (succeeded or failed) delivery and its attempts are kept; 0 = forever.
    #[arg(long, env = "PORTICO_DELIVERY_RETENTION_DAYS", default_value_t = 30)]
    pub delivery_retention_days: u32,

    /// Days an attempt record is kept, even while its delivery is; 0 = forever.
    #[arg(long, env = "PORTICO_ATTEMPT_RETENTION_DAYS", default_value_t = 30)]
    pub attempt_retention_days: u32,

    /// Days an event is kept once no delivery refers to it; 0 = forever.
    #[arg(long, env = "PORTICO_EVENT_RETENTION_DAYS", default_value_t = 30)]
    pub event_retention_days: u32,

    /// Days a partner usage-log row is kept (daily call counts stay); 0 = forever.
    #[arg(long, env = "PORTICO_USAGE_LOG_RETENTION_DAYS", default_value_t = 90)]
    pub usage_log_retention_days: u32,

    /// Days a dead-letter record is kept; 0 = forever.
    #[arg(long, env = "PORTICO_DEAD_LETTER_RETENTION_DAYS", default_value_t = 90)]
    pub dead_letter_retention_days: u32,

    /// Days an audit record is kept; the oldest of each owner's chain go and the
    /// chain's anchor moves, so verification still holds; 0 = forever.
    #[arg(long, env = "PORTICO_AUDIT_RETENTION_DAYS", default_value_t = 400)]
    pub audit_retention_days: u32,

    /// Days hour and day delivery-analytics rollups are kept (longer than the raw
    /// history they summarise); 0 = forever.
    #[arg(long, env = "PORTICO_ROLLUP_RETENTION_DAYS", default_value_t = 400)]
    pub rollup_retention_days: u32,

    /// Days minute delivery-analytics rollups are kept (ranges older than this are
    /// answered to the hour); 0 = forever.
    #[arg(
        long,
        env = "PORTICO_ROLLUP_MINUTE_RETENTION_DAYS",
        default_value_t = 14
    )]
    pub rollup_minute_retention_days: u32,
}

impl ProcessorConfig {
    /// The history retention these settings ask for.
    pub fn retention(&self) -> portico_storage::retention::Retention {
        portico_storage::retention::Retention {
            delivery_days: self.delivery_retention_days,
            attempt_days: self.attempt_retention_days,
            event_days: self.event_retention_days,
            usage_log_days: self.usage_log_retention_days,
            dead_letter_days: self.dead_letter_retention_days,
            audit_days: self.audit_retention_days,
        }
    }

    /// The delivery-analytics rollup retention these settings ask for.
    pub fn rollup_retention(&self) -> portico_storage::analytics::RollupRetention {
        portico_storage::analytics::RollupRetention {
            days: self.rollup_retention_days,
            minute_days: self.rollup_minute_retention_days,
        }
    }
}
