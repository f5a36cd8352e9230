//! The audit log, for both doors and the portal: every state-changing operation of
//! [`crate::app`] calls [`record`] (or [`record_operator`]) once, inside the
//! transaction of its change, just before the commit, so a change and its record commit
//! together or not at all, and a refused call (its error returned before) writes none.
//!
//! Who: the [`Caller`] (a user, an internal service acting for a user, a partner
//! integration) or the [`Operator`]; the client's address and the request id come from
//! the [`RequestOrigin`] each door sets around its handler ([`with_origin`]), so the
//! application functions keep their signatures. What: an action
//! (`webhook.updated`), the resource's type and id, and [`AuditEntry::fields`] (the
//! names of the fields the request set, never their values) with small details that
//! are never secret (signing secrets, API secrets and custom header values never reach
//! a record: header *names* may, their values may not).
//!
//! Not audited, on purpose: publishing events (`POST /api/events`, gRPC `Publish`):
//! the hot path, one record per event would serialise every publisher of a user on
//! the chain head; events have their own durable record (the `events` table).
//!
//! Reading: [`list`] (filters and a keyset cursor) and [`verify`] (recomputes the
//! owner's hash chain, [`portico_storage::audit::verify`]). Users and internal services
//! read their own user's log; partners are refused (403): the log records the owner's
//! own management actions, which a partner's scopes do not cover.

use std::future::Future;

use chrono::{DateTime, Utc};
use portico_domain::pagination::{self, PageRequest};
use portico_storage::audit::{self as store, AuditFilter, NewAuditRecord};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::identity::{Caller, Operator};
use crate::state::AppState;

/// Where the current request came from: set by each door around its handler.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestOrigin {
    /// The request's `x-request-id` (REST sets one when the client sent none).
    pub request_id: Option<String>,
    /// The client's address (the first `X-Forwarded-For` hop when trusted).
    pub client_addr: Option<String>,
}

/// Longest request id kept in a record, in bytes.
const MAX_REQUEST_ID_BYTES: usize = 200;

impl RequestOrigin {
    /// The origin of a request head: its `x-request-id` (1-200 visible bytes, else
    /// none) and the client's address.
    pub fn from_head(
        headers: &axum::http::HeaderMap,
        extensions: &axum::http::Extensions,
        trust_forwarded_for: bool,
    ) -> Self {
        let request_id = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= MAX_REQUEST_ID_BYTES)
            .map(str::to_owned);
        let mut client_addr = crate::net::peer_address(headers, extensions, trust_forwarded_for);
        if client_addr.is_none() {
            client_addr = extensions
                .get::<tonic::transport::server::TcpConnectInfo>()
                .and_then(|info| info.remote_addr())
                .map(|addr| addr.ip().to_string());
        }
        Self {
            request_id,
            client_addr,
        }
    }
}

tokio::task_local! {
    static ORIGIN: RequestOrigin;
}

/// Runs a request's handler with its origin visible to [`record`]. Handlers run inside
/// the future of the door's middleware, so the task-local is set while they run.
pub async fn with_origin<F: Future>(origin: RequestOrigin, handler: F) -> F::Output {
    ORIGIN.scope(origin, handler).await
}

/// The current request's origin; empty outside a request (a background job).
fn origin() -> RequestOrigin {
    ORIGIN.try_with(Clone::clone).unwrap_or_default()
}

/// What one audited operation did.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// `webhook.updated`, `integration.credentials_regenerated`, ...
    pub action: &'static str,
    /// `webhook`, `integration`, ...
    pub resource_type: &'static str,
    /// The resource's id.
    pub resource_id: String,
    /// `fields` and details; never a secret value.
    pub changes: Map<String, Value>,
}

impl AuditEntry {
    /// An entry without details.
    pub fn new(
        action: &'static str,
        resource_type: &'static str,
        resource_id: impl ToString,
    ) -> Self {
        Self {
            action,
            resource_type,
            resource_id: resource_id.to_string(),
            changes: Map::new(),
        }
    }

    /// The names of the fields the request set (never their values).
    pub fn fields<'a>(mut self, names: impl IntoIterator<Item = &'a str>) -> Self {
        let names: Vec<Value> = names.into_iter().map(Value::from).collect();
        self.changes.insert("fields".into(), Value::Array(names));
        self
    }

    /// A non-secret detail (a count, a state, header *names*). Callers must never pass
    /// a secret or a custom header value.
    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.changes.insert(key.to_owned(), value.into());
        self
    }
}

/// Appends the entry to the caller's owner's chain, in `conn`'s transaction (call it
/// last before the commit: it locks the owner's chain head until then).
pub async fn record(
    conn: &mut sqlx::PgConnection,
    caller: &Caller,
    entry: AuditEntry,
) -> Result<(), ApiError> {
    let (kind, actor) = match caller {
        Caller::User { user_id } => ("user", user_id.clone()),
        Caller::Service { user_id } => ("service", user_id.clone()),
        Caller::Partner(p) => ("partner", p.integration_id.to_string()),
    };
    append(conn, caller.user_id(), kind, &actor, origin(), entry).await
}

/// Appends an operator's action to the chain of `owner_id` (the user whose data it
/// touched), or to the system chain ([`store::SYSTEM_OWNER`]) when none.
pub async fn record_operator(
    conn: &mut sqlx::PgConnection,
    operator: &Operator,
    owner_id: Option<&str>,
    entry: AuditEntry,
) -> Result<(), ApiError> {
    let origin = RequestOrigin {
        request_id: operator.request_id.clone(),
        client_addr: operator.client_addr.clone(),
    };
    append(
        conn,
        owner_id.unwrap_or(store::SYSTEM_OWNER),
        "operator",
        &operator.name,
        origin,
        entry,
    )
    .await
}

async fn append(
    conn: &mut sqlx::PgConnection,
    owner_id: &str,
    actor_kind: &str,
    actor_id: &str,
    origin: RequestOrigin,
    entry: AuditEntry,
) -> Result<(), ApiError> {
    let changes = Value::Object(entry.changes);
    store::append(
        conn,
        &NewAuditRecord {
            owner_id,
            actor_kind,
            actor_id,
            client_addr: origin.client_addr.as_deref(),
            request_id: origin.request_id.as_deref(),
            action: entry.action,
            resource_type: entry.resource_type,
            resource_id: &entry.resource_id,
            changes: &changes,
        },
    )
    .await?;
    Ok(())
}

/// Refuses partners: the audit log is the owner's.
fn require_owner(caller: &Caller) -> Result<(), ApiError> {
    match caller {
        Caller::Partner(_) => Err(ApiError::Forbidden(
            "partner credentials cannot read the audit log; the integration's owner can".into(),
        )),
        _ => Ok(()),
    }
}

/// One audit record as its owner reads it.
pub type AuditRecord = store::AuditRecordRow;

/// The filters of a list, validated by the door.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditListFilter {
    /// Exact action.
    pub action: Option<String>,
    /// Exact resource type.
    pub resource_type: Option<String>,
    /// Exact resource id.
    pub resource_id: Option<String>,
    /// `user`, `service`, `partner` or `operator`.
    pub actor_kind: Option<String>,
    /// Exact actor id.
    pub actor_id: Option<String>,
    /// At or after.
    pub since: Option<DateTime<Utc>>,
    /// Before.
    pub until: Option<DateTime<Utc>>,
}

/// The actor kinds a filter may name.
pub const ACTOR_KINDS: [&str; 4] = ["user", "service", "partner", "operator"];

/// One page of the caller's user's audit records, newest first.
pub async fn list(
    state: &AppState,
    caller: &Caller,
    filter: &AuditListFilter,
    page: PageRequest,
) -> Result<(Vec<AuditRecord>, Option<String>), ApiError> {
    require_owner(caller)?;
    let rows = store::list(
        state.pool(),
        caller.user_id(),
        &AuditFilter {
            action: filter.action.as_deref(),
            resource_type: filter.resource_type.as_deref(),
            resource_id: filter.resource_id.as_deref(),
            actor_kind: filter.actor_kind.as_deref(),
            actor_id: filter.actor_id.as_deref(),
            since: filter.since,
            until: filter.until,
        },
        page.after.map(|c| (c.created_at, c.id)),
        page.fetch_limit(),
    )
    .await?;
    Ok(pagination::finish_page(rows, &page, |r| {
        pagination::Cursor {
            created_at: r.at,
            id: r.id,
        }
    }))
}

/// What verifying a chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainVerification {
    /// True when every checked record is intact and the newest is the head.
    pub valid: bool,
    /// Records checked and intact.
    pub records: u64,
    /// Where verification started.
    pub from_seq: i64,
    /// The head's sequence number.
    pub head_seq: i64,
    /// The head's hash, lowercase hex.
    pub head: String,
    /// The first broken sequence number.
    pub broken_at: Option<i64>,
    /// `edited` or `removed`.
    pub reason: Option<&'static str>,
    /// What exactly did not match.
    pub detail: Option<String>,
}

/// Recomputes the caller's user's chain from its anchor (or `from_seq`).
pub async fn verify(
    state: &AppState,
    caller: &Caller,
    from_seq: Option<i64>,
) -> Result<ChainVerification, ApiError> {
    require_owner(caller)?;
    if let Some(seq) = from_seq
        && seq < 1
    {
        return Err(ApiError::field(
            "invalid_from_seq",
            "/fromSeq",
            "fromSeq must be a sequence number (1 or more)",
        ));
    }
    let v = store::verify(state.pool(), caller.user_id(), from_seq).await?;
    let (broken_at, reason, detail) = match v.broken {
        Some((seq, why, detail)) => (Some(seq), Some(why.as_str()), Some(detail)),
        None => (None, None, None),
    };
    Ok(ChainVerification {
        valid: broken_at.is_none(),
        records: v.records,
        from_seq: v.from_seq,
        head_seq: v.head_seq,
        head: store::hex(&v.head_hash),
        broken_at,
        reason,
        detail,
    })
}

/// Records an operation that changes no row of its own (a test event sent, a job
/// published): the record alone, in its own transaction, after the operation succeeded.
pub async fn record_alone(
    state: &AppState,
    caller: &Caller,
    entry: AuditEntry,
) -> Result<(), ApiError> {
    let mut tx = state.pool().begin().await?;
    record(&mut tx, caller, entry).await?;
    tx.commit().await?;
    Ok(())
}

/// Longest text filter, in bytes.
const MAX_FILTER_BYTES: usize = 255;

impl AuditListFilter {
    /// Every problem of the filters at once: an unknown actor kind, text over 255 bytes
    /// or with control characters (nothing else reaches the database).
    pub fn validate(&self) -> Vec<portico_domain::FieldError> {
        let mut errors = Vec::new();
        let texts = [
            (&self.action, "/action"),
            (&self.resource_type, "/resourceType"),
            (&self.resource_id, "/resourceId"),
            (&self.actor_id, "/actorId"),
        ];
        for (value, path) in texts {
            if let Some(v) = value
                && (v.len() > MAX_FILTER_BYTES
                    || portico_domain::text::has_forbidden_control(
                        v,
                        portico_domain::text::Lines::Single,
                    ))
            {
                errors.push(portico_domain::FieldError::new(
                    "invalid_filter",
                    path,
                    format!("at most {MAX_FILTER_BYTES} bytes of text without control characters"),
                ));
            }
        }
        if let Some(kind) = &self.actor_kind
            && !ACTOR_KINDS.contains(&kind.as_str())
        {
            errors.push(portico_domain::FieldError::new(
                "invalid_actor_kind",
                "/actorKind",
                format!("actorKind must be one of {}", ACTOR_KINDS.join(", ")),
            ));
        }
        errors
    }
}
