//! Per-integration rate limits and daily quotas.
//!
//! - Rate limit: a token bucket per integration ([`portico_domain::rate`], the one
//!   bucket rule of Portico), refilled at `rate_limit_per_second` with a burst of
//!   twice that. It lives in this process: with N gateway replicas
//!   behind a load balancer an integration gets up to N times its rate in total. That
//!   trade is deliberate (no shared round trip on every call); size the limit per
//!   replica, or divide by the replica count.
//! - Daily quota: calls admitted per UTC day. Each replica counts in memory and adds
//!   its counts to `integration_daily_usage` with every usage-log flush; the totals it
//!   reads back include the other replicas' calls. So the quota holds across replicas
//!   to within one flush interval (250 ms) of traffic.
//!
//! State is sharded by integration id so concurrent partners rarely share a lock.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use chrono::{DateTime, NaiveDate, Utc};
use portico_domain::rate::{Bucket, BucketRule};
use uuid::Uuid;

use super::cache::CachedCredential;

const SHARDS: usize = 16;

/// Where an integration's token bucket stands after a call, for the `RateLimit-Limit`,
/// `RateLimit-Remaining` and `RateLimit-Reset` response headers (`limit` is the burst:
/// twice the per-second rate).
pub use portico_domain::rate::BucketLevel as RateState;

/// Why a call was not admitted, with the seconds after which a retry can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The token bucket is empty.
    RateLimited {
        /// Seconds until a token is back.
        retry_after_secs: u64,
        /// The bucket (remaining 0).
        state: RateState,
    },
    /// Today's quota is used up.
    QuotaExhausted {
        /// Seconds until the next UTC midnight.
        retry_after_secs: u64,
    },
}

#[derive(Debug)]
struct Counter {
    bucket: Bucket,
    day: NaiveDate,
    /// Calls of `day` that PostgreSQL knows about (all replicas).
    synced: u64,
    /// Calls this replica admitted on `day` that are not written yet.
    pending: u64,
}

/// The limiter of one gateway process.
pub struct Limiter {
    shards: Vec<Mutex<HashMap<Uuid, Counter>>>,
}

impl Default for Limiter {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl Limiter {
    fn shard(&self, id: Uuid) -> std::sync::MutexGuard<'_, HashMap<Uuid, Counter>> {
        let index = (id.as_u128() % SHARDS as u128) as usize;
        self.shards[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits one call of `credential`'s integration or says why not. An admitted call
    /// takes a token and counts against today's quota; the answer says where the
    /// bucket stands (`None` for an integration without a rate limit).
    pub fn admit(
        &self,
        credential: &CachedCredential,
        now: Instant,
        now_utc: DateTime<Utc>,
    ) -> Result<Option<RateState>, Refusal> {
        let today = now_utc.date_naive();
        let rate = f64::from(credential.rate_limit_per_second);
        let rule = BucketRule::new(rate, rate * 2.0);
        let mut shard = self.shard(credential.integration_id);
        let counter = shard
            .entry(credential.integration_id)
            .or_insert_with(|| Counter {
                bucket: rule.full(now),
                day: today,
                synced: 0,
                pending: 0,
            });
        if counter.day != today {
            counter.day = today;
            counter.synced = 0;
            counter.pending = 0;
        }
        if credential.day == today {
            counter.synced = counter.synced.max(credential.calls_today);
        }
        if credential.daily_quota > 0 && counter.synced + counter.pending >= credential.daily_quota
        {
            return Err(Refusal::QuotaExhausted {
                retry_after_secs: seconds_to_next_utc_day(now_utc),
            });
        }
        if rate > 0.0 {
            return match rule.take(&mut counter.bucket, now) {
                Ok(state) => {
                    counter.pending += 1;
                    Ok(Some(state))
                }
                Err((state, retry_after_secs)) => Err(Refusal::RateLimited {
                    retry_after_secs,
                    state,
                }),
            };
        }
        counter.pending += 1;
        Ok(None)
    }

    /// After a flush: PostgreSQL now counts `total` calls for `day`, `flushed` of which
    /// came from this replica's pending count.
    pub fn synced(&self, integration_id: Uuid, day: NaiveDate, total: u64, flushed: u64) {
        let mut shard = self.shard(integration_id);
        if let Some(counter) = shard.get_mut(&integration_id)
            && counter.day == day
        {
            counter.synced = counter.synced.max(total);
            counter.pending = counter.pending.saturating_sub(flushed);
        }
    }

    /// An admitted call's log entry was dropped (buffer full): stop counting it as
    /// pending, or it would count forever.
    pub fn forget(&self, integration_id: Uuid, day: NaiveDate) {
        let mut shard = self.shard(integration_id);
        if let Some(counter) = shard.get_mut(&integration_id)
            && counter.day == day
        {
            counter.pending = counter.pending.saturating_sub(1);
        }
    }

    /// Drops the state of a deleted integration.
    pub fn remove(&self, integration_id: Uuid) {
        self.shard(integration_id).remove(&integration_id);
    }
}

fn seconds_to_next_utc_day(now: DateTime<Utc>) -> u64 {
    let next = now
        .date_naive()
        .succ_opt()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc());
    match next {
        Some(next) => (next - now).num_seconds().max(1) as u64,
        None => 86_400,
    }
}

/// `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (seconds until the
/// bucket is full), so a partner can pace itself before it is refused; both doors add
/// them to every partner answer of a rate-limited integration.
pub fn rate_limit_headers(headers: &mut axum::http::HeaderMap, rate: RateState) {
    for (name, value) in [
        ("ratelimit-limit", rate.limit),
        ("ratelimit-remaining", rate.remaining),
        ("ratelimit-reset", rate.reset_secs),
    ] {
        headers.insert(name, axum::http::HeaderValue::from(value));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn credential(rate: u32, quota: u64, calls_today: u64) -> Arc<CachedCredential> {
        Arc::new(CachedCredential {
            credential_id: Uuid::now_v7(),
            integration_id: Uuid::now_v7(),
            user_id: "u".into(),
            scopes: vec![],
            secret_hash: vec![],
            active: true,
            integration_expires_at: None,
            credential_expires_at: None,
            revoked_at: None,
            rate_limit_per_second: rate,
            daily_quota: quota,
            calls_today,
            day: Utc::now().date_naive(),
        })
    }

    /// The bucket allows a burst of twice the rate, refuses the next call with a
    /// Retry-After, and refills with time.
    #[test]
    fn token_bucket_bursts_then_refills() {
        let limiter = Limiter::default();
        let c = credential(2, 0, 0);
        let t0 = Instant::now();
        let now = Utc::now();
        for left in (0..4).rev() {
            let state = limiter.admit(&c, t0, now).ok().flatten();
            assert_eq!(state.map(|s| (s.limit, s.remaining)), Some((4, left)));
        }
        assert_eq!(
            limiter.admit(&c, t0, now),
            Err(Refusal::RateLimited {
                retry_after_secs: 1,
                state: RateState {
                    limit: 4,
                    remaining: 0,
                    reset_secs: 2
                }
            })
        );
        assert!(
            limiter
                .admit(&c, t0 + Duration::from_millis(500), now)
                .is_ok()
        );
        let unlimited = credential(0, 0, 0);
        for _ in 0..1000 {
            assert_eq!(limiter.admit(&unlimited, t0, now), Ok(None));
        }
    }

    /// The quota counts this replica's calls plus what PostgreSQL reports; the refusal
    /// says when the UTC day ends.
    #[test]
    fn daily_quota_counts_all_replicas() {
        let limiter = Limiter::default();
        let c = credential(0, 5, 2);
        let t0 = Instant::now();
        let now = Utc::now();
        assert_eq!(limiter.admit(&c, t0, now), Ok(None));
        assert_eq!(limiter.admit(&c, t0, now), Ok(None));
        // Another replica made one more call; the flush of our two reports 5 in total.
        limiter.synced(c.integration_id, now.date_naive(), 5, 2);
        match limiter.admit(&c, t0, now) {
            Err(Refusal::QuotaExhausted { retry_after_secs }) => {
                assert!((1..=86_400).contains(&retry_after_secs))
            }
            other => panic!("{other:?}"),
        }
    }
}
