//! Publishing events: validated here, then handed to JetStream (deduplicated by the
//! idempotency key) and answered once JetStream has stored them. Recording and fan-out
//! happen in the webhook-dispatcher, in batches, never in the request. An owner reads
//! their recent recorded events with [`recent`] (the portal's events page).

use chrono::Utc;
use portico_domain::FieldError;
use portico_domain::pagination::{Cursor, PageRequest, finish_page};
use portico_queue::jobs::{EventDispatch, Job};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::error::ApiError;
use crate::identity::Caller;
use crate::state::AppState;

pub use portico_domain::webhooks::{MAX_EVENT_TYPE_LEN, validate_event_type};

/// Most events in one batch publish (both doors).
pub const MAX_EVENTS_PER_BATCH: usize = 1000;

/// Longest idempotency or ordering key, in bytes.
pub const MAX_KEY_LEN: usize = 255;

/// An event to publish, as both doors parse it.
#[derive(Debug)]
pub struct NewEvent {
    /// Dotted event type, e.g. `order.created`.
    pub event_type: String,
    /// The payload, kept as the caller's raw JSON text (never re-serialised).
    pub data: Box<RawValue>,
    /// Deduplication key; absent means the event is never deduplicated.
    pub idempotency_key: Option<String>,
    /// Opt-in per-key ordering.
    pub ordering_key: Option<String>,
}

/// What the caller gets back.
#[derive(Debug, Clone, Copy)]
pub struct AcceptedEvent {
    /// The event's id; the same for a re-published idempotency key.
    pub id: Uuid,
    /// True when this idempotency key was already accepted.
    pub duplicate: bool,
}

/// Validates an event without publishing it; `index` prefixes paths in a batch.
pub fn validate(event: &NewEvent, max_bytes: usize, prefix: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if let Err(e) = validate_event_type(&event.event_type, &format!("{prefix}/type")) {
        errors.push(e);
    }
    if event.data.get().len() > max_bytes {
        errors.push(FieldError::new(
            "payload_too_large",
            format!("{prefix}/data"),
            format!("event data is larger than {max_bytes} bytes"),
        ));
    }
    for (name, value) in [
        ("idempotencyKey", &event.idempotency_key),
        ("orderingKey", &event.ordering_key),
    ] {
        if let Some(v) = value
            && let Err(e) = portico_domain::text::validate_key(
                v,
                MAX_KEY_LEN,
                "invalid_key",
                &format!("{prefix}/{name}"),
                name,
            )
        {
            errors.push(e);
        }
    }
    errors
}

fn to_job(caller: &Caller, event: NewEvent) -> (Uuid, Job) {
    let user_id = caller.user_id().to_owned();
    let idempotency_key = event
        .idempotency_key
        .unwrap_or_else(|| Uuid::now_v7().to_string());
    let event_id = portico_domain::ids::event_id(&user_id, &idempotency_key);
    let job = Job::EventDispatchV1(EventDispatch {
        event_id,
        user_id,
        event_type: event.event_type,
        data: event.data,
        idempotency_key,
        ordering_key: event.ordering_key,
        accepted_at: Utc::now(),
        only_webhook_id: None,
    });
    (event_id, job)
}

/// Publishes one event for the caller's user.
pub async fn publish(
    state: &AppState,
    caller: &Caller,
    event: NewEvent,
) -> Result<AcceptedEvent, ApiError> {
    caller.require_service()?;
    let errors = validate(&event, state.config().max_event_bytes, "");
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let (id, job) = to_job(caller, event);
    let published = state.publisher().publish(&job).await?;
    Ok(AcceptedEvent {
        id,
        duplicate: published.duplicate,
    })
}

/// Publishes many events at once, all or nothing on validation: every acknowledgement
/// is in flight together, so a batch costs one round trip, not one per event.
pub async fn publish_many(
    state: &AppState,
    caller: &Caller,
    events: Vec<NewEvent>,
) -> Result<Vec<AcceptedEvent>, ApiError> {
    caller.require_service()?;
    if events.is_empty() || events.len() > MAX_EVENTS_PER_BATCH {
        return Err(ApiError::field(
            "invalid_batch_size",
            "/events",
            format!("send between 1 and {MAX_EVENTS_PER_BATCH} events"),
        ));
    }
    let mut errors = Vec::new();
    for (i, event) in events.iter().enumerate() {
        errors.extend(validate(
            event,
            state.config().max_event_bytes,
            &format!("/events/{i}"),
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let (ids, jobs): (Vec<Uuid>, Vec<Job>) = events.into_iter().map(|e| to_job(caller, e)).unzip();
    let published = state.publisher().publish_all(&jobs).await?;
    Ok(ids
        .into_iter()
        .zip(published)
        .map(|(id, p)| AcceptedEvent {
            id,
            duplicate: p.duplicate,
        })
        .collect())
}

/// How far back [`recent`] looks: the read pays for the window (events have no owner
/// index, see `portico_storage::events::recent`), so it is bounded.
pub const RECENT_WINDOW_HOURS: i64 = 24;

/// One of the caller's recent events (the payload as an excerpt).
pub use portico_storage::events::EventSummary;

/// A page of the caller's events recorded in the last [`RECENT_WINDOW_HOURS`], newest
/// first, and the cursor of the next page. Users and services only: an event belongs
/// to its user, and a partner holds no scope that reads events. Events are recorded
/// by the dispatcher, so one appears here once it was dispatched.
pub async fn recent(
    state: &AppState,
    caller: &Caller,
    page: PageRequest,
) -> Result<(Vec<EventSummary>, Option<String>), ApiError> {
    caller.require_user_or_service()?;
    let since = Utc::now() - chrono::Duration::hours(RECENT_WINDOW_HOURS);
    let rows = portico_storage::events::recent(
        state.pool(),
        caller.user_id(),
        since,
        page.after.map(|c| (c.created_at, c.id)),
        page.fetch_limit(),
    )
    .await?;
    Ok(finish_page(rows, &page, |e| Cursor {
        created_at: e.created_at,
        id: e.id,
    }))
}
