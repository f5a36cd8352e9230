//! Who is calling, once authenticated: the [`Caller`] of a request (a user, an internal
//! service or a partner) and the [`Operator`] of an admin request. [`crate::auth`]
//! produces them from request headers; [`crate::app`] and the doors consume them, so
//! the application layer does not depend on how callers authenticate.

use uuid::Uuid;

use crate::error::ApiError;

/// The scopes partners' credentials hold; defined in the domain crate so validation
/// and the workers share one list.
pub use portico_domain::integrations::Scope;

/// A partner authenticated by integration credentials.
#[derive(Debug, Clone)]
pub struct PartnerIdentity {
    /// The integration whose credentials were presented.
    pub integration_id: Uuid,
    /// The integration's owner, on whose behalf the partner acts.
    pub user_id: String,
    /// What the integration may do.
    pub scopes: Vec<Scope>,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A platform user with a valid JWT.
    User {
        /// The token's `sub`.
        user_id: String,
    },
    /// An internal service acting for a user.
    Service {
        /// From `x-portico-user-id`.
        user_id: String,
    },
    /// A partner acting for an integration's owner.
    Partner(PartnerIdentity),
}

impl Caller {
    /// The user whose resources this request may see; every query is scoped to it.
    pub fn user_id(&self) -> &str {
        match self {
            Caller::User { user_id } | Caller::Service { user_id } => user_id,
            Caller::Partner(p) => &p.user_id,
        }
    }

    /// The integration, when a partner is calling.
    pub fn integration_id(&self) -> Option<Uuid> {
        match self {
            Caller::Partner(p) => Some(p.integration_id),
            _ => None,
        }
    }

    /// Refuses a partner whose integration lacks `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        match self {
            Caller::Partner(p) if !p.scopes.contains(&scope) => Err(ApiError::Forbidden(format!(
                "the integration's credentials lack the {} scope",
                scope.as_str()
            ))),
            _ => Ok(()),
        }
    }

    /// Refuses anyone but an internal service (event publishing).
    pub fn require_service(&self) -> Result<(), ApiError> {
        match self {
            Caller::Service { .. } => Ok(()),
            _ => Err(ApiError::Forbidden(
                "only internal services (service token) may do this".into(),
            )),
        }
    }

    /// Refuses partners: user-management actions (integrations, credentials) are for
    /// the platform user or an internal service only.
    pub fn require_user_or_service(&self) -> Result<(), ApiError> {
        match self {
            Caller::Partner(_) => Err(ApiError::Forbidden(
                "partner credentials cannot manage integrations".into(),
            )),
            _ => Ok(()),
        }
    }
}

/// An operator calling the admin API (`/api/admin/...`). Operators are not users: they
/// authenticate with `PORTICO_OPERATOR_TOKEN` and nothing else, so no user JWT, partner
/// credential or service token reaches an admin route, and the operator token is no
/// credential anywhere else (it is neither the service token nor a JWT).
#[derive(Debug, Clone)]
pub struct Operator {
    /// From `x-portico-operator`, or [`crate::auth::UNNAMED_OPERATOR`].
    pub name: String,
    /// The request's `x-request-id` (set by the gateway when the client sent none).
    pub request_id: Option<String>,
    /// The peer address (or the first `X-Forwarded-For` hop when trusted).
    pub client_addr: Option<String>,
}
