//! Recording accepted events: each pulled chunk of event jobs becomes one set-based
//! INSERT, and the jobs are acked only after it committed.

use portico_queue::consumer::{JobMessage, Outcome};
use portico_queue::jobs::{EventDispatch, Job};
use sqlx::PgPool;

/// Records a chunk of event jobs in one statement, then acks them. A failed commit
/// naks them all with backoff; nothing is acked that is not stored.
pub async fn record_chunk(pool: &PgPool, messages: Vec<JobMessage>) {
    let events: Vec<&EventDispatch> = messages
        .iter()
        .filter_map(|m| match &m.job {
            Job::EventDispatchV1(e) => Some(e),
            _ => None,
        })
        .collect();
    let result = insert_events(pool, &events).await;
    let outcome = match &result {
        Ok(()) => Outcome::Done,
        Err(err) => {
            tracing::warn!(%err, count = events.len(), "recording events failed; will retry");
            Outcome::RetryAfter(std::time::Duration::from_secs(1))
        }
    };
    let acks = messages.into_iter().map(|m| {
        let outcome = match (&outcome, &m.job) {
            (Outcome::Done, Job::EventDispatchV1(_)) => Outcome::Done,
            (Outcome::Done, _) => Outcome::Poison("not an event job".into()),
            (other, _) => other.clone(),
        };
        m.finish(outcome)
    });
    for r in futures::future::join_all(acks).await {
        if let Err(err) = r {
            tracing::warn!(%err, "ack failed; the job will be redelivered and deduplicated");
        }
    }
}

/// Inserts events; an event already recorded (a redelivery) is left as it is.
pub async fn insert_events(pool: &PgPool, events: &[&EventDispatch]) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let n = events.len();
    let mut ids = Vec::with_capacity(n);
    let mut users = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    let mut payloads = Vec::with_capacity(n);
    let mut keys = Vec::with_capacity(n);
    let mut orderings = Vec::with_capacity(n);
    let mut accepted = Vec::with_capacity(n);
    for e in events {
        ids.push(e.event_id);
        users.push(e.user_id.as_str());
        types.push(e.event_type.as_str());
        payloads.push(e.data.get());
        keys.push(e.idempotency_key.as_str());
        orderings.push(e.ordering_key.as_deref());
        accepted.push(e.accepted_at);
    }
    sqlx::query(
        "INSERT INTO events (id, user_id, event_type, payload, idempotency_key, ordering_key, accepted_at)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[]::jsonb[], $5::text[], $6::text[], $7::timestamptz[])
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&ids)
    .bind(&users)
    .bind(&types)
    .bind(&payloads)
    .bind(&keys)
    .bind(&orderings)
    .bind(&accepted)
    .execute(pool)
    .await?;
    Ok(())
}
