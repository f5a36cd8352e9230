//! The operators' admin API: dead letters, listed, inspected, replayed and discarded
//! (`/admin/dead-letters`, `/admin/dead-letters/{id}`, `.../replay`, `.../discard`).

use chrono::{DateTime, Utc};
use portico_domain::dead_letters::{DeadLetterStatus, Resolution};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Query parameters of the dead-letter list.
#[derive(Debug, Default, Clone, Serialize, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct DeadLetterQuery {
    /// Only this consumer, e.g. `webhook-dispatcher.events`.
    pub consumer: Option<String>,
    /// Only jobs of this owner.
    pub user_id: Option<String>,
    /// RFC 3339; recorded at or after.
    pub since: Option<String>,
    /// RFC 3339; recorded before.
    pub until: Option<String>,
    /// Only dead letters in this state; absent = all.
    #[param(value_type = Option<DeadLetterStatus>)]
    pub status: Option<String>,
    /// 1..=500, default 50.
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// A dead-lettered job, without its payload.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterBody {
    /// Id (grows in recording order).
    pub id: i64,
    /// The consumer that gave up on the job.
    pub consumer: String,
    /// The JetStream subject the job arrived on.
    pub subject: String,
    /// Why it was dead-lettered (its latest failure).
    pub reason: String,
    /// The job's owner, when known.
    pub user_id: Option<String>,
    /// The job's own message id, when it decoded.
    pub message_id: Option<String>,
    /// Size of the recorded payload, in bytes.
    pub payload_bytes: i64,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
    /// When an operator resolved it; null while it waits for one.
    pub resolved_at: Option<DateTime<Utc>>,
    /// replayed or discarded; null while unresolved.
    pub resolution: Option<Resolution>,
}

/// One page of dead letters.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterListBody {
    /// Newest first.
    pub data: Vec<DeadLetterBody>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// One audited operator action.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterActionBody {
    /// replayed or discarded.
    pub action: String,
    /// The operator's name from `x-portico-operator` (`operator` when none was given).
    pub operator: String,
    /// The request's `x-request-id`.
    pub request_id: Option<String>,
    /// The client's address.
    pub client_addr: Option<String>,
    /// The reason given.
    pub reason: String,
    /// A replay's `Nats-Msg-Id`.
    pub replay_message_id: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// A dead letter with its job and its audit trail.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterDetailBody {
    /// Id.
    pub id: i64,
    /// The consumer that gave up on the job.
    pub consumer: String,
    /// The JetStream subject the job arrived on.
    pub subject: String,
    /// Why it was dead-lettered (its latest failure).
    pub reason: String,
    /// The job's owner, when known.
    pub user_id: Option<String>,
    /// The job's own message id, when it decoded.
    pub message_id: Option<String>,
    /// Size of the recorded payload, in bytes.
    pub payload_bytes: i64,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
    /// When an operator resolved it; null while it waits for one.
    pub resolved_at: Option<DateTime<Utc>>,
    /// replayed or discarded; null while unresolved.
    pub resolution: Option<Resolution>,
    /// The decoded job (`{"type": "event_dispatch.v1", "job": {...}}`) when the payload
    /// is a job this gateway understands; null otherwise.
    #[schema(value_type = Option<Object>)]
    pub job: Option<serde_json::Value>,
    /// The payload, base64 (standard alphabet), when it is not a decodable job; null otherwise.
    pub payload_base64: Option<String>,
    /// Why the payload does not decode; null when it does.
    pub decode_error: Option<String>,
    /// Every operator action on it, oldest first.
    pub actions: Vec<DeadLetterActionBody>,
}

/// Why an operator replays or discards a dead letter; kept in the audit record.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResolveDeadLetterBody {
    /// 1-1,000 characters, e.g. "fixed by release 1.4.2" or "test data".
    pub reason: String,
}
