//! Dead letters, for operators: jobs the workers could not decode or that failed for
//! good, recorded in `job_dead_letters` by [`portico_queue::consumer`]. Operators list
//! and inspect them and resolve each one once: **replay** (the job is re-published
//! through the outbox under a fresh `Nats-Msg-Id`, so JetStream's duplicate window
//! cannot swallow it) or **discard** (nothing is published; the record stays). The
//! resolution, the outbox row of a replay and the audit record (`dead_letter_actions`)
//! are committed in one transaction, so an answered replay is never lost and no change
//! goes unaudited. The statements are [`portico_storage::dead_letters`]'s.
//!
//! Dead letters belong to no caller: only [`crate::identity::Operator`]s reach this module.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use portico_domain::text::{Lines, has_forbidden_control, validate_key};
use portico_domain::{FieldError, pagination};
use portico_queue::jobs::Job;
use portico_storage::dead_letters as storage;

use crate::error::ApiError;
use crate::identity::Operator;
use crate::state::AppState;

/// Longest `reason` of an action, in characters.
pub const MAX_ACTION_REASON_CHARS: usize = 1_000;

/// Longest `consumer` or `userId` filter, in bytes.
const MAX_FILTER_BYTES: usize = 255;

/// A recorded dead letter, without its payload (the storage's row).
pub use portico_storage::dead_letters::DeadLetterRow as DeadLetter;

/// One operator action on a dead letter, as audited (the storage's row).
pub use portico_storage::dead_letters::ActionRow as DeadLetterAction;

/// A dead letter with its payload and every action taken on it, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterDetail {
    /// The record.
    pub dead_letter: DeadLetter,
    /// The recorded bytes (an encoded job, or whatever could not be decoded).
    pub payload: Vec<u8>,
    /// The audit trail.
    pub actions: Vec<DeadLetterAction>,
}

/// Which dead letters a list shows, by resolution (the domain's enum; parse it with
/// [`portico_domain::wire::WireName::parse_field`]).
pub use portico_domain::dead_letters::DeadLetterStatus as ResolutionFilter;

/// The storage's filter for a status.
fn stored_status(status: ResolutionFilter) -> storage::StatusFilter {
    match status.resolution() {
        None => storage::StatusFilter::Unresolved,
        Some(resolution) => storage::StatusFilter::Resolved(resolution),
    }
}

/// Filters of the list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterFilter {
    /// Only this consumer.
    pub consumer: Option<String>,
    /// Only this owner.
    pub user_id: Option<String>,
    /// Recorded at or after.
    pub since: Option<DateTime<Utc>>,
    /// Recorded before.
    pub until: Option<DateTime<Utc>>,
    /// Only this resolution.
    pub status: Option<ResolutionFilter>,
}

impl DeadLetterFilter {
    /// Checks the free-text filters (they reach a query).
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        if let Some(c) = &self.consumer
            && let Err(e) = validate_key(
                c,
                MAX_FILTER_BYTES,
                "invalid_consumer",
                "/consumer",
                "consumer",
            )
        {
            errors.push(e);
        }
        if let Some(u) = &self.user_id
            && let Err(e) =
                validate_key(u, MAX_FILTER_BYTES, "invalid_user_id", "/userId", "userId")
        {
            errors.push(e);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// A validated page request of the list: newest first, by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadLetterPage {
    /// Rows to return.
    pub limit: u32,
    /// Continue below this id.
    pub before_id: Option<i64>,
}

impl DeadLetterPage {
    /// Validates raw `limit` and `cursor` (the same limits as every list).
    pub fn parse(limit: Option<u32>, cursor: Option<&str>) -> Result<Self, FieldError> {
        let limit = pagination::parse_limit(limit)?;
        let before_id = match cursor {
            None | Some("") => None,
            Some(c) => Some(decode_cursor(c)?),
        };
        Ok(Self { limit, before_id })
    }
}

/// The opaque cursor of the page that continues below `id`.
fn encode_cursor(id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("dl|{id}"))
}

fn decode_cursor(text: &str) -> Result<i64, FieldError> {
    let bad = || {
        FieldError::new(
            "invalid_cursor",
            "/cursor",
            "cursor is not one this API issued",
        )
    };
    let raw = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    raw.strip_prefix("dl|")
        .and_then(|id| id.parse().ok())
        .ok_or_else(bad)
}

/// What an operator does with a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Re-publish the job.
    Replay,
    /// Keep the record, publish nothing.
    Discard,
}

impl Resolution {
    /// The recorded word (`replayed`, `discarded`).
    pub fn as_str(self) -> &'static str {
        self.stored().as_str()
    }

    /// How the storage records it.
    fn stored(self) -> storage::Resolution {
        match self {
            Resolution::Replay => storage::Resolution::Replayed,
            Resolution::Discard => storage::Resolution::Discarded,
        }
    }
}

/// Checks the reason an operator gives: 1-1,000 characters, not blank, no control
/// characters but tab and line breaks.
pub fn validate_reason(reason: &str) -> Result<(), FieldError> {
    if reason.trim().is_empty()
        || reason.chars().count() > MAX_ACTION_REASON_CHARS
        || has_forbidden_control(reason, Lines::Multi)
    {
        return Err(FieldError::new(
            "invalid_reason",
            "/reason",
            format!(
                "reason must be 1-{MAX_ACTION_REASON_CHARS} characters, not blank, without control characters"
            ),
        ));
    }
    Ok(())
}

/// One page of dead letters, newest first.
pub async fn list(
    state: &AppState,
    filter: &DeadLetterFilter,
    page: DeadLetterPage,
) -> Result<(Vec<DeadLetter>, Option<String>), ApiError> {
    filter.validate().map_err(ApiError::Validation)?;
    let stored = storage::DeadLetterFilter {
        consumer: filter.consumer.as_deref(),
        user_id: filter.user_id.as_deref(),
        since: filter.since,
        until: filter.until,
        status: filter.status.map(stored_status),
    };
    let mut rows = storage::list(
        state.pool(),
        &stored,
        page.before_id,
        i64::from(page.limit) + 1,
    )
    .await?;
    if rows.len() > page.limit as usize {
        rows.truncate(page.limit as usize);
        let next = rows.last().map(|r| encode_cursor(r.id));
        Ok((rows, next))
    } else {
        Ok((rows, None))
    }
}

/// One dead letter with its payload and audit trail.
pub async fn get(state: &AppState, id: i64) -> Result<DeadLetterDetail, ApiError> {
    let found = storage::get(state.pool(), id)
        .await?
        .ok_or(ApiError::NotFound("dead letter"))?;
    let actions = storage::actions(state.pool(), id).await?;
    Ok(DeadLetterDetail {
        dead_letter: found.record,
        payload: found.payload,
        actions,
    })
}

/// Replays or discards a dead letter, once: 404 `not_found` for no such record, 409
/// `dead_letter_resolved` when it was already replayed or discarded, 409
/// `dead_letter_undecodable` when a replay finds no job this gateway can decode
/// (discard it instead). A replay re-publishes the job through the outbox under
/// `<the job's message id>:replay:<dead letter id>.<n>` (n counts the record's
/// replays), so JetStream's duplicate window never drops it; the relay is woken after
/// the commit. Returns the record as it now stands.
pub async fn resolve(
    state: &AppState,
    operator: &Operator,
    id: i64,
    resolution: Resolution,
    reason: &str,
) -> Result<DeadLetterDetail, ApiError> {
    validate_reason(reason)?;
    let mut tx = state.pool().begin().await?;
    let storage::LockedDeadLetter {
        payload,
        resolution: resolved_as,
        resolved_at,
    } = storage::lock(&mut *tx, id)
        .await?
        .ok_or(ApiError::NotFound("dead letter"))?;
    if let Some(done) = resolved_as {
        let when = resolved_at
            .map(|t| format!(" at {}", t.to_rfc3339()))
            .unwrap_or_default();
        return Err(ApiError::Specific {
            status: axum::http::StatusCode::CONFLICT,
            code: "dead_letter_resolved",
            message: format!(
                "dead letter {id} was already {}{when}; it cannot be replayed or discarded again",
                done.as_str()
            ),
        });
    }
    let replay_message_id = match resolution {
        Resolution::Discard => None,
        Resolution::Replay => {
            let job = Job::decode(&payload).map_err(|e| ApiError::Specific {
                status: axum::http::StatusCode::CONFLICT,
                code: "dead_letter_undecodable",
                message: format!(
                    "dead letter {id} holds no job this gateway can decode ({e}); discard it"
                ),
            })?;
            let replays = storage::count_replays(&mut *tx, id).await?;
            let message_id = format!("{}:replay:{id}.{}", job.message_id(), replays + 1);
            portico_queue::outbox::enqueue_as(
                &mut tx,
                state.publisher().topology(),
                &job,
                &message_id,
            )
            .await?;
            Some(message_id)
        }
    };
    storage::resolve(
        &mut tx,
        id,
        resolution.stored(),
        &storage::Audit {
            operator: &operator.name,
            request_id: operator.request_id.as_deref(),
            client_addr: operator.client_addr.as_deref(),
            reason,
            replay_message_id: replay_message_id.as_deref(),
        },
    )
    .await?;
    // The record goes to the chain of the job's owner (the system chain when unknown).
    let owner = storage::get(&mut *tx, id)
        .await?
        .and_then(|d| d.record.user_id);
    let action = match resolution {
        Resolution::Replay => "dead_letter.replayed",
        Resolution::Discard => "dead_letter.discarded",
    };
    let mut entry =
        crate::app::audit::AuditEntry::new(action, "dead_letter", id).detail("reason", reason);
    if let Some(message_id) = &replay_message_id {
        entry = entry.detail("replayMessageId", message_id.as_str());
    }
    crate::app::audit::record_operator(&mut tx, operator, owner.as_deref(), entry).await?;
    tx.commit().await?;
    if replay_message_id.is_some() {
        state.outbox().notify();
    }
    tracing::info!(dead_letter = id, action = resolution.as_str(), operator = %operator.name,
        request_id = operator.request_id.as_deref().unwrap_or(""), "dead letter resolved");
    get(state, id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cursors round-trip; garbage and other lists' cursors are refused.
    #[test]
    fn cursors_round_trip() {
        for id in [1, 42, i64::MAX] {
            assert_eq!(decode_cursor(&encode_cursor(id)), Ok(id));
        }
        assert!(decode_cursor("nope").is_err());
        assert!(decode_cursor(&URL_SAFE_NO_PAD.encode("1700000000|abc")).is_err());
        let page = DeadLetterPage::parse(Some(2), Some(&encode_cursor(9))).expect("a page");
        assert_eq!((page.limit, page.before_id), (2, Some(9)));
        assert!(DeadLetterPage::parse(Some(501), None).is_err());
    }

    /// Reasons are required prose; filters are keys.
    #[test]
    fn reasons_and_filters_are_checked() {
        assert!(validate_reason("fixed in 1.4.2\nsee INC-7").is_ok());
        for bad in ["", "   ", "nul\0", &"x".repeat(MAX_ACTION_REASON_CHARS + 1)] {
            assert!(validate_reason(bad).is_err(), "{bad:?}");
        }
        let filter = DeadLetterFilter {
            consumer: Some("a\0".into()),
            user_id: Some(String::new()),
            ..DeadLetterFilter::default()
        };
        assert_eq!(filter.validate().map_err(|e| e.len()), Err(2));
        use portico_domain::wire::WireName;
        let parse = |text: &str| ResolutionFilter::parse_field(text, "/status");
        assert_eq!(parse("replayed"), Ok(ResolutionFilter::Replayed));
        assert!(parse("all").is_err());
        for f in [
            ResolutionFilter::Unresolved,
            ResolutionFilter::Replayed,
            ResolutionFilter::Discarded,
        ] {
            let name = serde_json::json!(f);
            assert_eq!(parse(name.as_str().unwrap()), Ok(f));
        }
    }
}
