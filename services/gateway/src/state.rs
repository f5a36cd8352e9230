//! Shared state of one gateway process: pools and clients are created once and reused
//! by every request, on both doors.

use std::sync::Arc;

use portico_queue::outbox::OutboxSignal;
use portico_queue::publisher::JobPublisher;
use portico_signing::jwt::JwtVerifier;
use portico_signing::seal::Keyring;
use sqlx::PgPool;

use crate::config::{GatewayConfig, WebhookSettings};
use crate::credentials::CredentialService;

/// Cheap to clone: one `Arc` around everything.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    jwks: Option<crate::jwks::JwksSource>,
    pool: PgPool,
    nats: async_nats::Client,
    publisher: JobPublisher,
    outbox: OutboxSignal,
    jwt: JwtVerifier,
    service_token: Option<String>,
    secrets_key: Keyring,
    credentials: CredentialService,
    config: GatewayConfig,
    webhooks: WebhookSettings,
    live: crate::live::Hub,
    audit_linker: crate::app::audit::AuditLinker,
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
    pub secrets_key: Keyring,
    /// Partner credential verification.
    pub credentials: CredentialService,
    /// The configuration it was built from.
    pub config: GatewayConfig,
    /// Webhook defaults and the SSRF allowlist, parsed once at start-up.
    pub webhooks: WebhookSettings,
    /// Live updates: the per-owner fan-out and the ticket office.
    pub live: crate::live::Hub,
}

impl AppState {
    /// Builds the state; dev mode substitutes a fixed JWT secret when none is configured.
    pub fn new(parts: StateParts) -> Self {
        // HS256 with the configured secret; with only a JWKS, no HS256 at all; in dev
        // mode without either, a fixed development secret.
        let jwt = match (parts.config.jwt_secret(), parts.config.jwks_url()) {
            (Some(secret), _) => JwtVerifier::new(secret.as_bytes()),
            (None, Some(_)) => JwtVerifier::jwks_only(),
            (None, None) => JwtVerifier::new(b"portico-dev-jwt-secret"),
        }
        .with_rules(parts.config.token_rules());
        let jwks = parts.config.jwks_url().and_then(|url| {
            crate::jwks::JwksSource::new(
                url.to_owned(),
                jwt.clone(),
                std::time::Duration::from_secs(parts.config.jwks_refresh_secs),
            )
            .map_err(|e| tracing::error!(%e, "JWKS client could not be built"))
            .ok()
        });
        Self(Arc::new(Inner {
            pool: parts.pool,
            nats: parts.nats,
            publisher: parts.publisher,
            outbox: parts.outbox,
            jwt,
            jwks,
            service_token: parts.config.service_token.clone().filter(|t| !t.is_empty()),
            secrets_key: parts.secrets_key,
            credentials: parts.credentials,
            config: parts.config,
            webhooks: parts.webhooks,
            live: parts.live,
            audit_linker: crate::app::audit::AuditLinker::default(),
        }))
    }

    /// Links the audit records requests wrote into their chains (run once, at start).
    pub fn audit_linker(&self) -> &crate::app::audit::AuditLinker {
        &self.0.audit_linker
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

    /// The platform's key set source, when `PORTICO_JWKS_URL` is configured.
    pub fn jwks(&self) -> Option<&crate::jwks::JwksSource> {
        self.0.jwks.as_ref()
    }

    /// The user-token verifier (HS256 secret and/or JWKS keys, and the rules).
    pub fn jwt(&self) -> &JwtVerifier {
        &self.0.jwt
    }

    /// The internal services' token, if configured.
    pub fn service_token(&self) -> Option<&str> {
        self.0.service_token.as_deref()
    }

    /// Seals and opens webhook signing secrets.
    pub fn secrets_key(&self) -> &Keyring {
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

    /// Live updates (fan-out, tickets, the gateway's own announcements).
    pub fn live(&self) -> &crate::live::Hub {
        &self.0.live
    }
}
