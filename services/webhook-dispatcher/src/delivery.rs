//! Making one delivery attempt and deciding what happens next: succeeded, retry at a
//! time, or failed. Shared by the event pipeline (first attempts) and the retry
//! poller (every later attempt).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use portico_domain::retry::{RetryJitter, clamp_retry_after, may_retry, scheduled_delay};
use portico_domain::webhooks::{DeliveryStatus, RetryPolicy};
use portico_telemetry::metrics as names;
use tokio::sync::Semaphore;
use tracing::Instrument;
use uuid::Uuid;

use crate::endpoints::Endpoint;
use crate::envelope::PreparedEvent;
use crate::limits::{ADMISSION_BUDGET, Admission};
use crate::transport::{AttemptRecord, Transport};

/// A delivery about to be attempted.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The `webhook_deliveries` row (new or existing).
    pub delivery_id: Uuid,
    /// Where it goes.
    pub endpoint: Arc<Endpoint>,
    /// What it sends.
    pub event: Arc<PreparedEvent>,
    /// Attempts already made.
    pub attempts_before: u32,
    /// Retries allowed after the first attempt.
    pub max_retries: u32,
}

/// Why a delivery ended without success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    /// Every allowed attempt failed.
    Exhausted,
    /// The endpoint answered 410 Gone: it is disabled, nothing more is sent to it.
    Gone,
    /// The endpoint was disabled or deleted while the delivery waited.
    EndpointInactive,
}

/// The delivery's state after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// A 2xx: done.
    Succeeded,
    /// Try again at this time.
    Retry(DateTime<Utc>),
    /// Done, unsuccessfully.
    Failed(FailReason),
}

impl Next {
    /// The status the delivery row takes.
    pub fn status(self) -> DeliveryStatus {
        match self {
            Next::Succeeded => DeliveryStatus::Succeeded,
            Next::Retry(_) => DeliveryStatus::Retrying,
            Next::Failed(_) => DeliveryStatus::Failed,
        }
    }
}

/// What became of a planned delivery.
#[derive(Debug, Clone)]
pub enum Handled {
    /// An attempt was made.
    Attempted {
        /// Its record.
        record: AttemptRecord,
        /// The state it leads to.
        next: Next,
    },
    /// Nothing was sent: the endpoint's limits asked to wait until then.
    Deferred(DateTime<Utc>),
}

/// Decides the state after the `attempts_made`-th attempt: 2xx succeeds; 410 fails and
/// disables the endpoint; otherwise retry while the budget lasts, after `Retry-After`
/// (429/503, clamped to the policy's bounds, never jittered: the receiver chose it) or
/// the exponential schedule, shortened at random by up to `jitter` of itself
/// (`PORTICO_RETRY_JITTER`, none by default).
pub fn decide(
    record: &AttemptRecord,
    attempts_made: u32,
    max_retries: u32,
    policy: &RetryPolicy,
    jitter: RetryJitter,
    now: DateTime<Utc>,
) -> Next {
    if record.succeeded() {
        return Next::Succeeded;
    }
    if record.status == Some(410) {
        return Next::Failed(FailReason::Gone);
    }
    if !may_retry(attempts_made, max_retries) {
        return Next::Failed(FailReason::Exhausted);
    }
    let delay = match record.retry_after {
        Some(wait) if matches!(record.status, Some(429 | 503)) => clamp_retry_after(policy, wait),
        _ => scheduled_delay(policy, attempts_made, jitter),
    };
    Next::Retry(now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX))
}

/// Runs planned deliveries concurrently: each waits for its endpoint's limits (or is
/// deferred), then for a slot of the replica-wide cap, then sends; a failure's next
/// attempt is scheduled with `jitter` ([`decide`]). Results come back in the order of
/// `planned`.
pub async fn run_all(
    transport: &Transport,
    global: &Arc<Semaphore>,
    jitter: RetryJitter,
    planned: &[Planned],
) -> Vec<Handled> {
    futures::future::join_all(
        planned
            .iter()
            .map(|p| run_one(transport, global, jitter, p)),
    )
    .await
}

/// Runs one planned delivery.
pub async fn run_one(
    transport: &Transport,
    global: &Arc<Semaphore>,
    jitter: RetryJitter,
    p: &Planned,
) -> Handled {
    let _endpoint_permit = match p.endpoint.limiter.admit(ADMISSION_BUDGET).await {
        Admission::Go(permit) => permit,
        Admission::Defer(wait) => {
            return Handled::Deferred(
                Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default(),
            );
        }
    };
    // The semaphore is never closed; if it were, sending without a slot is still safe.
    let _slot = global.acquire().await.ok();
    // Boxed, so that the request's state (kilobytes: the client's futures) exists only
    // while the attempt runs: most deliveries of a large group wait above for their
    // endpoint's cap, and hold only this small future meanwhile.
    Box::pin(attempt(transport, jitter, p)).await
}

/// Makes the attempt of an admitted delivery and decides what follows.
async fn attempt(transport: &Transport, jitter: RetryJitter, p: &Planned) -> Handled {
    let number = p.attempts_before.saturating_add(1);
    // The span is for exported traces: nothing logs inside an attempt, yet the JSON log
    // layer formats a span's fields when it is made (a sixteenth of the dispatcher's
    // instructions per delivery). Without an exporter there is none.
    let span = if portico_telemetry::logging::traces_exported() {
        tracing::info_span!(
            "webhook.delivery_attempt",
            otel.kind = "client",
            webhook.id = %p.endpoint.id,
            webhook.delivery_id = %p.delivery_id,
            webhook.event_id = %p.event.id_text,
            webhook.event_type = %p.event.event_type,
            webhook.attempt = number,
            http.response.status_code = tracing::field::Empty,
            error.kind = tracing::field::Empty,
        )
    } else {
        tracing::Span::none()
    };
    portico_telemetry::propagation::set_parent_from(&span, p.event.trace.as_ref());
    let record = transport
        .send(&p.endpoint, &p.event, number as i32)
        .instrument(span.clone())
        .await;
    if let Some(status) = record.status {
        span.record("http.response.status_code", status);
    }
    if let Some((kind, _)) = &record.error {
        span.record("error.kind", kind.as_str());
    }
    let now = Utc::now();
    let next = decide(
        &record,
        number,
        p.max_retries,
        &p.endpoint.policy,
        jitter,
        now,
    );
    metrics::counter!(names::DELIVERIES, "outcome" => next.status().as_str(), "status_class" => record.status_class())
        .increment(1);
    metrics::histogram!(names::DELIVERY_ATTEMPT_DURATION).record(record.latency.as_secs_f64());
    if next == Next::Succeeded {
        let waited = (now - p.event.accepted_at)
            .to_std()
            .unwrap_or(Duration::ZERO);
        metrics::histogram!(names::EVENT_TO_DELIVERY).record(waited.as_secs_f64());
    }
    Handled::Attempted { record, next }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::ErrorKind;

    fn record(status: Option<u16>, retry_after: Option<u64>) -> AttemptRecord {
        let error = match status {
            Some(200..=299) => None,
            Some(_) => Some((ErrorKind::HttpStatus, String::new())),
            None => Some((ErrorKind::Timeout, String::new())),
        };
        AttemptRecord {
            number: 1,
            started_at: Utc::now(),
            request_headers: "{}".into(),
            status,
            response_body: None,
            latency: Duration::ZERO,
            error,
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    /// 2xx succeeds, 410 is final, failures retry on the schedule until the budget is
    /// spent, and Retry-After is honoured only on 429/503, within the policy's bounds.
    #[test]
    fn decisions_follow_http_etiquette() {
        let p = portico_domain::retry::policy_from_columns(5, 1000, 300_000);
        let now = Utc::now();
        let after =
            |r: AttemptRecord, attempts: u32| decide(&r, attempts, 5, &p, RetryJitter::NONE, now);
        let secs = |n: Next| match n {
            Next::Retry(at) => (at - now).num_seconds(),
            other => panic!("{other:?}"),
        };
        assert_eq!(after(record(Some(204), None), 1), Next::Succeeded);
        assert_eq!(
            after(record(Some(410), None), 1),
            Next::Failed(FailReason::Gone)
        );
        assert_eq!(secs(after(record(Some(500), None), 1)), 1);
        assert_eq!(secs(after(record(None, None), 3)), 4);
        assert_eq!(
            after(record(Some(500), None), 6),
            Next::Failed(FailReason::Exhausted)
        );
        assert_eq!(secs(after(record(Some(429), Some(30)), 1)), 30);
        assert_eq!(secs(after(record(Some(503), Some(0)), 1)), 1);
        assert_eq!(secs(after(record(Some(429), Some(99_999)), 1)), 300);
        // Retry-After on another status is ignored.
        assert_eq!(secs(after(record(Some(500), Some(30)), 2)), 2);
        // A 302 is a failure like any other.
        assert_eq!(secs(after(record(Some(302), None), 1)), 1);
    }

    /// With jitter, a failure's next attempt falls within `[d·(1-j), d]` of the
    /// schedule's delay `d` (the cap included); `Retry-After` is still taken exactly
    /// as the receiver sent it (within the policy's bounds).
    #[test]
    fn jitter_shortens_the_schedule_but_not_retry_after() {
        let p = portico_domain::retry::policy_from_columns(30, 1000, 300_000);
        let jitter = RetryJitter::new(0.5).expect("in range");
        let now = Utc::now();
        let ms = |r: AttemptRecord, attempts: u32| match decide(&r, attempts, 30, &p, jitter, now) {
            Next::Retry(at) => (at - now).num_milliseconds(),
            other => panic!("{other:?}"),
        };
        let (mut lowest, mut highest) = (i64::MAX, 0);
        for _ in 0..500 {
            let got = ms(record(Some(500), None), 4);
            assert!((4_000..=8_000).contains(&got), "{got}");
            lowest = lowest.min(got);
            highest = highest.max(got);
            let got = ms(record(None, None), 20);
            assert!((150_000..=300_000).contains(&got), "{got}");
            assert_eq!(ms(record(Some(429), Some(30)), 1), 30_000);
        }
        assert!(lowest < 5_000 && highest > 7_000, "{lowest}..{highest}");
    }
}
