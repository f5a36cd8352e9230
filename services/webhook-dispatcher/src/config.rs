//! The dispatcher's configuration.

use std::net::SocketAddr;

use portico_telemetry::service_config::{CommonConfig, parse_addr};

/// Everything the webhook-dispatcher reads at start-up.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "portico-webhook-dispatcher",
    version,
    about = "Portico webhook dispatcher: signs and delivers events"
)]
pub struct DispatcherConfig {
    /// Shared settings (database, NATS, stream prefix, logs, dev mode).
    #[command(flatten)]
    pub common: CommonConfig,

    /// Admin endpoints: `/healthz`, `/readyz`, `/metrics`.
    #[arg(long, env = "PORTICO_HTTP_ADDR", default_value = "127.0.0.1:8082", value_parser = parse_addr)]
    pub http_addr: SocketAddr,

    /// Base64 of 32 bytes; decrypts webhook signing secrets. Required outside dev mode.
    #[arg(long, env = "PORTICO_SECRETS_KEY", hide_env_values = true)]
    pub secrets_key: Option<String>,

    /// CIDRs webhook URLs may reach despite the SSRF guard (comma separated).
    #[arg(long, env = "PORTICO_WEBHOOK_ALLOWLIST", default_value = "")]
    pub webhook_allowlist: String,

    /// Events pulled and recorded per round.
    #[arg(long, env = "PORTICO_DISPATCH_BATCH", default_value_t = 512)]
    pub dispatch_batch: usize,
}

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

impl DispatcherConfig {
    /// Refuses to start without the secrets key outside dev mode.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.common.dev_mode && self.secrets_key.is_none() {
            return Err(ConfigError(
                "PORTICO_SECRETS_KEY must be set outside dev mode (PORTICO_DEV_MODE=true)".into(),
            ));
        }
        Ok(())
    }
}
