//! The queue contract between Portico's services, over NATS JetStream.
//!
//! # Layout
//! - [`topology`]: stream, subject and consumer names, all derived from
//!   `PORTICO_STREAM_PREFIX` so test runs and deployments never see each other's jobs.
//! - [`jobs`]: the versioned, tagged job types: the only thing producers and consumers
//!   share.
//! - [`setup`]: creates streams and durable consumers idempotently at start-up.
//! - [`publisher`]: publishes jobs with `Nats-Msg-Id` (JetStream deduplicates retries)
//!   and the caller's trace context.
//! - [`consumer`]: [`consumer::JobMessage`] owns a delivered message and turns the job's
//!   typed [`consumer::Outcome`] into ack, nak-with-delay or term; dropping it unacked
//!   naks it, so acking cannot be forgotten.
//! - [`outbox`]: the transactional outbox: jobs committed in the same PostgreSQL
//!   transaction as the state that needs them, published by a relay.
//! - [`live`]: live announcements on plain core-NATS subjects per owner, published
//!   after a commit, fire-and-forget, for the gateway's WebSocket and gRPC listeners.
//! - [`listen`]: the request and reply that carry a delivery to a listen endpoint
//!   (`portico listen`) through the gateway holding its connection, without HTTP.
//! - [`failpoint`]: named crash points, so tests can kill a process exactly between a
//!   commit and a publish.

pub mod consumer;
pub mod failpoint;
pub mod jobs;
pub mod listen;
pub mod live;
pub mod outbox;
pub mod publisher;
pub mod setup;
pub mod topology;

pub use jobs::Job;
pub use topology::Topology;

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// NATS could not be reached or refused the connection.
    #[error("connecting to NATS: {0}")]
    Connect(String),
    /// Stream or consumer setup failed.
    #[error("JetStream setup: {0}")]
    Setup(String),
    /// JetStream did not acknowledge a publish.
    #[error("publishing to JetStream: {0}")]
    Publish(String),
    /// Pulling, acking or naking failed.
    #[error("consuming from JetStream: {0}")]
    Consume(String),
    /// A job could not be encoded or decoded.
    #[error("job encoding: {0}")]
    Encoding(#[from] serde_json::Error),
    /// The outbox table could not be read or written.
    #[error("outbox: {0}")]
    Outbox(#[from] sqlx::Error),
}

/// Connects to NATS with a client name that shows up in the server's connection list.
/// `url` may list several servers of a cluster, comma separated
/// (`nats://a:4222,nats://b:4222`): the client starts with any that answers and
/// reconnects to another when its server dies, so no single node is needed at start.
pub async fn connect(url: &str, client_name: &str) -> Result<async_nats::Client, QueueError> {
    let servers = url
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<async_nats::ServerAddr>()
                .map_err(|e| QueueError::Connect(format!("NATS_URL {s:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    async_nats::ConnectOptions::new()
        .name(client_name)
        .retry_on_initial_connect()
        .connection_timeout(std::time::Duration::from_secs(5))
        .connect(servers)
        .await
        .map_err(|e| QueueError::Connect(e.to_string()))
}
