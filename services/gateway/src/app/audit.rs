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
//! Chaining: [`record`] writes the record without touching the owner's chain head
//! ([`portico_storage::audit::enqueue`]), so one owner's requests commit in parallel;
//! when the request is done its door hands the owner to the [`AuditLinker`], which
//! links the owner's committed records into the hash chain a batch at a time
//! ([`portico_storage::audit::link`]). [`list`] and [`verify`] link the caller's
//! waiting records first, so they always see every record committed before them.
//!
//! Not audited, on purpose: publishing events (`POST /api/events`, gRPC `Publish`):
//! the hot path; events have their own durable record (the `events` table).
//!
//! Reading: [`list`] (filters and a keyset cursor) and [`verify`] (recomputes the
//! owner's hash chain, [`portico_storage::audit::verify`]). Users and internal services
//! read their own user's log; partners are refused (403): the log records the owner's
//! own management actions, which a partner's scopes do not cover.

use std::cell::RefCell;
use std::collections::HashSet;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderValue;
use chrono::{DateTime, Utc};
use portico_domain::pagination::{self, PageRequest};
use portico_storage::audit::{self as store, AuditFilter, NewAuditRecord};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::identity::{Caller, Operator};
use crate::state::AppState;

/// Where the current request came from: set by each door around its handler. Holds the
/// request head's values as they arrived (no text is made per request); [`record`]
/// reads them only when it writes a record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestOrigin {
    /// The request's `x-request-id` (REST sets one when the client sent none).
    request_id: Option<HeaderValue>,
    /// The `X-Forwarded-For` header, when a trusted proxy sets it.
    forwarded_for: Option<HeaderValue>,
    /// The connection's peer address.
    peer: Option<IpAddr>,
}

/// Longest request id kept in a record, in bytes.
const MAX_REQUEST_ID_BYTES: usize = 200;

impl RequestOrigin {
    /// The origin of a request head: its `x-request-id` and what says the client's
    /// address (the trusted `X-Forwarded-For`, the connection's peer).
    pub fn from_head(
        headers: &axum::http::HeaderMap,
        extensions: &axum::http::Extensions,
        trust_forwarded_for: bool,
    ) -> Self {
        let peer = extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| info.0.ip())
            .or_else(|| {
                extensions
                    .get::<tonic::transport::server::TcpConnectInfo>()
                    .and_then(|info| info.remote_addr())
                    .map(|addr| addr.ip())
            });
        Self {
            request_id: headers.get("x-request-id").cloned(),
            forwarded_for: trust_forwarded_for
                .then(|| headers.get("x-forwarded-for").cloned())
                .flatten(),
            peer,
        }
    }

    /// The request id as recorded: 1-200 visible bytes, else none.
    fn request_id(&self) -> Option<&str> {
        self.request_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= MAX_REQUEST_ID_BYTES)
    }

    /// The client's address as recorded: the first `X-Forwarded-For` hop when trusted
    /// (as [`crate::net::peer_address`] reads it), else the peer's address.
    fn client_addr(&self) -> Option<String> {
        let forwarded = self
            .forwarded_for
            .as_ref()
            .and_then(crate::net::first_forwarded_hop);
        match forwarded {
            Some(first) => Some(first.to_owned()),
            None => self.peer.map(|ip| ip.to_string()),
        }
    }
}

/// A request's origin and the owners whose chains it wrote a record to.
struct RequestScope {
    origin: RequestOrigin,
    written: RefCell<Vec<String>>,
}

tokio::task_local! {
    static SCOPE: RequestScope;
}

/// Runs a request's handler with its origin visible to [`record`]. Handlers run inside
/// the future of the door's middleware, so the task-local is set while they run. When
/// the handler is done (its transaction committed or rolled back), the owners it wrote
/// records for are handed to `linker`, which links them into their chains.
pub async fn with_origin<F: Future>(
    origin: RequestOrigin,
    linker: AuditLinker,
    handler: F,
) -> F::Output {
    let scope = RequestScope {
        origin,
        written: RefCell::new(Vec::new()),
    };
    let (output, scope) = SCOPE
        .scope(scope, async move {
            let output = handler.await;
            let written = SCOPE.with(|s| s.written.take());
            (output, written)
        })
        .await;
    for owner in scope {
        linker.wake(owner);
    }
    output
}

/// Notes that the current request wrote a record to `owner`'s chain, so the door links
/// it when the request is done.
fn note_written(owner: &str) {
    let _ = SCOPE.try_with(|s| {
        let mut written = s.written.borrow_mut();
        if !written.iter().any(|o| o == owner) {
            written.push(owner.to_owned());
        }
    });
}

/// How often the linker looks for records nobody asked it to link (written outside a
/// request, by another replica that stopped, or by the `reseal` job).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// How long the linker waits, once asked, for more requests to ask: under load an
/// owner's records are linked several per transaction instead of one or two, and a
/// record waits this much longer to be covered by the chain.
const GATHER: Duration = Duration::from_millis(5);

/// Owners linked per sweep.
const SWEEP_OWNERS: i64 = 1_000;

/// Links committed audit records into their owners' chains
/// ([`portico_storage::audit::link`]) soon after the requests that wrote them, a batch
/// per owner: requests of one owner no longer wait for each other on the chain head.
/// Cheap to clone; one per gateway ([`AppState`]), run by [`AuditLinker::run`].
#[derive(Clone, Default)]
pub struct AuditLinker(Arc<LinkerInner>);

#[derive(Default)]
struct LinkerInner {
    owners: Mutex<HashSet<String>>,
    wake: tokio::sync::Notify,
}

impl std::fmt::Debug for AuditLinker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLinker").finish_non_exhaustive()
    }
}

impl AuditLinker {
    /// Asks for `owner`'s waiting records to be linked (coalesced: an owner asked for
    /// many times before the linker runs is linked once).
    pub fn wake(&self, owner: String) {
        if let Ok(mut owners) = self.0.owners.lock() {
            owners.insert(owner);
        }
        self.0.wake.notify_one();
    }

    fn take(&self) -> Vec<String> {
        self.0
            .owners
            .lock()
            .map(|mut owners| owners.drain().collect())
            .unwrap_or_default()
    }

    /// Links what requests ask for, and every [`SWEEP_EVERY`] whatever still waits,
    /// until `shutdown`; then links what was asked for last and returns. A failure is
    /// logged and retried by the next sweep (the records stay waiting, committed).
    pub async fn run(self, pool: sqlx::PgPool, shutdown: CancellationToken) {
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let owners = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.0.wake.notified() => {
                    // Requests arriving meanwhile join this batch: one link transaction
                    // (and WAL flush) for several of an owner's records.
                    tokio::time::sleep(GATHER).await;
                    self.take()
                }
                _ = sweep.tick() => match store::pending_owners(&pool, SWEEP_OWNERS).await {
                    Ok(owners) => owners,
                    Err(err) => {
                        tracing::warn!(%err, "audit records waiting to be linked could not be listed");
                        Vec::new()
                    }
                },
            };
            link_all(&pool, owners).await;
        }
        link_all(&pool, self.take()).await;
    }
}

async fn link_all(pool: &sqlx::PgPool, owners: Vec<String>) {
    for owner in owners {
        if let Err(err) = store::link(pool, &owner).await {
            tracing::warn!(%err, owner, "audit records not linked yet; the next sweep retries");
        }
    }
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

/// Writes the entry for the caller's owner's chain, in `conn`'s transaction (the one of
/// the change it records). It takes no lock: the record is linked into the chain after
/// the commit ([`AuditLinker`]).
pub async fn record(
    conn: &mut sqlx::PgConnection,
    caller: &Caller,
    entry: AuditEntry,
) -> Result<(), ApiError> {
    let record = PreparedRecord::of_caller(caller, entry);
    store::enqueue(conn, &record.as_new()).await?;
    record.written();
    Ok(())
}

/// Writes an operator's action for the chain of `owner_id` (the user whose data it
/// touched), or the system chain ([`store::SYSTEM_OWNER`]) when none.
pub async fn record_operator(
    conn: &mut sqlx::PgConnection,
    operator: &Operator,
    owner_id: Option<&str>,
    entry: AuditEntry,
) -> Result<(), ApiError> {
    let record = PreparedRecord {
        owner_id: owner_id.unwrap_or(store::SYSTEM_OWNER).to_owned(),
        actor_kind: "operator",
        actor_id: operator.name.clone(),
        request_id: operator.request_id.clone(),
        client_addr: operator.client_addr.clone(),
        changes: Value::Object(entry.changes),
        action: entry.action,
        resource_type: entry.resource_type,
        resource_id: entry.resource_id,
    };
    store::enqueue(conn, &record.as_new()).await?;
    record.written();
    Ok(())
}

/// A caller's record with who, where from and what filled in, for a storage statement
/// that writes a change and its record at once
/// ([`portico_storage::webhooks::insert_with_secret_audited`]): build it, pass
/// [`PreparedRecord::as_new`] to the statement, and call [`PreparedRecord::written`]
/// once it succeeded.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedRecord {
    owner_id: String,
    actor_kind: &'static str,
    actor_id: String,
    request_id: Option<String>,
    client_addr: Option<String>,
    action: &'static str,
    resource_type: &'static str,
    resource_id: String,
    changes: Value,
}

impl PreparedRecord {
    /// The caller's record of `entry`, from the current request's origin (none outside
    /// a request).
    pub fn of_caller(caller: &Caller, entry: AuditEntry) -> Self {
        let (actor_kind, actor_id) = match caller {
            Caller::User { user_id } => ("user", user_id.clone()),
            Caller::Service { user_id } => ("service", user_id.clone()),
            Caller::Partner(p) => ("partner", p.integration_id.to_string()),
        };
        let (request_id, client_addr) = SCOPE
            .try_with(|s| {
                (
                    s.origin.request_id().map(str::to_owned),
                    s.origin.client_addr(),
                )
            })
            .unwrap_or_default();
        Self {
            owner_id: caller.user_id().to_owned(),
            actor_kind,
            actor_id,
            request_id,
            client_addr,
            action: entry.action,
            resource_type: entry.resource_type,
            resource_id: entry.resource_id,
            changes: Value::Object(entry.changes),
        }
    }

    /// The record as storage writes it.
    pub fn as_new(&self) -> NewAuditRecord<'_> {
        NewAuditRecord {
            owner_id: &self.owner_id,
            actor_kind: self.actor_kind,
            actor_id: &self.actor_id,
            client_addr: self.client_addr.as_deref(),
            request_id: self.request_id.as_deref(),
            action: self.action,
            resource_type: self.resource_type,
            resource_id: &self.resource_id,
            changes: &self.changes,
        }
    }

    /// Call after the record's statement (or transaction) committed: the door links the
    /// owner's chain when the request is done.
    pub fn written(&self) {
        note_written(&self.owner_id);
    }
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
    // What the caller's own committed calls wrote is listed, linked.
    store::link(state.pool(), caller.user_id()).await?;
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
    // Every record committed before this call is in the chain verified.
    store::link(state.pool(), caller.user_id()).await?;
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
