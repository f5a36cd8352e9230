//! Idempotency keys of creates (`idempotency_keys`, migration 0016): claiming a key
//! before a create runs, completing it with the answer, releasing it when the create
//! failed, and deleting keys past their retention.
//!
//! A key is scoped by owner and route. The caller decides what a stored row means
//! (replay, another request, in progress): this module only keeps the rows, and never
//! sees a key of the secrets keyring (the stored answer arrives already sealed).

use chrono::{DateTime, Utc};

/// How long a key is kept (and replays its answer), in hours.
pub const RETENTION_HOURS: i64 = 24;

/// Rows deleted per purge statement.
const PURGE_BATCH: i64 = 5_000;

/// Which key: the owner, the operation and the client's key.
#[derive(Debug, Clone, Copy)]
pub struct KeyRef<'a> {
    /// The owner every query is scoped by.
    pub user_id: &'a str,
    /// The operation (`POST /webhooks`, `grpc:portico.v1.Webhooks/CreateWebhook`).
    pub route: &'a str,
    /// The client's key.
    pub key: &'a str,
}

/// A stored key another request claimed first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    /// SHA-256 of the caller and the request that claimed it.
    pub request_hash: Vec<u8>,
    /// The answer's status; `None` while that request is in progress.
    pub status: Option<i32>,
    /// The answer's media type.
    pub content_type: Option<String>,
    /// The answer's body, sealed.
    pub response: Option<Vec<u8>>,
    /// When an in-progress claim counts as abandoned.
    pub locked_until: DateTime<Utc>,
}

/// Claims `key` for a request with `request_hash`, leased for `lease_secs`: true when
/// this caller now owns it (a new key, an abandoned claim whose lease ran out, or a row
/// past its retention that the purge has not deleted yet), false when another request
/// holds or completed it (read it with [`find`]).
pub async fn claim(
    executor: impl sqlx::PgExecutor<'_>,
    key: KeyRef<'_>,
    request_hash: &[u8],
    lease_secs: f64,
) -> Result<bool, sqlx::Error> {
    let claimed = sqlx::query_scalar!(
        r#"INSERT INTO idempotency_keys (user_id, route, key, request_hash, locked_until)
           VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
           ON CONFLICT (user_id, route, key) DO UPDATE
              SET request_hash = EXCLUDED.request_hash, locked_until = EXCLUDED.locked_until,
                  status = NULL, content_type = NULL, response = NULL, created_at = now()
            WHERE (idempotency_keys.status IS NULL AND idempotency_keys.locked_until < now())
               OR idempotency_keys.created_at < now() - make_interval(hours => $6::int)
           RETURNING true AS "claimed!""#,
        key.user_id,
        key.route,
        key.key,
        request_hash,
        lease_secs,
        i32::try_from(RETENTION_HOURS).unwrap_or(i32::MAX),
    )
    .fetch_optional(executor)
    .await?;
    Ok(claimed.is_some())
}

/// The stored row of `key`; `None` when there is none (it was released meanwhile).
pub async fn find(
    executor: impl sqlx::PgExecutor<'_>,
    key: KeyRef<'_>,
) -> Result<Option<KeyRow>, sqlx::Error> {
    sqlx::query_as!(
        KeyRow,
        "SELECT request_hash, status, content_type, response, locked_until
           FROM idempotency_keys WHERE user_id = $1 AND route = $2 AND key = $3",
        key.user_id,
        key.route,
        key.key,
    )
    .fetch_optional(executor)
    .await
}

/// Stores the answer of the request that claimed `key` with `request_hash` (a claim
/// taken over by another request after its lease ran out is left alone): false when
/// the claim is no longer this request's.
pub async fn complete(
    executor: impl sqlx::PgExecutor<'_>,
    key: KeyRef<'_>,
    request_hash: &[u8],
    status: i32,
    content_type: Option<&str>,
    sealed_response: &[u8],
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE idempotency_keys SET status = $5, content_type = $6, response = $7
          WHERE user_id = $1 AND route = $2 AND key = $3 AND request_hash = $4
            AND status IS NULL",
        key.user_id,
        key.route,
        key.key,
        request_hash,
        status,
        content_type,
        sealed_response,
    )
    .execute(executor)
    .await?
    .rows_affected();
    Ok(done > 0)
}

/// Deletes the in-progress claim of `key` by the request with `request_hash`: the
/// create failed (or never finished), so a retry with the same key runs it again.
pub async fn release(
    executor: impl sqlx::PgExecutor<'_>,
    key: KeyRef<'_>,
    request_hash: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "DELETE FROM idempotency_keys
          WHERE user_id = $1 AND route = $2 AND key = $3 AND request_hash = $4
            AND status IS NULL",
        key.user_id,
        key.route,
        key.key,
        request_hash,
    )
    .execute(executor)
    .await?;
    Ok(())
}

/// Deletes keys older than [`RETENTION_HOURS`] in bounded batches (safe from several
/// replicas at once: `SKIP LOCKED`); returns how many.
pub async fn purge_expired(pool: &sqlx::PgPool) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let n = sqlx::query!(
            "DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(
                 SELECT ctid FROM idempotency_keys
                  WHERE created_at < now() - make_interval(hours => $1::int)
                  LIMIT $2 FOR UPDATE SKIP LOCKED))",
            i32::try_from(RETENTION_HOURS).unwrap_or(i32::MAX),
            PURGE_BATCH,
        )
        .execute(pool)
        .await?
        .rows_affected();
        total += n;
        if n < PURGE_BATCH as u64 {
            return Ok(total);
        }
    }
}
