//! Throttling of credential guessing: wrong secrets cost tokens from two buckets, one
//! for the (API key, client) pair and one for the client alone, and a client whose
//! bucket is empty is answered 429 with `Retry-After` before its secret is even
//! checked (no hash, no lookup, no usage-log row).
//!
//! Nothing is throttled per API key alone: API keys are public (they appear in logs),
//! so a stranger who knows a partner's key and sends wrong secrets from elsewhere must
//! not lock the partner out. The partner's own address keeps its full budget; only the
//! guesser's address (and, for `POST /api/integrations/verify`, the guessing user) is
//! slowed down. A client is the TCP peer (or the trusted `X-Forwarded-For` hop), or
//! `user:<id>` for the verify route.
//!
//! State is in this process (per gateway replica, like the partner rate limits),
//! sharded, and bounded: a shard that grows past its share of [`MAX_ENTRIES`] forgets
//! the buckets that have refilled, and if that is not enough, all of them.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::Instant;

use portico_domain::rate::{Bucket, BucketRule};

/// Wrong secrets a (key, client) pair may send at once before being slowed down.
pub const PAIR_BURST: f64 = 10.0;
/// Wrong secrets per second a (key, client) pair earns back (one every 6 s).
pub const PAIR_REFILL_PER_SEC: f64 = 1.0 / 6.0;
/// Wrong secrets (for any keys) a client may send at once.
pub const CLIENT_BURST: f64 = 30.0;
/// Wrong secrets per second a client earns back (one every 2 s).
pub const CLIENT_REFILL_PER_SEC: f64 = 0.5;
/// Buckets kept at most (all shards together).
pub const MAX_ENTRIES: usize = 100_000;

const SHARDS: usize = 16;

/// Which budget a bucket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// One (API key, client) pair.
    Pair,
    /// One client, whatever keys it tries.
    Client,
}

impl Kind {
    /// The bucket rule of this budget ([`portico_domain::rate`]: burst = wrong secrets
    /// answered at once, rate = wrong secrets earned back per second).
    fn rule(self) -> BucketRule {
        match self {
            Kind::Pair => BucketRule::new(PAIR_REFILL_PER_SEC, PAIR_BURST),
            Kind::Client => BucketRule::new(CLIENT_REFILL_PER_SEC, CLIENT_BURST),
        }
    }
}

/// The guessing throttle of one gateway. Buckets are keyed by a keyed 64-bit hash of
/// (kind, key, client), so checking a partner request allocates nothing; the hash keys
/// are random per process, so nobody can aim a collision at another client's bucket.
pub struct FailureThrottle {
    hasher: RandomState,
    shards: Vec<Mutex<HashMap<u64, (Kind, Bucket)>>>,
}

impl Default for FailureThrottle {
    fn default() -> Self {
        Self {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl FailureThrottle {
    /// The buckets a `client` trying `api_key` draws on.
    fn buckets(&self, api_key: &str, client: &str) -> [(Kind, u64); 2] {
        [
            (
                Kind::Pair,
                self.hasher.hash_one((Kind::Pair as u8, api_key, client)),
            ),
            (
                Kind::Client,
                self.hasher.hash_one((Kind::Client as u8, client)),
            ),
        ]
    }

    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, HashMap<u64, (Kind, Bucket)>> {
        self.shards[(key % SHARDS as u64) as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// `Err(seconds)` when `client` may not try `api_key` now: the pair's or the
    /// client's budget of wrong secrets is used up.
    pub fn check(&self, api_key: &str, client: &str, now: Instant) -> Result<(), u64> {
        let waits = self
            .buckets(api_key, client)
            .into_iter()
            .filter_map(|(kind, key)| {
                let rule = kind.rule();
                let tokens = self
                    .shard(key)
                    .get(&key)
                    .map_or(rule.burst, |(_, b)| rule.tokens(b, now));
                (tokens < 1.0).then(|| rule.secs_until_one(tokens))
            })
            .max();
        match waits {
            Some(wait) => Err(wait.max(1)),
            None => Ok(()),
        }
    }

    /// Charges one wrong secret to the pair and to the client.
    pub fn failed(&self, api_key: &str, client: &str, now: Instant) {
        for (kind, key) in self.buckets(api_key, client) {
            let mut shard = self.shard(key);
            if shard.len() >= MAX_ENTRIES / SHARDS {
                shard.retain(|_, (kind, b)| !kind.rule().is_full(b, now));
                if shard.len() >= MAX_ENTRIES / SHARDS {
                    shard.clear();
                }
            }
            let rule = kind.rule();
            let (_, bucket) = shard.entry(key).or_insert_with(|| (kind, rule.full(now)));
            rule.charge(bucket, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Ten wrong secrets from one address are answered; the eleventh is throttled for
    /// about six seconds, and then one more try is allowed.
    #[test]
    fn a_pair_is_slowed_after_its_burst() {
        let t = FailureThrottle::default();
        let now = Instant::now();
        for _ in 0..10 {
            assert_eq!(t.check("ptk_a", "10.0.0.1", now), Ok(()));
            t.failed("ptk_a", "10.0.0.1", now);
        }
        assert_eq!(t.check("ptk_a", "10.0.0.1", now), Err(6));
        assert_eq!(
            t.check("ptk_a", "10.0.0.1", now + Duration::from_secs(6)),
            Ok(())
        );
    }

    /// A stranger guessing a partner's key does not lock the partner's own address out.
    #[test]
    fn a_stranger_cannot_lock_out_the_partner() {
        let t = FailureThrottle::default();
        let now = Instant::now();
        for _ in 0..100 {
            t.failed("ptk_partner", "203.0.113.9", now);
        }
        assert!(t.check("ptk_partner", "203.0.113.9", now).is_err());
        assert_eq!(t.check("ptk_partner", "198.51.100.7", now), Ok(()));
    }

    /// Spreading guesses over many keys still exhausts the client's own budget.
    #[test]
    fn a_client_guessing_many_keys_is_slowed() {
        let t = FailureThrottle::default();
        let now = Instant::now();
        for i in 0..30 {
            t.failed(&format!("ptk_{i}"), "10.0.0.2", now);
        }
        assert_eq!(t.check("ptk_new", "10.0.0.2", now), Err(2));
    }

    /// Memory stays bounded however many clients guess.
    #[test]
    fn state_is_bounded() {
        let t = FailureThrottle::default();
        let now = Instant::now();
        for i in 0..(MAX_ENTRIES + 5_000) {
            t.failed("ptk_x", &format!("client-{i}"), now);
        }
        let total: usize = t
            .shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum();
        assert!(total <= MAX_ENTRIES, "{total}");
    }
}
