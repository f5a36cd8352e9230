//! The statements of the re-seal job: page through every sealed value (webhook signing
//! secrets, webhooks' custom headers) and replace one only if it is still what was
//! read.
//!
//! Why this shape: a key rotation must move every value to the newest key while the
//! system serves. Pages follow a keyset on the primary key (a rerun or a resumed run
//! starts where it is told, and skips values already under the newest key, so the job
//! is idempotent), and each write is a compare-and-swap on the old value, so a secret
//! rotated or a webhook edited meanwhile is left as its new writer left it instead of
//! being overwritten with stale data. This module never sees a key.

use portico_domain::ids::WebhookId;
use uuid::Uuid;

/// One stored signing secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSecret {
    /// The `webhook_secrets` row.
    pub id: Uuid,
    /// The webhook it signs for (its id is the sealing context).
    pub webhook_id: WebhookId,
    /// The sealed value.
    pub ciphertext: Vec<u8>,
}

/// Up to `limit` signing secrets with an id above `after`, in id order (expired ones
/// too: they are deleted by the next rotation, but until then they are still data).
pub async fn secrets_after(
    executor: impl sqlx::PgExecutor<'_>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<SealedSecret>, sqlx::Error> {
    sqlx::query_as!(
        SealedSecret,
        "SELECT id, webhook_id, ciphertext FROM webhook_secrets
          WHERE $1::uuid IS NULL OR id > $1
          ORDER BY id LIMIT $2",
        after,
        limit,
    )
    .fetch_all(executor)
    .await
}

/// Replaces a secret's ciphertext if it is still `old`. False when the row changed or
/// went away meanwhile (nothing to do: its new writer sealed under the newest key).
pub async fn replace_secret(
    executor: impl sqlx::PgExecutor<'_>,
    id: Uuid,
    old: &[u8],
    new: &[u8],
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query!(
        "UPDATE webhook_secrets SET ciphertext = $3 WHERE id = $1 AND ciphertext = $2",
        id,
        old,
        new,
    )
    .execute(executor)
    .await?
    .rows_affected();
    Ok(updated > 0)
}

/// One webhook's custom headers as stored (a JSON object of strings when the API wrote
/// it).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredHeaders {
    /// The webhook (its id and each header's name are the sealing context).
    pub webhook_id: WebhookId,
    /// The `headers` column.
    pub headers: serde_json::Value,
}

/// Up to `limit` webhooks with an id above `after` that have custom headers, in id
/// order.
pub async fn headers_after(
    executor: impl sqlx::PgExecutor<'_>,
    after: Option<WebhookId>,
    limit: i64,
) -> Result<Vec<StoredHeaders>, sqlx::Error> {
    sqlx::query_as!(
        StoredHeaders,
        "SELECT id AS webhook_id, headers FROM webhooks
          WHERE ($1::uuid IS NULL OR id > $1) AND headers <> '{}'::jsonb
          ORDER BY id LIMIT $2",
        after.map(|id| id.as_uuid()),
        limit,
    )
    .fetch_all(executor)
    .await
}

/// Replaces a webhook's headers if they are still `old` (the owner may have edited
/// them meanwhile). Does not touch `updated_at`: re-sealing changes no setting.
pub async fn replace_headers(
    executor: impl sqlx::PgExecutor<'_>,
    webhook_id: WebhookId,
    old: &serde_json::Value,
    new: &serde_json::Value,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query!(
        "UPDATE webhooks SET headers = $3 WHERE id = $1 AND headers = $2",
        webhook_id.as_uuid(),
        old,
        new,
    )
    .execute(executor)
    .await?
    .rows_affected();
    Ok(updated > 0)
}

/// How many API credentials were hashed with each pepper (`None`: stored before peppers
/// had ids), so an operator knows when an old pepper can be removed. A hash cannot be
/// moved to a new pepper without the secret; credentials move when they are
/// regenerated.
pub async fn credentials_per_pepper(
    executor: impl sqlx::PgExecutor<'_>,
) -> Result<Vec<(Option<String>, i64)>, sqlx::Error> {
    // 'P' || id_len || id || 32-byte HMAC; a bare 32-byte HMAC has no id.
    let rows = sqlx::query!(
        r#"SELECT CASE WHEN length(secret_hash) = 32 THEN NULL
                       ELSE convert_from(substring(secret_hash FROM 3 FOR get_byte(secret_hash, 1)), 'UTF8')
                  END AS pepper_id,
                  count(*) AS "count!"
             FROM integration_credentials
            WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
            GROUP BY 1 ORDER BY 1 NULLS FIRST"#,
    )
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().map(|r| (r.pepper_id, r.count)).collect())
}
