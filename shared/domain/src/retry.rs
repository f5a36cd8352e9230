//! When to try a webhook delivery again.
//!
//! The schedule is the design's: `delay = baseDelay * 2^(attempt-1)`, capped at
//! `maxDelay`, for at most `maxRetries` retries after the first attempt (defaults 1 s,
//! 5 min, 5: retries after 1, 2, 4, 8 and 16 s). A receiver that answers 429 or 503
//! with `Retry-After` is believed, within `[baseDelay, maxDelay]`, so a partner cannot
//! make us hammer it (a delay of 0) nor park a delivery for a year.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};

/// A webhook's retry policy, as stored on the webhook and copied onto each delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt: a delivery makes at most `1 + max_retries` attempts.
    pub max_retries: u32,
    /// Delay before the first retry.
    pub base_delay: Duration,
    /// Upper bound of any delay, however many attempts failed.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 5 retries, 1 s doubling, at most 5 minutes.
    fn default() -> Self {
        Self {
            max_retries: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(5 * 60),
        }
    }
}

impl RetryPolicy {
    /// Builds a policy from the stored columns; negative values (which the API refuses)
    /// are read as zero rather than trusted.
    pub fn from_columns(max_retries: i32, base_delay_ms: i64, max_delay_ms: i64) -> Self {
        let base = Duration::from_millis(base_delay_ms.max(0) as u64);
        Self {
            max_retries: max_retries.max(0) as u32,
            base_delay: base,
            max_delay: Duration::from_millis(max_delay_ms.max(0) as u64).max(base),
        }
    }

    /// The wait after the `attempt`-th attempt failed (1-based): `base * 2^(attempt-1)`,
    /// capped at `max_delay`. Saturates instead of overflowing for absurd attempt numbers.
    pub fn delay_for(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(63);
        let factor = 1u64 << exponent;
        let base_ms = self.base_delay.as_millis().min(u128::from(u64::MAX)) as u64;
        Duration::from_millis(base_ms.saturating_mul(factor)).min(self.max_delay)
    }

    /// A receiver's `Retry-After`, kept within `[base_delay, max_delay]`.
    pub fn clamp_retry_after(&self, requested: Duration) -> Duration {
        requested.clamp(self.base_delay, self.max_delay)
    }

    /// Whether a delivery that has made `attempts` attempts, allowed `max_retries`
    /// retries, may try again.
    pub fn may_retry(attempts: u32, max_retries: u32) -> bool {
        attempts < max_retries.saturating_add(1)
    }
}

/// Parses a `Retry-After` value, either delay-seconds or an HTTP-date (RFC 9110
/// §10.2.3; IMF-fixdate, and the obsolete RFC 850 and asctime forms), into the wait
/// from `now`. A date in the past is a wait of zero; garbage is `None`.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse::<u64>().ok().map(Duration::from_secs);
    }
    let at = DateTime::parse_from_rfc2822(value)
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(value, f).ok())
                .map(|n| n.and_utc())
        })?;
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults give the design's schedule: 1, 2, 4, 8, 16 seconds, then the cap.
    #[test]
    fn default_schedule_doubles_from_one_second() {
        let p = RetryPolicy::default();
        let secs: Vec<u64> = (1..=5).map(|a| p.delay_for(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16]);
        assert_eq!(p.delay_for(9), Duration::from_secs(256));
        assert_eq!(p.delay_for(10), Duration::from_secs(300));
        assert_eq!(p.delay_for(10_000), Duration::from_secs(300));
        assert_eq!(p.delay_for(0), Duration::from_secs(1));
    }

    /// Stored columns become a policy; the cap is never below the base.
    #[test]
    fn from_columns_and_retry_budget() {
        let p = RetryPolicy::from_columns(2, 200, 100);
        assert_eq!(p.max_delay, Duration::from_millis(200));
        assert_eq!(p.delay_for(3), Duration::from_millis(200));
        assert!(RetryPolicy::may_retry(1, 2));
        assert!(RetryPolicy::may_retry(2, 2));
        assert!(!RetryPolicy::may_retry(3, 2));
        assert!(!RetryPolicy::may_retry(1, 0));
    }

    /// `Retry-After` in seconds or as an HTTP-date, clamped to the policy's bounds.
    #[test]
    fn retry_after_forms_and_clamping() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
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
        let p = RetryPolicy::default();
        assert_eq!(p.clamp_retry_after(Duration::ZERO), Duration::from_secs(1));
        assert_eq!(
            p.clamp_retry_after(Duration::from_secs(86_400)),
            Duration::from_secs(300)
        );
        assert_eq!(
            p.clamp_retry_after(Duration::from_secs(7)),
            Duration::from_secs(7)
        );
    }
}
