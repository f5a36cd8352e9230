//! The platform's JSON Web Key Set, kept current: fetched at start, every
//! `PORTICO_JWKS_REFRESH_SECS`, and when a token names a key id the verifier does not
//! know (the platform rotated its keys) — at most once per [`UNKNOWN_KID_COOLDOWN`],
//! so tokens with made-up key ids cannot make the gateway fetch in a loop. A failed
//! fetch keeps the keys it had.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use portico_signing::jwt::JwtVerifier;
use tokio_util::sync::CancellationToken;

/// The shortest time between two fetches triggered by unknown key ids.
pub const UNKNOWN_KID_COOLDOWN: Duration = Duration::from_secs(30);
/// Time limit of one fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS document accepted.
const MAX_BYTES: usize = 1 << 20;

/// Fetches a JWKS into a verifier.
pub struct JwksSource {
    url: String,
    client: reqwest::Client,
    verifier: JwtVerifier,
    every: Duration,
    last_on_demand: Mutex<Option<Instant>>,
}

impl JwksSource {
    /// A source for `url` that loads into `verifier` (which shares its keys with the
    /// gateway's) every `every`.
    pub fn new(
        url: String,
        verifier: JwtVerifier,
        every: Duration,
    ) -> Result<Self, reqwest::Error> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            url,
            client,
            verifier,
            every: every.max(Duration::from_secs(10)),
            last_on_demand: Mutex::new(None),
        })
    }

    /// Fetches the document once; returns the number of usable keys.
    pub async fn fetch(&self) -> Result<usize, String> {
        let response = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_BYTES as u64)
        {
            return Err("document too large".into());
        }
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        if body.len() > MAX_BYTES {
            return Err("document too large".into());
        }
        let text = std::str::from_utf8(&body).map_err(|_| "document is not UTF-8".to_owned())?;
        self.verifier.set_jwks(text).map_err(|e| e.to_string())
    }

    /// Fetches now and then every period until `shutdown`.
    pub async fn run(&self, shutdown: CancellationToken) {
        loop {
            match self.fetch().await {
                Ok(n) => tracing::info!(keys = n, url = %self.url, "JWKS loaded"),
                Err(err) => {
                    tracing::warn!(%err, url = %self.url, "JWKS fetch failed; keeping the keys loaded before")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.every) => {}
            }
        }
    }

    /// Called when a token failed verification: if it names a key id the verifier does
    /// not know and no on-demand fetch ran within the cooldown, fetches now and says
    /// whether the token is worth verifying again.
    pub async fn refresh_for(&self, token: &str) -> bool {
        let Some(kid) = token_kid(token) else {
            return false;
        };
        if self.verifier.knows_kid(&kid) {
            return false;
        }
        {
            let Ok(mut last) = self.last_on_demand.lock() else {
                return false;
            };
            if last.is_some_and(|at| at.elapsed() < UNKNOWN_KID_COOLDOWN) {
                return false;
            }
            *last = Some(Instant::now());
        }
        match self.fetch().await {
            Ok(n) => {
                tracing::info!(keys = n, %kid, "JWKS fetched for an unknown key id");
                self.verifier.knows_kid(&kid)
            }
            Err(err) => {
                tracing::warn!(%err, "JWKS fetch for an unknown key id failed");
                false
            }
        }
    }
}

/// The `kid` of a token's header, if it has one.
fn token_kid(token: &str) -> Option<String> {
    use base64::Engine;
    let header = token.split('.').next()?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&raw).ok()?;
    value.get("kid")?.as_str().map(str::to_owned)
}
