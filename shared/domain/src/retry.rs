//! When to try a webhook delivery again, beyond the schedule itself
//! ([`RetryPolicy::delay_for`]: `baseDelay * 2^(attempt-1)` capped at `maxDelay`).
//!
//! A receiver that answers 429 or 503
//! with `Retry-After` is believed, within `[baseDelay, maxDelay]`, so a partner cannot
//! make us hammer it (a delay of 0) nor park a delivery for a year.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::webhooks::RetryPolicy;

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
