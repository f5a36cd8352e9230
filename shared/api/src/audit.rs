//! The audit log: `GET /audit-log` (one page of the caller's records) and
//! `GET /audit-log/verify` (the hash chain recomputed). See `docs/api/audit.md`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Query parameters of the audit-log list; every filter is an exact match.
#[derive(Debug, Default, Clone, Serialize, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct AuditLogQuery {
    /// Only this action, e.g. `webhook.updated`.
    pub action: Option<String>,
    /// Only this resource type, e.g. `webhook`.
    pub resource_type: Option<String>,
    /// Only this resource id.
    pub resource_id: Option<String>,
    /// Only this kind of actor: `user`, `service`, `partner` or `operator`.
    pub actor_kind: Option<String>,
    /// Only this actor id (a user id, an integration id, an operator's name).
    pub actor_id: Option<String>,
    /// RFC 3339; recorded at or after.
    pub since: Option<String>,
    /// RFC 3339; recorded before.
    pub until: Option<String>,
    /// 1..=500, default 50.
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// Who did it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditActorBody {
    /// `user`, `service` (an internal service acting for the user), `partner` (an
    /// integration's credentials) or `operator`.
    pub kind: String,
    /// The user id (also for `service`: the user it acted for), the integration id, or
    /// the operator's name as given in `x-portico-operator`.
    pub id: String,
    /// The client's address, when known.
    pub client_addr: Option<String>,
    /// The request's `x-request-id`, when known.
    pub request_id: Option<String>,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecordBody {
    /// Record id.
    pub id: String,
    /// Position in the owner's chain, from 1.
    pub seq: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub actor: AuditActorBody,
    /// What, e.g. `webhook.updated`, `integration.credentials_regenerated`.
    pub action: String,
    /// The kind of resource, e.g. `webhook`.
    pub resource_type: String,
    /// Its id.
    pub resource_id: String,
    /// `fields`: the names of the fields the request set; other small details. Never a
    /// secret: no signing secret, API secret or custom header value.
    #[schema(value_type = Object)]
    pub changes: serde_json::Value,
    /// The previous record's hash (lowercase hex).
    pub prev_hash: String,
    /// `SHA-256(prevHash || canonical record bytes)`, lowercase hex.
    pub hash: String,
}

/// One page of audit records.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditLogListBody {
    /// Newest first.
    pub data: Vec<AuditRecordBody>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Query parameters of the verification.
#[derive(Debug, Default, Clone, Serialize, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct AuditVerifyQuery {
    /// Start at this sequence number, trusting that record's `prevHash`; absent =
    /// from the oldest retained record (the chain's anchor).
    pub from_seq: Option<i64>,
}

/// What recomputing the chain found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditVerificationBody {
    /// True when no record was edited or removed.
    pub valid: bool,
    /// Records checked and found intact (before the break, if any).
    pub records: u64,
    /// The sequence number verification started from.
    pub from_seq: i64,
    /// The newest record's sequence number (0: no record yet).
    pub head_seq: i64,
    /// The newest record's hash, lowercase hex: note it to prove later that nothing
    /// before it changed.
    pub head: String,
    /// The first broken sequence number; absent when valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broken_at: Option<i64>,
    /// `edited` (a record's fields or link do not match its hash) or `removed` (a
    /// record is missing); absent when valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What exactly did not match; absent when valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}
