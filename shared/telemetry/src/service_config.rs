//! Settings every Portico service shares, flattened into each service's own clap
//! struct so `--help` and the environment names are identical everywhere.

use std::net::SocketAddr;

use crate::logging::LogFormat;

/// Connection and runtime settings common to the gateway and both workers.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonConfig {
    /// PostgreSQL, the system of record.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/portico"
    )]
    pub database_url: String,

    /// Largest number of pooled PostgreSQL connections this process opens.
    #[arg(long, env = "PORTICO_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// NATS server with JetStream enabled.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// Prefix of JetStream stream, subject and consumer names; isolates deployments and test runs.
    #[arg(long, env = "PORTICO_STREAM_PREFIX", default_value = "PORTICO")]
    pub stream_prefix: String,

    /// JetStream stream replicas (3 on a clustered JetStream).
    #[arg(long, env = "PORTICO_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,

    /// Log line format: `json` (one object per line) or `pretty`.
    #[arg(long, env = "PORTICO_LOG_FORMAT", default_value = "json")]
    pub log_format: LogFormat,

    /// Seconds a pulled job may stay unacknowledged before JetStream hands it to another
    /// replica: the longest a crashed worker's jobs wait before they are retried.
    #[arg(long, env = "PORTICO_ACK_WAIT_SECS", default_value_t = 30)]
    pub ack_wait_secs: u64,

    /// Development mode: allows running without secrets (insecure fixed keys are used).
    #[arg(long, env = "PORTICO_DEV_MODE", default_value_t = false)]
    pub dev_mode: bool,
}

/// The admin/HTTP address of a service, with the default the service documents.
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|e| format!("{text:?} is not host:port: {e}"))
}
