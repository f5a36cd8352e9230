//! Portal sessions: creating one-time login links (users, or the platform on a user's
//! behalf), opening them, partner sign-in with integration credentials, reading the
//! session of a request, and revoking.
//!
//! A session resolves to the same [`Caller`] the API uses (a user, or a partner with
//! its integration's scopes), so every page calls the application layer with the
//! isolation and validation of the API; a session narrowed to some webhooks
//! additionally answers 404 for any other webhook.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Duration, Utc};
use portico_domain::ids::{IntegrationId, PortalSessionId};
use portico_storage::portal_sessions::{self as store, NewPortalSession, PortalSessionRow};
use uuid::Uuid;

use super::security;
use crate::error::ApiError;
use crate::identity::{Caller, PartnerIdentity, Scope};
use crate::state::AppState;

/// Most webhooks a login link may be narrowed to.
pub const MAX_NARROWED_WEBHOOKS: usize = 100;

/// A login link just created.
#[derive(Debug, Clone)]
pub struct LoginLink {
    /// The session the link starts.
    pub id: Uuid,
    /// The link (absolute with `PORTICO_PORTAL_PUBLIC_URL`, else a path).
    pub url: String,
    /// When the link stops working.
    pub expires_at: DateTime<Utc>,
    /// The webhooks the session is narrowed to, if any.
    pub webhook_ids: Option<Vec<Uuid>>,
}

/// Creates a one-time login link for the calling user (a user JWT, or the service
/// token naming the user). Partners cannot: they sign in with their credentials.
/// Every narrowed webhook must be the user's (404 otherwise).
pub async fn create_link(
    state: &AppState,
    caller: &Caller,
    webhook_ids: Option<Vec<Uuid>>,
) -> Result<LoginLink, ApiError> {
    caller.require_user_or_service()?;
    if let Some(ids) = &webhook_ids {
        if ids.len() > MAX_NARROWED_WEBHOOKS {
            return Err(ApiError::field(
                "invalid_webhook_ids",
                "/webhookIds",
                format!("at most {MAX_NARROWED_WEBHOOKS} webhooks"),
            ));
        }
        for id in ids {
            crate::app::webhooks::get(state, caller, *id).await?;
        }
    }
    let config = &state.config().portal;
    let token = security::new_token()?;
    let hash = security::token_hash(&token);
    let now = Utc::now();
    let expires_at = now + Duration::seconds(i64::from(config.portal_login_ttl_secs));
    let id = PortalSessionId::generate();
    let mut tx = state.pool().begin().await?;
    store::create(
        &mut *tx,
        &NewPortalSession {
            id,
            user_id: caller.user_id(),
            integration_id: None,
            scopes: &[],
            webhook_ids: webhook_ids.as_deref(),
            login: Some((&hash, expires_at)),
            session_token_hash: None,
            // Until the link is opened, the session ends with the link.
            expires_at,
        },
    )
    .await?;
    let narrowed: Option<Vec<String>> = webhook_ids
        .as_ref()
        .map(|ids| ids.iter().map(Uuid::to_string).collect());
    let entry = crate::app::audit::AuditEntry::new(
        "portal_session.created",
        "portal_session",
        id.as_uuid(),
    )
    .detail("webhookIds", narrowed);
    crate::app::audit::record(&mut tx, caller, entry).await?;
    tx.commit().await?;
    let path = format!("/portal/login?token={token}");
    let url = match &config.portal_public_url {
        Some(base) => format!("{}{path}", base.trim_end_matches('/')),
        None => path,
    };
    Ok(LoginLink {
        id: id.as_uuid(),
        url,
        expires_at,
        webhook_ids,
    })
}

/// Revokes one of the calling user's sessions or unused links.
pub async fn revoke(state: &AppState, caller: &Caller, id: Uuid) -> Result<(), ApiError> {
    caller.require_user_or_service()?;
    let mut tx = state.pool().begin().await?;
    if store::revoke(&mut *tx, caller.user_id(), PortalSessionId(id)).await? {
        let entry =
            crate::app::audit::AuditEntry::new("portal_session.revoked", "portal_session", id);
        crate::app::audit::record(&mut tx, caller, entry).await?;
        tx.commit().await?;
        Ok(())
    } else {
        Err(ApiError::NotFound("portal session"))
    }
}

/// Opens a login link: the new session's cookie token, or `None` when the link is
/// unknown, used, expired or revoked.
pub async fn open_link(state: &AppState, token: &str) -> Result<Option<String>, ApiError> {
    if token.is_empty() || token.len() > 128 {
        return Ok(None);
    }
    let session_token = security::new_token()?;
    let ttl = i64::from(state.config().portal.portal_session_ttl_secs);
    let row = store::consume_login(
        state.pool(),
        &security::token_hash(token),
        &security::token_hash(&session_token),
        Utc::now() + Duration::seconds(ttl),
    )
    .await?;
    Ok(row.map(|_| session_token))
}

/// Signs a partner in with its integration's API key and secret: the credentials
/// verifier and its throttle of wrong secrets (per key and client) decide, exactly as
/// for an API call. Returns the session's cookie token.
pub async fn partner_sign_in(
    state: &AppState,
    api_key: &str,
    secret: &str,
    client: &str,
) -> Result<String, ApiError> {
    let credential = match state
        .credentials()
        .check_from(api_key.trim(), secret.trim(), client)
        .await?
    {
        Ok(c) => c,
        Err((rejection, _)) => return Err(crate::credentials::rejection_error(rejection)),
    };
    let session_token = security::new_token()?;
    let ttl = i64::from(state.config().portal.portal_session_ttl_secs);
    let scopes: Vec<String> = credential
        .scopes
        .iter()
        .map(|s| s.as_str().to_owned())
        .collect();
    store::create(
        state.pool(),
        &NewPortalSession {
            id: PortalSessionId::generate(),
            user_id: &credential.user_id,
            integration_id: Some(IntegrationId(credential.integration_id)),
            scopes: &scopes,
            webhook_ids: None,
            login: None,
            session_token_hash: Some(&security::token_hash(&session_token)),
            expires_at: Utc::now() + Duration::seconds(ttl),
        },
    )
    .await?;
    Ok(session_token)
}

/// Ends the session whose cookie is `session_token` (logout).
pub async fn sign_out(state: &AppState, session_token: &str) -> Result<(), ApiError> {
    store::revoke_by_session(state.pool(), &security::token_hash(session_token)).await?;
    Ok(())
}

/// The signed-in session of a portal request.
#[derive(Debug, Clone)]
pub struct PortalSession {
    /// The session's id.
    pub id: Uuid,
    /// Who the application layer sees: the user, or the partner.
    pub caller: Caller,
    /// Narrowed to these webhooks, when set.
    pub webhook_ids: Option<Vec<Uuid>>,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
    /// The cookie's token (for logout).
    pub token: String,
    /// When the session ends (live tickets carry it, so a socket closes with it).
    pub expires_at: DateTime<Utc>,
}

impl PortalSession {
    /// The partner's integration, for a partner session.
    pub fn integration_id(&self) -> Option<Uuid> {
        self.caller.integration_id()
    }

    /// Whether this is a partner session.
    pub fn is_partner(&self) -> bool {
        matches!(self.caller, Caller::Partner(_))
    }

    /// 404 for a webhook outside a narrowed session, and for partners (a partner's
    /// portal shows its integration's data, not its owner's webhooks).
    pub fn check_webhook(&self, id: Uuid) -> Result<(), ApiError> {
        if self.is_partner() {
            return Err(ApiError::NotFound("webhook"));
        }
        match &self.webhook_ids {
            Some(ids) if !ids.contains(&id) => Err(ApiError::NotFound("webhook")),
            _ => Ok(()),
        }
    }

    /// Refuses a POST whose CSRF token is missing or wrong (403).
    pub fn check_csrf(&self, presented: Option<&str>) -> Result<(), ApiError> {
        if security::csrf_matches(&self.csrf, presented) {
            Ok(())
        } else {
            Err(ApiError::Specific {
                status: axum::http::StatusCode::FORBIDDEN,
                code: "csrf_token_invalid",
                message: "the form's CSRF token is missing or wrong; reload the page and try again"
                    .into(),
            })
        }
    }
}

fn to_caller(row: &PortalSessionRow) -> Caller {
    match row.integration_id {
        Some(integration_id) => Caller::Partner(PartnerIdentity {
            integration_id,
            user_id: row.user_id.clone(),
            scopes: row.scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
        }),
        None => Caller::User {
            user_id: row.user_id.clone(),
        },
    }
}

/// Reads the session of a request from its cookie; `None` when there is none or it
/// ended. A partner session also ends when its integration was deactivated.
pub async fn current(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> Result<Option<PortalSession>, ApiError> {
    let Some(token) = security::cookie(headers, security::SESSION_COOKIE) else {
        return Ok(None);
    };
    if token.len() > 128 {
        return Ok(None);
    }
    let Some(row) = store::by_session(state.pool(), &security::token_hash(token)).await? else {
        return Ok(None);
    };
    let caller = to_caller(&row);
    if matches!(caller, Caller::Partner(_)) {
        match crate::app::integrations::current(state, &caller).await {
            Ok((integration, _)) if integration.active => {}
            Ok(_) | Err(ApiError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Ok(Some(PortalSession {
        id: row.id.as_uuid(),
        caller,
        webhook_ids: row.webhook_ids,
        csrf: security::csrf_token(token),
        token: token.to_owned(),
        expires_at: row.expires_at,
    }))
}

/// Why a portal request has no session: the browser is sent to the sign-in page.
#[derive(Debug)]
pub enum NoSession {
    /// Not signed in (or the session ended).
    SignIn,
    /// Reading the session failed.
    Error(ApiError),
}

impl IntoResponse for NoSession {
    fn into_response(self) -> Response {
        match self {
            NoSession::SignIn => Redirect::to("/portal/sign-in").into_response(),
            NoSession::Error(e) => super::pages::error_page(&e),
        }
    }
}

impl FromRequestParts<AppState> for PortalSession {
    type Rejection = NoSession;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(s) = parts.extensions.get::<PortalSession>() {
            return Ok(s.clone());
        }
        match current(state, &parts.headers).await {
            Ok(Some(s)) => {
                parts.extensions.insert(s.clone());
                Ok(s)
            }
            Ok(None) => Err(NoSession::SignIn),
            Err(e) => Err(NoSession::Error(e)),
        }
    }
}
