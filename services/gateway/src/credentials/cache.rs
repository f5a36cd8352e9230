//! The in-process credential cache: api key -> everything verification needs, so a
//! partner call on a warm key costs a hash-map read and one HMAC, never a query.
//!
//! Entries expire after a TTL (a safety net) and are evicted at once when the
//! integration changes: locally by the request that changed it, and on every other
//! replica through the NATS invalidation subject. Unknown keys are cached too, briefly,
//! so a client retrying a wrong key cannot hammer PostgreSQL.
//!
//! A load races an eviction when a replica reads the row just before another replica
//! commits a rotation. The `generation` counter closes that window: a load remembers
//! the generation it started in and is not cached if an eviction happened meanwhile.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use portico_domain::integrations::Scope;
use uuid::Uuid;

/// Most entries kept; past it, stale and negative entries go first, then everything.
const MAX_ENTRIES: usize = 100_000;
/// How long "no such key" is remembered.
const NEGATIVE_TTL: Duration = Duration::from_secs(5);

/// One credential row joined with its integration, as verification needs it.
#[derive(Debug)]
pub struct CachedCredential {
    /// The `integration_credentials` row.
    pub credential_id: Uuid,
    /// The integration the key belongs to.
    pub integration_id: Uuid,
    /// The integration's owner; the partner acts for this user.
    pub user_id: String,
    /// What the integration may do.
    pub scopes: Vec<Scope>,
    /// HMAC-SHA256 of the secret under the pepper.
    pub secret_hash: Vec<u8>,
    /// The owner may deactivate an integration without deleting it.
    pub active: bool,
    /// When the integration's credentials stop working, if ever.
    pub integration_expires_at: Option<DateTime<Utc>>,
    /// When this credential stops working (a rotated-out secret's grace period).
    pub credential_expires_at: Option<DateTime<Utc>>,
    /// When this credential was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Requests per second (0 = unlimited).
    pub rate_limit_per_second: u32,
    /// Calls per UTC day (0 = unlimited).
    pub daily_quota: u64,
    /// Calls counted in PostgreSQL for `day` when the row was loaded.
    pub calls_today: u64,
    /// The UTC day `calls_today` counts.
    pub day: NaiveDate,
}

struct Slot {
    value: Option<Arc<CachedCredential>>,
    loaded: Instant,
}

/// What a lookup found.
pub enum Lookup {
    /// A fresh entry: the credential, or `None` for a key known not to exist.
    Hit(Option<Arc<CachedCredential>>),
    /// Not cached (or stale): load it, then [`CredentialCache::insert`] with this generation.
    Miss {
        /// The generation the load starts in.
        generation: u64,
    },
}

/// The cache itself; one per gateway process.
pub struct CredentialCache {
    entries: RwLock<HashMap<String, Slot>>,
    generation: AtomicU64,
    ttl: Duration,
}

impl CredentialCache {
    /// A cache whose entries live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
            ttl,
        }
    }

    /// Looks `api_key` up; allocation-free on a hit.
    pub fn get(&self, api_key: &str) -> Lookup {
        // Read the generation before the map: an eviction after this point makes the
        // caller's insert a no-op.
        let generation = self.generation.load(Ordering::Acquire);
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = entries.get(api_key) {
            let ttl = if slot.value.is_some() {
                self.ttl
            } else {
                NEGATIVE_TTL
            };
            if slot.loaded.elapsed() < ttl {
                return Lookup::Hit(slot.value.clone());
            }
        }
        Lookup::Miss { generation }
    }

    /// Stores a loaded result unless an eviction happened since `generation`.
    pub fn insert(&self, api_key: &str, value: Option<Arc<CachedCredential>>, generation: u64) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if entries.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            entries.retain(|_, s| s.value.is_some() && s.loaded.elapsed() < ttl);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(
            api_key.to_owned(),
            Slot {
                value,
                loaded: Instant::now(),
            },
        );
    }

    /// Forgets every key of `integration_id` (after an update, rotation or deletion).
    pub fn evict_integration(&self, integration_id: Uuid) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.retain(|_, s| {
            s.value
                .as_ref()
                .is_none_or(|c| c.integration_id != integration_id)
        });
    }

    /// Entries currently held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.entries.read().map(|e| e.len()).unwrap_or(0)
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(integration_id: Uuid) -> Arc<CachedCredential> {
        Arc::new(CachedCredential {
            credential_id: Uuid::now_v7(),
            integration_id,
            user_id: "u".into(),
            scopes: vec![Scope::OrdersRead],
            secret_hash: vec![0; 32],
            active: true,
            integration_expires_at: None,
            credential_expires_at: None,
            revoked_at: None,
            rate_limit_per_second: 0,
            daily_quota: 0,
            calls_today: 0,
            day: Utc::now().date_naive(),
        })
    }

    /// A load that raced an eviction is not cached; evictions remove only the named
    /// integration's keys; entries expire after the TTL.
    #[test]
    fn evictions_win_over_racing_loads() {
        let cache = CredentialCache::new(Duration::from_secs(60));
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let Lookup::Miss { generation } = cache.get("ptk_a") else {
            panic!("empty cache hit")
        };
        cache.insert("ptk_a", Some(credential(a)), generation);
        cache.insert("ptk_b", Some(credential(b)), generation);
        assert!(matches!(cache.get("ptk_a"), Lookup::Hit(Some(_))));

        let Lookup::Miss { generation: stale } = cache.get("ptk_c") else {
            panic!("hit")
        };
        cache.evict_integration(a);
        cache.insert("ptk_c", Some(credential(a)), stale);
        assert!(matches!(cache.get("ptk_c"), Lookup::Miss { .. }));
        assert!(matches!(cache.get("ptk_a"), Lookup::Miss { .. }));
        assert!(matches!(cache.get("ptk_b"), Lookup::Hit(Some(_))));

        let short = CredentialCache::new(Duration::ZERO);
        short.insert("ptk_a", Some(credential(a)), 0);
        assert!(matches!(short.get("ptk_a"), Lookup::Miss { .. }));
    }
}
