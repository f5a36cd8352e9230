//! Listen endpoints (`portico listen`): a temporary webhook whose deliveries reach the
//! owner's command-line tool over its connection instead of an HTTP request.
//!
//! Creating one is for the owner only: a user with their JWT, or an internal service
//! acting for that user. A partner's credentials are refused, even with the
//! `webhooks:write` scope: a listen endpoint forwards the owner's events to whichever
//! machine holds the connection, which is the owner's decision to make. Once created
//! it is an ordinary webhook row (listed, fetched, deleted, its deliveries read and
//! retried through the webhook routes), with the URL placeholder `listen:<id>`, which
//! the dispatcher never requests over HTTP (see `portico_storage::listen`).

use portico_domain::ids::WebhookId;
use portico_domain::webhooks::{validate_description, validate_event_filters};
use portico_signing::standard_webhooks::WebhookSecret;
use portico_storage::webhooks::{self as store, WebhookValues};
use std::collections::BTreeMap;

use crate::app::sealing;
use crate::app::webhooks::{CreatedWebhook, invalidate, to_i32, to_i64};
use crate::error::ApiError;
use crate::identity::{Caller, Scope};
use crate::state::AppState;

/// A listen endpoint to create.
#[derive(Debug, Clone, Default)]
pub struct NewListenEndpoint {
    /// Event filters (exact, `prefix.*`, `*`).
    pub events: Vec<String>,
    /// The owner's description (the tool puts the forward URL here).
    pub description: Option<String>,
}

/// Refuses partners: only the owner (or a service acting for them) listens.
fn require_owner(caller: &Caller) -> Result<(), ApiError> {
    caller.require(Scope::WebhooksWrite)?;
    match caller {
        Caller::Partner(_) => Err(ApiError::Forbidden(
            "only the owner (a user token, or the service token acting for the user) may create a listen endpoint; partner credentials may not".into(),
        )),
        Caller::User { .. } | Caller::Service { .. } => Ok(()),
    }
}

/// Creates a listen endpoint of the caller with a fresh signing secret, seen now (the
/// dispatcher removes it if no connection attaches within its timeout).
pub async fn create(
    state: &AppState,
    caller: &Caller,
    input: NewListenEndpoint,
) -> Result<CreatedWebhook, ApiError> {
    require_owner(caller)?;
    let mut errors = Vec::new();
    let events = validate_event_filters(&input.events, "/events").unwrap_or_else(|e| {
        errors.extend(e);
        Vec::new()
    });
    if let Some(d) = &input.description
        && let Err(e) = validate_description(d, "/description")
    {
        errors.push(e);
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let id = WebhookId::generate();
    let secret = WebhookSecret::generate().map_err(ApiError::internal)?;
    let sealed = state
        .secrets_key()
        .seal(&sealing::secret_context(id), secret.as_bytes())
        .map_err(ApiError::internal)?;
    let url = portico_storage::listen::placeholder_url(id);
    let policy = state.webhooks().default_retry_policy;
    let headers = BTreeMap::new();
    let values = WebhookValues {
        id,
        url: &url,
        events: &events,
        description: input.description.as_deref(),
        max_retries: to_i32(policy.max_retries),
        base_delay_ms: to_i64(policy.base_delay_ms),
        max_delay_ms: to_i64(policy.max_delay_ms),
        headers: &headers,
        ordering_enabled: false,
        rate_limit_per_second: None,
        max_concurrency: None,
    };
    let mut tx = state.pool().begin().await?;
    let row = store::insert_with_secret(&mut *tx, caller.user_id(), &values, &sealed).await?;
    if !portico_storage::listen::mark_listen(&mut *tx, caller.user_id(), id).await? {
        return Err(ApiError::internal("the new listen endpoint was not found"));
    }
    tx.commit().await?;
    invalidate(state, caller.user_id()).await;
    Ok(CreatedWebhook {
        webhook: row.into(),
        secret: secret.to_whsec(),
    })
}

/// Checks that `id` is one of the caller's listen endpoints and records it as seen
/// (the connection's attach and heartbeat); another user's, or an HTTP webhook,
/// answers not found.
pub async fn touch(state: &AppState, caller: &Caller, id: WebhookId) -> Result<(), ApiError> {
    require_owner(caller)?;
    if portico_storage::listen::touch(state.pool(), caller.user_id(), id).await? {
        Ok(())
    } else {
        Err(ApiError::NotFound("listen endpoint"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Partners are refused even with the write scope; users and services pass.
    #[test]
    fn only_the_owner_listens() {
        let partner = Caller::Partner(crate::identity::PartnerIdentity {
            integration_id: uuid::Uuid::nil(),
            user_id: "u".into(),
            scopes: vec![Scope::WebhooksWrite, Scope::WebhooksRead],
        });
        assert!(matches!(
            require_owner(&partner),
            Err(ApiError::Forbidden(_))
        ));
        assert!(
            require_owner(&Caller::User {
                user_id: "u".into()
            })
            .is_ok()
        );
        assert!(
            require_owner(&Caller::Service {
                user_id: "u".into()
            })
            .is_ok()
        );
    }
}
