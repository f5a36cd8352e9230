//! The dispatcher's configuration.

use std::net::SocketAddr;

use portico_domain::retry::RetryJitter;
use portico_runtime::config::{CommonConfig, parse_addr};

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

    /// Base64 of 32 bytes; decrypts webhook signing secrets and header values (key id
    /// `default`). Required outside dev mode unless `PORTICO_SECRETS_KEYS` is set.
    #[arg(long, env = "PORTICO_SECRETS_KEY", hide_env_values = true)]
    pub secrets_key: Option<String>,

    /// Rotating secrets keys, `kid:base64,kid:base64`, newest first; every one opens
    /// (with `PORTICO_SECRETS_KEY` after them), so a rotation never stops deliveries.
    #[arg(long, env = "PORTICO_SECRETS_KEYS", hide_env_values = true)]
    pub secrets_keys: Option<String>,

    /// CIDRs webhook URLs may reach despite the SSRF guard (comma separated).
    #[arg(long, env = "PORTICO_WEBHOOK_ALLOWLIST", default_value = "")]
    pub webhook_allowlist: String,

    /// Seconds a listen endpoint (`portico listen`) is kept after its connection went
    /// away; reconnecting within it keeps the endpoint, past it the endpoint and its
    /// deliveries are deleted. Connected tools refresh it every 15 s, so keep it well
    /// above that.
    #[arg(long, env = "PORTICO_LISTEN_TIMEOUT_SECS", default_value_t = 600)]
    pub listen_timeout_secs: u64,

    /// Events pulled and recorded per round, and the most deliveries sent and
    /// committed together: a chunk whose events fan out to more endpoints sends and
    /// commits its deliveries in groups of this many, so what one commit holds (attempt
    /// records, statement buffers) does not grow with the number of endpoints per event.
    #[arg(long, env = "PORTICO_DISPATCH_BATCH", default_value_t = 512)]
    pub dispatch_batch: usize,

    // --- webhook delivery ---
    /// Time limit of one delivery attempt (connect, request and response), in milliseconds.
    #[arg(long, env = "PORTICO_DELIVERY_TIMEOUT_MS", default_value_t = 15_000)]
    pub delivery_timeout_ms: u64,

    /// Consecutive failed attempts after which an endpoint is disabled (0 = never);
    /// its owner is warned at 80 % of it.
    #[arg(long, env = "PORTICO_DISABLE_AFTER_FAILURES", default_value_t = 50)]
    pub disable_after_failures: u32,

    /// Outgoing delivery requests in flight at once in this replica.
    #[arg(long, env = "PORTICO_DELIVERY_CONCURRENCY", default_value_t = 1024)]
    pub delivery_concurrency: usize,

    /// Requests in flight at once to one endpoint whose webhook sets no
    /// `maxConcurrency`, in this replica: with HTTP/1.1 that is also the most
    /// connections it opens to the endpoint. Without a cap a backlog opened about 1,000
    /// connections to one partner; 32 is above what a fast endpoint needs (at 10,000
    /// deliveries/s and 2 ms per answer, 20 are busy) and well below what overwhelms a
    /// small one. 64 cost more and delivered no more: each connection holds about 30 KB
    /// and its wake-ups, and 32 delivered as fast or faster with 1 and 10 endpoints
    /// (docs/BENCHMARKS.md). 0 = no default cap.
    #[arg(long, env = "PORTICO_ENDPOINT_CONCURRENCY", default_value_t = 32)]
    pub endpoint_concurrency: u32,

    /// Deliveries held in memory at once in this replica (in flight, or waiting for
    /// their group's commit). Each group of a chunk's deliveries (at most
    /// `PORTICO_DISPATCH_BATCH`) waits for room before it sends and gives it back when
    /// committed, and no new chunk is pulled while twice this many are planned and not
    /// yet committed; so however deep the backlog and however many endpoints an event
    /// fans out to, the dispatcher's memory stays bounded. Waiting chunks' jobs are kept
    /// alive with in-progress acks. 4,096 is 8 groups of 512 going at once, which kept
    /// the one-endpoint rate (its chunks overlap their commits) and, with 10 endpoints
    /// per event, held a backlog's peak near 64 MiB; 8,192 (16 groups) delivered no
    /// more and peaked 10 to 25 MiB higher (docs/BENCHMARKS.md).
    #[arg(long, env = "PORTICO_DISPATCH_MAX_DELIVERIES", default_value_t = 4096)]
    pub dispatch_max_deliveries: usize,

    /// Pulled event chunks worked on at once, so one slow endpoint does not stall the
    /// stream. With 4, a chunk's round trip (attempts, then one commit) left both cores
    /// 40 % idle under load; 16 keeps them busy (benchmarks: 4,144 -> 6,671 deliveries/s).
    #[arg(long, env = "PORTICO_DISPATCH_CHUNKS", default_value_t = 16)]
    pub dispatch_chunks: usize,

    /// How long a chunk waits for more events after its first, in milliseconds (0 =
    /// take only what is already there). Every chunk costs two statements and a WAL
    /// flush whatever its size; without a wait, events trickling in at a few thousand
    /// per second made chunks of one or two.
    #[arg(long, env = "PORTICO_DISPATCH_LINGER_MS", default_value_t = 2)]
    pub dispatch_linger_ms: u64,

    /// How often due retries are claimed, in milliseconds.
    #[arg(long, env = "PORTICO_RETRY_POLL_MS", default_value_t = 200)]
    pub retry_poll_ms: u64,

    /// Share of each scheduled retry delay taken off at random, 0.0 to 1.0: with 0.2 a
    /// delay `d` becomes a draw from `[0.8·d, d]`, so deliveries failed together by an
    /// outage do not all come back together. 0 (the default) keeps the exact schedule;
    /// `Retry-After` is never jittered.
    #[arg(long, env = "PORTICO_RETRY_JITTER", default_value_t = 0.0)]
    pub retry_jitter: f64,
}

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

impl DispatcherConfig {
    /// Refuses to start without the secrets key outside dev mode, and with settings
    /// that cannot work (an unparsable allowlist, a zero timeout, a jitter outside
    /// 0.0..=1.0). Returns the checked jitter.
    pub fn validate(&self) -> Result<RetryJitter, ConfigError> {
        if !self.common.dev_mode && self.secrets_key.is_none() && self.secrets_keys.is_none() {
            return Err(ConfigError(
                "PORTICO_SECRETS_KEY or PORTICO_SECRETS_KEYS must be set outside dev mode (PORTICO_DEV_MODE=true)".into(),
            ));
        }
        portico_domain::network::Allowlist::parse(&self.webhook_allowlist)
            .map_err(|e| ConfigError(format!("PORTICO_WEBHOOK_ALLOWLIST: {e}")))?;
        if self.listen_timeout_secs == 0 {
            return Err(ConfigError(
                "PORTICO_LISTEN_TIMEOUT_SECS must be positive".into(),
            ));
        }
        if self.delivery_timeout_ms == 0 {
            return Err(ConfigError(
                "PORTICO_DELIVERY_TIMEOUT_MS must be positive".into(),
            ));
        }
        RetryJitter::new(self.retry_jitter)
            .map_err(|e| ConfigError(format!("PORTICO_RETRY_JITTER {e}")))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn with_jitter(value: &str) -> Result<RetryJitter, ConfigError> {
        let flag = format!("--retry-jitter={value}");
        DispatcherConfig::try_parse_from(["portico-webhook-dispatcher", "--dev-mode", &flag])
            .expect("the flags parse")
            .validate()
    }

    /// No jitter by default; a fraction from 0 to 1 is taken; anything else stops the
    /// dispatcher at start with an error that names the setting.
    #[test]
    fn retry_jitter_is_checked_at_start() {
        let defaults =
            DispatcherConfig::try_parse_from(["portico-webhook-dispatcher", "--dev-mode"])
                .expect("defaults parse");
        assert_eq!(defaults.validate().ok(), Some(RetryJitter::NONE));
        assert_eq!(
            with_jitter("0.2").ok().map(RetryJitter::fraction),
            Some(0.2)
        );
        assert_eq!(with_jitter("1").ok().map(RetryJitter::fraction), Some(1.0));
        for bad in ["1.5", "-0.1", "NaN", "inf"] {
            let err = with_jitter(bad).expect_err(bad).to_string();
            assert!(
                err.starts_with(
                    "configuration: PORTICO_RETRY_JITTER must be a fraction from 0.0 to 1.0"
                ),
                "{err}"
            );
        }
    }
}
