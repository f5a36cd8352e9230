//! What every step of processing shares: the replica's [`Processor`] (pool, topology,
//! outbox signal, limits), the [`BatchRef`] being processed and the [`ProcessError`]
//! that stops it. Kept apart from [`crate::batches`], [`crate::chunks`] and
//! [`crate::events`], which all use them, so none of those imports another's context.

use std::time::Duration;

use portico_domain::ids::{BatchId, IntegrationId};
use portico_queue::Topology;
use portico_queue::outbox::OutboxSignal;
use sqlx::PgPool;

/// Everything processing needs, shared by every batch task of this replica.
pub struct Processor {
    /// PostgreSQL.
    pub pool: PgPool,
    /// Where outbox jobs (events) are published.
    pub topology: Topology,
    /// Wakes this replica's outbox relay after a commit that enqueued events.
    pub outbox: OutboxSignal,
    /// Announces batch progress to live listeners after each commit (fire-and-forget).
    pub live: portico_queue::live::LivePublisher,
    /// Chunks of one batch processed at the same time.
    pub chunk_concurrency: usize,
    /// How often a batch in progress tells JetStream it is still alive (a third of the
    /// ack wait), so a short ack wait never redelivers a batch that is being worked on.
    pub keep_alive_every: Duration,
}

/// The batch being processed, as the chunks need it.
#[derive(Debug, Clone)]
pub struct BatchRef {
    /// The batch.
    pub id: BatchId,
    /// Its owner; every order is created for this user.
    pub user_id: String,
    /// The integration that submitted it, recorded on every order.
    pub integration_id: Option<IntegrationId>,
}

/// Why processing stopped short.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// PostgreSQL failed (transient: the batch resumes on redelivery).
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Enqueueing events failed.
    #[error("outbox: {0}")]
    Queue(#[from] portico_queue::QueueError),
    /// A stored chunk is not a JSON array (cannot happen with JSONB; kept typed).
    #[error("corrupt chunk: {0}")]
    Corrupt(String),
    /// A value could not be encoded as JSON.
    #[error("encoding: {0}")]
    Encoding(String),
}

impl ProcessError {
    /// Wraps a JSON encoding error.
    pub fn encoding(err: serde_json::Error) -> Self {
        ProcessError::Encoding(err.to_string())
    }
}
