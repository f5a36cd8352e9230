//! Listen endpoints (`portico listen`): webhooks whose deliveries travel to a
//! developer's command-line tool over NATS and its live connection instead of HTTP.
//!
//! A listen endpoint is a `webhooks` row with `transport = 'listen'` and the URL
//! placeholder `listen:<id>` (migration 0017 holds the two together), so every owner
//! route (get, list, delete, deliveries, retries) works on it unchanged. The gateway
//! refreshes `listen_seen_at` while a connection is attached; the dispatcher deletes
//! the rows no connection has refreshed for its timeout.

use chrono::{DateTime, Utc};
use portico_domain::ids::WebhookId;

/// The URL placeholder a listen endpoint is stored with: not an address, so no HTTP
/// client could ever send to it.
pub fn placeholder_url(id: WebhookId) -> String {
    format!("listen:{}", id.as_uuid())
}

/// Turns a webhook just inserted (with [`placeholder_url`] as its URL) into a listen
/// endpoint seen now. Run in the insert's transaction, so no dispatcher ever reads it
/// as an HTTP endpoint. False when `user_id` has no such webhook.
pub async fn mark_listen(
    executor: impl sqlx::PgExecutor<'_>,
    user_id: &str,
    id: WebhookId,
) -> Result<bool, sqlx::Error> {
    let changed = sqlx::query!(
        "UPDATE webhooks SET transport = 'listen', listen_seen_at = now()
         WHERE id = $1 AND user_id = $2 AND url = 'listen:' || id::text",
        id.as_uuid(),
        user_id,
    )
    .execute(executor)
    .await?
    .rows_affected();
    Ok(changed > 0)
}

/// Records that a connection holds `user_id`'s listen endpoint `id` now: the attach
/// check (false when they own no such listen endpoint) and the heartbeat in one
/// statement.
pub async fn touch(
    executor: impl sqlx::PgExecutor<'_>,
    user_id: &str,
    id: WebhookId,
) -> Result<bool, sqlx::Error> {
    let touched = sqlx::query!(
        "UPDATE webhooks SET listen_seen_at = now()
         WHERE id = $1 AND user_id = $2 AND transport = 'listen'",
        id.as_uuid(),
        user_id,
    )
    .execute(executor)
    .await?
    .rows_affected();
    Ok(touched > 0)
}

/// Whether webhook `id` is a listen endpoint (its URL must then never change).
pub async fn is_listen(
    executor: impl sqlx::PgExecutor<'_>,
    user_id: &str,
    id: WebhookId,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM webhooks
                          WHERE id = $1 AND user_id = $2 AND transport = 'listen') AS "exists!""#,
        id.as_uuid(),
        user_id,
    )
    .fetch_one(executor)
    .await
}

/// A listen endpoint removed by [`delete_abandoned`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbandonedEndpoint {
    /// The webhook.
    pub id: WebhookId,
    /// Its owner (whose cached endpoints must be dropped).
    pub user_id: String,
}

/// Deletes every listen endpoint last seen before `seen_before` (its connection gone
/// past the timeout), with its deliveries (foreign-key cascade).
pub async fn delete_abandoned(
    executor: impl sqlx::PgExecutor<'_>,
    seen_before: DateTime<Utc>,
) -> Result<Vec<AbandonedEndpoint>, sqlx::Error> {
    sqlx::query_as!(
        AbandonedEndpoint,
        "DELETE FROM webhooks WHERE transport = 'listen' AND listen_seen_at < $1
         RETURNING id, user_id",
        seen_before,
    )
    .fetch_all(executor)
    .await
}
