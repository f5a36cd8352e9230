//! Webhook endpoints (`webhooks`) and their sealed signing secrets (`webhook_secrets`).
//!
//! Two readings of a webhook, each with one row type:
//! - [`WebhookRow`]: the webhook as its owner manages it (the gateway's CRUD, REST and
//!   gRPC). Every statement that yields it is a `query_as!` into this one struct, so
//!   the compiler holds every column list to the same columns and types.
//! - [`EndpointRow`]: an active webhook as the dispatcher delivers to it, with its
//!   unexpired sealed secrets aggregated (newest first), loaded for many users in one
//!   statement.
//!
//! Every statement the owner reaches is scoped by `user_id`, so another user's webhook
//! is simply not found. Secrets and custom header values are stored only sealed (the
//! caller seals and opens them with the secrets keyring, bound to the webhook's id);
//! this module never sees a key.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use portico_domain::ids::WebhookId;
use sqlx::types::Json;

/// One `webhooks` row as its owner sees it (not the dispatcher's bookkeeping columns
/// `consecutive_failures` and `disabled_at`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRow {
    /// The webhook.
    pub id: WebhookId,
    /// Where events are POSTed.
    pub url: String,
    /// Event filters (exact names, `prefix.*`, `*`).
    pub events: Vec<String>,
    /// The owner's description.
    pub description: Option<String>,
    /// False when disabled by the owner or by Portico.
    pub active: bool,
    /// Why Portico disabled it (`failing`, `gone`); `None` when active or disabled by
    /// the owner.
    pub disabled_reason: Option<String>,
    /// Retries after the first attempt.
    pub max_retries: i32,
    /// First retry delay.
    pub base_delay_ms: i64,
    /// Longest retry delay.
    pub max_delay_ms: i64,
    /// Custom headers sent with every delivery.
    pub headers: Json<BTreeMap<String, String>>,
    /// Per-ordering-key ordering.
    pub ordering_enabled: bool,
    /// Deliveries per second; `None` = no limit.
    pub rate_limit_per_second: Option<i32>,
    /// Concurrent deliveries; `None` = the dispatcher's default.
    pub max_concurrency: Option<i32>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change by its owner or by Portico disabling it.
    pub updated_at: DateTime<Utc>,
}

/// The owner-set columns of a webhook, as written by [`insert_with_secret`] and
/// [`update`]: one struct, so a create and an update cannot disagree on a column.
#[derive(Debug, Clone, Copy)]
pub struct WebhookValues<'a> {
    /// The webhook's id. Chosen by the caller, because the webhook's sealed values (its
    /// signing secret, its custom header values) are bound to it as associated data
    /// before the row exists. [`insert_with_secret`] inserts it; [`update`] names its
    /// row by its own `id` argument and does not read this.
    pub id: WebhookId,
    /// Where events are POSTed.
    pub url: &'a str,
    /// Event filters.
    pub events: &'a [String],
    /// The owner's description.
    pub description: Option<&'a str>,
    /// Retries after the first attempt.
    pub max_retries: i32,
    /// First retry delay.
    pub base_delay_ms: i64,
    /// Longest retry delay.
    pub max_delay_ms: i64,
    /// Custom headers.
    pub headers: &'a BTreeMap<String, String>,
    /// Per-ordering-key ordering.
    pub ordering_enabled: bool,
    /// Deliveries per second.
    pub rate_limit_per_second: Option<i32>,
    /// Concurrent deliveries.
    pub max_concurrency: Option<i32>,
}

/// Inserts a webhook and its first sealed signing secret in one statement (one round
/// trip, atomic on its own: the secret's foreign key is checked at the end of the
/// statement, when the webhook row exists). The webhook's id is `values.id`; the
/// secret's is a new UUIDv7.
pub async fn insert_with_secret(
    executor: impl sqlx::PgExecutor<'_>,
    user_id: &str,
    values: &WebhookValues<'_>,
    sealed_secret: &[u8],
) -> Result<WebhookRow, sqlx::Error> {
    insert(executor, user_id, values, sealed_secret, None).await
}

/// [`insert_with_secret`] and the webhook's audit record
/// ([`crate::audit::enqueue`]: written to `audit_pending`, linked into the owner's chain
/// afterwards) in one statement: run on a pool it is one round trip and one commit, and
/// the webhook, its secret and its record exist together or not at all.
pub async fn insert_with_secret_audited(
    executor: impl sqlx::PgExecutor<'_>,
    user_id: &str,
    values: &WebhookValues<'_>,
    sealed_secret: &[u8],
    audit: &crate::audit::NewAuditRecord<'_>,
) -> Result<WebhookRow, sqlx::Error> {
    insert(executor, user_id, values, sealed_secret, Some(audit)).await
}

/// The one statement behind both inserts: the webhook, its secret and, when `audit` is
/// given, its audit record.
async fn insert(
    executor: impl sqlx::PgExecutor<'_>,
    user_id: &str,
    values: &WebhookValues<'_>,
    sealed_secret: &[u8],
    audit: Option<&crate::audit::NewAuditRecord<'_>>,
) -> Result<WebhookRow, sqlx::Error> {
    // The outer SELECT reads a CTE, whose columns PostgreSQL reports as nullable: the
    // overrides restore the table's NOT NULL. The record is written only when the
    // webhook is, and only when one is given ($15 is its id).
    sqlx::query_as!(
        WebhookRow,
        r#"WITH w AS (
               INSERT INTO webhooks (id, user_id, url, events, description, max_retries,
                   base_delay_ms, max_delay_ms, headers, ordering_enabled, rate_limit_per_second,
                   max_concurrency)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
               RETURNING id, url, events, description, active, disabled_reason, max_retries,
                   base_delay_ms, max_delay_ms, headers, ordering_enabled, rate_limit_per_second,
                   max_concurrency, created_at, updated_at
           ), s AS (
               INSERT INTO webhook_secrets (id, webhook_id, ciphertext)
               SELECT $13, w.id, $14 FROM w
           ), a AS (
               INSERT INTO audit_pending (id, owner_id, actor_kind, actor_id, client_addr,
                                          request_id, action, resource_type, resource_id,
                                          changes)
               SELECT $15, $16, $17, $18, $19, $20, $21, $22, $23, $24 FROM w
               WHERE $15::uuid IS NOT NULL
           )
           SELECT id AS "id!", url AS "url!", events AS "events!", description,
                  active AS "active!", disabled_reason, max_retries AS "max_retries!",
                  base_delay_ms AS "base_delay_ms!", max_delay_ms AS "max_delay_ms!",
                  headers AS "headers!: Json<BTreeMap<String, String>>",
                  ordering_enabled AS "ordering_enabled!", rate_limit_per_second,
                  max_concurrency, created_at AS "created_at!", updated_at AS "updated_at!"
           FROM w"#,
        values.id.as_uuid(),
        user_id,
        values.url,
        values.events,
        values.description,
        values.max_retries,
        values.base_delay_ms,
        values.max_delay_ms,
        Json(values.headers) as _,
        values.ordering_enabled,
        values.rate_limit_per_second,
        values.max_concurrency,
        portico_domain::ids::new_id(),
        sealed_secret,
        audit.map(|_| uuid::Uuid::now_v7()),
        audit.map(|a| a.owner_id),
        audit.map(|a| a.actor_kind),
        audit.map(|a| a.actor_id),
        audit.and_then(|a| a.client_addr),
        audit.and_then(|a| a.request_id),
        audit.map(|a| a.action),
        audit.map(|a| a.resource_type),
        audit.map(|a| a.resource_id),
        audit.map(|a| a.changes),
    )
    .fetch_one(executor)
    .await
}

/// One of `user_id`'s webhooks.
pub async fn get(
    executor: impl sqlx::PgExecutor<'_>,
    user_id: &str,
    id: WebhookId,
) -> Result<Option<WebhookRow>, sqlx::Error> {
    sqlx::query_as!(
        WebhookRow,
        r#"SELECT id, url, events, description, active, disabled_reason, max_retries,
                  base_delay_ms, max_delay_ms, headers AS "headers: Json<BTreeMap<String, String>>",
                  ordering_enabled, rate_limit_per_second, max_concurrency, created_at, updated_at
           FROM webhooks WHERE id = $1 AND user_id = $2"#,
        id.as_uuid(),
        user_id,
    )
    .fetch_optional(executor)
    .await
}

/// One of `user_id`'s webhooks, locked (`FOR UPDATE`) until the caller's transaction
/// ends, so a partial update merges into the row it read.
pub async fn get_for_update(
    conn: &mut sqlx::PgConnection,
    user_id: &str,
    id: WebhookId,
) -> Result<Option<WebhookRow>, sqlx::Error> {
    sqlx::query_as!(
        WebhookRow,
        r#"SELECT id, url, events, description, active, disabled_reason, max_retries,
                  base_delay_ms, max_delay_ms, headers AS "headers: Json<BTreeMap<String, String>>",
                  ordering_enabled, rate_limit_per_second, max_concurrency, created_at, updated_at
           FROM webhooks WHERE id = $1 AND user_id = $2 FOR UPDATE"#,
        id.as_uuid(),
        user_id,
    )
    .fetch_optional(conn)
    .await
}

/// Up to `limit` of `user_id`'s webhooks, newest first, after the keyset cursor
/// `after` (`created_at`, `id` of the last row of the previous page).
pub async fn list(
    executor: impl sqlx::PgExecutor<'_>,
    user_id: &str,
    after: Option<(DateTime<Utc>, WebhookId)>,
    limit: i64,
) -> Result<Vec<WebhookRow>, sqlx::Error> {
    sqlx::query_as!(
        WebhookRow,
        r#"SELECT id, url, events, description, active, disabled_reason, max_retries,
                  base_delay_ms, max_delay_ms, headers AS "headers: Json<BTreeMap<String, String>>",
                  ordering_enabled, rate_limit_per_second, max_concurrency, created_at, updated_at
           FROM webhooks WHERE user_id = $1
             AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
           ORDER BY created_at DESC, id DESC LIMIT $4"#,
        user_id,
        after.map(|(created_at, _)| created_at),
        after.map(|(_, id)| id.as_uuid()),
        limit,
    )
    .fetch_all(executor)
    .await
}

/// Writes every owner-set column and `active`. Re-enabling (`active` true on a
/// disabled row) clears `disabled_reason`, `disabled_at` and the failure count;
/// disabling stamps `disabled_at`. `None` when `user_id` has no such webhook.
pub async fn update(
    executor: impl sqlx::PgExecutor<'_>,
    user_id: &str,
    id: WebhookId,
    values: &WebhookValues<'_>,
    active: bool,
) -> Result<Option<WebhookRow>, sqlx::Error> {
    // In SET, column names denote the old row: `$6 AND NOT active` is "re-enabled now".
    sqlx::query_as!(
        WebhookRow,
        r#"UPDATE webhooks SET url = $3, events = $4, description = $5, active = $6,
               max_retries = $7, base_delay_ms = $8, max_delay_ms = $9, headers = $10,
               ordering_enabled = $11, rate_limit_per_second = $12, max_concurrency = $13,
               disabled_reason = CASE WHEN $6 <> active THEN NULL ELSE disabled_reason END,
               disabled_at = CASE WHEN $6 AND NOT active THEN NULL
                                  WHEN NOT $6 AND active THEN now() ELSE disabled_at END,
               consecutive_failures = CASE WHEN $6 AND NOT active THEN 0 ELSE consecutive_failures END,
               updated_at = now()
           WHERE id = $1 AND user_id = $2
           RETURNING id, url, events, description, active, disabled_reason, max_retries,
                  base_delay_ms, max_delay_ms, headers AS "headers: Json<BTreeMap<String, String>>",
                  ordering_enabled, rate_limit_per_second, max_concurrency, created_at, updated_at"#,
        id.as_uuid(),
        user_id,
        values.url,
        values.events,
        values.description,
        active,
        values.max_retries,
        values.base_delay_ms,
        values.max_delay_ms,
        Json(values.headers) as _,
        values.ordering_enabled,
        values.rate_limit_per_second,
        values.max_concurrency,
    )
    .fetch_optional(executor)
    .await
}

/// Deletes one of `user_id`'s webhooks with its secrets, deliveries, attempts and
/// retry jobs (foreign-key cascades; attempts by the deliveries' delete trigger,
/// migration 0022). False when there was no such webhook.
pub async fn delete(
    executor: impl sqlx::PgExecutor<'_>,
    user_id: &str,
    id: WebhookId,
) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query!(
        "DELETE FROM webhooks WHERE id = $1 AND user_id = $2",
        id.as_uuid(),
        user_id,
    )
    .execute(executor)
    .await?
    .rows_affected();
    Ok(deleted > 0)
}

/// The retry budget of one of `user_id`'s webhooks; `None` when they own no such
/// webhook, so one lookup both proves ownership and gives the default budget.
pub async fn max_retries(
    executor: impl sqlx::PgExecutor<'_>,
    user_id: &str,
    id: WebhookId,
) -> Result<Option<i32>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT max_retries FROM webhooks WHERE id = $1 AND user_id = $2",
        id.as_uuid(),
        user_id,
    )
    .fetch_optional(executor)
    .await
}

/// Locks one of `user_id`'s webhooks (`FOR UPDATE`) until the caller's transaction
/// ends, so two rotations of the same webhook run one after the other. False when
/// they own no such webhook.
pub async fn lock(
    conn: &mut sqlx::PgConnection,
    user_id: &str,
    id: WebhookId,
) -> Result<bool, sqlx::Error> {
    let owned = sqlx::query_scalar!(
        "SELECT id FROM webhooks WHERE id = $1 AND user_id = $2 FOR UPDATE",
        id.as_uuid(),
        user_id,
    )
    .fetch_optional(conn)
    .await?;
    Ok(owned.is_some())
}

/// One signing secret, sealed, with the time it stops signing (`None` = until the
/// next rotation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRow {
    /// The raw key sealed with the secrets keyring, bound to the webhook's id.
    pub ciphertext: Vec<u8>,
    /// When it stops signing.
    pub expires_at: Option<DateTime<Utc>>,
}

/// The unexpired secrets of one of `user_id`'s webhooks, newest first (the first is
/// the current one). Empty when they own no such webhook (or, impossibly, it has no
/// secret left).
pub async fn active_secrets(
    executor: impl sqlx::PgExecutor<'_>,
    user_id: &str,
    id: WebhookId,
) -> Result<Vec<SecretRow>, sqlx::Error> {
    sqlx::query_as!(
        SecretRow,
        "SELECT s.ciphertext, s.expires_at FROM webhook_secrets s
           JOIN webhooks w ON w.id = s.webhook_id
         WHERE w.id = $1 AND w.user_id = $2
           AND (s.expires_at IS NULL OR s.expires_at > now())
         ORDER BY s.created_at DESC, s.id DESC",
        id.as_uuid(),
        user_id,
    )
    .fetch_all(executor)
    .await
}

/// Rotates the signing secret of a webhook the caller has [`lock`]ed in the same
/// transaction: every active secret keeps signing for `grace_secs` more seconds at
/// most (an earlier expiry is never extended; 0 ends it at once), secrets already
/// expired are dropped (the table keeps a handful of rows per webhook however often it
/// is rotated), and `sealed_secret` becomes the current secret. Returns when the last
/// previous secret stops signing, `None` when none still does.
pub async fn rotate_secret(
    conn: &mut sqlx::PgConnection,
    id: WebhookId,
    grace_secs: i64,
    sealed_secret: &[u8],
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query!(
        "DELETE FROM webhook_secrets WHERE webhook_id = $1 AND expires_at <= now()",
        id.as_uuid(),
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE webhook_secrets
            SET expires_at = LEAST(COALESCE(expires_at, 'infinity'::timestamptz),
                                   now() + $2::bigint * interval '1 second')
          WHERE webhook_id = $1 AND (expires_at IS NULL OR expires_at > now())",
        id.as_uuid(),
        grace_secs,
    )
    .execute(&mut *conn)
    .await?;
    // now() is the transaction's start, so with grace 0 the old rows are already expired.
    let previous = sqlx::query_scalar!(
        "SELECT max(expires_at) FROM webhook_secrets WHERE webhook_id = $1 AND expires_at > now()",
        id.as_uuid(),
    )
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query!(
        "INSERT INTO webhook_secrets (id, webhook_id, ciphertext) VALUES ($1, $2, $3)",
        portico_domain::ids::new_id(),
        id.as_uuid(),
        sealed_secret,
    )
    .execute(&mut *conn)
    .await?;
    Ok(previous)
}

/// An active webhook as the dispatcher delivers to it: its delivery settings and its
/// unexpired sealed secrets, newest first (`ciphertexts[i]` expires at `expiries[i]`).
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointRow {
    /// The webhook.
    pub id: WebhookId,
    /// Its owner.
    pub user_id: String,
    /// Where deliveries go (as stored; the dispatcher parses it).
    pub url: String,
    /// `http` (POST to `url`) or `listen` (a NATS request to the gateway holding the
    /// `portico listen` connection; see [`crate::listen`]).
    pub transport: String,
    /// Event filters.
    pub events: Vec<String>,
    /// Custom headers, as stored (a JSON object of strings when the API wrote it; the
    /// dispatcher skips anything else rather than refusing the endpoint).
    pub headers: serde_json::Value,
    /// Retries after the first attempt.
    pub max_retries: i32,
    /// First retry delay.
    pub base_delay_ms: i64,
    /// Longest retry delay.
    pub max_delay_ms: i64,
    /// Per-ordering-key ordering.
    pub ordering_enabled: bool,
    /// Deliveries per second.
    pub rate_limit_per_second: Option<i32>,
    /// Concurrent deliveries.
    pub max_concurrency: Option<i32>,
    /// Sealed unexpired secrets, newest first.
    pub ciphertexts: Vec<Vec<u8>>,
    /// Their expiries, in the same order.
    pub expiries: Vec<Option<DateTime<Utc>>>,
}

/// The active webhooks of every user in `user_ids`, oldest first, with their
/// unexpired secrets, in one statement: the dispatcher loads all users of a chunk of
/// events at once.
pub async fn active_endpoints(
    executor: impl sqlx::PgExecutor<'_>,
    user_ids: &[&str],
) -> Result<Vec<EndpointRow>, sqlx::Error> {
    // `coalesce(array_agg(...))` is never NULL, and an array of nullable timestamps.
    sqlx::query_as!(
        EndpointRow,
        r#"SELECT w.id, w.user_id, w.url, w.transport, w.events, w.headers, w.max_retries, w.base_delay_ms,
                  w.max_delay_ms, w.ordering_enabled, w.rate_limit_per_second, w.max_concurrency,
                  coalesce(array_agg(s.ciphertext ORDER BY s.created_at DESC, s.id DESC)
                           FILTER (WHERE s.id IS NOT NULL), '{}') AS "ciphertexts!",
                  coalesce(array_agg(s.expires_at ORDER BY s.created_at DESC, s.id DESC)
                           FILTER (WHERE s.id IS NOT NULL), '{}')
                      AS "expiries!: Vec<Option<DateTime<Utc>>>"
           FROM webhooks w
           LEFT JOIN webhook_secrets s
                  ON s.webhook_id = w.id AND (s.expires_at IS NULL OR s.expires_at > now())
           WHERE w.user_id = ANY($1) AND w.active
           GROUP BY w.id
           ORDER BY w.created_at, w.id"#,
        user_ids as _,
    )
    .fetch_all(executor)
    .await
}

/// True when `user_id` has an active webhook whose event filters include one of
/// `filters` (an array overlap; the caller lists every filter that matches its event
/// type). The batch-processor asks before emitting `order.created` for a chunk:
/// creating a thousand events nobody receives would only cost write throughput.
pub async fn any_active_matching(
    executor: impl sqlx::PgExecutor<'_>,
    user_id: &str,
    filters: &[String],
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM webhooks
                          WHERE user_id = $1 AND active AND events && $2::text[]) AS "exists!""#,
        user_id,
        filters
    )
    .fetch_one(executor)
    .await
}
