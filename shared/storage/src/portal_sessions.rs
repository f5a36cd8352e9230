//! Partner-portal sessions (`portal_sessions`): one-time login links and the browser
//! sessions they become.
//!
//! Tokens never reach the database: callers pass the SHA-256 of the login token and of
//! the session cookie. [`create`] stores a link (or, for a partner who signed in with
//! credentials, a ready session); [`consume_login`] turns a valid, unused, unexpired
//! link into a session in one `UPDATE` (clearing the link's hash), so a link works
//! exactly once even when opened twice at the same moment; [`by_session`] reads a live
//! session; [`revoke`] and [`revoke_by_session`] end one.

use chrono::{DateTime, Utc};
use portico_domain::ids::{IntegrationId, PortalSessionId};
use uuid::Uuid;

/// One session as the gateway's portal reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalSessionRow {
    /// The session.
    pub id: PortalSessionId,
    /// The user whose data it shows (a partner's integration's owner).
    pub user_id: String,
    /// Set for a partner session (an [`IntegrationId`]).
    pub integration_id: Option<Uuid>,
    /// A partner session's scopes (the integration's at sign-in).
    pub scopes: Vec<String>,
    /// The webhooks a narrowed user session may see; `None` = all.
    pub webhook_ids: Option<Vec<Uuid>>,
    /// When the session (or the unused link's session) ends.
    pub expires_at: DateTime<Utc>,
    /// When the link was opened or the partner signed in.
    pub signed_in_at: Option<DateTime<Utc>>,
}

/// A session to create.
#[derive(Debug, Clone, Copy)]
pub struct NewPortalSession<'a> {
    /// New id.
    pub id: PortalSessionId,
    /// The user whose data it shows.
    pub user_id: &'a str,
    /// A partner session's integration.
    pub integration_id: Option<IntegrationId>,
    /// A partner session's scopes.
    pub scopes: &'a [String],
    /// Narrowing to some webhooks (user sessions).
    pub webhook_ids: Option<&'a [Uuid]>,
    /// SHA-256 of a one-time login token, with the link's expiry.
    pub login: Option<(&'a [u8], DateTime<Utc>)>,
    /// SHA-256 of the session cookie, for a session that starts now (partner sign-in).
    pub session_token_hash: Option<&'a [u8]>,
    /// When the session ends.
    pub expires_at: DateTime<Utc>,
}

/// Stores a new login link or session.
pub async fn create(
    executor: impl sqlx::PgExecutor<'_>,
    s: &NewPortalSession<'_>,
) -> Result<PortalSessionRow, sqlx::Error> {
    let (login_hash, login_expires) = s.login.unzip();
    sqlx::query_as!(
        PortalSessionRow,
        r#"INSERT INTO portal_sessions (id, user_id, integration_id, scopes, webhook_ids,
                login_token_hash, login_expires_at, session_token_hash, expires_at,
                signed_in_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,
                   CASE WHEN $8::bytea IS NULL THEN NULL ELSE now() END)
           RETURNING id, user_id, integration_id, scopes, webhook_ids, expires_at, signed_in_at"#,
        s.id.as_uuid(),
        s.user_id,
        s.integration_id.map(IntegrationId::as_uuid),
        s.scopes,
        s.webhook_ids,
        login_hash,
        login_expires,
        s.session_token_hash,
        s.expires_at,
    )
    .fetch_one(executor)
    .await
}

/// Uses a login link: when `login_token_hash` names an unused, unexpired, unrevoked
/// link, it is cleared and the session starts with `session_token_hash`, ending at
/// `expires_at`. `None` for anything else (unknown, used, expired, revoked).
pub async fn consume_login(
    executor: impl sqlx::PgExecutor<'_>,
    login_token_hash: &[u8],
    session_token_hash: &[u8],
    expires_at: DateTime<Utc>,
) -> Result<Option<PortalSessionRow>, sqlx::Error> {
    sqlx::query_as!(
        PortalSessionRow,
        r#"UPDATE portal_sessions
              SET login_token_hash = NULL, session_token_hash = $2, expires_at = $3,
                  signed_in_at = now()
            WHERE login_token_hash = $1 AND login_expires_at > now() AND revoked_at IS NULL
        RETURNING id, user_id, integration_id, scopes, webhook_ids, expires_at, signed_in_at"#,
        login_token_hash,
        session_token_hash,
        expires_at,
    )
    .fetch_optional(executor)
    .await
}

/// The live session whose cookie hashes to `session_token_hash` (not expired, not
/// revoked).
pub async fn by_session(
    executor: impl sqlx::PgExecutor<'_>,
    session_token_hash: &[u8],
) -> Result<Option<PortalSessionRow>, sqlx::Error> {
    sqlx::query_as!(
        PortalSessionRow,
        r#"SELECT id, user_id, integration_id, scopes, webhook_ids, expires_at, signed_in_at
             FROM portal_sessions
            WHERE session_token_hash = $1 AND expires_at > now() AND revoked_at IS NULL"#,
        session_token_hash,
    )
    .fetch_optional(executor)
    .await
}

/// Revokes one of `user_id`'s sessions (or unused links); false when there is no such
/// live session of that user.
pub async fn revoke(
    executor: impl sqlx::PgExecutor<'_>,
    user_id: &str,
    id: PortalSessionId,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE portal_sessions SET revoked_at = now()
          WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL",
        id.as_uuid(),
        user_id,
    )
    .execute(executor)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Revokes the session whose cookie hashes to `session_token_hash` (logout).
pub async fn revoke_by_session(
    executor: impl sqlx::PgExecutor<'_>,
    session_token_hash: &[u8],
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE portal_sessions SET revoked_at = now()
          WHERE session_token_hash = $1 AND revoked_at IS NULL",
        session_token_hash,
    )
    .execute(executor)
    .await?;
    Ok(done.rows_affected() == 1)
}
