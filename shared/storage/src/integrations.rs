//! Partner integrations, their API credentials and their daily call counters: the
//! tables `integrations`, `integration_credentials` and `integration_daily_usage`.
//!
//! Every statement an owner issues is scoped by `user_id`, so another user's
//! integration reads as absent. The credential lookup and the counters are keyed by
//! api key or integration id alone: they serve partner calls, whose owner is only
//! known once the key has been found. Writes that come in numbers (last use, daily
//! counts) are one set-based statement per usage-log flush (`unnest`).

use chrono::{DateTime, NaiveDate, Utc};
use portico_domain::ids::IntegrationId;
use uuid::Uuid;

/// One integration as its owner reads it, with its current public key.
#[derive(Debug, Clone)]
pub struct IntegrationRow {
    /// The integration.
    pub id: IntegrationId,
    /// Display name.
    pub name: String,
    /// A type name from the fixed list (CHECK constraint).
    pub integration_type: String,
    /// Where the partner wants events, if anywhere.
    pub webhook_url: Option<String>,
    /// Scope names as stored.
    pub scopes: Vec<String>,
    /// False when its owner deactivated it.
    pub active: bool,
    /// The api key of the newest credential not revoked, if any.
    pub api_key: Option<String>,
    /// When its credentials stop working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// Requests per second; `None` = the server default, 0 = unlimited.
    pub rate_limit_per_second: Option<i32>,
    /// Calls per UTC day; `None` = the server default, 0 = unlimited.
    pub daily_quota: Option<i32>,
    /// Created (the list's sort key).
    pub created_at: DateTime<Utc>,
    /// Last changed by its owner.
    pub updated_at: DateTime<Utc>,
    /// Last call admitted with its credentials.
    pub last_used_at: Option<DateTime<Utc>>,
}

/// Builds an [`IntegrationRow`] from any record with its columns (the macros give each
/// statement its own anonymous record type).
macro_rules! integration_row {
    ($r:expr) => {{
        let r = $r;
        IntegrationRow {
            id: IntegrationId::from(r.id),
            name: r.name,
            integration_type: r.integration_type,
            webhook_url: r.webhook_url,
            scopes: r.scopes,
            active: r.active,
            api_key: r.api_key,
            expires_at: r.expires_at,
            rate_limit_per_second: r.rate_limit_per_second,
            daily_quota: r.daily_quota,
            created_at: r.created_at,
            updated_at: r.updated_at,
            last_used_at: r.last_used_at,
        }
    }};
}

/// The columns of a new integration, already validated and normalised by the caller.
#[derive(Debug, Clone, Copy)]
pub struct NewIntegration<'a> {
    /// Its id.
    pub id: IntegrationId,
    /// The owner.
    pub user_id: &'a str,
    /// Display name.
    pub name: &'a str,
    /// A type name from the fixed list.
    pub integration_type: &'a str,
    /// Optional webhook URL.
    pub webhook_url: Option<&'a str>,
    /// Scope names.
    pub scopes: &'a [String],
    /// Optional expiry.
    pub expires_at: Option<DateTime<Utc>>,
    /// Requests per second (0 = unlimited).
    pub rate_limit_per_second: i32,
    /// Calls per UTC day (0 = unlimited).
    pub daily_quota: i32,
}

/// A partial update: `None` keeps a column; the nullable columns take `Some(None)` to
/// clear them.
#[derive(Debug, Clone, Default)]
pub struct IntegrationChanges<'a> {
    /// New name.
    pub name: Option<&'a str>,
    /// New type name.
    pub integration_type: Option<&'a str>,
    /// New webhook URL, or `Some(None)` to remove it.
    pub webhook_url: Option<Option<&'a str>>,
    /// Replaces every scope.
    pub scopes: Option<Vec<String>>,
    /// Activate or deactivate.
    pub active: Option<bool>,
    /// New expiry, or `Some(None)` for never.
    pub expires_at: Option<Option<DateTime<Utc>>>,
    /// New rate limit.
    pub rate_limit_per_second: Option<i32>,
    /// New daily quota.
    pub daily_quota: Option<i32>,
}

/// One credential joined with its integration and today's call count: everything
/// verifying a partner call needs, in one round trip.
#[derive(Debug, Clone)]
pub struct CredentialRow {
    /// The `integration_credentials` row.
    pub credential_id: Uuid,
    /// The integration the key belongs to.
    pub integration_id: IntegrationId,
    /// The integration's owner.
    pub user_id: String,
    /// The integration's scope names as stored.
    pub scopes: Vec<String>,
    /// Keyed hash of the secret.
    pub secret_hash: Vec<u8>,
    /// False when the integration is deactivated.
    pub active: bool,
    /// The integration's expiry.
    pub integration_expires_at: Option<DateTime<Utc>>,
    /// This credential's expiry (a rotated-out secret's grace period).
    pub credential_expires_at: Option<DateTime<Utc>>,
    /// When this credential was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// The integration's rate limit; `None` = the server default.
    pub rate_limit_per_second: Option<i32>,
    /// The integration's daily quota; `None` = the server default.
    pub daily_quota: Option<i32>,
    /// Calls counted for the requested day; `None` when none were.
    pub calls_on_day: Option<i64>,
}

/// Calls of one integration on one UTC day: an increment going in, the stored total
/// coming back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyCalls {
    /// The integration.
    pub integration_id: IntegrationId,
    /// The UTC day.
    pub day: NaiveDate,
    /// Calls.
    pub calls: i64,
}

/// Inserts an integration (its first credential goes in with [`insert_credential`] in
/// the same transaction).
pub async fn insert(
    executor: impl sqlx::PgExecutor<'_>,
    new: &NewIntegration<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO integrations (id, user_id, name, integration_type, webhook_url, scopes,
             expires_at, rate_limit_per_second, daily_quota)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        new.id.as_uuid(),
        new.user_id,
        new.name,
        new.integration_type,
        new.webhook_url,
        new.scopes,
        new.expires_at,
        new.rate_limit_per_second,
        new.daily_quota,
    )
    .execute(executor)
    .await?;
    Ok(())
}

/// One of `user_id`'s integrations; `None` when it does not exist or is another
/// user's.
pub async fn fetch(
    executor: impl sqlx::PgExecutor<'_>,
    user_id: &str,
    id: IntegrationId,
) -> Result<Option<IntegrationRow>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT i.id, i.name, i.integration_type, i.webhook_url, i.scopes, i.active,
               (SELECT c.api_key FROM integration_credentials c
                 WHERE c.integration_id = i.id AND c.revoked_at IS NULL
                 ORDER BY c.created_at DESC, c.id DESC LIMIT 1) AS "api_key?",
               i.expires_at, i.rate_limit_per_second, i.daily_quota, i.created_at,
               i.updated_at, i.last_used_at
           FROM integrations i WHERE i.id = $1 AND i.user_id = $2"#,
        id.as_uuid(),
        user_id,
    )
    .fetch_optional(executor)
    .await?;
    Ok(row.map(|r| integration_row!(r)))
}

/// A page of `user_id`'s integrations, newest first, optionally of one type, after a
/// keyset position `(created_at, id)`; fetches up to `limit` rows. The type filter and
/// the position are optional parameters of one static statement, served by
/// `integrations_user_list_idx` / `integrations_user_type_idx` as before.
pub async fn list(
    executor: impl sqlx::PgExecutor<'_>,
    user_id: &str,
    integration_type: Option<&str>,
    after: Option<(DateTime<Utc>, IntegrationId)>,
    limit: i64,
) -> Result<Vec<IntegrationRow>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT i.id, i.name, i.integration_type, i.webhook_url, i.scopes, i.active,
               (SELECT c.api_key FROM integration_credentials c
                 WHERE c.integration_id = i.id AND c.revoked_at IS NULL
                 ORDER BY c.created_at DESC, c.id DESC LIMIT 1) AS "api_key?",
               i.expires_at, i.rate_limit_per_second, i.daily_quota, i.created_at,
               i.updated_at, i.last_used_at
           FROM integrations i
           WHERE i.user_id = $1
             AND ($2::text IS NULL OR i.integration_type = $2)
             AND ($3::timestamptz IS NULL OR (i.created_at, i.id) < ($3, $4))
           ORDER BY i.created_at DESC, i.id DESC
           LIMIT $5"#,
        user_id,
        integration_type,
        after.map(|(created_at, _)| created_at),
        after.map(|(_, id)| id.as_uuid()),
        limit,
    )
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().map(|r| integration_row!(r)).collect())
}

/// Whether `user_id` owns integration `id` (reads that only need the ownership check).
pub async fn exists(
    executor: impl sqlx::PgExecutor<'_>,
    user_id: &str,
    id: IntegrationId,
) -> Result<bool, sqlx::Error> {
    let found = sqlx::query_scalar!(
        "SELECT 1 FROM integrations WHERE id = $1 AND user_id = $2",
        id.as_uuid(),
        user_id,
    )
    .fetch_optional(executor)
    .await?;
    Ok(found.is_some())
}

/// Applies `changes` to one of `user_id`'s integrations in one statement and bumps
/// `updated_at`; false when it does not exist or is another user's.
pub async fn update(
    executor: impl sqlx::PgExecutor<'_>,
    user_id: &str,
    id: IntegrationId,
    changes: &IntegrationChanges<'_>,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query_scalar!(
        "UPDATE integrations SET
             name = COALESCE($3, name),
             integration_type = COALESCE($4, integration_type),
             webhook_url = CASE WHEN $5 THEN $6 ELSE webhook_url END,
             scopes = COALESCE($7, scopes),
             active = COALESCE($8, active),
             expires_at = CASE WHEN $9 THEN $10 ELSE expires_at END,
             rate_limit_per_second = COALESCE($11, rate_limit_per_second),
             daily_quota = COALESCE($12, daily_quota),
             updated_at = now()
         WHERE id = $1 AND user_id = $2
         RETURNING id",
        id.as_uuid(),
        user_id,
        changes.name,
        changes.integration_type,
        changes.webhook_url.is_some(),
        changes.webhook_url.flatten(),
        changes.scopes.as_deref() as Option<&[String]>,
        changes.active,
        changes.expires_at.is_some(),
        changes.expires_at.flatten(),
        changes.rate_limit_per_second,
        changes.daily_quota,
    )
    .fetch_optional(executor)
    .await?;
    Ok(updated.is_some())
}

/// Deletes one of `user_id`'s integrations; its credentials, usage log and daily
/// counts go with it (cascade). False when it does not exist or is another user's.
pub async fn delete(
    executor: impl sqlx::PgExecutor<'_>,
    user_id: &str,
    id: IntegrationId,
) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query!(
        "DELETE FROM integrations WHERE id = $1 AND user_id = $2",
        id.as_uuid(),
        user_id,
    )
    .execute(executor)
    .await?
    .rows_affected();
    Ok(deleted > 0)
}

/// Bumps `updated_at` of one of `user_id`'s integrations and so locks its row until
/// the transaction ends: concurrent rotations of one integration serialize. False when
/// it does not exist or is another user's.
pub async fn lock_for_rotation(
    executor: impl sqlx::PgExecutor<'_>,
    user_id: &str,
    id: IntegrationId,
) -> Result<bool, sqlx::Error> {
    let found = sqlx::query_scalar!(
        "UPDATE integrations SET updated_at = now() WHERE id = $1 AND user_id = $2 RETURNING id",
        id.as_uuid(),
        user_id,
    )
    .fetch_optional(executor)
    .await?;
    Ok(found.is_some())
}

/// Stores a new credential (its secret only as `secret_hash`); returns its id.
pub async fn insert_credential(
    executor: impl sqlx::PgExecutor<'_>,
    integration_id: IntegrationId,
    api_key: &str,
    secret_hash: &[u8],
) -> Result<Uuid, sqlx::Error> {
    let id = portico_domain::ids::new_id();
    sqlx::query!(
        "INSERT INTO integration_credentials (id, integration_id, api_key, secret_hash)
         VALUES ($1, $2, $3, $4)",
        id,
        integration_id.as_uuid(),
        api_key,
        secret_hash,
    )
    .execute(executor)
    .await?;
    Ok(id)
}

/// Deletes credentials of an integration that were revoked or expired more than
/// `keep_days` ago (until then a partner still using one is told "expired" rather
/// than "invalid").
pub async fn prune_retired_credentials(
    executor: impl sqlx::PgExecutor<'_>,
    integration_id: IntegrationId,
    keep_days: i32,
) -> Result<u64, sqlx::Error> {
    let pruned = sqlx::query!(
        "DELETE FROM integration_credentials
         WHERE integration_id = $1
           AND (revoked_at < now() - make_interval(days => $2::int)
                OR expires_at < now() - make_interval(days => $2::int))",
        integration_id.as_uuid(),
        keep_days,
    )
    .execute(executor)
    .await?
    .rows_affected();
    Ok(pruned)
}

/// Revokes every credential of an integration not revoked yet, at once (a rotation
/// without grace period).
pub async fn revoke_credentials(
    executor: impl sqlx::PgExecutor<'_>,
    integration_id: IntegrationId,
) -> Result<u64, sqlx::Error> {
    let revoked = sqlx::query!(
        "UPDATE integration_credentials SET revoked_at = now()
         WHERE integration_id = $1 AND revoked_at IS NULL",
        integration_id.as_uuid(),
    )
    .execute(executor)
    .await?
    .rows_affected();
    Ok(revoked)
}

/// Lets every working credential of an integration expire at `until` at the latest (a
/// rotation with a grace period); returns the latest expiry it set, `None` when no
/// credential was still working.
pub async fn retire_credentials(
    executor: impl sqlx::PgExecutor<'_>,
    integration_id: IntegrationId,
    until: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"WITH retired AS (
               UPDATE integration_credentials
               SET expires_at = LEAST(COALESCE(expires_at, 'infinity'::timestamptz), $2)
               WHERE integration_id = $1 AND revoked_at IS NULL
                 AND (expires_at IS NULL OR expires_at > now())
               RETURNING expires_at)
           SELECT max(expires_at) AS "previous_expires_at?" FROM retired"#,
        integration_id.as_uuid(),
        until,
    )
    .fetch_one(executor)
    .await
}

/// The credential with `api_key`, joined with its integration and its calls counted
/// for `day`; `None` for an unknown key.
pub async fn find_credential(
    executor: impl sqlx::PgExecutor<'_>,
    api_key: &str,
    day: NaiveDate,
) -> Result<Option<CredentialRow>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT c.id, c.integration_id, i.user_id, i.scopes, c.secret_hash, i.active,
                  i.expires_at AS integration_expires_at, c.expires_at AS credential_expires_at,
                  c.revoked_at, i.rate_limit_per_second, i.daily_quota,
                  (SELECT d.calls FROM integration_daily_usage d
                    WHERE d.integration_id = i.id AND d.day = $2) AS "calls_on_day?"
           FROM integration_credentials c
           JOIN integrations i ON i.id = c.integration_id
           WHERE c.api_key = $1"#,
        api_key,
        day,
    )
    .fetch_optional(executor)
    .await?;
    Ok(row.map(|r| CredentialRow {
        credential_id: r.id,
        integration_id: IntegrationId::from(r.integration_id),
        user_id: r.user_id,
        scopes: r.scopes,
        secret_hash: r.secret_hash,
        active: r.active,
        integration_expires_at: r.integration_expires_at,
        credential_expires_at: r.credential_expires_at,
        revoked_at: r.revoked_at,
        rate_limit_per_second: r.rate_limit_per_second,
        daily_quota: r.daily_quota,
        calls_on_day: r.calls_on_day,
    }))
}

/// Moves `last_used_at` of each integration forward to its time (never back), in one
/// statement. Pass the integrations sorted by id, so writers on several replicas lock
/// rows in the same order.
pub async fn touch_last_used(
    executor: impl sqlx::PgExecutor<'_>,
    used: &[(IntegrationId, DateTime<Utc>)],
) -> Result<(), sqlx::Error> {
    let (ids, used_at): (Vec<Uuid>, Vec<DateTime<Utc>>) =
        used.iter().map(|(id, at)| (id.as_uuid(), *at)).unzip();
    sqlx::query!(
        "UPDATE integrations i SET last_used_at = GREATEST(i.last_used_at, u.used_at)
         FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, used_at)
         WHERE i.id = u.id",
        &ids,
        &used_at,
    )
    .execute(executor)
    .await?;
    Ok(())
}

/// Adds calls to the daily counters in one upsert and returns the totals now stored
/// for those (integration, day) pairs, which include other replicas' counts. Counts of
/// an integration deleted meanwhile are skipped. Pass them sorted by (integration,
/// day), so writers on several replicas lock rows in the same order.
pub async fn add_daily_calls(
    executor: impl sqlx::PgExecutor<'_>,
    counts: &[DailyCalls],
) -> Result<Vec<DailyCalls>, sqlx::Error> {
    let n = counts.len();
    let mut ids = Vec::with_capacity(n);
    let mut days = Vec::with_capacity(n);
    let mut calls = Vec::with_capacity(n);
    for c in counts {
        ids.push(c.integration_id.as_uuid());
        days.push(c.day);
        calls.push(c.calls);
    }
    let rows = sqlx::query!(
        "INSERT INTO integration_daily_usage (integration_id, day, calls)
         SELECT u.id, u.day, u.calls
         FROM unnest($1::uuid[], $2::date[], $3::int8[]) AS u(id, day, calls)
         WHERE EXISTS (SELECT 1 FROM integrations i WHERE i.id = u.id)
         ON CONFLICT (integration_id, day)
         DO UPDATE SET calls = integration_daily_usage.calls + excluded.calls
         RETURNING integration_id, day, calls",
        &ids,
        &days,
        &calls,
    )
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| DailyCalls {
            integration_id: IntegrationId::from(r.integration_id),
            day: r.day,
            calls: r.calls,
        })
        .collect())
}

/// The daily call counters of an integration from `from` (a UTC day) on, oldest
/// first; days without calls have no row.
pub async fn daily_calls(
    executor: impl sqlx::PgExecutor<'_>,
    integration_id: IntegrationId,
    from: NaiveDate,
) -> Result<Vec<DailyCalls>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT day, calls FROM integration_daily_usage
         WHERE integration_id = $1 AND day >= $2
         ORDER BY day",
        integration_id.as_uuid(),
        from,
    )
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| DailyCalls {
            integration_id,
            day: r.day,
            calls: r.calls,
        })
        .collect())
}
