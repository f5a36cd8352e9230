//! Committing a batch of delivery results: delivery rows (new or claimed) with their
//! attempts, endpoint health, and the operational events all of that implies, in one
//! transaction. Only after it commits may the caller acknowledge the jobs (events
//! pipeline) or consider the claimed rows done (retry poller).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use portico_domain::ids::{DeliveryId, WebhookId};
use portico_domain::webhooks::DeliveryStatus;
use portico_queue::jobs::Job;
use portico_storage::analytics::{self, Outcome, RollupEvent, RollupRows};
use portico_storage::deliveries::{
    self, AttemptRows, ClaimedRow, ClaimedUpdates, HealthDelta, HealthDeltas, IdArray, NewAttempt,
    NewDeliveryRows,
};
use portico_telemetry::metrics as names;
use uuid::Uuid;

use crate::delivery::{FailReason, Handled, Next, Planned};
use crate::operational::{self, DeliveryFacts};
use crate::{Dispatcher, announce};

/// The state a delivery row takes after its handling.
#[derive(Debug, Clone)]
pub struct RowState {
    /// `pending`, `retrying`, `succeeded` or `failed`.
    pub status: DeliveryStatus,
    /// Attempts made in total.
    pub attempts: i32,
    /// When to try next.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Status of the last response.
    pub last_status_code: Option<i32>,
    /// Last error.
    pub last_error: Option<String>,
    /// Whether an attempt was made now.
    pub attempted: bool,
}

/// One attempt's contribution to its endpoint's health, in completion order.
#[derive(Debug)]
struct HealthEntry {
    webhook_id: WebhookId,
    delivery_id: DeliveryId,
    success: bool,
    gone: bool,
}

/// One delivery's contribution to the analytics rollups, kept until the commit knows
/// which rows were actually written (a redelivered pair another replica recorded first
/// must not be counted twice).
#[derive(Debug)]
struct RollupEntry {
    delivery_id: DeliveryId,
    user_id: String,
    webhook_id: WebhookId,
    event_type: String,
    at: DateTime<Utc>,
    attempt_latency_ms: Option<i64>,
    outcome: Outcome,
}

/// Accumulates the results of a batch in the shape the SQL wants.
#[derive(Default)]
pub struct BatchResults {
    attempts: AttemptRows,
    /// Analytics contributions, one per delivery attempted or failed.
    rollup: Vec<RollupEntry>,
    health: Vec<HealthEntry>,
    /// Delivery and job of each delivery-level operational event.
    delivery_events: Vec<(DeliveryId, Job)>,
    /// Latest facts per webhook (what tipped it, for webhook-level events).
    facts: HashMap<Uuid, (String, DeliveryFacts)>,
    /// What to announce to live listeners once committed.
    live: announce::Notes,
}

impl BatchResults {
    /// Adds one handled delivery (taking its record, so nothing is copied) and returns
    /// the state its row takes. The facts for operational events are only gathered
    /// when something is wrong or recovered: a healthy delivery costs no more.
    pub fn add(&mut self, p: &Planned, handled: Handled) -> RowState {
        let (record, next) = match handled {
            Handled::Deferred(at) => {
                return RowState {
                    status: if p.attempts_before == 0 {
                        DeliveryStatus::Pending
                    } else {
                        DeliveryStatus::Retrying
                    },
                    attempts: p.attempts_before as i32,
                    next_attempt_at: Some(at),
                    last_status_code: None,
                    last_error: None,
                    attempted: false,
                };
            }
            Handled::Attempted { record, next } => (record, next),
        };
        let success = next == Next::Succeeded;
        let next_attempt_at = match next {
            Next::Retry(at) => Some(at),
            _ => None,
        };
        let (error_kind, last_error) = match record.error {
            Some((kind, message)) => (Some(kind.as_str()), Some(message)),
            None => (None, None),
        };
        let live = (record.number, record.status, record.latency);
        self.live
            .attempt(p, live.0, live.1, live.2, next, error_kind);
        let mut kinds: Vec<&'static str> = Vec::new();
        if !p.event.is_operational() {
            if !success && record.number == 1 {
                kinds.push(operational::DELIVERY_FAILING);
            }
            if matches!(next, Next::Failed(_)) {
                kinds.push(operational::DELIVERY_EXHAUSTED);
            }
            if success && record.number > 1 {
                kinds.push(operational::DELIVERY_RECOVERED);
            }
        }
        if !success || !kinds.is_empty() {
            let facts = DeliveryFacts {
                webhook_id: p.endpoint.id,
                url: p.endpoint.url.to_string(),
                delivery_id: p.delivery_id,
                event_id: p.event.id,
                event_type: p.event.event_type.clone(),
                last_status_code: record.status,
                attempts: record.number as u32,
                last_error: last_error.clone(),
                next_attempt_at,
            };
            for kind in kinds {
                if let Some(job) = operational::delivery_event(kind, &p.endpoint.user_id, &facts) {
                    self.delivery_events.push((DeliveryId(p.delivery_id), job));
                }
            }
            if !success {
                self.facts
                    .insert(p.endpoint.id, (p.endpoint.user_id.clone(), facts));
            }
        }
        self.health.push(HealthEntry {
            webhook_id: WebhookId(p.endpoint.id),
            delivery_id: DeliveryId(p.delivery_id),
            success,
            gone: next == Next::Failed(FailReason::Gone),
        });
        let latency_ms = record.latency.as_millis().min(i32::MAX as u128) as i32;
        self.rollup.push(RollupEntry {
            delivery_id: DeliveryId(p.delivery_id),
            user_id: p.endpoint.user_id.clone(),
            webhook_id: WebhookId(p.endpoint.id),
            event_type: p.event.event_type.clone(),
            at: record.started_at,
            attempt_latency_ms: Some(i64::from(latency_ms)),
            outcome: match next {
                Next::Succeeded => Outcome::Succeeded,
                Next::Retry(_) => Outcome::Retrying,
                Next::Failed(reason) => Outcome::Failed {
                    exhausted: reason == FailReason::Exhausted,
                },
            },
        });
        self.attempts.push(NewAttempt {
            delivery_id: DeliveryId(p.delivery_id),
            number: record.number,
            headers: record.request_headers,
            status: record.status.map(i32::from),
            body: record.response_body,
            latency_ms,
            error_kind,
            error_message: last_error.clone(),
            started_at: record.started_at,
        });
        RowState {
            status: next.status(),
            attempts: record.number,
            next_attempt_at,
            last_status_code: record.status.map(i32::from),
            last_error,
            attempted: true,
        }
    }

    /// Adds a claimed delivery whose endpoint is no longer active: it fails without an
    /// attempt (counted as failed, not exhausted, in the analytics).
    pub fn endpoint_inactive(&mut self, row: &ClaimedRow) -> RowState {
        let live = (row.id, row.webhook_id, row.event_id.as_uuid());
        self.live
            .endpoint_inactive(&row.user_id, live.0, live.1, live.2);
        self.rollup.push(RollupEntry {
            delivery_id: row.id,
            user_id: row.user_id.clone(),
            webhook_id: row.webhook_id,
            event_type: row.event_type.clone(),
            at: Utc::now(),
            attempt_latency_ms: None,
            outcome: Outcome::Failed { exhausted: false },
        });
        RowState {
            status: Next::Failed(FailReason::EndpointInactive).status(),
            attempts: row.attempts,
            next_attempt_at: None,
            last_status_code: None,
            last_error: Some("the webhook is disabled or deleted".to_owned()),
            attempted: false,
        }
    }

    /// The rollup rows of the deliveries in `written` (all of them with `None`),
    /// aggregated per (owner, width, bucket, webhook, event type).
    fn rollups(&self, written: Option<&HashSet<DeliveryId>>) -> RollupRows {
        RollupRows::from_events(
            self.rollup
                .iter()
                .filter(|e| written.is_none_or(|w| w.contains(&e.delivery_id)))
                .map(|e| RollupEvent {
                    user_id: &e.user_id,
                    webhook_id: e.webhook_id,
                    event_type: &e.event_type,
                    at: e.at,
                    attempt_latency_ms: e.attempt_latency_ms,
                    outcome: e.outcome,
                }),
        )
    }

    /// Every attempt succeeded and no operational event is due (deferred deliveries,
    /// which made no attempt, do not count against it).
    fn all_succeeded(&self) -> bool {
        self.delivery_events.is_empty() && self.health.iter().all(|e| e.success)
    }

    /// The webhooks that answered, sorted and without repeats (the order in which
    /// their rows are locked, the same in every statement).
    fn healed_webhooks(&self) -> IdArray<WebhookId> {
        let mut ids: IdArray<WebhookId> = self.health.iter().map(|e| e.webhook_id).collect();
        ids.sort_unique();
        ids
    }

    fn health_deltas(&self, written: &HashSet<DeliveryId>) -> HealthDeltas {
        let mut order: Vec<WebhookId> = Vec::new();
        let mut acc: HashMap<WebhookId, (i32, bool, bool)> = HashMap::new();
        for e in self
            .health
            .iter()
            .filter(|e| written.contains(&e.delivery_id))
        {
            let entry = acc.entry(e.webhook_id).or_insert_with(|| {
                order.push(e.webhook_id);
                (0, false, false)
            });
            if e.success {
                entry.0 = 0;
                entry.1 = true;
            } else {
                entry.0 += 1;
            }
            entry.2 |= e.gone;
        }
        let mut d = HealthDeltas::default();
        order.sort();
        for id in order {
            let (failures, success, gone) = acc[&id];
            d.push(HealthDelta {
                webhook_id: id,
                trailing_failures: failures,
                had_success: success,
                gone,
            });
        }
        d
    }
}

/// Which rows a batch writes.
pub enum Rows {
    /// New deliveries from the events pipeline.
    New(NewDeliveryRows),
    /// Claimed deliveries from the retry poller.
    Claimed(ClaimedUpdates),
}

/// Commits a batch: rows and attempts, health, operational events (through the
/// outbox), in one transaction; then wakes the outbox relay and tells every replica
/// about disabled endpoints. A transaction that lost a deadlock or serialization race
/// is run again (the attempts were made; recording them must not be given up lightly).
pub async fn commit(
    dispatcher: &Dispatcher,
    rows: Rows,
    results: BatchResults,
) -> Result<(), sqlx::Error> {
    let mut tries = 0;
    loop {
        tries += 1;
        match commit_once(dispatcher, &rows, &results).await {
            Err(err) if tries < 4 && is_transient(&err) => {
                tracing::debug!(%err, tries, "batch commit lost a race; running it again");
                tokio::time::sleep(std::time::Duration::from_millis(20 * tries)).await;
            }
            Err(err) => return Err(err),
            Ok(committed) => {
                // Committed: now (never before) live listeners may hear of it.
                results.live.announce(&dispatcher.live, &committed);
                return Ok(());
            }
        }
    }
}

/// Deadlock detected or serialization failure: safe to run the transaction again.
fn is_transient(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|c| c == "40P01" || c == "40001")
}

async fn commit_once(
    dispatcher: &Dispatcher,
    rows: &Rows,
    results: &BatchResults,
) -> Result<announce::Committed, sqlx::Error> {
    if let Rows::New(d) = rows
        && results.all_succeeded()
    {
        // The common case: nothing failed, so no counter grows, no endpoint is
        // disabled and no operational event is due. One statement, one round trip,
        // the analytics rollups included.
        let healed = results.healed_webhooks();
        let (written, rolled_up) = deliveries::insert_deliveries_with_rollups(
            &dispatcher.pool,
            d,
            &results.attempts,
            &healed,
            &results.rollups(None),
        )
        .await?;
        if !rolled_up {
            // Another replica recorded some of these pairs first (a redelivered job):
            // the statement left the rollups out, so add those of the rows it wrote.
            // A second statement, so a crash right here loses these few counts; the
            // rows themselves are committed and their job is not acked yet.
            analytics::upsert(&dispatcher.pool, &results.rollups(Some(&written))).await?;
        }
        return Ok(announce::Committed::rows(written));
    }
    let disable_after = dispatcher.disable_after;
    let mut tx = dispatcher.pool.begin().await?;
    let written = match rows {
        Rows::New(d) => {
            deliveries::insert_deliveries(&mut *tx, d, &results.attempts, &IdArray::default())
                .await?
        }
        Rows::Claimed(u) => deliveries::update_claimed(&mut *tx, u, &results.attempts).await?,
    };
    analytics::upsert(&mut *tx, &results.rollups(Some(&written))).await?;
    let deltas = results.health_deltas(&written);
    let changes = deliveries::update_health(&mut *tx, &deltas, disable_after).await?;
    let mut jobs: Vec<Job> = results
        .delivery_events
        .iter()
        .filter(|(delivery, _)| written.contains(delivery))
        .map(|(_, job)| job.clone())
        .collect();
    let mut disabled: Vec<(String, String)> = Vec::new();
    let mut endpoints: Vec<announce::EndpointNote> = Vec::new();
    let warn_at = operational::warning_threshold(disable_after);
    for change in &changes {
        let Some((owner, facts)) = results.facts.get(&change.webhook_id.as_uuid()) else {
            continue;
        };
        // The warning at 80 % comes first, also when one batch jumps past it straight
        // to the threshold: an owner is always warned before being disabled.
        let crossed_warning = disable_after > 0
            && change.was_active
            && change.old_failures < warn_at
            && change.new_failures >= warn_at
            && change.disabled_reason.as_deref() != Some("gone");
        if crossed_warning
            && let Some(job) = operational::webhook_event(
                operational::WEBHOOK_DISABLING_SOON,
                owner,
                facts,
                None,
                change.new_failures,
                disable_after,
            )
        {
            jobs.push(job);
        }
        if crossed_warning {
            endpoints.push(announce::EndpointNote {
                owner: owner.clone(),
                webhook_id: change.webhook_id,
                state: "failing",
                reason: None,
                failures: change.new_failures,
            });
        }
        if change.was_active && !change.active {
            let reason = change
                .disabled_reason
                .clone()
                .unwrap_or_else(|| "failing".into());
            if let Some(job) = operational::webhook_event(
                operational::WEBHOOK_DISABLED,
                owner,
                facts,
                Some(&reason),
                change.new_failures,
                disable_after,
            ) {
                jobs.push(job);
            }
            endpoints.push(announce::EndpointNote {
                owner: owner.clone(),
                webhook_id: change.webhook_id,
                state: "disabled",
                reason: Some(reason.clone()),
                failures: change.new_failures,
            });
            disabled.push((change.user_id.clone(), reason));
        }
    }
    for job in &jobs {
        portico_queue::outbox::enqueue(&mut tx, &dispatcher.topology, job)
            .await
            .map_err(|e| match e {
                portico_queue::QueueError::Outbox(e) => e,
                other => sqlx::Error::Protocol(other.to_string()),
            })?;
    }
    tx.commit().await?;
    if !jobs.is_empty() {
        dispatcher.outbox.notify();
    }
    for (user, reason) in disabled {
        tracing::warn!(user = %user, %reason, "webhook endpoint disabled");
        metrics::counter!(names::ENDPOINTS_DISABLED, "reason" => reason).increment(1);
        dispatcher.invalidate_user(&user).await;
    }
    Ok(announce::Committed { written, endpoints })
}
