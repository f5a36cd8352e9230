//! The one token bucket of every rate limit in Portico: partner calls per integration
//! (gateway), wrong-secret throttling (gateway) and deliveries per endpoint
//! (dispatcher). One implementation, so "burst" means the same thing everywhere.
//!
//! # The rule
//!
//! A bucket has a `rate` (tokens earned back per second, continuously) and a `burst`
//! (its capacity). **The burst is the number of calls a bucket that has been quiet
//! long enough admits at once**; after it, calls are admitted at `rate` per second. A
//! new bucket starts full. Each user states its own values where it builds its
//! [`BucketRule`]:
//!
//! - partner calls: `rate_limit_per_second`, burst twice that (documented to partners
//!   with the `RateLimit-Limit` header, which reports the burst);
//! - webhook deliveries: `rateLimitPerSecond`, burst equal to it (one second of tokens);
//! - wrong secrets: fixed per (key, client) pair and per client.
//!
//! No I/O: callers pass in the current [`Instant`], so every rule is unit-testable.

use std::time::{Duration, Instant};

/// How a bucket fills: its rate and its burst. Kept apart from the [`Bucket`] state so
/// that many buckets of one kind (one per client, say) store only their level.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketRule {
    /// Tokens earned back per second.
    pub rate: f64,
    /// Capacity: calls admitted at once from full.
    pub burst: f64,
}

/// One bucket's level at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Where a bucket stands after a call, in whole calls and seconds (for `RateLimit-*`
/// headers and `Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketLevel {
    /// The burst (capacity), in whole calls.
    pub limit: u64,
    /// Calls that could be made right now.
    pub remaining: u64,
    /// Seconds until the bucket is full again.
    pub reset_secs: u64,
}

impl BucketRule {
    /// A rule of `rate` per second with a burst of `burst` calls.
    pub const fn new(rate: f64, burst: f64) -> Self {
        Self { rate, burst }
    }

    /// A full bucket, as every bucket starts.
    pub fn full(&self, now: Instant) -> Bucket {
        Bucket {
            tokens: self.burst,
            at: now,
        }
    }

    /// The bucket's tokens at `now` (refilled since it was last touched, capped at the
    /// burst), without changing it.
    pub fn tokens(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        (bucket.tokens + elapsed * self.rate).min(self.burst)
    }

    /// Whether the bucket is full at `now` (a full bucket carries no information and
    /// may be forgotten).
    pub fn is_full(&self, bucket: &Bucket, now: Instant) -> bool {
        self.tokens(bucket, now) >= self.burst
    }

    /// Whole seconds (at least 1) until a bucket holding `tokens` has one token.
    pub fn secs_until_one(&self, tokens: f64) -> u64 {
        (((1.0 - tokens) / self.rate).ceil() as u64).max(1)
    }

    /// The level of a bucket holding `tokens`, in whole calls and seconds.
    pub fn level(&self, tokens: f64) -> BucketLevel {
        BucketLevel {
            limit: self.burst as u64,
            remaining: tokens.max(0.0).floor() as u64,
            reset_secs: ((self.burst - tokens) / self.rate).ceil().max(0.0) as u64,
        }
    }

    /// Takes one token if there is one: `Ok` with the level after the call, or `Err`
    /// with the level and the whole seconds until a token is back (nothing taken).
    pub fn take(
        &self,
        bucket: &mut Bucket,
        now: Instant,
    ) -> Result<BucketLevel, (BucketLevel, u64)> {
        bucket.tokens = self.tokens(bucket, now);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return Err((
                self.level(bucket.tokens),
                self.secs_until_one(bucket.tokens),
            ));
        }
        bucket.tokens -= 1.0;
        Ok(self.level(bucket.tokens))
    }

    /// Charges one token whatever the level, never below empty (a penalty: the wrong
    /// secret was already answered).
    pub fn charge(&self, bucket: &mut Bucket, now: Instant) {
        bucket.tokens = (self.tokens(bucket, now) - 1.0).max(0.0);
        bucket.at = now;
    }

    /// Takes one token, possibly ahead of time: returns how long the caller must wait
    /// before acting. If that wait exceeds `budget`, nothing is taken and the wait is
    /// returned as an error (the caller defers instead of waiting).
    pub fn reserve(
        &self,
        bucket: &mut Bucket,
        now: Instant,
        budget: Duration,
    ) -> Result<Duration, Duration> {
        bucket.tokens = self.tokens(bucket, now);
        bucket.at = now;
        let after = bucket.tokens - 1.0;
        let wait = if after >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-after / self.rate)
        };
        if wait > budget {
            return Err(wait);
        }
        bucket.tokens = after;
        Ok(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A quiet bucket admits exactly its burst at once, then refuses with the time
    /// until one token is back, and refills at its rate up to the burst and no more.
    #[test]
    fn burst_then_rate() {
        let rule = BucketRule::new(2.0, 4.0);
        let t0 = Instant::now();
        let mut b = rule.full(t0);
        for left in (0..4).rev() {
            assert_eq!(rule.take(&mut b, t0).map(|l| l.remaining), Ok(left));
        }
        let (level, wait) = rule.take(&mut b, t0).unwrap_err();
        assert_eq!(
            (level.limit, level.remaining, level.reset_secs, wait),
            (4, 0, 2, 1)
        );
        assert!(rule.take(&mut b, t0 + Duration::from_millis(500)).is_ok());
        assert!(rule.is_full(&b, t0 + Duration::from_secs(60)));
        assert_eq!(rule.tokens(&b, t0 + Duration::from_secs(60)), 4.0);
    }

    /// A reservation may run ahead by at most the budget, and a refused one takes
    /// nothing.
    #[test]
    fn reservations_wait_within_the_budget() {
        let rule = BucketRule::new(10.0, 10.0);
        let t0 = Instant::now();
        let mut b = rule.full(t0);
        for _ in 0..10 {
            assert_eq!(rule.reserve(&mut b, t0, Duration::ZERO), Ok(Duration::ZERO));
        }
        let wait = rule.reserve(&mut b, t0, Duration::from_secs(1)).unwrap();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
        let refused = rule
            .reserve(&mut b, t0, Duration::from_millis(150))
            .unwrap_err();
        assert!((refused.as_secs_f64() - 0.2).abs() < 1e-6, "{refused:?}");
    }

    /// Charging never goes below empty, so a burst of wrong secrets costs at most the
    /// time to refill one bucket.
    #[test]
    fn charges_stop_at_empty() {
        let rule = BucketRule::new(0.5, 3.0);
        let t0 = Instant::now();
        let mut b = rule.full(t0);
        for _ in 0..100 {
            rule.charge(&mut b, t0);
        }
        assert_eq!(rule.tokens(&b, t0), 0.0);
        assert_eq!(rule.secs_until_one(rule.tokens(&b, t0)), 2);
    }
}
