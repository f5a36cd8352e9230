//! The gateway's configuration: environment variables with command-line flags over
//! them, each with a default that works on a developer's machine.

use std::net::SocketAddr;

use portico_domain::network::Allowlist;
use portico_domain::webhooks::RetryPolicy;
use portico_runtime::config::{CommonConfig, parse_addr};
use portico_signing::keyed_hash::Peppers;
use portico_signing::seal::Keyring;

/// The command line: `portico-gateway [serve]` or `portico-gateway migrate`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "portico-gateway",
    version,
    about = "Portico gateway: REST and gRPC in front of Portico's queues"
)]
pub struct Cli {
    /// What to do; serving is the default.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings.
    #[command(flatten)]
    pub config: GatewayConfig,
}

/// Sub-commands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Serve REST and gRPC (the default).
    Serve,
    /// Apply the embedded database migrations and exit (the Kubernetes migrations Job).
    Migrate,
    /// Re-seal every stored secret (webhook signing secrets, custom header values)
    /// under the newest key of `PORTICO_SECRETS_KEYS`, in batches, and exit.
    /// Idempotent and resumable: values already under the newest key are skipped, and
    /// a value changed meanwhile is left as its writer left it. Run after adding a key,
    /// before removing the old one. Also reports live API credentials per pepper id.
    Reseal {
        /// Rows read and written per statement.
        #[arg(long, env = "PORTICO_RESEAL_BATCH", default_value_t = 500)]
        batch: i64,
    },
    /// After a restore next to an empty JetStream: put a fresh job for every
    /// unfinished batch and retry-failed job into the outbox (the relays publish it)
    /// and exit. Their old messages were in the lost stream; run it once, before the
    /// workers start, never against a stream that still holds them.
    Requeue,
}

/// Everything the gateway reads at start-up.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayConfig {
    /// Shared settings (database, NATS, stream prefix, logs, dev mode).
    #[command(flatten)]
    pub common: CommonConfig,

    /// REST API, `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "PORTICO_HTTP_ADDR", default_value = "127.0.0.1:8080", value_parser = parse_addr)]
    pub http_addr: SocketAddr,

    /// gRPC API (with grpc.health.v1 and reflection).
    #[arg(long, env = "PORTICO_GRPC_ADDR", default_value = "127.0.0.1:50051", value_parser = parse_addr)]
    pub grpc_addr: SocketAddr,

    /// HS256 secret of user JWTs. Outside dev mode, this or `PORTICO_JWKS_URL` is
    /// required; without it (and with a JWKS), HS256 tokens are refused.
    #[arg(long, env = "PORTICO_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// URL of the platform's JSON Web Key Set: user tokens signed RS256 or ES256 with
    /// one of its keys are accepted. Fetched at start, every
    /// `PORTICO_JWKS_REFRESH_SECS`, and when a token names an unknown key id.
    #[arg(long, env = "PORTICO_JWKS_URL")]
    pub jwks_url: Option<String>,

    /// How often the JWKS is fetched again, in seconds.
    #[arg(long, env = "PORTICO_JWKS_REFRESH_SECS", default_value_t = 300)]
    pub jwks_refresh_secs: u64,

    /// When set, user tokens must carry this `iss`.
    #[arg(long, env = "PORTICO_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// When set, user tokens' `aud` must be or contain this.
    #[arg(long, env = "PORTICO_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// When above 0, user tokens may live at most this many seconds (`exp - iat`).
    #[arg(long, env = "PORTICO_JWT_MAX_LIFETIME_SECS", default_value_t = 0)]
    pub jwt_max_lifetime_secs: i64,

    /// Bearer token of internal services. Without it, internal callers are refused.
    #[arg(long, env = "PORTICO_SERVICE_TOKEN", hide_env_values = true)]
    pub service_token: Option<String>,

    /// Bearer token of operators: the admin API (`/api/admin/...`, e.g. dead letters)
    /// accepts it and nothing else. Without it, the admin routes answer 404. At least
    /// 16 bytes, and not the service token.
    #[arg(long, env = "PORTICO_OPERATOR_TOKEN", hide_env_values = true)]
    pub operator_token: Option<String>,

    /// Base64 of 32 bytes; encrypts webhook signing secrets and custom header values at
    /// rest (key id `default`). Required outside dev mode unless `PORTICO_SECRETS_KEYS`
    /// is set.
    #[arg(long, env = "PORTICO_SECRETS_KEY", hide_env_values = true)]
    pub secrets_key: Option<String>,

    /// Rotating secrets keys, `kid:base64,kid:base64`, newest first: the newest seals,
    /// every one (and `PORTICO_SECRETS_KEY` after them) opens; `portico-gateway reseal`
    /// moves every stored value to the newest.
    #[arg(long, env = "PORTICO_SECRETS_KEYS", hide_env_values = true)]
    pub secrets_keys: Option<String>,

    /// Server-side pepper of API secret hashes (pepper id `default`). Required outside
    /// dev mode unless `PORTICO_API_KEY_PEPPERS` is set.
    #[arg(long, env = "PORTICO_API_KEY_PEPPER", hide_env_values = true)]
    pub api_key_pepper: Option<String>,

    /// Rotating peppers, `id:pepper,id:pepper`, newest first: the newest hashes new
    /// secrets, a stored hash is verified with the pepper it names.
    #[arg(long, env = "PORTICO_API_KEY_PEPPERS", hide_env_values = true)]
    pub api_key_peppers: Option<String>,

    /// CIDRs webhook URLs may reach despite the SSRF guard (comma separated, e.g. `127.0.0.0/8`).
    #[arg(long, env = "PORTICO_WEBHOOK_ALLOWLIST", default_value = "")]
    pub webhook_allowlist: String,

    /// Apply migrations at start (safe with several replicas: migrations take a lock).
    #[arg(long, env = "PORTICO_MIGRATE_ON_START", default_value_t = false)]
    pub migrate_on_start: bool,

    /// Largest JSON request body, in bytes (bulk NDJSON uploads have their own limit).
    #[arg(long, env = "PORTICO_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Largest event payload (`data`), in bytes.
    #[arg(long, env = "PORTICO_MAX_EVENT_BYTES", default_value_t = 256 * 1024)]
    pub max_event_bytes: usize,

    /// Time limit of one REST or gRPC request, in milliseconds.
    #[arg(long, env = "PORTICO_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,

    // Webhooks API: the retry policy a webhook gets when its creator sets none.
    /// Default `retryPolicy.maxRetries` of new webhooks (0..=20).
    #[arg(long, env = "PORTICO_DEFAULT_MAX_RETRIES", default_value_t = 5)]
    pub default_max_retries: u32,

    /// Default `retryPolicy.baseDelayMs` of new webhooks (100..=3,600,000).
    #[arg(long, env = "PORTICO_DEFAULT_BASE_DELAY_MS", default_value_t = 1_000)]
    pub default_base_delay_ms: u64,

    /// Default `retryPolicy.maxDelayMs` of new webhooks (>= the base delay, <= 86,400,000).
    #[arg(long, env = "PORTICO_DEFAULT_MAX_DELAY_MS", default_value_t = 300_000)]
    pub default_max_delay_ms: u64,
    // --- Partner integrations and API credentials ---
    /// Requests per second a new integration may make when its creator sets no limit
    /// (token bucket, burst twice the rate, per gateway replica). 0 = no limit.
    #[arg(long, env = "PORTICO_DEFAULT_PARTNER_RATE_LIMIT", default_value_t = 50)]
    pub default_partner_rate_limit: u32,

    /// Calls per UTC day a new integration may make when its creator sets no quota. 0 = no quota.
    #[arg(long, env = "PORTICO_DEFAULT_PARTNER_DAILY_QUOTA", default_value_t = 0)]
    pub default_partner_daily_quota: u64,

    /// How long a regenerated integration's previous secret keeps working when the
    /// request names no grace period, in seconds.
    #[arg(
        long,
        env = "PORTICO_CREDENTIAL_GRACE_SECONDS",
        default_value_t = 86_400
    )]
    pub credential_grace_seconds: u32,

    /// How long a verified credential stays in the in-process cache without being
    /// re-read, in seconds (a safety net: rotations and deletions evict at once over NATS).
    #[arg(
        long,
        env = "PORTICO_CREDENTIAL_CACHE_TTL_SECONDS",
        default_value_t = 60
    )]
    pub credential_cache_ttl_seconds: u64,

    /// Usage-log entries buffered between requests and the batch writer; when full,
    /// entries are dropped (and counted) rather than slowing requests.
    #[arg(long, env = "PORTICO_USAGE_LOG_BUFFER", default_value_t = 65_536)]
    pub usage_log_buffer: usize,

    /// Longest a usage-log entry waits before its batch is written, in milliseconds
    /// (a batch is also written as soon as it holds 1,000 entries).
    #[arg(long, env = "PORTICO_USAGE_LOG_FLUSH_MS", default_value_t = 250)]
    pub usage_log_flush_ms: u64,

    /// Take the usage log's client IP from the first `X-Forwarded-For` hop (only behind
    /// a proxy that sets it; otherwise clients could forge it).
    #[arg(long, env = "PORTICO_TRUST_FORWARDED_FOR", default_value_t = false)]
    pub trust_forwarded_for: bool,

    // Bulk orders.
    /// Most orders in one JSON batch submission (`POST /api/bulk-orders`, gRPC SubmitBatch).
    #[arg(long, env = "PORTICO_MAX_BATCH_ORDERS", default_value_t = 10_000)]
    pub max_batch_orders: usize,

    /// Most orders in one NDJSON batch submission (`Content-Type: application/x-ndjson`).
    #[arg(long, env = "PORTICO_MAX_NDJSON_ORDERS", default_value_t = 1_000_000)]
    pub max_ndjson_orders: usize,

    /// Largest NDJSON batch body, in bytes (streamed, never held in memory whole).
    #[arg(long, env = "PORTICO_MAX_NDJSON_BYTES", default_value_t = 1 << 30)]
    pub max_ndjson_bytes: u64,

    /// Days a batch and its per-order results are kept before the retention job deletes them.
    #[arg(long, env = "PORTICO_RESULTS_RETENTION_DAYS", default_value_t = 30)]
    pub results_retention_days: u32,

    /// Partner portal settings (`PORTICO_PORTAL_*`).
    #[command(flatten)]
    pub portal: PortalConfig,

    /// Live-update settings (`PORTICO_LIVE_*`).
    #[command(flatten)]
    pub live: LiveConfig,
}

/// A configuration that cannot be served.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

impl GatewayConfig {
    /// Refuses to start without secrets outside dev mode, so a forgotten variable
    /// never silently runs production with a public default key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_operator_token()?;
        self.portal.validate()?;
        if self.common.dev_mode {
            return Ok(());
        }
        let missing: Vec<&str> = [
            (
                "PORTICO_JWT_SECRET (or PORTICO_JWKS_URL)",
                self.jwt_secret().is_none() && self.jwks_url().is_none(),
            ),
            (
                "PORTICO_SECRETS_KEY (or PORTICO_SECRETS_KEYS)",
                self.secrets_key.is_none() && self.secrets_keys.is_none(),
            ),
            (
                "PORTICO_API_KEY_PEPPER (or PORTICO_API_KEY_PEPPERS)",
                self.api_key_pepper.is_none() && self.api_key_peppers.is_none(),
            ),
        ]
        .into_iter()
        .filter_map(|(name, absent)| absent.then_some(name))
        .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(format!(
                "{} must be set outside dev mode (PORTICO_DEV_MODE=true)",
                missing.join(", ")
            )))
        }
    }

    /// The HS256 secret, when one is configured (an empty value means none).
    pub fn jwt_secret(&self) -> Option<&str> {
        self.jwt_secret.as_deref().filter(|t| !t.is_empty())
    }

    /// The JWKS URL, when one is configured (an empty value means none).
    pub fn jwks_url(&self) -> Option<&str> {
        self.jwks_url.as_deref().filter(|t| !t.is_empty())
    }

    /// The issuer, audience and lifetime rules of user tokens.
    pub fn token_rules(&self) -> portico_signing::jwt::TokenRules {
        portico_signing::jwt::TokenRules {
            issuer: self.jwt_issuer.clone().filter(|t| !t.is_empty()),
            audience: self.jwt_audience.clone().filter(|t| !t.is_empty()),
            max_lifetime_secs: (self.jwt_max_lifetime_secs > 0)
                .then_some(self.jwt_max_lifetime_secs),
        }
    }

    /// The operator token, when one is configured (an empty value means none).
    pub fn operator_token(&self) -> Option<&str> {
        self.operator_token.as_deref().filter(|t| !t.is_empty())
    }

    /// An operator token must be hard to guess and must not be the service token: an
    /// internal caller must never become an operator (checked in dev mode too).
    fn validate_operator_token(&self) -> Result<(), ConfigError> {
        let Some(token) = self.operator_token() else {
            return Ok(());
        };
        if token.len() < MIN_OPERATOR_TOKEN_BYTES {
            return Err(ConfigError(format!(
                "PORTICO_OPERATOR_TOKEN must be at least {MIN_OPERATOR_TOKEN_BYTES} bytes"
            )));
        }
        if self.service_token.as_deref() == Some(token) {
            return Err(ConfigError(
                "PORTICO_OPERATOR_TOKEN must differ from PORTICO_SERVICE_TOKEN".into(),
            ));
        }
        Ok(())
    }
}

/// Shortest operator token accepted at start-up.
pub const MIN_OPERATOR_TOKEN_BYTES: usize = 16;

/// Webhook settings read once at start-up: the SSRF allowlist and the retry policy of
/// webhooks that set none.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Networks webhook URLs may reach despite the SSRF guard.
    pub allowlist: Allowlist,
    /// Retry policy used for fields a creator leaves unset.
    pub default_retry_policy: RetryPolicy,
}

impl WebhookSettings {
    /// Parses the allowlist and checks the default policy; a bad CIDR or an
    /// out-of-range default stops the gateway at start-up instead of misbehaving later.
    pub fn from_config(config: &GatewayConfig) -> Result<Self, ConfigError> {
        let (allowlist, dev_loopback) =
            Allowlist::for_service(&config.webhook_allowlist, config.common.dev_mode)
                .map_err(|e| ConfigError(format!("PORTICO_WEBHOOK_ALLOWLIST: {e}")))?;
        if dev_loopback {
            tracing::warn!(
                "PORTICO_DEV_MODE: webhook URLs on loopback (127.0.0.0/8, ::1) are allowed; never run dev mode in production"
            );
        }
        let default_retry_policy = RetryPolicy {
            max_retries: config.default_max_retries,
            base_delay_ms: config.default_base_delay_ms,
            max_delay_ms: config.default_max_delay_ms,
        };
        default_retry_policy.validate("").map_err(|errors| {
            ConfigError(format!(
                "PORTICO_DEFAULT_MAX_RETRIES / PORTICO_DEFAULT_BASE_DELAY_MS / PORTICO_DEFAULT_MAX_DELAY_MS: {}",
                errors
                    .iter()
                    .map(|e| e.message.clone())
                    .collect::<Vec<_>>()
                    .join("; ")
            ))
        })?;
        Ok(Self {
            allowlist,
            default_retry_policy,
        })
    }
}

/// The pepper dev mode uses when no pepper is configured. Public, so never acceptable
/// outside dev mode (config validation refuses to start without one).
const DEV_PEPPER: &[u8] = b"portico-insecure-dev-pepper";

/// The secrets keyring of this configuration: `PORTICO_SECRETS_KEYS` then
/// `PORTICO_SECRETS_KEY`, or the public dev key when neither is set (dev mode only:
/// validation refuses that outside it).
pub fn keyring(config: &GatewayConfig) -> Result<Keyring, ConfigError> {
    if config.secrets_key.is_none() && config.secrets_keys.is_none() {
        return Ok(Keyring::insecure_dev());
    }
    Keyring::from_config(
        config.secrets_keys.as_deref(),
        config.secrets_key.as_deref(),
    )
    .map_err(|e| ConfigError(format!("PORTICO_SECRETS_KEYS / PORTICO_SECRETS_KEY: {e}")))
}

/// The API key peppers of this configuration: `PORTICO_API_KEY_PEPPERS` then
/// `PORTICO_API_KEY_PEPPER`, or the public dev pepper when neither is set.
pub fn peppers(config: &GatewayConfig) -> Result<Peppers, ConfigError> {
    let single = config.api_key_pepper.as_deref().filter(|p| !p.is_empty());
    let listed = config
        .api_key_peppers
        .as_deref()
        .filter(|p| !p.trim().is_empty());
    if single.is_none() && listed.is_none() {
        return Ok(Peppers::single(
            portico_signing::keyed_hash::LEGACY_PEPPER_ID,
            DEV_PEPPER,
        ));
    }
    Peppers::from_config(listed, single).map_err(|e| {
        ConfigError(format!(
            "PORTICO_API_KEY_PEPPERS / PORTICO_API_KEY_PEPPER: {e}"
        ))
    })
}

/// Live-update settings (`PORTICO_LIVE_*`).
#[derive(Debug, Clone, clap::Args)]
pub struct LiveConfig {
    /// Messages queued per connection; beyond it messages are dropped and the client
    /// gets one `{"type":"lagged","missed":N}` notice. A commit's announcements arrive
    /// together (one NATS message per dispatcher chunk, hundreds of deliveries), so the
    /// queue holds a few chunks; it holds shared references, about 0.5 KiB a message at
    /// most.
    #[arg(
        long = "live-queue",
        env = "PORTICO_LIVE_QUEUE",
        default_value_t = 1024
    )]
    pub queue: usize,

    /// Live connections (WebSocket and gRPC streams) one user may hold per replica.
    #[arg(
        long = "live-max-connections-per-user",
        env = "PORTICO_LIVE_MAX_CONNECTIONS_PER_USER",
        default_value_t = 16
    )]
    pub max_connections_per_user: usize,

    /// Seconds between pings; a connection that has not answered the previous ping by
    /// the next one is closed (4002).
    #[arg(
        long = "live-ping-secs",
        env = "PORTICO_LIVE_PING_SECS",
        default_value_t = 20
    )]
    pub ping_secs: u64,

    /// Seconds a write to a client may wait (the client reads nothing, its buffers
    /// are full) before the connection is closed (4008).
    #[arg(
        long = "live-stall-secs",
        env = "PORTICO_LIVE_STALL_SECS",
        default_value_t = 10
    )]
    pub stall_secs: u64,

    /// Key that signs live tickets. Every replica must share it for a ticket from one
    /// to work on another; unset, it is derived from PORTICO_JWT_SECRET, else
    /// PORTICO_SERVICE_TOKEN, else chosen at random per process.
    #[arg(long = "live-ticket-secret", env = "PORTICO_LIVE_TICKET_SECRET")]
    pub ticket_secret: Option<String>,
}

/// Portal settings (flattened into the gateway's configuration).
#[derive(Debug, Clone, clap::Args)]
pub struct PortalConfig {
    /// Who may embed the portal in a frame: the CSP `frame-ancestors` sources,
    /// space-separated (e.g. `'self' https://app.example.com`); `'none'` forbids
    /// embedding.
    #[arg(long, env = "PORTICO_PORTAL_FRAME_ANCESTORS", default_value = "'none'")]
    pub portal_frame_ancestors: String,

    /// Always mark the session cookie `Secure` (set it when a TLS proxy in front of the
    /// gateway does not send `X-Forwarded-Proto`).
    #[arg(long, env = "PORTICO_PORTAL_SECURE_COOKIES", default_value_t = false)]
    pub portal_secure_cookies: bool,

    /// How long a one-time login link stays valid, in seconds (at most 900).
    #[arg(long, env = "PORTICO_PORTAL_LOGIN_TTL_SECS", default_value_t = 300)]
    pub portal_login_ttl_secs: u32,

    /// How long a portal session lasts after sign-in, in seconds.
    #[arg(long, env = "PORTICO_PORTAL_SESSION_TTL_SECS", default_value_t = 8 * 3600)]
    pub portal_session_ttl_secs: u32,

    /// Public base URL of the gateway (e.g. `https://portico.example.com`): login links
    /// are absolute with it, relative (`/portal/login?token=...`) without.
    #[arg(long, env = "PORTICO_PORTAL_PUBLIC_URL")]
    pub portal_public_url: Option<String>,
}

impl PortalConfig {
    /// Refuses values that would weaken or break the headers and links.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fa = self.portal_frame_ancestors.trim();
        if fa.is_empty()
            || fa
                .chars()
                .any(|c| c.is_control() || matches!(c, ';' | ',' | '"'))
        {
            return Err(ConfigError(
                "PORTICO_PORTAL_FRAME_ANCESTORS must be CSP sources separated by spaces (e.g. 'none', 'self' or https://app.example.com), without ; or ,".into(),
            ));
        }
        if !(30..=900).contains(&self.portal_login_ttl_secs) {
            return Err(ConfigError(
                "PORTICO_PORTAL_LOGIN_TTL_SECS must be between 30 and 900".into(),
            ));
        }
        if !(60..=7 * 24 * 3600).contains(&self.portal_session_ttl_secs) {
            return Err(ConfigError(
                "PORTICO_PORTAL_SESSION_TTL_SECS must be between 60 and 604800".into(),
            ));
        }
        if let Some(url) = &self.portal_public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError(
                "PORTICO_PORTAL_PUBLIC_URL must start with http:// or https://".into(),
            ));
        }
        Ok(())
    }

    /// The Content-Security-Policy of every portal response.
    pub fn content_security_policy(&self) -> String {
        format!(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; base-uri 'none'; object-src 'none'; \
             frame-ancestors {}",
            self.portal_frame_ancestors.trim()
        )
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn config(args: &[&str]) -> GatewayConfig {
        let mut argv = vec!["portico-gateway", "--dev-mode"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).expect("the flags parse").config
    }

    /// The operator token is optional, long enough when set, and never the service token.
    #[test]
    fn operator_token_is_checked() {
        assert!(config(&[]).validate().is_ok());
        assert_eq!(config(&["--operator-token", ""]).operator_token(), None);
        let ok = config(&["--operator-token", "operator-token-0123456789"]);
        assert!(ok.validate().is_ok());
        assert_eq!(ok.operator_token(), Some("operator-token-0123456789"));
        assert!(config(&["--operator-token", "short"]).validate().is_err());
        let same = config(&[
            "--operator-token",
            "shared-token-0123456789",
            "--service-token",
            "shared-token-0123456789",
        ]);
        assert!(same.validate().is_err());
    }
}
