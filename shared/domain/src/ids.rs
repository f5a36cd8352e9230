//! Identifiers: one type per resource id, so a function that takes a webhook id and a
//! delivery id cannot be handed them swapped, and the helpers that derive ids.
//!
//! Every id is a UUID on the wire and in PostgreSQL; the newtypes cost nothing at run
//! time. Storage functions take and return them; the doors parse them once
//! (`FromStr`) and the JSON shapes serialise them as plain UUID strings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new time-ordered id ([`new_id`]).
            pub fn generate() -> Self {
                Self(new_id())
            }

            /// The UUID inside, for SQL parameters and wire formats.
            pub fn as_uuid(self) -> Uuid {
                self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// A webhook endpoint.
    WebhookId
);
uuid_id!(
    /// One event's delivery to one webhook (stable across its attempts).
    DeliveryId
);
uuid_id!(
    /// An event; also the `webhook-id` header of its deliveries.
    EventId
);
uuid_id!(
    /// A retry-failed job of one webhook.
    RetryJobId
);
uuid_id!(
    /// A partner integration.
    IntegrationId
);
uuid_id!(
    /// A bulk-order batch.
    BatchId
);
uuid_id!(
    /// An order created from a batch.
    OrderId
);
uuid_id!(
    /// A partner-portal session (its one-time login link and its browser session).
    PortalSessionId
);

/// A new time-ordered id (UUIDv7): good B-tree locality for primary keys.
pub fn new_id() -> Uuid {
    Uuid::now_v7()
}

/// The id of an event, derived from its owner and idempotency key, so the same event
/// published twice (even days apart, past JetStream's duplicate window) maps to the same
/// row and is recorded and delivered once. A UUIDv8 built from a 128-bit FNV-1a hash
/// over a length-prefixed encoding (no ambiguity between `("ab","c")` and `("a","bc")`).
///
/// Why not `Uuid::new_v5`: event ids are stored and returned to publishers, and the
/// dedupe promise ("the same key maps to the same event, days apart") needs the same
/// (owner, key) to give the same id after an upgrade as before it. A v5 (SHA-1) id is
/// another id for the same input: an event published before the switch and again after
/// it would be recorded and delivered twice. Keeping both derivations would cost a
/// second lookup on every publish. So the derivation stays as it is, pinned by the
/// `event_ids_never_change` test; changing it needs a migration plan, not a refactor.
pub fn event_id(user_id: &str, idempotency_key: &str) -> Uuid {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut hash = OFFSET;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u128::from(*b);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    feed(&(user_id.len() as u64).to_le_bytes());
    feed(user_id.as_bytes());
    feed(idempotency_key.as_bytes());
    uuid::Builder::from_custom_bytes(hash.to_be_bytes()).into_uuid()
}

/// The id of an event's delivery to one webhook, derived from the pair and the time the
/// event was accepted: a UUIDv8 laid out like a UUIDv7, the first 48 bits the
/// acceptance time in Unix milliseconds and the other 74 free bits a 128-bit FNV-1a
/// hash of the two ids.
///
/// Why derived: the same (event, webhook) always gets the same id, so the primary key
/// alone keeps a redelivered event job from making a second delivery, which lets
/// deliveries be partitioned by their id (a partitioned table has no unique index on
/// `(event_id, webhook_id)`). Why time first: a range of ids between two days' floors is
/// those days, as with UUIDv7, so the deliveries of one UTC day (the day their event was
/// accepted) share one partition with that day's events and attempts. The derivation is
/// pinned by `delivery_ids_never_change`: a changed derivation would deliver a
/// redelivered job twice.
pub fn delivery_id(event_id: Uuid, webhook_id: Uuid, accepted_at_ms: i64) -> Uuid {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut hash = OFFSET;
    for b in event_id.as_bytes().iter().chain(webhook_id.as_bytes()) {
        hash ^= u128::from(*b);
        hash = hash.wrapping_mul(PRIME);
    }
    let mut bytes = hash.to_be_bytes();
    let ms = accepted_at_ms.clamp(0, (1 << 48) - 1) as u64;
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Same inputs, same id; any difference in owner or key, another id.
    /// Ids print and parse as plain UUIDs, and serialise as UUID strings.
    #[test]
    fn ids_round_trip() {
        let id = WebhookId::generate();
        assert_eq!(id.to_string().parse::<WebhookId>().ok(), Some(id));
        assert_eq!(
            serde_json::to_string(&id).ok(),
            Some(format!("\"{}\"", id.as_uuid()))
        );
        assert!("not-a-uuid".parse::<DeliveryId>().is_err());
    }

    #[test]
    fn event_ids_are_deterministic_and_distinct() {
        assert_eq!(event_id("u1", "k1"), event_id("u1", "k1"));
        assert_ne!(event_id("u1", "k1"), event_id("u2", "k1"));
        assert_ne!(event_id("ab", "c"), event_id("a", "bc"));
        assert_eq!(event_id("u", "k").get_version_num(), 8);
    }

    /// Ids already issued stay valid: the derivation gives exactly the ids it gave
    /// before (values computed independently from the FNV-1a definition).
    #[test]
    fn event_ids_never_change() {
        assert_eq!(
            event_id("user-1", "order-42").to_string(),
            "5959754e-69c4-8458-8e98-bb56579f8cfb"
        );
        assert_eq!(
            event_id("u", "k").to_string(),
            "56509366-4a86-8d8c-8f0d-8338194ba758"
        );
    }
    /// The same pair and time give the same id; another webhook, another id; the
    /// first 48 bits are the acceptance time, so ids sort by day like UUIDv7s.
    #[test]
    fn delivery_ids_are_derived_and_time_ordered() {
        let (e, w, w2) = (event_id("u", "k"), event_id("u", "w1"), event_id("u", "w2"));
        let t = 1_764_547_200_000; // 2025-12-01T00:00:00Z
        assert_eq!(delivery_id(e, w, t), delivery_id(e, w, t));
        assert_ne!(delivery_id(e, w, t), delivery_id(e, w2, t));
        let id = delivery_id(e, w, t);
        assert_eq!(id.get_version_num(), 8);
        assert_eq!(&id.as_bytes()[..6], &(t as u64).to_be_bytes()[2..]);
        assert!(delivery_id(e, w, t + 1) > delivery_id(e, w2, t));
        let v7 = Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            1_764_547_200,
            0,
        ));
        assert_eq!(&v7.as_bytes()[..6], &id.as_bytes()[..6]);
    }

    /// Ids already written stay the ids a redelivered job derives (pinned values).
    #[test]
    fn delivery_ids_never_change() {
        let e = event_id("user-1", "order-42");
        let w = event_id("user-1", "endpoint");
        assert_eq!(
            delivery_id(e, w, 1_764_547_200_000).to_string(),
            "019ad735-8400-8c60-9b0c-523141424496"
        );
    }
}
