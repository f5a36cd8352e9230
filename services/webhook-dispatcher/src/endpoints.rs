//! The active webhooks of each user, with their decrypted signing secrets, cached.
//!
//! Every event needs its owner's endpoints; reading them (and decrypting secrets) per
//! event would be a round trip per row. The cache holds one entry per user, loaded for
//! all users of a chunk in one query. The gateway broadcasts a user's id on the core
//! NATS subject `<prefix>.invalidate.webhooks` whenever that user's webhooks or secrets
//! change, and every replica drops the entry; a 30-second TTL bounds staleness if a
//! broadcast is ever missed. Users without webhooks are cached too (as empty), since
//! most events belong to them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use http::header::{HeaderName, HeaderValue};
use portico_domain::webhooks::RetryPolicy;
use portico_signing::seal::{self, Keyring};
use portico_signing::standard_webhooks::{WebhookSecret, signature_header};
use portico_storage::webhooks::EndpointRow;
use sqlx::PgPool;
use uuid::Uuid;

use crate::limits::{EndpointLimiter, LimiterRegistry};

/// How long a cached user entry is trusted without an invalidation.
pub const CACHE_TTL: Duration = Duration::from_secs(30);

/// How deliveries reach an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointTransport {
    /// A signed HTTP POST to its URL.
    Http,
    /// A NATS request to the gateway holding the endpoint's `portico listen`
    /// connection; no HTTP request to any address (`portico_queue::listen`).
    Listen,
}

/// One active webhook, ready to deliver to.
pub struct Endpoint {
    /// The webhook id.
    pub id: Uuid,
    /// Its owner.
    pub user_id: String,
    /// Where deliveries go (for a listen endpoint, the `listen:<id>` placeholder).
    pub url: url::Url,
    /// The same, parsed once for the HTTP client (`None` for a listen endpoint or a
    /// URL the client cannot send to).
    pub uri: Option<http::Uri>,
    /// How they get there.
    pub transport: EndpointTransport,
    /// Event filters (exact, `prefix.*`, `*`).
    pub events: Vec<String>,
    /// The owner's custom headers (validated by the API; unusable ones are skipped).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Signing secrets, newest first, with their expiry (rotation grace period).
    secrets: Vec<(WebhookSecret, Option<DateTime<Utc>>)>,
    /// The retry schedule of new deliveries.
    pub policy: RetryPolicy,
    /// Opt-in per-key ordering.
    pub ordering_enabled: bool,
    /// Concurrency cap and rate limit, shared by every delivery to this endpoint.
    pub limiter: Arc<EndpointLimiter>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("id", &self.id)
            .field("url", &self.url.as_str())
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Whether this endpoint subscribes to `event_type`.
    pub fn matches(&self, event_type: &str) -> bool {
        self.events
            .iter()
            .any(|f| portico_domain::webhooks::filter_matches(f, event_type))
    }

    /// The `webhook-signature` value: one `v1,` entry per secret still valid at `now`,
    /// newest first. `None` if no secret may sign.
    pub fn signature(
        &self,
        msg_id: &str,
        timestamp: i64,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Option<String> {
        let header = signature_header_of(
            self.secrets
                .iter()
                .filter(|(_, expires)| expires.is_none_or(|e| e > now))
                .map(|(s, _)| s),
            msg_id,
            timestamp,
            body,
        );
        (!header.is_empty()).then_some(header)
    }
}

fn signature_header_of<'a>(
    secrets: impl Iterator<Item = &'a WebhookSecret>,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    let mut out = String::new();
    for secret in secrets {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&signature_header(
            std::slice::from_ref(secret),
            msg_id,
            timestamp,
            body,
        ));
    }
    out
}

/// The endpoints of one user.
pub type UserEndpoints = Arc<[Arc<Endpoint>]>;

struct Cached {
    loaded: Instant,
    endpoints: UserEndpoints,
}

/// Per-user cache of active endpoints.
pub struct EndpointCache {
    pool: PgPool,
    key: Keyring,
    limiters: LimiterRegistry,
    entries: RwLock<HashMap<String, Cached>>,
    /// Bumped by every invalidation: a load that raced with one is used once but not
    /// cached, so an invalidation is never overwritten by older data.
    epoch: AtomicU64,
}

impl EndpointCache {
    /// An empty cache reading from `pool` and opening secrets with `key`; endpoints
    /// that set no `maxConcurrency` get `default_concurrency` (0 = uncapped).
    pub fn new(pool: PgPool, key: Keyring, default_concurrency: u32) -> Self {
        Self {
            pool,
            key,
            limiters: LimiterRegistry::with_default_concurrency(default_concurrency),
            entries: RwLock::new(HashMap::new()),
            epoch: AtomicU64::new(0),
        }
    }

    /// The endpoints of every user in `users`, loading the missing or stale ones in
    /// one query.
    pub async fn for_users<'a>(
        &self,
        users: impl IntoIterator<Item = &'a str>,
    ) -> Result<HashMap<String, UserEndpoints>, sqlx::Error> {
        let now = Instant::now();
        let mut found = HashMap::new();
        let mut missing: Vec<&str> = Vec::new();
        {
            let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
            for user in users {
                if found.contains_key(user) || missing.contains(&user) {
                    continue;
                }
                match entries.get(user) {
                    Some(c) if now.duration_since(c.loaded) < CACHE_TTL => {
                        found.insert(user.to_owned(), c.endpoints.clone());
                    }
                    _ => missing.push(user),
                }
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let loaded = self.load(&missing).await?;
        let cacheable = self.epoch.load(Ordering::Acquire) == epoch;
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        for (user, endpoints) in loaded {
            if cacheable {
                entries.insert(
                    user.clone(),
                    Cached {
                        loaded: now,
                        endpoints: endpoints.clone(),
                    },
                );
            }
            found.insert(user, endpoints);
        }
        Ok(found)
    }

    /// Reads one user's endpoints from the database, bypassing (and refreshing) the
    /// cache: used when a retry names a webhook the cache does not know.
    pub async fn reload(&self, user: &str) -> Result<UserEndpoints, sqlx::Error> {
        self.invalidate(user);
        let mut map = self.for_users([user]).await?;
        Ok(map.remove(user).unwrap_or_else(|| Arc::from(Vec::new())))
    }

    /// Drops a user's entry (their webhooks or secrets changed).
    pub fn invalidate(&self, user: &str) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        entries.remove(user);
    }

    /// Drops expired entries and unused limiters, so memory follows active users.
    pub fn sweep(&self) {
        let now = Instant::now();
        {
            let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
            entries.retain(|_, c| now.duration_since(c.loaded) < CACHE_TTL);
        }
        self.limiters.sweep();
    }

    async fn load(&self, users: &[&str]) -> Result<HashMap<String, UserEndpoints>, sqlx::Error> {
        let rows = portico_storage::webhooks::active_endpoints(&self.pool, users).await?;
        let mut by_user: HashMap<String, Vec<Arc<Endpoint>>> = users
            .iter()
            .map(|u| ((*u).to_owned(), Vec::new()))
            .collect();
        for row in rows {
            if let Some(endpoint) = self.endpoint_from_row(row) {
                by_user
                    .entry(endpoint.user_id.clone())
                    .or_default()
                    .push(Arc::new(endpoint));
            }
        }
        Ok(by_user
            .into_iter()
            .map(|(u, v)| (u, Arc::from(v)))
            .collect())
    }

    fn endpoint_from_row(&self, row: EndpointRow) -> Option<Endpoint> {
        let EndpointRow {
            id,
            user_id,
            url,
            transport,
            events,
            headers,
            max_retries,
            base_delay_ms,
            max_delay_ms,
            ordering_enabled,
            rate_limit_per_second: rate,
            max_concurrency: concurrency,
            ciphertexts,
            expiries,
        } = row;
        let id = id.as_uuid();
        let context = seal::webhook_secret_context(id.as_bytes());
        let url = match url::Url::parse(&url) {
            Ok(u) => u,
            Err(err) => {
                tracing::error!(webhook = %id, %err, "stored webhook URL does not parse; skipping it");
                return None;
            }
        };
        let transport = match transport.as_str() {
            "listen" => EndpointTransport::Listen,
            "http" => EndpointTransport::Http,
            other => {
                tracing::error!(webhook = %id, transport = other, "unknown webhook transport; skipping it");
                return None;
            }
        };
        let mut secrets = Vec::with_capacity(ciphertexts.len());
        for (sealed, expires) in ciphertexts.iter().zip(expiries) {
            match self.key.open(&context, sealed) {
                Ok(opened) => secrets.push((WebhookSecret::from_bytes(&opened.plaintext), expires)),
                Err(err) => {
                    tracing::error!(webhook = %id, %err, "cannot open a signing secret (a key missing from PORTICO_SECRETS_KEYS?)");
                }
            }
        }
        let headers = match headers {
            serde_json::Value::Object(map) => map
                .into_iter()
                .filter_map(|(k, v)| {
                    // Sealed values open here; values stored before sealing pass as
                    // they are. A sealed value that does not open is left out, not
                    // sent sealed.
                    let v = match seal::open_header_value(&self.key, id.as_bytes(), &k, v.as_str()?) {
                        Ok((value, _)) => value,
                        Err(err) => {
                            tracing::error!(webhook = %id, header = %k, %err, "cannot open a custom header value; sending the delivery without it");
                            return None;
                        }
                    };
                    Some((
                        HeaderName::from_bytes(k.as_bytes()).ok()?,
                        HeaderValue::from_str(&v).ok()?,
                    ))
                })
                .collect(),
            _ => Vec::new(),
        };
        let uri = match transport {
            EndpointTransport::Http => url.as_str().parse().ok(),
            EndpointTransport::Listen => None,
        };
        Some(Endpoint {
            id,
            user_id,
            url,
            uri,
            transport,
            events,
            headers,
            secrets,
            policy: portico_domain::retry::policy_from_columns(
                max_retries,
                base_delay_ms,
                max_delay_ms,
            ),
            ordering_enabled,
            limiter: self.limiters.get(id, rate, concurrency),
        })
    }
}

#[cfg(test)]
impl Endpoint {
    /// An endpoint for unit tests.
    pub fn for_test(url: &str, secrets: Vec<(WebhookSecret, Option<DateTime<Utc>>)>) -> Self {
        Self {
            id: Uuid::nil(),
            user_id: "u".into(),
            url: url::Url::parse(url).unwrap(),
            uri: url.parse().ok(),
            transport: EndpointTransport::Http,
            events: vec!["*".into()],
            headers: Vec::new(),
            secrets,
            policy: portico_domain::retry::policy_from_columns(5, 1000, 300_000),
            ordering_enabled: false,
            limiter: Arc::new(EndpointLimiter::new(None, None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every unexpired secret signs, newest first; expired ones are left out; with none
    /// left there is no signature at all.
    #[test]
    fn signs_with_every_active_secret() {
        let now = Utc::now();
        let new = WebhookSecret::generate().unwrap();
        let old = WebhookSecret::generate().unwrap();
        let e = Endpoint::for_test(
            "https://example.com/",
            vec![
                (new.clone(), None),
                (old.clone(), Some(now + chrono::Duration::minutes(5))),
            ],
        );
        let header = e.signature("id", 5, b"{}", now).unwrap();
        assert_eq!(
            header,
            format!("{} {}", new.sign("id", 5, b"{}"), old.sign("id", 5, b"{}"))
        );
        let later = now + chrono::Duration::minutes(10);
        assert_eq!(
            e.signature("id", 5, b"{}", later).unwrap(),
            new.sign("id", 5, b"{}")
        );
        let expired = Endpoint::for_test(
            "https://example.com/",
            vec![(old, Some(now - chrono::Duration::seconds(1)))],
        );
        assert!(expired.signature("id", 5, b"{}", now).is_none());
    }
}
