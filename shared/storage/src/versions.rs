//! Row versions for conditional writes (`If-Match` over REST, `etag` over gRPC): the
//! `updated_at` of one of the owner's rows, locked (`FOR UPDATE`) until the caller's
//! transaction ends, so a compare with the client's version and the write that follows
//! are atomic: no other write can land between them.
//!
//! One statement per table whose rows clients change; each is scoped by `user_id`, so
//! another user's row is simply not found (`None`). Every write of these tables bumps
//! `updated_at`, which is what makes it a version.

use chrono::{DateTime, Utc};
use portico_domain::ids::{IntegrationId, WebhookId};

/// The version of one of `user_id`'s webhooks, locked until the transaction ends.
pub async fn webhook(
    conn: &mut sqlx::PgConnection,
    user_id: &str,
    id: WebhookId,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT updated_at FROM webhooks WHERE id = $1 AND user_id = $2 FOR UPDATE",
        id.as_uuid(),
        user_id,
    )
    .fetch_optional(conn)
    .await
}

/// The version of one of `user_id`'s integrations, locked until the transaction ends.
pub async fn integration(
    conn: &mut sqlx::PgConnection,
    user_id: &str,
    id: IntegrationId,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT updated_at FROM integrations WHERE id = $1 AND user_id = $2 FOR UPDATE",
        id.as_uuid(),
        user_id,
    )
    .fetch_optional(conn)
    .await
}

/// The version of one of `user_id`'s own integration templates, locked until the
/// transaction ends (built-in templates have no row and no version).
pub async fn integration_template(
    conn: &mut sqlx::PgConnection,
    user_id: &str,
    key: &str,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT updated_at FROM integration_templates WHERE user_id = $1 AND key = $2 FOR UPDATE",
        user_id,
        key,
    )
    .fetch_optional(conn)
    .await
}
