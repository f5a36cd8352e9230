//! Consuming jobs so that an ack cannot be forgotten or sent too early.
//!
//! A [`JobMessage`] owns the JetStream acker. The job's handler returns an
//! [`Outcome`] only after its result is committed, and [`JobMessage::finish`] turns
//! that into ack, nak-with-delay or term. A message dropped without a decision
//! (a panic, an early return) is nak'ed so it comes back at once instead of after
//! `ack_wait`. Undecodable messages are recorded in `job_dead_letters` (through
//! [`portico_storage::dead_letters`]) and terminated.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::message::Acker;
use async_nats::jetstream::{AckKind, consumer::PullConsumer};
use futures::StreamExt;
use sqlx::PgPool;

use crate::QueueError;
use crate::jobs::Job;

/// What a handler decided about its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The result is committed: remove the job.
    Done,
    /// A transient failure: deliver the job again after the delay.
    RetryAfter(Duration),
    /// The job can never succeed; its failure has been recorded. Stop redelivering.
    Poison(String),
}

/// A delivered job and the right to acknowledge it.
pub struct JobMessage {
    acker: Option<Acker>,
    /// The decoded job.
    pub job: Job,
    /// How many times JetStream has delivered this message (1 on first delivery).
    pub delivered: i64,
    /// The message's sequence in the stream: the order in which JetStream stored the
    /// jobs (per-key ordering of webhook deliveries relies on it).
    pub stream_sequence: u64,
    /// The message headers (trace context lives here).
    pub headers: Option<HeaderMap>,
    consumer: &'static str,
}

impl JobMessage {
    /// Applies the handler's decision. Plain acks are enough for correctness because
    /// every job is idempotent: a lost ack only means one harmless redelivery.
    pub async fn finish(mut self, outcome: Outcome) -> Result<(), QueueError> {
        let Some(acker) = self.acker.take() else {
            return Ok(());
        };
        let (kind, label) = match &outcome {
            Outcome::Done => (AckKind::Ack, "ack"),
            Outcome::RetryAfter(delay) => (AckKind::Nak(Some(*delay)), "nak"),
            Outcome::Poison(reason) => {
                tracing::error!(consumer = self.consumer, %reason, "terminating poison job");
                (AckKind::Term, "term")
            }
        };
        metrics::counter!(portico_telemetry::metrics::JOBS, "consumer" => self.consumer, "outcome" => label)
            .increment(1);
        acker
            .ack_with(kind)
            .await
            .map_err(|e| QueueError::Consume(e.to_string()))
    }

    /// Tells JetStream the job is still being worked on, resetting its ack timer; long
    /// jobs (a large batch) call this periodically so they are not redelivered mid-run.
    pub async fn keep_alive(&self) -> Result<(), QueueError> {
        match &self.acker {
            Some(acker) => acker
                .ack_with(AckKind::Progress)
                .await
                .map_err(|e| QueueError::Consume(e.to_string())),
            None => Ok(()),
        }
    }

    /// The delay before redelivering after the `delivered`-th failure: 1 s doubling to
    /// at most 60 s, so a dependency outage is not hammered.
    pub fn backoff(&self) -> Duration {
        let exp = (self.delivered.clamp(1, 7) - 1) as u32;
        Duration::from_secs(1u64 << exp).min(Duration::from_secs(60))
    }
}

impl Drop for JobMessage {
    fn drop(&mut self) {
        if let Some(acker) = self.acker.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(async move {
                let _ = acker.ack_with(AckKind::Nak(None)).await;
            });
        }
    }
}

/// A stream of decoded jobs from one durable consumer.
pub struct JobStream {
    inner: async_nats::jetstream::consumer::pull::Stream,
    pool: PgPool,
    consumer: &'static str,
}

impl JobStream {
    /// Starts pulling from `consumer`, keeping up to `batch` messages requested ahead.
    /// `consumer_label` names the consumer in metrics and dead letters.
    pub async fn open(
        consumer: &PullConsumer,
        pool: PgPool,
        consumer_label: &'static str,
        batch: usize,
    ) -> Result<Self, QueueError> {
        let inner = consumer
            .stream()
            .max_messages_per_batch(batch)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| QueueError::Consume(e.to_string()))?;
        Ok(Self {
            inner,
            pool,
            consumer: consumer_label,
        })
    }

    /// The next decodable job; `None` when the stream ended. Undecodable messages are
    /// dead-lettered and skipped here, so handlers only ever see well-formed jobs.
    pub async fn next(&mut self) -> Option<Result<JobMessage, QueueError>> {
        loop {
            let message = match self.inner.next().await? {
                Ok(m) => m,
                Err(e) => return Some(Err(QueueError::Consume(e.to_string()))),
            };
            let (delivered, stream_sequence) = message
                .info()
                .map(|i| (i.delivered, i.stream_sequence))
                .unwrap_or((1, 0));
            if delivered > 1 {
                metrics::counter!(portico_telemetry::metrics::JOBS_REDELIVERED, "consumer" => self.consumer)
                    .increment(1);
            }
            let (message, acker) = message.split();
            match Job::decode(&message.payload) {
                Ok(job) => {
                    return Some(Ok(JobMessage {
                        acker: Some(acker),
                        job,
                        delivered,
                        stream_sequence,
                        headers: message.headers,
                        consumer: self.consumer,
                    }));
                }
                Err(err) => {
                    let reason = format!("undecodable job: {err}");
                    tracing::error!(consumer = self.consumer, subject = %message.subject, %reason, "dead-lettering message");
                    let recorded = record_dead_letter(
                        &self.pool,
                        self.consumer,
                        message.subject.as_str(),
                        &message.payload,
                        &reason,
                    )
                    .await;
                    // Only terminate once the record is committed; otherwise let it
                    // come back and try recording again.
                    let kind = if recorded.is_ok() {
                        AckKind::Term
                    } else {
                        AckKind::Nak(Some(Duration::from_secs(5)))
                    };
                    let _ = acker.ack_with(kind).await;
                }
            }
        }
    }
}

/// Records a job that will never be processed, so operators can inspect and replay it.
pub async fn record_dead_letter(
    pool: &PgPool,
    consumer: &str,
    subject: &str,
    payload: &[u8],
    reason: &str,
) -> Result<(), sqlx::Error> {
    portico_storage::dead_letters::record(pool, consumer, subject, payload, reason).await?;
    metrics::counter!(portico_telemetry::metrics::JOBS_DEAD_LETTERED, "consumer" => consumer.to_owned())
        .increment(1);
    Ok(())
}

/// Records, inside the caller's transaction, a decoded job that failed for good: its
/// owner, message id, payload and the reason, so operators can inspect and replay it.
/// Recording the same job twice (its termination was lost and it came back) keeps the
/// first record; a job an operator replayed (or discarded) that fails for good again
/// reopens its record with the new reason, so it waits for an operator once more. The
/// caller commits, then terminates the message.
pub async fn dead_letter_job(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    consumer: &str,
    topology: &crate::Topology,
    job: &Job,
    reason: &str,
) -> Result<(), QueueError> {
    let user_id = match job {
        Job::EventDispatchV1(e) => Some(e.user_id.replace('\0', "")),
        _ => None,
    };
    let reason = reason.replace('\0', "\u{FFFD}");
    portico_storage::dead_letters::record_job(
        &mut **tx,
        &portico_storage::dead_letters::NewDeadLetter {
            consumer,
            subject: &topology.subject(job.kind()),
            payload: &job.encode()?,
            reason: &reason,
            user_id: user_id.as_deref(),
            message_id: &job.message_id(),
        },
    )
    .await?;
    metrics::counter!(portico_telemetry::metrics::JOBS_DEAD_LETTERED, "consumer" => consumer.to_owned())
        .increment(1);
    Ok(())
}

/// Publishes, every 5 seconds until `shutdown`, how many jobs wait in each consumer
/// (`portico_queue_pending`), which the backlog alerts watch, and whether the consumer
/// is ahead of its stream (`portico_queue_consumer_ahead_of_stream`, see
/// [`consumer_ahead_of_stream`]), which `QueueConsumerAheadOfStream` watches. Each
/// consumer costs two requests per tick: its info, then its stream's.
pub async fn report_pending(
    jetstream: async_nats::jetstream::Context,
    consumers: Vec<(&'static str, PullConsumer)>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    // Per consumer, whether it was ahead at the last look (None: not looked yet), so
    // the error is logged once when it goes ahead, not every 5 seconds.
    let mut ahead: Vec<Option<bool>> = vec![None; consumers.len()];
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        for ((label, consumer), was_ahead) in consumers.iter().zip(ahead.iter_mut()) {
            let Ok(info) = consumer.get_info().await else {
                continue;
            };
            metrics::gauge!(portico_telemetry::metrics::QUEUE_PENDING, "consumer" => *label)
                .set(info.num_pending as f64);
            // The stream is read after the consumer: a healthy stream's last sequence
            // only grows meanwhile, so a job published between the two reads cannot
            // make a healthy consumer look ahead.
            let stream_last = match stream_last_sequence(&jetstream, &info.stream_name).await {
                Ok(last) => last,
                Err(err) => {
                    tracing::debug!(consumer = *label, %err, "stream info unavailable");
                    continue;
                }
            };
            let consumer_seq = info.delivered.stream_sequence;
            let now_ahead = consumer_ahead_of_stream(consumer_seq, stream_last);
            metrics::gauge!(portico_telemetry::metrics::QUEUE_CONSUMER_AHEAD_OF_STREAM, "consumer" => *label)
                .set(if now_ahead { 1.0 } else { 0.0 });
            if now_ahead && *was_ahead != Some(true) {
                tracing::error!(
                    consumer = *label,
                    durable = %info.name,
                    stream = %info.stream_name,
                    consumer_stream_sequence = consumer_seq,
                    stream_last_sequence = stream_last,
                    "durable consumer is ahead of its stream (the stream came back at a lower \
                     sequence): jobs published now are stored but not delivered until the stream \
                     passes the consumer's sequence. Delete this durable consumer and restart the \
                     services that consume it, which create it again and are handed every job \
                     still in the stream (docs/operations.md#queueconsumeraheadofstream)"
                );
            } else if !now_ahead && *was_ahead == Some(true) {
                tracing::warn!(
                    consumer = *label,
                    durable = %info.name,
                    stream = %info.stream_name,
                    consumer_stream_sequence = consumer_seq,
                    stream_last_sequence = stream_last,
                    "durable consumer is no longer ahead of its stream; the jobs published while \
                     it was ahead were skipped unless it was deleted and created again"
                );
            }
            *was_ahead = Some(now_ahead);
        }
    }
}

/// The last sequence of the stream `name` (one request for its info).
async fn stream_last_sequence(
    jetstream: &async_nats::jetstream::Context,
    name: &str,
) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    let stream = jetstream.get_stream_no_info(name).await?;
    Ok(stream.get_info().await?.state.last_sequence)
}

/// Whether a durable consumer has been handed stream sequences beyond its stream's last
/// one, which a healthy stream never allows (its sequence only grows). nats-server
/// 2.9.10 can bring a work-queue stream back from a kill at a lower sequence than its
/// consumer's stored state; the consumer then skips every job published until the
/// stream's sequence passes its own, so accepted events are silently not delivered.
pub fn consumer_ahead_of_stream(consumer_stream_sequence: u64, stream_last_sequence: u64) -> bool {
    consumer_stream_sequence > stream_last_sequence
}

/// Runs `handle` on every job of `stream`, at most `concurrency` at once, until
/// `shutdown`; then stops pulling and waits for the jobs in hand. The handler gives
/// the message back with its [`Outcome`], and the job is acked, nak'ed or terminated
/// only after that, so a handler cannot forget to decide. Workers whose jobs are long
/// and few (batches, retry jobs) use this; the event path batches instead.
pub async fn run_bounded<F, Fut>(
    mut stream: JobStream,
    concurrency: usize,
    shutdown: tokio_util::sync::CancellationToken,
    handle: F,
) where
    F: Fn(JobMessage) -> Fut,
    Fut: std::future::Future<Output = (JobMessage, Outcome)> + Send + 'static,
{
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let message = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = stream.next() => m,
        };
        let message = match message {
            None => break,
            Some(Ok(m)) => m,
            Some(Err(err)) => {
                tracing::warn!(%err, "pull failed; continuing");
                continue;
            }
        };
        let work = handle(message);
        tasks.spawn(async move {
            let _permit = permit;
            let (message, outcome) = work.await;
            if let Err(err) = message.finish(outcome).await {
                tracing::warn!(%err, "ack failed; the job will be redelivered and resume");
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    drop(stream);
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::consumer_ahead_of_stream;

    #[test]
    fn a_consumer_past_the_streams_last_sequence_is_ahead() {
        // The run that found it: the stream came back at 0, the consumer at 76.
        assert!(consumer_ahead_of_stream(76, 0));
        assert!(consumer_ahead_of_stream(77, 76));
        assert!(consumer_ahead_of_stream(u64::MAX, u64::MAX - 1));
    }

    #[test]
    fn a_consumer_at_or_behind_the_streams_last_sequence_is_not() {
        // Caught up (every job delivered), behind (a backlog), and a new empty stream.
        assert!(!consumer_ahead_of_stream(76, 76));
        assert!(!consumer_ahead_of_stream(10, 76));
        assert!(!consumer_ahead_of_stream(0, 0));
    }
}
