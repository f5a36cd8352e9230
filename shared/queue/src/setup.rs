//! Idempotent creation of the jobs stream and the durable consumers.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};

use crate::QueueError;
use crate::topology::{JobKind, Topology};

/// How long JetStream remembers a `Nats-Msg-Id` for deduplication. Longer than any
/// publisher's retry horizon (the outbox relay retries within seconds).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);

/// Creates (or finds) the work-queue stream holding every job kind.
pub async fn ensure_stream(
    js: &jetstream::Context,
    topology: &Topology,
) -> Result<stream::Stream, QueueError> {
    let config = stream::Config {
        name: topology.jobs_stream(),
        subjects: vec![topology.jobs_wildcard()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        num_replicas: topology.replicas,
        duplicate_window: DUPLICATE_WINDOW,
        max_age: Duration::from_secs(14 * 24 * 3600),
        ..Default::default()
    };
    js.get_or_create_stream(config)
        .await
        .map_err(|e| QueueError::Setup(e.to_string()))
}

/// Tuning of one durable consumer.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Redelivery after this long without an ack (a crashed worker's jobs come back).
    pub ack_wait: Duration,
    /// Jobs handed out but not yet acked, across all replicas.
    pub max_ack_pending: i64,
    /// Give up (and raise the max-deliveries advisory) after this many deliveries.
    pub max_deliver: i64,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            ack_wait: Duration::from_secs(60),
            max_ack_pending: 20_000,
            max_deliver: 50,
        }
    }
}

/// Creates (or finds) the durable pull consumer for `kind`.
pub async fn ensure_consumer(
    js: &jetstream::Context,
    topology: &Topology,
    kind: JobKind,
    settings: &ConsumerSettings,
) -> Result<jetstream::consumer::Consumer<pull::Config>, QueueError> {
    let stream = ensure_stream(js, topology).await?;
    let name = topology.consumer(kind);
    // Create, or update an existing durable consumer to these settings (an upgrade
    // that shortens the ack wait takes effect without deleting the consumer).
    stream
        .create_consumer(pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: topology.subject(kind),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: settings.ack_wait,
            max_deliver: settings.max_deliver,
            max_ack_pending: settings.max_ack_pending,
            ..Default::default()
        })
        .await
        .map_err(|e| QueueError::Setup(e.to_string()))
}

/// Deletes the jobs stream of `topology` (tests clean up after themselves).
pub async fn delete_stream(js: &jetstream::Context, topology: &Topology) -> Result<(), QueueError> {
    js.delete_stream(topology.jobs_stream())
        .await
        .map(|_| ())
        .map_err(|e| QueueError::Setup(e.to_string()))
}
