//! Per-endpoint backpressure: a concurrency cap (`max_concurrency`) and a rate limit
//! (`rateLimitPerSecond`, a token bucket), so one partner's slow or small endpoint is
//! never flooded.
//!
//! Both are enforced in-process, per dispatcher replica: with N replicas an endpoint
//! may see up to N times its limits. That trade keeps the hot path free of a shared
//! coordination round trip per delivery; operators who need a hard global cap run
//! fewer replicas or set the endpoint's limit to `limit / replicas`.
//!
//! A delivery never waits long for its endpoint: if admission would take longer than a
//! small budget, the delivery is deferred (stored with a `next_attempt_at`) and the
//! retry poller picks it up later, so a throttled endpoint cannot stall a chunk of
//! other users' events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portico_domain::rate::{Bucket, BucketRule};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

/// How long a delivery may wait for its endpoint's limits before it is deferred.
pub const ADMISSION_BUDGET: Duration = Duration::from_millis(500);
/// How far a delivery is deferred when its endpoint is at its concurrency cap.
pub const BUSY_DEFERRAL: Duration = Duration::from_secs(1);

/// An endpoint's token bucket ([`portico_domain::rate`], the one bucket rule of
/// Portico): `rate` per second with a burst of `rate` (one second of tokens), so a
/// quiet endpoint may take a burst of `rate` requests and then `rate` per second.
#[derive(Debug)]
struct TokenBucket {
    rule: BucketRule,
    bucket: Bucket,
}

impl TokenBucket {
    fn new(rate: u32, now: Instant) -> Self {
        let rate = f64::from(rate.max(1));
        let rule = BucketRule::new(rate, rate);
        Self {
            rule,
            bucket: rule.full(now),
        }
    }

    /// Takes one token, possibly ahead of time ([`BucketRule::reserve`]).
    fn reserve(&mut self, now: Instant, budget: Duration) -> Result<Duration, Duration> {
        self.rule.reserve(&mut self.bucket, now, budget)
    }
}

/// The limits of one endpoint, shared by every delivery to it in this replica.
#[derive(Debug)]
pub struct EndpointLimiter {
    rate: Option<u32>,
    concurrency: Option<u32>,
    bucket: Option<Mutex<TokenBucket>>,
    permits: Option<Arc<Semaphore>>,
}

/// Whether a delivery may go now.
#[derive(Debug)]
pub enum Admission {
    /// Send now; hold the permit (if any) until the attempt has finished.
    Go(Option<OwnedSemaphorePermit>),
    /// Do not send; try again after this long.
    Defer(Duration),
}

impl EndpointLimiter {
    /// Limits from the webhook's columns; `None` or a non-positive value is "no limit".
    pub fn new(rate_per_second: Option<i32>, max_concurrency: Option<i32>) -> Self {
        let rate = rate_per_second.filter(|r| *r > 0).map(|r| r as u32);
        let concurrency = max_concurrency.filter(|c| *c > 0).map(|c| c as u32);
        Self {
            rate,
            concurrency,
            bucket: rate.map(|r| Mutex::new(TokenBucket::new(r, Instant::now()))),
            permits: concurrency.map(|c| Arc::new(Semaphore::new(c as usize))),
        }
    }

    fn same_limits(&self, rate: Option<i32>, concurrency: Option<i32>) -> bool {
        self.rate == rate.filter(|r| *r > 0).map(|r| r as u32)
            && self.concurrency == concurrency.filter(|c| *c > 0).map(|c| c as u32)
    }

    /// Waits (at most about `budget`) for a token and a concurrency slot.
    pub async fn admit(&self, budget: Duration) -> Admission {
        if let Some(bucket) = &self.bucket {
            let reserved = {
                let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
                b.reserve(Instant::now(), budget)
            };
            match reserved {
                Ok(wait) if !wait.is_zero() => tokio::time::sleep(wait).await,
                Ok(_) => {}
                Err(wait) => return Admission::Defer(wait),
            }
        }
        match &self.permits {
            None => Admission::Go(None),
            Some(permits) => {
                match tokio::time::timeout(budget, permits.clone().acquire_owned()).await {
                    Ok(Ok(permit)) => Admission::Go(Some(permit)),
                    // Never closed; treat it like a timeout.
                    Ok(Err(_)) | Err(_) => Admission::Defer(BUSY_DEFERRAL),
                }
            }
        }
    }
}

/// One limiter per endpoint for the life of the process, so reloading a user's
/// webhooks into the cache keeps the endpoint's in-flight count and token balance.
#[derive(Debug, Default)]
pub struct LimiterRegistry {
    limiters: Mutex<HashMap<Uuid, Arc<EndpointLimiter>>>,
    /// `PORTICO_ENDPOINT_CONCURRENCY`: the cap of an endpoint that sets none (0 = none).
    default_concurrency: u32,
}

impl LimiterRegistry {
    /// A registry whose endpoints without a `maxConcurrency` of their own are capped at
    /// `default_concurrency` requests in flight (0 = uncapped).
    pub fn with_default_concurrency(default_concurrency: u32) -> Self {
        Self {
            limiters: Mutex::default(),
            default_concurrency,
        }
    }

    /// The limiter of `webhook_id`; a new one when its limits changed.
    pub fn get(
        &self,
        webhook_id: Uuid,
        rate: Option<i32>,
        concurrency: Option<i32>,
    ) -> Arc<EndpointLimiter> {
        let concurrency = concurrency.filter(|c| *c > 0).or_else(|| {
            i32::try_from(self.default_concurrency)
                .ok()
                .filter(|c| *c > 0)
        });
        let mut map = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&webhook_id) {
            Some(l) if l.same_limits(rate, concurrency) => l.clone(),
            _ => {
                let l = Arc::new(EndpointLimiter::new(rate, concurrency));
                map.insert(webhook_id, l.clone());
                l
            }
        }
    }

    /// Forgets limiters nobody holds any more (deleted or long-idle endpoints).
    pub fn sweep(&self) {
        let mut map = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, l| Arc::strong_count(l) > 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bucket of 10/s allows a burst of 10, then spaces requests 100 ms apart, and
    /// refuses (without taking a token) a wait beyond the budget.
    #[test]
    fn token_bucket_bursts_then_paces() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, t0);
        for _ in 0..10 {
            assert_eq!(b.reserve(t0, Duration::ZERO), Ok(Duration::ZERO));
        }
        let wait = b.reserve(t0, Duration::from_secs(1)).unwrap();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
        let refused = b.reserve(t0, Duration::from_millis(150)).unwrap_err();
        assert!((refused.as_secs_f64() - 0.2).abs() < 1e-6, "{refused:?}");
        // A second later the bucket is full again (at most one second of tokens).
        let later = t0 + Duration::from_secs(5);
        assert_eq!(b.reserve(later, Duration::ZERO), Ok(Duration::ZERO));
    }

    /// A concurrency cap of 1 admits one delivery and defers the next until the first
    /// finished.
    #[tokio::test]
    async fn concurrency_cap_defers_when_full() {
        let limiter = EndpointLimiter::new(None, Some(1));
        let first = limiter.admit(Duration::from_millis(10)).await;
        assert!(matches!(first, Admission::Go(Some(_))));
        assert!(matches!(
            limiter.admit(Duration::from_millis(10)).await,
            Admission::Defer(_)
        ));
        drop(first);
        assert!(matches!(
            limiter.admit(Duration::from_millis(10)).await,
            Admission::Go(Some(_))
        ));
        let unlimited = EndpointLimiter::new(None, Some(0));
        assert!(matches!(
            unlimited.admit(Duration::ZERO).await,
            Admission::Go(None)
        ));
    }

    /// The registry keeps one limiter per endpoint until its limits change.
    #[test]
    fn registry_reuses_until_limits_change() {
        let reg = LimiterRegistry::default();
        let id = Uuid::now_v7();
        let a = reg.get(id, Some(5), None);
        assert!(Arc::ptr_eq(&a, &reg.get(id, Some(5), None)));
        assert!(!Arc::ptr_eq(&a, &reg.get(id, Some(6), None)));
    }
}
