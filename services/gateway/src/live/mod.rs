//! Live updates: what the workers commit, pushed to the caller's WebSocket
//! (`GET /api/v1/live`) or gRPC stream (`LiveService.Subscribe`) as it happens.
//!
//! # Layout
//! - [`hub`]: one core-NATS subscription per owner served by this replica, fanned out
//!   to bounded per-connection queues.
//! - [`listen`]: the listen WebSocket of `portico listen`: deliveries to a listen
//!   endpoint, answered by the tool's local server (`GET /api/listen/{id}`).
//! - [`ticket`]: short-lived, single-use tickets for browsers, which cannot set an
//!   `Authorization` header on a WebSocket.
//! - [`crate::live_session`] (beside this module, since it authenticates callers
//!   through the application state): who a connection is (the credential, its expiry),
//!   the client messages (`subscribe`, `unsubscribe`) and the WebSocket loop.
//!
//! The protocol, close codes and examples are documented in `docs/api/live.md`.

pub mod hub;
pub mod listen;
pub mod ticket;

pub use hub::{Frame, Hub, Membership};

/// Live-update settings (`PORTICO_LIVE_*`), declared with the rest of the configuration.
pub use crate::config::LiveConfig;

/// The close codes a live WebSocket ends with (the gRPC twin ends with a status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    /// 1001: the gateway is shutting down; reconnect (to another replica).
    GoingAway,
    /// 4001: the credential expired (JWT `exp`); reconnect with a fresh one.
    CredentialExpired,
    /// 4002: no pong to the previous ping.
    PingTimeout,
    /// 4003: the partner credential was revoked or its integration deleted.
    CredentialRevoked,
    /// 4008: the client stopped reading (a write waited longer than the stall limit).
    TooSlow,
    /// 4009: a client message was not valid (too large, not text).
    ProtocolError,
    /// 1013: live updates are unavailable here (NATS subscription lost); retry later.
    Unavailable,
}

impl CloseCode {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::GoingAway => 1001,
            CloseCode::CredentialExpired => 4001,
            CloseCode::PingTimeout => 4002,
            CloseCode::CredentialRevoked => 4003,
            CloseCode::TooSlow => 4008,
            CloseCode::ProtocolError => 4009,
            CloseCode::Unavailable => 1013,
        }
    }

    /// The close reason sent with it.
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::GoingAway => "server shutting down",
            CloseCode::CredentialExpired => "credential expired",
            CloseCode::PingTimeout => "no pong",
            CloseCode::CredentialRevoked => "credential revoked",
            CloseCode::TooSlow => "client too slow",
            CloseCode::ProtocolError => "invalid client message",
            CloseCode::Unavailable => "live updates unavailable",
        }
    }
}

impl Hub {
    /// Tells live listeners (the owner's, and the integration's partner connections,
    /// which close on `revoked`, `deleted` and `deactivated`) that an integration's
    /// credentials changed. Call after the change committed; never waits.
    pub fn credential_event(&self, owner: &str, integration_id: uuid::Uuid, action: &'static str) {
        self.publisher()
            .announce(&portico_queue::live::LiveEvent::CredentialEvent(
                portico_queue::live::CredentialEvent {
                    owner: owner.into(),
                    integration_id,
                    action: action.into(),
                    occurred_at: chrono::Utc::now(),
                },
            ));
    }
}

impl Hub {
    /// Tells live listeners that the owner enabled or disabled a webhook (the
    /// dispatcher announces the disabling it does itself). Call after the commit.
    pub fn endpoint_event(&self, owner: &str, webhook_id: uuid::Uuid, state: &'static str) {
        self.publisher()
            .announce(&portico_queue::live::LiveEvent::EndpointState(
                portico_queue::live::EndpointState {
                    owner: owner.into(),
                    webhook_id,
                    state: state.into(),
                    reason: (state == "disabled").then(|| "owner".into()),
                    consecutive_failures: None,
                    occurred_at: chrono::Utc::now(),
                },
            ));
    }
}
