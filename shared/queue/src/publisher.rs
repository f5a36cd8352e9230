//! Publishing jobs: deduplicated by `Nats-Msg-Id`, carrying the caller's trace context,
//! and confirmed by JetStream (its acknowledgement means the job is stored).

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishAckFuture};
use futures::future::try_join_all;

use crate::QueueError;
use crate::jobs::Job;
use crate::topology::Topology;

/// What JetStream said about a published job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The job's sequence in the stream.
    pub sequence: u64,
    /// The same `Nats-Msg-Id` was already stored: nothing new was enqueued.
    pub duplicate: bool,
}

/// Publishes jobs to the stream of one topology. Cheap to clone.
#[derive(Clone)]
pub struct JobPublisher {
    js: jetstream::Context,
    topology: Topology,
}

impl JobPublisher {
    /// A publisher over an existing JetStream context.
    pub fn new(js: jetstream::Context, topology: Topology) -> Self {
        Self { js, topology }
    }

    /// The topology jobs are published into.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The underlying JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Publishes one job and waits for JetStream to store it.
    pub async fn publish(&self, job: &Job) -> Result<Published, QueueError> {
        let ack = self.send(job).await?;
        confirm(ack).await
    }

    /// Publishes many jobs with every acknowledgement in flight at once: one round
    /// trip of latency for the lot instead of one per job.
    pub async fn publish_all(&self, jobs: &[Job]) -> Result<Vec<Published>, QueueError> {
        let mut pending = Vec::with_capacity(jobs.len());
        for job in jobs {
            pending.push(confirm(self.send(job).await?));
        }
        try_join_all(pending).await
    }

    /// Publishes a raw, already-encoded job (the outbox relay stores encoded jobs).
    pub async fn publish_raw(
        &self,
        subject: String,
        message_id: &str,
        payload: Vec<u8>,
        mut headers: HeaderMap,
    ) -> Result<PublishAckFuture, QueueError> {
        headers.insert(async_nats::header::NATS_MESSAGE_ID, message_id);
        self.js
            .publish_with_headers(subject, headers, payload.into())
            .await
            .map_err(|e| QueueError::Publish(e.to_string()))
    }

    async fn send(&self, job: &Job) -> Result<PublishAckFuture, QueueError> {
        let mut headers = HeaderMap::new();
        portico_telemetry::propagation::inject_current(&mut headers);
        let subject = self.topology.subject(job.kind());
        self.publish_raw(subject, &job.message_id(), job.encode()?, headers)
            .await
    }
}

/// Waits for JetStream's acknowledgement of one publish.
pub async fn confirm(ack: PublishAckFuture) -> Result<Published, QueueError> {
    let ack = ack.await.map_err(|e| QueueError::Publish(e.to_string()))?;
    Ok(Published {
        sequence: ack.sequence,
        duplicate: ack.duplicate,
    })
}
