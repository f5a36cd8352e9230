//! Settings every Portico service shares, flattened into each service's own clap
//! struct so `--help` and the environment names are identical everywhere.

use std::net::SocketAddr;

use portico_telemetry::logging::LogFormat;

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
    /// replica: the longest a crashed worker's jobs wait before they are retried. Work
    /// that takes longer (a slow endpoint, a large batch) keeps its jobs with
    /// in-progress acknowledgements every third of this, so it can stay short.
    #[arg(long, env = "PORTICO_ACK_WAIT_SECS", default_value_t = 5)]
    pub ack_wait_secs: u64,

    /// This replica's stable name (default: the host name, which is the pod name on
    /// Kubernetes). A restarted replica takes back at once the work it had claimed
    /// before it died, so two live replicas must never share a name.
    #[arg(long, env = "PORTICO_REPLICA_ID")]
    pub replica_id: Option<String>,

    /// Development mode: allows running without secrets (insecure fixed keys are used).
    #[arg(long, env = "PORTICO_DEV_MODE", default_value_t = false)]
    pub dev_mode: bool,
}

impl CommonConfig {
    /// The configured replica name, or the host name, or `portico` when neither is known.
    pub fn replica_id(&self) -> String {
        self.replica_id
            .clone()
            .filter(|r| !r.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
                    .filter(|h| !h.is_empty())
            })
            .unwrap_or_else(|| "portico".to_owned())
    }
}

/// The admin/HTTP address of a service, with the default the service documents.
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|e| format!("{text:?} is not host:port: {e}"))
}
