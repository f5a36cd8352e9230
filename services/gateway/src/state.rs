//! Shared state of one gateway process: pools and clients are created once and reused
//! by every request, on both doors.

use std::sync::Arc;

use portico_queue::outbox::OutboxSignal;
use portico_queue::publisher::JobPublisher;
use portico_signing::jwt::JwtVerifier;
use portico_signing::secret_box::SecretsKey;
use sqlx::PgPool;

use crate::app::credentials::CredentialService;
use crate::app::webhooks::WebhookSettings;
use crate::config::GatewayConfig;

/// Cheap to clone: one `Arc` around everything.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    pool: PgPool,
    nats: async_nats::Client,
    publisher: JobPublisher,
    outbox: OutboxSignal,
    jwt: JwtVerifier,
    service_token: Option<String>,
    secrets_key: SecretsKey,
    credentials: CredentialService,
    config: GatewayConfig,
    webhooks: WebhookSettings,
}

/// The parts [`AppState::new`] assembles.
pub struct StateParts {
    /// PostgreSQL pool.
    pub pool: PgPool,
    /// NATS connection (core NATS for cache invalidation).
    pub nats: async_nats::Client,
    /// JetStream publisher.
    pub publisher: JobPublisher,
    /// Wakes the outbox relay after a commit.
    pub outbox: OutboxSignal,
    /// Seals webhook signing secrets.
    pub secrets_key: SecretsKey,
    /// Partner credential verification.
    pub credentials: CredentialService,
    /// The configuration it was built from.
    pub config: GatewayConfig,
    /// Webhook defaults and the SSRF allowlist, parsed once at start-up.
    pub webhooks: WebhookSettings,
}

impl AppState {
    /// Builds the state; dev mode substitutes a fixed JWT secret when none is configured.
    pub fn new(parts: StateParts) -> Self {
        let jwt_secret = parts
            .config
            .jwt_secret
            .clone()
            .unwrap_or_else(|| "portico-dev-jwt-secret".to_owned());
        Self(Arc::new(Inner {
            pool: parts.pool,
            nats: parts.nats,
            publisher: parts.publisher,
            outbox: parts.outbox,
            jwt: JwtVerifier::new(jwt_secret.as_bytes()),
            service_token: parts.config.service_token.clone().filter(|t| !t.is_empty()),
            secrets_key: parts.secrets_key,
            credentials: parts.credentials,
            config: parts.config,
            webhooks: parts.webhooks,
        }))
    }

    /// PostgreSQL.
    pub fn pool(&self) -> &PgPool {
        &self.0.pool
    }

    /// Core NATS (cache invalidation broadcasts).
    pub fn nats(&self) -> &async_nats::Client {
        &self.0.nats
    }

    /// JetStream publisher.
    pub fn publisher(&self) -> &JobPublisher {
        &self.0.publisher
    }

    /// Wakes the outbox relay; call after committing a transaction that enqueued jobs.
    pub fn outbox(&self) -> &OutboxSignal {
        &self.0.outbox
    }

    /// User token verifier.
    pub fn jwt(&self) -> &JwtVerifier {
        &self.0.jwt
    }

    /// The internal services' token, if configured.
    pub fn service_token(&self) -> Option<&str> {
        self.0.service_token.as_deref()
    }

    /// Seals and opens webhook signing secrets.
    pub fn secrets_key(&self) -> &SecretsKey {
        &self.0.secrets_key
    }

    /// Partner credentials.
    pub fn credentials(&self) -> &CredentialService {
        &self.0.credentials
    }

    /// Configuration.
    pub fn config(&self) -> &GatewayConfig {
        &self.0.config
    }

    /// Webhook defaults and the SSRF allowlist.
    pub fn webhooks(&self) -> &WebhookSettings {
        &self.0.webhooks
    }
}
