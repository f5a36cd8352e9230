//! Live tickets: a browser cannot set an `Authorization` header on a WebSocket, so it
//! first asks `POST /api/live/tickets` (with its usual credential) for a ticket and
//! then opens `GET /api/live?ticket=...`.
//!
//! A ticket is stateless: the caller's identity, the credential's own expiry, a
//! 60-second expiry and a random nonce, signed with HMAC-SHA256 under the replicas'
//! shared key ([`super::LiveConfig::ticket_secret`]), so any replica accepts it.
//! Single use is enforced per replica: a replica remembers the nonces it accepted
//! until they expire (at most [`MAX_REMEMBERED`]), so a ticket replayed to the same
//! replica is refused. Across replicas, a ticket captured in flight could be used once
//! more on another replica within its 60 seconds; it never outlives them, and it
//! carries no more than the credential that obtained it (TLS keeps it from being
//! captured; a URL with a ticket must not be logged by proxies).

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use ring::hmac;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::identity::{Caller, PartnerIdentity, Scope};

/// How long a ticket may wait before its WebSocket is opened.
pub const TICKET_LIFETIME_SECS: i64 = 60;
/// Nonces one replica remembers at most; beyond it, new tickets are refused until old
/// ones expire (memory stays bounded even under a flood of tickets).
pub const MAX_REMEMBERED: usize = 100_000;

/// Why a ticket was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// Not a ticket this deployment signed.
    #[error("the ticket is not valid")]
    Invalid,
    /// Older than [`TICKET_LIFETIME_SECS`].
    #[error("the ticket has expired")]
    Expired,
    /// Already used on this replica.
    #[error("the ticket was already used")]
    Used,
    /// Too many tickets outstanding on this replica.
    #[error("too many live tickets outstanding; retry shortly")]
    Busy,
}

/// What a ticket says (JSON inside the signed token).
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// `user`, `service` or `partner`.
    k: String,
    /// The user id.
    sub: String,
    /// A partner's integration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    int: Option<Uuid>,
    /// A partner's scopes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    scopes: Vec<Scope>,
    /// The underlying credential's expiry (unix seconds), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cexp: Option<i64>,
    /// The ticket's expiry (unix seconds).
    exp: i64,
    /// Random, for single use.
    n: String,
}

/// Issues and redeems tickets.
pub struct Tickets {
    key: hmac::Key,
    used: Mutex<HashMap<String, i64>>,
}

impl Tickets {
    /// A ticket office signing with `secret`.
    pub fn new(secret: &[u8]) -> Self {
        // Domain-separated, so the key is never the JWT secret itself.
        let derived = ring::digest::digest(
            &ring::digest::SHA256,
            &[b"portico-live-ticket-v1:".as_slice(), secret].concat(),
        );
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
            used: Mutex::new(HashMap::new()),
        }
    }

    /// A ticket for `caller`, whose credential expires at `credential_expiry`.
    pub fn issue(
        &self,
        caller: &Caller,
        credential_expiry: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> (String, DateTime<Utc>) {
        let (k, int, scopes) = match caller {
            Caller::User { .. } => ("user", None, Vec::new()),
            Caller::Service { .. } => ("service", None, Vec::new()),
            Caller::Partner(p) => ("partner", Some(p.integration_id), p.scopes.clone()),
        };
        let exp = now.timestamp() + TICKET_LIFETIME_SECS;
        let claims = Claims {
            k: k.to_owned(),
            sub: caller.user_id().to_owned(),
            int,
            scopes,
            cexp: credential_expiry.map(|e| e.timestamp()),
            exp,
            n: Uuid::new_v4().simple().to_string(),
        };
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let tag = hmac::sign(&self.key, body.as_bytes());
        let ticket = format!("{body}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
        let expires = DateTime::from_timestamp(exp, 0).unwrap_or(now);
        (ticket, expires)
    }

    /// Checks and consumes a ticket: the caller it was issued to and the credential's
    /// expiry.
    pub fn redeem(
        &self,
        ticket: &str,
        now: DateTime<Utc>,
    ) -> Result<(Caller, Option<DateTime<Utc>>), TicketError> {
        let (body, tag) = ticket.split_once('.').ok_or(TicketError::Invalid)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TicketError::Invalid)?;
        hmac::verify(&self.key, body.as_bytes(), &tag).map_err(|_| TicketError::Invalid)?;
        let raw = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TicketError::Invalid)?;
        let claims: Claims = serde_json::from_slice(&raw).map_err(|_| TicketError::Invalid)?;
        let now_secs = now.timestamp();
        if claims.exp <= now_secs {
            return Err(TicketError::Expired);
        }
        {
            let mut used = self
                .used
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if used.len() >= MAX_REMEMBERED / 2 {
                used.retain(|_, exp| *exp > now_secs);
            }
            if used.contains_key(&claims.n) {
                return Err(TicketError::Used);
            }
            if used.len() >= MAX_REMEMBERED {
                return Err(TicketError::Busy);
            }
            used.insert(claims.n.clone(), claims.exp);
        }
        let caller = match (claims.k.as_str(), claims.int) {
            ("user", None) => Caller::User {
                user_id: claims.sub,
            },
            ("service", None) => Caller::Service {
                user_id: claims.sub,
            },
            ("partner", Some(integration_id)) => Caller::Partner(PartnerIdentity {
                integration_id,
                user_id: claims.sub,
                scopes: claims.scopes,
            }),
            _ => return Err(TicketError::Invalid),
        };
        let expiry = claims.cexp.and_then(|s| DateTime::from_timestamp(s, 0));
        Ok((caller, expiry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ticket works once, for the caller it was issued to, and only until it
    /// expires; a changed byte or another key is refused.
    #[test]
    fn tickets_are_signed_single_use_and_short_lived() {
        let office = Tickets::new(b"secret");
        let now = Utc::now();
        let caller = Caller::Partner(PartnerIdentity {
            integration_id: Uuid::nil(),
            user_id: "u.1".into(),
            scopes: vec![Scope::WebhooksRead],
        });
        let (ticket, expires) = office.issue(&caller, None, now);
        assert_eq!(expires.timestamp(), now.timestamp() + TICKET_LIFETIME_SECS);
        let (back, _) = office.redeem(&ticket, now).unwrap();
        assert_eq!(back.user_id(), "u.1");
        assert_eq!(back.integration_id(), Some(Uuid::nil()));
        assert_eq!(office.redeem(&ticket, now).unwrap_err(), TicketError::Used);

        let (ticket, _) = office.issue(&caller, None, now);
        let late = now + chrono::Duration::seconds(TICKET_LIFETIME_SECS);
        assert_eq!(
            office.redeem(&ticket, late).unwrap_err(),
            TicketError::Expired
        );
        assert_eq!(
            Tickets::new(b"other").redeem(&ticket, now).unwrap_err(),
            TicketError::Invalid
        );
        let mut forged = ticket.into_bytes();
        forged[3] ^= 1;
        let forged = String::from_utf8(forged).unwrap();
        assert_eq!(
            office.redeem(&forged, now).unwrap_err(),
            TicketError::Invalid
        );
    }
}
