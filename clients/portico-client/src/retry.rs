//! When to try a call again. Portico answers 429 (a rate limit or quota) and 503 (a
//! dependency is down; nothing changed) with `Retry-After`; both are safe to repeat,
//! whatever the method. The client waits what the server asks, within a bound, or an
//! exponential backoff with jitter when the server says nothing.

use std::time::{Duration, SystemTime};

/// How many times and how long to wait. The bound on `Retry-After` keeps a command
/// from sleeping for an hour because a daily quota ran out: beyond it, the error is
/// returned with its `retry_after` for the caller to decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 = never retry).
    pub max_retries: u32,
    /// First backoff when the server sends no `Retry-After`; doubles per retry.
    pub base_delay: Duration,
    /// Largest backoff the client computes itself.
    pub max_delay: Duration,
    /// Largest `Retry-After` the client honours by waiting; a longer one ends the
    /// retries and returns the error.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// No retries at all (tests that want to see the first answer).
    pub fn none() -> Self {
        RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        }
    }

    /// Whether a status is worth retrying: 429 and 503 only. Other 5xx may have
    /// changed state; 4xx will not change by waiting.
    pub fn retryable_status(status: u16) -> bool {
        status == 429 || status == 503
    }

    /// The wait before retry number `retry` (1-based), or `None` when the budget is
    /// spent or the server asks for longer than [`RetryPolicy::max_retry_after`].
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Option<Duration> {
        if retry == 0 || retry > self.max_retries {
            return None;
        }
        if let Some(asked) = retry_after {
            return (asked <= self.max_retry_after).then_some(asked);
        }
        let exp = self
            .base_delay
            .saturating_mul(1u32 << (retry - 1).min(20))
            .min(self.max_delay);
        // Equal jitter: half fixed, half random, so many clients do not retry in step.
        let half = exp / 2;
        let random = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let jitter = if random == 0 {
            0
        } else {
            (uuid::Uuid::new_v4().as_u128() as u64) % random
        };
        Some(half + Duration::from_nanos(jitter))
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP-date (RFC 9110 §10.2.3). A date in
/// the past means "now" (zero); anything else unparsable is ignored.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both forms of the header, and garbage ignored.
    #[test]
    fn parses_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_784_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(45));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(45))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(45));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("-3", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
    }

    /// Retry-After is honoured within the bound, refused beyond it, and the budget ends
    /// the retries.
    #[test]
    fn honours_retry_after_within_bounds() {
        let policy = RetryPolicy::default();
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(2))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(30))),
            Some(Duration::from_secs(30))
        );
        assert_eq!(policy.delay(1, Some(Duration::from_secs(31))), None);
        assert_eq!(policy.delay(4, Some(Duration::from_secs(1))), None);
        assert_eq!(RetryPolicy::none().delay(1, None), None);
    }

    /// Without Retry-After the backoff grows, stays within [half, full] of its step and
    /// never passes the cap.
    #[test]
    fn backoff_grows_with_jitter_and_cap() {
        let policy = RetryPolicy {
            max_retries: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            max_retry_after: Duration::from_secs(30),
        };
        for (retry, step) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (10, 1000),
        ] {
            let step = Duration::from_millis(step);
            for _ in 0..20 {
                let d = policy.delay(retry, None).unwrap();
                assert!(
                    d >= step / 2 && d <= step,
                    "retry {retry}: {d:?} for {step:?}"
                );
            }
        }
        assert!(RetryPolicy::retryable_status(429));
        assert!(RetryPolicy::retryable_status(503));
        assert!(!RetryPolicy::retryable_status(500));
        assert!(!RetryPolicy::retryable_status(409));
    }
}
