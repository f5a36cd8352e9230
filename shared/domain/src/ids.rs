//! Identifiers.

use uuid::Uuid;

/// A new time-ordered id (UUIDv7): good B-tree locality for primary keys.
pub fn new_id() -> Uuid {
    Uuid::now_v7()
}

/// The id of an event, derived from its owner and idempotency key, so the same event
/// published twice (even days apart, past JetStream's duplicate window) maps to the same
/// row and is recorded and delivered once. A UUIDv8 built from a 128-bit FNV-1a hash
/// over a length-prefixed encoding (no ambiguity between `("ab","c")` and `("a","bc")`).
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Same inputs, same id; any difference in owner or key, another id.
    #[test]
    fn event_ids_are_deterministic_and_distinct() {
        assert_eq!(event_id("u1", "k1"), event_id("u1", "k1"));
        assert_ne!(event_id("u1", "k1"), event_id("u2", "k1"));
        assert_ne!(event_id("ab", "c"), event_id("a", "bc"));
        assert_eq!(event_id("u", "k").get_version_num(), 8);
    }
}
