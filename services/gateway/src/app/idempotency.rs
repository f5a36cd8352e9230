//! Idempotency keys of creates, for both doors: a client that retries a create with
//! the same key (`Idempotency-Key` over REST, `idempotency-key` metadata over gRPC)
//! gets the first answer again instead of a second resource.
//!
//! - The same key, caller and request replay the stored answer (REST adds
//!   `Idempotent-Replayed: true`); the same key with another request (or another
//!   caller of the same owner) answers 409 `idempotency_key_reused`; a request still in
//!   progress with the key answers 409 `idempotency_key_in_progress`.
//! - Keys are scoped per owner and route and kept 24 hours
//!   ([`portico_storage::idempotency::RETENTION_HOURS`]).
//! - Only successful answers are stored: a create that failed (validation, a conflict,
//!   an internal error) releases its key, so a corrected retry with the same key runs.
//! - The stored answer is sealed with the secrets keyring, bound to owner, route and
//!   key: a create that shows a secret once (a webhook's signing secret, an
//!   integration's API secret, a portal login link) replays the same secret, and a
//!   database dump does not reveal it.
//!
//! The key is claimed before the create runs and completed after it committed, in two
//! statements of their own: if the process dies in between, the claim's lease runs out
//! and a retry creates the resource again (the create and its stored answer are not one
//! transaction). Events and bulk-order batches keep their own keys, written in the same
//! transaction as what they create ([`crate::app::events`], [`crate::app::bulk_orders`]).

use portico_storage::idempotency::{self as store, KeyRef};

use crate::error::ApiError;
use crate::identity::Caller;
use crate::state::AppState;

/// Longest key, in bytes (the bulk-order key's bound).
pub const MAX_KEY_BYTES: usize = crate::app::bulk_orders::MAX_IDEMPOTENCY_KEY_LEN;

/// Shortest lease of an in-progress claim, in seconds; longer when the request timeout
/// is (a claim must outlive the request that holds it).
const MIN_LEASE_SECS: f64 = 60.0;

/// A client's idempotency key that passed the rules (1-255 bytes of UTF-8 without
/// control characters, the rules of every other key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Checks a raw header or metadata value; 400 `invalid_idempotency_key` when it
    /// breaks a rule.
    pub fn parse(raw: &[u8]) -> Result<Self, ApiError> {
        let invalid = || {
            ApiError::field(
                "invalid_idempotency_key",
                "/headers/idempotency-key",
                format!(
                    "Idempotency-Key must be 1-{MAX_KEY_BYTES} bytes of UTF-8 without control characters"
                ),
            )
        };
        let text = std::str::from_utf8(raw).map_err(|_| invalid())?;
        portico_domain::text::validate_key(
            text,
            MAX_KEY_BYTES,
            "invalid_idempotency_key",
            "/headers/idempotency-key",
            "Idempotency-Key",
        )
        .map_err(|e| ApiError::Validation(vec![e]))?;
        Ok(IdempotencyKey(text.to_owned()))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A stored answer to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    /// The HTTP status (REST) or 0 (gRPC OK).
    pub status: i32,
    /// The media type of the body (REST).
    pub content_type: Option<String>,
    /// The body (REST) or the encoded response message (gRPC), opened.
    pub body: Vec<u8>,
}

/// What claiming a key found.
#[derive(Debug)]
pub enum Claimed {
    /// The key is this request's: run the create, then [`Pending::complete`] it.
    Fresh(Pending),
    /// The same request already ran: answer this.
    Replay(StoredAnswer),
}

/// A claimed key whose create is running. Dropped without [`Pending::complete`] (the
/// create failed, or the request was cancelled or timed out), it releases the key so a
/// retry runs the create again.
pub struct Pending {
    state: Option<AppState>,
    user_id: String,
    route: String,
    key: String,
    hash: Vec<u8>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("route", &self.route)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Pending {
    fn key_ref(&self) -> KeyRef<'_> {
        KeyRef {
            user_id: &self.user_id,
            route: &self.route,
            key: &self.key,
        }
    }

    /// Stores the create's answer for replays. The resource exists whatever happens
    /// here, so a failure to store is logged, not answered: a retry would then create
    /// again, as without a key.
    pub async fn complete(mut self, status: i32, content_type: Option<&str>, body: &[u8]) {
        let Some(state) = self.state.take() else {
            return;
        };
        let context = seal_context(&self.user_id, &self.route, &self.key);
        let stored = match state.secrets_key().seal(&context, body) {
            Ok(sealed) => {
                store::complete(
                    state.pool(),
                    self.key_ref(),
                    &self.hash,
                    status,
                    content_type,
                    &sealed,
                )
                .await
            }
            Err(err) => {
                tracing::error!(%err, "an idempotent answer does not seal; its key is released");
                Ok(false)
            }
        };
        match stored {
            Ok(true) => {}
            Ok(false) => {
                let _ = store::release(state.pool(), self.key_ref(), &self.hash).await;
            }
            Err(err) => tracing::warn!(%err, "an idempotent answer was not stored"),
        }
    }
}

impl Pending {
    /// Releases the key now (the create failed), so a retry that follows at once runs
    /// the create again rather than hearing "in progress".
    pub async fn release(mut self) {
        let Some(state) = self.state.take() else {
            return;
        };
        if let Err(err) = store::release(state.pool(), self.key_ref(), &self.hash).await {
            tracing::warn!(%err, "an idempotency key was not released; its lease will expire");
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let Some(state) = self.state.take() else {
            return;
        };
        let (user_id, route, key, hash) = (
            std::mem::take(&mut self.user_id),
            std::mem::take(&mut self.route),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.hash),
        );
        // A drop may happen outside a runtime only at shutdown; the lease covers that.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let key = KeyRef {
                    user_id: &user_id,
                    route: &route,
                    key: &key,
                };
                if let Err(err) = store::release(state.pool(), key, &hash).await {
                    tracing::warn!(%err, "an idempotency key was not released; its lease will expire");
                }
            });
        }
    }
}

/// Claims `key` of `caller`'s owner on `route` for `request` (the body or the encoded
/// message): a fresh claim, a replay of the same request, or 409 when the key is in
/// use by another request.
pub async fn claim(
    state: &AppState,
    caller: &Caller,
    route: &str,
    key: &IdempotencyKey,
    request: &[u8],
) -> Result<Claimed, ApiError> {
    let hash = fingerprint(caller, route, request);
    let user_id = caller.user_id();
    let key_ref = KeyRef {
        user_id,
        route,
        key: key.as_str(),
    };
    let lease = (state.config().request_timeout_ms as f64 / 1000.0 * 2.0).max(MIN_LEASE_SECS);
    // A row released between the claim and the read is claimed again.
    for _ in 0..3 {
        if store::claim(state.pool(), key_ref, &hash, lease).await? {
            return Ok(Claimed::Fresh(Pending {
                state: Some(state.clone()),
                user_id: user_id.to_owned(),
                route: route.to_owned(),
                key: key.as_str().to_owned(),
                hash,
            }));
        }
        let Some(row) = store::find(state.pool(), key_ref).await? else {
            continue;
        };
        if row.request_hash != hash {
            return Err(reused());
        }
        let (Some(status), Some(sealed)) = (row.status, row.response) else {
            return Err(in_progress());
        };
        let context = seal_context(user_id, route, key.as_str());
        let opened = state.secrets_key().open(&context, &sealed).map_err(|e| {
            ApiError::Internal(format!("a stored idempotent answer does not open: {e}"))
        })?;
        return Ok(Claimed::Replay(StoredAnswer {
            status,
            content_type: row.content_type,
            body: opened.plaintext,
        }));
    }
    Err(in_progress())
}

/// 409 `idempotency_key_reused`: the key names another request.
pub fn reused() -> ApiError {
    ApiError::Specific {
        status: axum::http::StatusCode::CONFLICT,
        code: "idempotency_key_reused",
        message: "this Idempotency-Key was already used with a different request; \
                  use a new key for a new request"
            .into(),
    }
}

/// 409 `idempotency_key_in_progress`: the first request with the key has not finished.
pub fn in_progress() -> ApiError {
    ApiError::Specific {
        status: axum::http::StatusCode::CONFLICT,
        code: "idempotency_key_in_progress",
        message: "a request with this Idempotency-Key is still in progress; retry shortly".into(),
    }
}

/// SHA-256 of who calls, where, and what: a replay needs all three to be the same.
fn fingerprint(caller: &Caller, route: &str, request: &[u8]) -> Vec<u8> {
    let principal = match caller {
        Caller::User { .. } => "user".to_owned(),
        Caller::Service { .. } => "service".to_owned(),
        Caller::Partner(p) => format!("partner:{}", p.integration_id),
    };
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [
        b"portico idempotency v1".as_slice(),
        principal.as_bytes(),
        route.as_bytes(),
    ] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    ctx.update(request);
    ctx.finish().as_ref().to_vec()
}

/// The sealing context of a stored answer: bound to its owner, route and key, so a
/// sealed answer copied to another row does not open.
fn seal_context(user_id: &str, route: &str, key: &str) -> Vec<u8> {
    let mut context = b"portico idempotent answer v1".to_vec();
    for part in [user_id, route, key] {
        context.extend_from_slice(&(part.len() as u64).to_be_bytes());
        context.extend_from_slice(part.as_bytes());
    }
    context
}
