//! When to try a webhook delivery again, beyond the schedule itself
//! ([`RetryPolicy::delay_for`]: `baseDelay * 2^(attempt-1)` capped at `maxDelay`).
//!
//! A receiver that answers 429 or 503
//! with `Retry-After` is believed, within `[baseDelay, maxDelay]`, so a partner cannot
//! make us hammer it (a delay of 0) nor park a delivery for a year.
//!
//! The schedule may be jittered ([`RetryJitter`], the dispatcher's
//! `PORTICO_RETRY_JITTER`): when a partner's outage fails thousands of deliveries in
//! the same second, an exact schedule brings them all back in the same second again,
//! at every step. Jitter only ever shortens a delay, so the cap still holds.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::webhooks::RetryPolicy;

/// The largest share of a scheduled delay taken off at random, `0.0..=1.0`.
///
/// With jitter `j`, a scheduled delay `d` becomes a delay drawn uniformly (to the
/// millisecond) from `[d - ⌊d·j⌋ ms, d]`, i.e. within `[d·(1-j), d]`: never above the
/// schedule (so never above `maxDelay`), never below zero. This is "full jitter" at
/// `1.0` and exactly the unjittered schedule at `0.0` (the default). Only downward,
/// rather than `d·(1±j)`, because `maxDelay` is a promise to the webhook's owner and
/// the last attempt should not come later than the documented schedule says.
/// `Retry-After` is never jittered: the receiver asked for that time.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RetryJitter(f64);

/// A jitter outside `0.0..=1.0` (or not a number).
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("must be a fraction from 0.0 to 1.0 (e.g. 0.2), got {0}")]
pub struct JitterOutOfRange(pub f64);

impl RetryJitter {
    /// No jitter: every delay is exactly the schedule's.
    pub const NONE: RetryJitter = RetryJitter(0.0);

    /// A jitter of `fraction`; refuses anything outside `0.0..=1.0`, NaN included.
    pub fn new(fraction: f64) -> Result<Self, JitterOutOfRange> {
        if (0.0..=1.0).contains(&fraction) {
            Ok(Self(fraction))
        } else {
            Err(JitterOutOfRange(fraction))
        }
    }

    /// The fraction.
    pub fn fraction(self) -> f64 {
        self.0
    }

    /// The widest cut from `delay`, in whole milliseconds: `⌊delay·j⌋`, never more
    /// than `delay`.
    pub fn max_cut(self, delay: Duration) -> Duration {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        let span = ((ms as f64) * self.0).floor() as u64;
        Duration::from_millis(span.min(ms))
    }

    /// `delay` shortened by a cut chosen by `random` (any 64-bit word, uniformly
    /// random for a uniform result) from `0..=max_cut` milliseconds. Deterministic, so
    /// the bounds can be checked exactly; [`RetryJitter::draw`] supplies the word.
    pub fn apply(self, delay: Duration, random: u64) -> Duration {
        let span = self.max_cut(delay).as_millis() as u64;
        if span == 0 {
            return delay;
        }
        // The modulo bias is at most (span + 1) / 2^62 with span ≤ a day in ms: none
        // worth a rejection loop.
        let cut = random % span.saturating_add(1);
        delay.saturating_sub(Duration::from_millis(cut))
    }

    /// `delay` with a random cut ([`RetryJitter::apply`]). The randomness is uuid's
    /// thread-local generator (the one v4 ids come from): cheap, no system call per
    /// draw, and not a secret, so it need not be the secure source.
    pub fn draw(self, delay: Duration) -> Duration {
        if self.0 == 0.0 {
            return delay;
        }
        // A v4 id's second half has 62 random bits under its 2 variant bits.
        let (_, low) = uuid::Uuid::new_v4().as_u64_pair();
        self.apply(delay, low & ((1 << 62) - 1))
    }
}

/// The delay before retry number `retry` under `policy`, jittered by `jitter`: the
/// schedule's delay ([`RetryPolicy::delay_for`]) when `jitter` is
/// [`RetryJitter::NONE`], otherwise a draw from `[delay·(1-j), delay]`.
pub fn scheduled_delay(policy: &RetryPolicy, retry: u32, jitter: RetryJitter) -> Duration {
    jitter.draw(policy.delay_for(retry))
}

/// Builds a policy from the stored columns; negative values (which the API refuses)
/// are read as zero rather than trusted, and the cap is never below the base.
pub fn policy_from_columns(max_retries: i32, base_delay_ms: i64, max_delay_ms: i64) -> RetryPolicy {
    let base = base_delay_ms.max(0) as u64;
    RetryPolicy {
        max_retries: max_retries.max(0) as u32,
        base_delay_ms: base,
        max_delay_ms: (max_delay_ms.max(0) as u64).max(base),
    }
}

/// A receiver's `Retry-After`, kept within the policy's `[baseDelay, maxDelay]`.
pub fn clamp_retry_after(policy: &RetryPolicy, requested: Duration) -> Duration {
    let base = Duration::from_millis(policy.base_delay_ms);
    let max = Duration::from_millis(policy.max_delay_ms).max(base);
    requested.clamp(base, max)
}

/// Whether a delivery that has made `attempts` attempts, allowed `max_retries` retries
/// (at most `1 + max_retries` attempts), may try again.
pub fn may_retry(attempts: u32, max_retries: u32) -> bool {
    attempts < max_retries.saturating_add(1)
}

/// Parses a `Retry-After` value, either delay-seconds or an HTTP-date (RFC 9110
/// §10.2.3; IMF-fixdate, and the obsolete RFC 850 and asctime forms), into the wait
/// from `now`. A date in the past is a wait of zero; garbage is `None`.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse::<u64>().ok().map(Duration::from_secs);
    }
    let at: DateTime<Utc> = httpdate::parse_http_date(value).ok()?.into();
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> RetryPolicy {
        policy_from_columns(5, 1000, 300_000)
    }

    /// The defaults give the design's schedule: 1, 2, 4, 8, 16 seconds, then the cap.
    #[test]
    fn default_schedule_doubles_from_one_second() {
        let p = defaults();
        let secs: Vec<u64> = (1..=5).map(|a| p.delay_for(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16]);
        assert_eq!(p.delay_for(10), Duration::from_secs(300));
    }

    /// Stored columns become a policy; the cap is never below the base; the retry
    /// budget allows exactly 1 + max_retries attempts.
    #[test]
    fn from_columns_and_retry_budget() {
        let p = policy_from_columns(2, 200, 100);
        assert_eq!(p.max_delay_ms, 200);
        assert_eq!(p.delay_for(3), Duration::from_millis(200));
        assert!(may_retry(1, 2));
        assert!(may_retry(2, 2));
        assert!(!may_retry(3, 2));
        assert!(!may_retry(1, 0));
    }

    /// A jitter of 0 (the default) gives the schedule to the millisecond, every time.
    #[test]
    fn no_jitter_is_the_exact_schedule() {
        let p = defaults();
        for _ in 0..100 {
            for n in 1..=12 {
                assert_eq!(scheduled_delay(&p, n, RetryJitter::NONE), p.delay_for(n));
                assert_eq!(
                    scheduled_delay(&p, n, RetryJitter::default()),
                    p.delay_for(n)
                );
            }
        }
        assert_eq!(
            RetryJitter::NONE.apply(Duration::from_millis(1500), u64::MAX),
            Duration::from_millis(1500)
        );
    }

    /// Over many draws, every jittered delay stays within `[d - ⌊d·j⌋, d]` (never
    /// above the schedule, so never above the cap; never below zero), and the draws
    /// spread over the whole window rather than sticking to one end.
    #[test]
    fn jittered_delays_stay_in_the_window_and_spread_over_it() {
        let p = defaults();
        for fraction in [0.1, 0.2, 0.5, 1.0] {
            let jitter = RetryJitter::new(fraction).unwrap();
            for n in 1..=12 {
                let d = p.delay_for(n);
                let d_ms = d.as_millis() as u64;
                let lowest = d_ms - (d_ms as f64 * fraction).floor() as u64;
                assert_eq!(jitter.max_cut(d).as_millis() as u64, d_ms - lowest);
                let (mut min, mut max) = (u64::MAX, 0);
                for _ in 0..2_000 {
                    let got = scheduled_delay(&p, n, jitter);
                    assert!(got <= d && got <= Duration::from_millis(p.max_delay_ms));
                    let ms = got.as_millis() as u64;
                    assert!(ms >= lowest, "{ms} < {lowest} (d {d_ms}, j {fraction})");
                    min = min.min(ms);
                    max = max.max(ms);
                }
                // 2,000 uniform draws all missing the window's lowest or highest tenth
                // has a probability of 0.9^2000: never.
                let tenth = (d_ms - lowest) / 10;
                assert!(
                    min <= lowest + tenth,
                    "min {min} (window {lowest}..={d_ms})"
                );
                assert!(max + tenth >= d_ms, "max {max} (window {lowest}..={d_ms})");
            }
        }
    }

    /// The deterministic core: the random word picks the cut, from none to the widest;
    /// full jitter can reach zero but not below; tiny delays and huge ones are safe.
    #[test]
    fn apply_picks_a_cut_within_bounds() {
        let j = RetryJitter::new(0.2).unwrap();
        let d = Duration::from_millis(10_000);
        assert_eq!(j.apply(d, 0), d);
        assert_eq!(j.apply(d, 2_000), Duration::from_millis(8_000));
        assert_eq!(j.apply(d, 2_001), d);
        let full = RetryJitter::new(1.0).unwrap();
        assert_eq!(full.apply(d, 10_000), Duration::ZERO);
        assert_eq!(full.apply(Duration::ZERO, u64::MAX), Duration::ZERO);
        // Under 5 ms a 0.2 jitter cuts nothing whole.
        assert_eq!(
            j.apply(Duration::from_millis(4), u64::MAX),
            Duration::from_millis(4)
        );
        let huge = Duration::from_millis(u64::MAX);
        assert!(full.apply(huge, u64::MAX) <= huge);
        // Sub-millisecond parts are kept; only whole milliseconds are cut.
        let odd = Duration::from_micros(10_000_500);
        assert_eq!(j.apply(odd, 1), Duration::from_micros(9_999_500));
    }

    /// Only fractions from 0 to 1 are accepted.
    #[test]
    fn jitter_bounds_are_enforced() {
        for ok in [0.0, 0.2, 1.0] {
            assert_eq!(RetryJitter::new(ok).unwrap().fraction(), ok);
        }
        for bad in [-0.1, 1.01, 20.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(RetryJitter::new(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(
            RetryJitter::new(1.5).unwrap_err().to_string(),
            "must be a fraction from 0.0 to 1.0 (e.g. 0.2), got 1.5"
        );
    }

    /// `Retry-After` in seconds or as an HTTP-date, clamped to the policy's bounds.
    #[test]
    fn retry_after_forms_and_clamping() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:29:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed Oct 21 07:28:05 2015", now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        let p = defaults();
        assert_eq!(
            clamp_retry_after(&p, Duration::ZERO),
            Duration::from_secs(1)
        );
        assert_eq!(
            clamp_retry_after(&p, Duration::from_secs(86_400)),
            Duration::from_secs(300)
        );
        assert_eq!(
            clamp_retry_after(&p, Duration::from_secs(7)),
            Duration::from_secs(7)
        );
    }
}
