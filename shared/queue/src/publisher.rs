//! Publishing jobs: deduplicated by `Nats-Msg-Id`, carrying the caller's trace context,
//! and confirmed by JetStream (its acknowledgement means the job is stored).

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishAckFuture};
use futures::FutureExt;
use futures::future::try_join_all;
use tokio::sync::{mpsc, oneshot};

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
    coalescer: Option<mpsc::Sender<PendingPublish>>,
}

/// One publish waiting for the coalescing task.
struct PendingPublish {
    subject: String,
    headers: HeaderMap,
    payload: Vec<u8>,
    reply: oneshot::Sender<Result<PublishAckFuture, QueueError>>,
}

/// Most publishes handed to the NATS connection in one go.
const COALESCE_MAX: usize = 256;

impl JobPublisher {
    /// A publisher over an existing JetStream context.
    pub fn new(js: jetstream::Context, topology: Topology) -> Self {
        Self {
            js,
            topology,
            coalescer: None,
        }
    }

    /// A publisher whose concurrent publishes (many requests, one job each) reach the
    /// NATS connection together, so they leave in one write and nats-server reads them
    /// in one go. Without it, every request's publish woke the connection task on its
    /// own and went out in its own write: one syscall each way per event, and
    /// nats-server's per-read costs paid per event. Each job is still its own message,
    /// with its own `Nats-Msg-Id` and its own acknowledgement.
    ///
    /// Must be called inside a tokio runtime; the task ends when the last clone of the
    /// publisher is dropped.
    pub fn coalescing(js: jetstream::Context, topology: Topology) -> Self {
        let (tx, rx) = mpsc::channel(COALESCE_MAX * 4);
        tokio::spawn(run_coalescer(js.clone(), rx));
        Self {
            js,
            topology,
            coalescer: Some(tx),
        }
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
        let ack = match &self.coalescer {
            Some(coalescer) => self.send_coalesced(coalescer, job).await?,
            None => self.send(job).await?,
        };
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
        let (subject, headers) = self.envelope(job);
        self.publish_raw(subject, &job.message_id(), job.encode()?, headers)
            .await
    }

    /// The job's subject, and headers carrying the current trace context.
    fn envelope(&self, job: &Job) -> (String, HeaderMap) {
        let mut headers = HeaderMap::new();
        portico_telemetry::propagation::inject_current(&mut headers);
        (self.topology.subject(job.kind()), headers)
    }

    /// Hands one job to the coalescing task ([`JobPublisher::coalescing`]). A batch
    /// ([`JobPublisher::publish_all`]) does not need it: its publishes already leave
    /// together.
    async fn send_coalesced(
        &self,
        coalescer: &mpsc::Sender<PendingPublish>,
        job: &Job,
    ) -> Result<PublishAckFuture, QueueError> {
        let (subject, mut headers) = self.envelope(job);
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            job.message_id().as_str(),
        );
        let (reply, answer) = oneshot::channel();
        let pending = PendingPublish {
            subject,
            headers,
            payload: job.encode()?,
            reply,
        };
        coalescer
            .send(pending)
            .await
            .map_err(|_| QueueError::Publish("the publishing task has stopped".into()))?;
        answer
            .await
            .map_err(|_| QueueError::Publish("the publishing task has stopped".into()))?
    }
}

/// Hands queued publishes to the NATS connection in groups. After waking it yields
/// once, so request tasks that are already runnable enqueue their publishes first:
/// under load a group holds many, when idle the yield returns at once and a lone
/// publish is not delayed.
async fn run_coalescer(js: jetstream::Context, mut rx: mpsc::Receiver<PendingPublish>) {
    let mut batch = Vec::with_capacity(COALESCE_MAX);
    loop {
        if rx.recv_many(&mut batch, COALESCE_MAX).await == 0 {
            return;
        }
        if batch.len() < COALESCE_MAX {
            tokio::task::yield_now().await;
            let room = COALESCE_MAX - batch.len();
            rx.recv_many(&mut batch, room).now_or_never();
        }
        for p in batch.drain(..) {
            let sent = js
                .publish_with_headers(p.subject, p.headers, p.payload.into())
                .await
                .map_err(|e| QueueError::Publish(e.to_string()));
            // The requester may have gone (client hung up): nothing to tell.
            let _ = p.reply.send(sent);
        }
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
