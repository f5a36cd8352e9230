//! Portico's gateway: the REST (axum) and gRPC (tonic) doors over one domain layer.
//! It validates, authenticates, authorises, writes state and publishes jobs; slow work
//! (deliveries, batch processing) always happens in the workers.
//!
//! # Layout
//! From the bottom up: a module uses only modules above it (and `app`, `rest` and
//! `grpc` their own sub-modules), so the graph of modules has no circle.
//! - [`config`]: flags and environment, the webhook, live and portal settings, and the
//!   secrets keyring and API key peppers built from them.
//! - [`error`]: one error type, mapped to problem+json and to gRPC status codes.
//! - [`identity`]: who is calling once authenticated ([`identity::Caller`],
//!   [`identity::Operator`]), shared by `auth`, `app` and both doors.
//! - [`jwks`]: the JWKS source user JWTs may be verified against.
//! - [`net`]: the client address and Basic credentials of a request's head, for
//!   `auth` and both doors.
//! - [`credentials`]: partner credentials: verification, limits (and the RateLimit
//!   headers), and the usage log.
//! - [`live`]: the live-update hub (per-owner NATS subscriptions, bounded queues) and
//!   tickets.
//! - [`reseal`]: the `reseal` sub-command.
//! - [`state`]: pools and clients shared by every request.
//! - [`auth`]: user JWTs, the service token and partner credentials, for both doors.
//! - [`app`]: the domain operations both doors call.
//! - [`live_session`]: who a live connection is and its WebSocket loop, for both doors.
//! - [`portal`]: the partner portal (server-rendered HTML under `/portal/`).
//! - [`rest`]: axum router, JSON extraction, middleware, OpenAPI.
//! - [`grpc`]: tonic services, health and reflection.
//!
//! [`run`] is the seam: the binary binds listeners and calls it; so can a test.

pub mod app;
pub mod auth;
pub mod config;
pub mod credentials;
pub mod error;
pub mod grpc;
pub mod identity;
pub mod jwks;
pub mod live;
pub mod live_session;
pub mod net;
pub mod portal;
pub mod rest;
pub mod state;

use portico_queue::outbox::{OutboxRelay, OutboxSignal};
use portico_queue::publisher::JobPublisher;
use portico_runtime::Foundation;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{GatewayConfig, WebhookSettings};
use crate::credentials::CredentialService;
use crate::state::{AppState, StateParts};

/// Why the gateway stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The configuration cannot be served.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// PostgreSQL failed at start-up.
    #[error(transparent)]
    Storage(#[from] portico_storage::StorageError),
    /// NATS or JetStream failed at start-up.
    #[error(transparent)]
    Queue(#[from] portico_queue::QueueError),
    /// Connecting at start-up failed.
    #[error(transparent)]
    Start(#[from] portico_runtime::RuntimeError),
    /// A listener failed.
    #[error("serving: {0}")]
    Serve(String),
}

/// The two bound listeners.
pub struct Listeners {
    /// REST and admin endpoints.
    pub http: TcpListener,
    /// gRPC.
    pub grpc: TcpListener,
}

/// Runs the gateway until `shutdown` is cancelled, then drains in-flight requests and
/// the outbox before returning.
pub async fn run(
    config: GatewayConfig,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), GatewayError> {
    config.validate()?;
    let webhooks = WebhookSettings::from_config(&config)?;
    // The built-in integration templates are parsed and checked once, here: a broken
    // data file stops the gateway at start instead of failing requests.
    app::integration_templates::builtins()
        .map_err(|e| config::ConfigError(format!("built-in integration templates: {e}")))?;
    portico_storage::ensure_database(&config.common.database_url).await?;
    let base = Foundation::connect(&config.common, "portico-gateway").await?;
    let (pool, nats, js, topology) = (
        base.pool.clone(),
        base.nats.clone(),
        base.jetstream.clone(),
        base.topology.clone(),
    );
    if config.migrate_on_start {
        portico_storage::migrate(&pool).await?;
    }
    portico_queue::setup::ensure_stream(&js, &topology).await?;
    let publisher = JobPublisher::coalescing(js.clone(), topology.clone());
    let secrets_key = config::keyring(&config)?;
    let outbox = OutboxSignal::default();
    // Partner credentials: the usage-log writer runs until after the servers stopped.
    let (credentials, usage_writer) =
        CredentialService::start(pool.clone(), &config, config::peppers(&config)?);
    let invalidations = credentials
        .listen_for_invalidations(
            &nats,
            topology.invalidation_subject(app::integrations::INVALIDATION_TOPIC),
            shutdown.child_token(),
        )
        .await?;
    let state = AppState::new(StateParts {
        pool: pool.clone(),
        nats: nats.clone(),
        publisher: publisher.clone(),
        outbox: outbox.clone(),
        secrets_key,
        credentials,
        config: config.clone(),
        webhooks,
        live: live::Hub::new(
            nats.clone(),
            topology.clone(),
            config.live.clone(),
            &live_ticket_secret(&config),
            shutdown.child_token(),
        ),
    });

    let relay =
        tokio::spawn(OutboxRelay::new(pool.clone(), publisher, outbox).run(shutdown.child_token()));
    // Links the audit records requests write; stops after the servers, linking what
    // the last requests wrote.
    let linker_stop = CancellationToken::new();
    let linker = tokio::spawn(
        state
            .audit_linker()
            .clone()
            .run(pool.clone(), linker_stop.clone()),
    );
    let jwks = {
        let state = state.clone();
        let stop = shutdown.child_token();
        tokio::spawn(async move {
            if let Some(source) = state.jwks() {
                source.run(stop).await;
            }
        })
    };

    let readiness = base.readiness();
    let admin = portico_runtime::admin::router(readiness.clone(), base.metrics.clone());
    let app = rest::router(state.clone(), admin);
    tracing::info!(http = %listeners.http.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        grpc = %listeners.grpc.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        "listening");
    let http_shutdown = shutdown.clone();
    let http = axum::serve(
        listeners.http,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move { http_shutdown.cancelled().await });
    let grpc = grpc::serve(state, listeners.grpc, readiness, shutdown.clone());
    let (http_result, grpc_result) = tokio::join!(http, grpc);
    // No request can log usage any more: write everything still buffered.
    usage_writer.finish().await;
    let _ = invalidations.await;
    linker_stop.cancel();
    let _ = linker.await;
    let _ = relay.await;
    let _ = jwks.await;
    nats.flush().await.ok();
    pool.close().await;
    http_result.map_err(|e| GatewayError::Serve(e.to_string()))?;
    grpc_result.map_err(|e| GatewayError::Serve(e.to_string()))?;
    tracing::info!("gateway stopped");
    Ok(())
}

/// What [`requeue`] put back on the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requeued {
    /// Unfinished bulk-order batches.
    pub batches: usize,
    /// Unfinished retry-failed jobs.
    pub retry_jobs: usize,
}

/// `portico-gateway requeue`: after a PostgreSQL restore next to an empty JetStream,
/// adds a job for every unfinished batch and retry-failed job to the outbox in one
/// transaction; the relay of any running service publishes them. Each gets a fresh
/// `Nats-Msg-Id` so a stream that saw the original within its duplicate window does
/// not drop it. Jobs are idempotent (a batch resumes at its first unprocessed chunk),
/// but a stream that still holds the originals would run them twice: run it only on
/// a new stream.
pub async fn requeue(config: &GatewayConfig) -> Result<Requeued, GatewayError> {
    use portico_queue::jobs::Job;
    let pool = portico_storage::connect(&config.common.database_url, 2).await?;
    let topology =
        portico_queue::Topology::new(&config.common.stream_prefix, config.common.stream_replicas)?;
    let mut tx = pool
        .begin()
        .await
        .map_err(portico_storage::StorageError::from)?;
    let batches = portico_storage::recovery::unfinished_batches(&mut *tx)
        .await
        .map_err(portico_storage::StorageError::from)?;
    let retry_jobs = portico_storage::recovery::unfinished_retry_jobs(&mut *tx)
        .await
        .map_err(portico_storage::StorageError::from)?;
    let jobs = batches
        .iter()
        .map(|&batch_id| Job::BulkOrderBatchV1 { batch_id })
        .chain(
            retry_jobs
                .iter()
                .map(|&job_id| Job::WebhookRetryV1 { job_id }),
        );
    for job in jobs {
        let message_id = format!("{}:requeued:{}", job.message_id(), uuid::Uuid::new_v4());
        portico_queue::outbox::enqueue_as(&mut tx, &topology, &job, &message_id).await?;
    }
    tx.commit()
        .await
        .map_err(portico_storage::StorageError::from)?;
    pool.close().await;
    Ok(Requeued {
        batches: batches.len(),
        retry_jobs: retry_jobs.len(),
    })
}

/// The key live tickets are signed with: `PORTICO_LIVE_TICKET_SECRET`, else derived
/// from a secret every replica already shares (the JWT secret, else the service
/// token), else random for this process (tickets then work only on the replica that
/// issued them).
fn live_ticket_secret(config: &GatewayConfig) -> Vec<u8> {
    let shared = config
        .live
        .ticket_secret
        .as_deref()
        .or(config.jwt_secret())
        .or(config.service_token.as_deref())
        .filter(|s| !s.is_empty());
    match shared {
        Some(s) => s.as_bytes().to_vec(),
        None => {
            tracing::warn!(
                "no PORTICO_LIVE_TICKET_SECRET: live tickets work only on the replica that issued them"
            );
            let mut key = vec![0u8; 32];
            let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key);
            key
        }
    }
}

/// Applies the embedded migrations (the `migrate` sub-command).
pub async fn migrate(config: &GatewayConfig) -> Result<(), GatewayError> {
    portico_storage::ensure_database(&config.common.database_url).await?;
    let pool = portico_storage::connect(&config.common.database_url, 2).await?;
    portico_storage::migrate(&pool).await?;
    pool.close().await;
    Ok(())
}

/// The `reseal` sub-command: every sealed value moved to the newest key.
pub mod reseal;
