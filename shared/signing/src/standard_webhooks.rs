//! Standard Webhooks signatures (<https://www.standardwebhooks.com>).
//!
//! The signed content is `"{webhook-id}.{webhook-timestamp}.{body}"`, the MAC is
//! HMAC-SHA256 with the secret's raw bytes, and the header lists one `v1,<base64>`
//! entry per active secret, separated by spaces, which is how key rotation works:
//! during the grace period both the old and the new key sign.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;

use crate::SigningError;

/// Prefix of every serialised signing secret, as the specification requires.
pub const SECRET_PREFIX: &str = "whsec_";
/// Default tolerance for `webhook-timestamp` drift when verifying, per the specification.
pub const DEFAULT_TOLERANCE_SECS: i64 = 5 * 60;

/// A webhook signing secret: 32 random bytes, shown to its owner as `whsec_<base64>`.
#[derive(Clone)]
pub struct WebhookSecret {
    key: hmac::Key,
    raw: Vec<u8>,
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

impl WebhookSecret {
    /// Generates a new random 32-byte secret (the full strength of HMAC-SHA256).
    pub fn generate() -> Result<Self, SigningError> {
        Ok(Self::from_bytes(&crate::random_bytes::<32>()?))
    }

    /// Builds a secret from its raw key bytes.
    pub fn from_bytes(raw: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, raw),
            raw: raw.to_vec(),
        }
    }

    /// Parses the `whsec_<base64>` form; the prefix is optional, as in the reference
    /// libraries.
    pub fn parse(text: &str) -> Result<Self, SigningError> {
        let b64 = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
        let raw = STANDARD
            .decode(b64)
            .map_err(|_| SigningError::MalformedSecret("secret is not base64"))?;
        if raw.len() < 16 || raw.len() > 64 {
            return Err(SigningError::MalformedSecret(
                "secret must be 16 to 64 bytes",
            ));
        }
        Ok(Self::from_bytes(&raw))
    }

    /// The raw key bytes, for encryption at rest.
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// The `whsec_<base64>` form shown to the webhook's owner.
    pub fn to_whsec(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.raw))
    }

    /// Signs one message and returns the `v1,<base64>` entry.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self.mac(msg_id, timestamp, body);
        let mut out = String::with_capacity(3 + 44);
        out.push_str("v1,");
        STANDARD.encode_string(tag.as_ref(), &mut out);
        out
    }

    fn mac(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(msg_id.as_bytes());
        ctx.update(b".");
        ctx.update(itoa::Buffer::new().format(timestamp).as_bytes());
        ctx.update(b".");
        ctx.update(body);
        ctx.sign()
    }
}

/// Builds the `webhook-signature` header value: one `v1,<sig>` per secret, space separated.
pub fn signature_header(
    secrets: &[WebhookSecret],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    let mut out = String::with_capacity(secrets.len() * 48);
    for (i, secret) in secrets.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&secret.sign(msg_id, timestamp, body));
    }
    out
}

/// Verifies a delivery the way a partner would: any `v1` entry of the header must
/// match, and the timestamp must lie within `tolerance_secs` of `now`.
pub fn verify(
    secret: &WebhookSecret,
    msg_id: &str,
    timestamp_header: &str,
    signature_header: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SigningError> {
    let timestamp: i64 = timestamp_header
        .parse()
        .map_err(|_| SigningError::Verification("timestamp is not an integer"))?;
    // Checked arithmetic: a timestamp near i64::MIN or MAX is refused, never an
    // overflow (a panic in debug builds, a wrapped and possibly small drift in release).
    let within = now
        .checked_sub(timestamp)
        .map(i64::unsigned_abs)
        .zip(u64::try_from(tolerance_secs).ok())
        .is_some_and(|(drift, tolerance)| drift <= tolerance);
    if !within {
        return Err(SigningError::Verification("timestamp outside tolerance"));
    }
    let mut ctx_input = Vec::with_capacity(msg_id.len() + body.len() + 16);
    ctx_input.extend_from_slice(msg_id.as_bytes());
    ctx_input.push(b'.');
    ctx_input.extend_from_slice(timestamp_header.as_bytes());
    ctx_input.push(b'.');
    ctx_input.extend_from_slice(body);
    for entry in signature_header.split(' ') {
        let Some(b64) = entry.strip_prefix("v1,") else {
            continue;
        };
        let Ok(tag) = STANDARD.decode(b64) else {
            continue;
        };
        if hmac::verify(&secret.key, &ctx_input, &tag).is_ok() {
            return Ok(());
        }
    }
    Err(SigningError::Verification("no matching signature"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's published test vector must verify, so our signer agrees
    /// with every other implementation.
    #[test]
    fn matches_the_specification_test_vector() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        verify(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            &sig,
            body,
            1614265330,
            DEFAULT_TOLERANCE_SECS,
        )
        .unwrap();
    }

    /// During rotation both keys sign, and a receiver holding either key verifies.
    #[test]
    fn rotation_header_verifies_with_either_key() {
        let old = WebhookSecret::generate().unwrap();
        let new = WebhookSecret::generate().unwrap();
        let header = signature_header(&[new.clone(), old.clone()], "evt_1", 100, b"{}");
        assert_eq!(header.split(' ').count(), 2);
        for key in [&old, &new] {
            verify(key, "evt_1", "100", &header, b"{}", 100, 300).unwrap();
        }
        let stranger = WebhookSecret::generate().unwrap();
        assert!(verify(&stranger, "evt_1", "100", &header, b"{}", 100, 300).is_err());
    }

    /// A tampered body or a stale timestamp is refused.
    #[test]
    fn tampering_and_replay_are_refused() {
        let key = WebhookSecret::generate().unwrap();
        let header = signature_header(std::slice::from_ref(&key), "evt_1", 100, b"{}");
        assert!(verify(&key, "evt_1", "100", &header, b"{ }", 100, 300).is_err());
        assert!(verify(&key, "evt_1", "100", &header, b"{}", 1000, 300).is_err());
    }

    /// A timestamp whose distance to now does not fit in an i64 is refused, not an
    /// overflow; so is any timestamp under a negative tolerance.
    #[test]
    fn extreme_timestamps_are_refused() {
        let key = WebhookSecret::generate().unwrap();
        for (ts, now) in [(i64::MIN, 1_000), (i64::MAX, -1_000), (i64::MIN, i64::MAX)] {
            let text = ts.to_string();
            let header = signature_header(std::slice::from_ref(&key), "evt_1", ts, b"{}");
            assert!(verify(&key, "evt_1", &text, &header, b"{}", now, 300).is_err());
        }
        let header = signature_header(std::slice::from_ref(&key), "evt_1", 100, b"{}");
        assert!(verify(&key, "evt_1", "100", &header, b"{}", 100, -1).is_err());
        assert!(verify(&key, "evt_1", "100", &header, b"{}", 100, 0).is_ok());
    }

    /// The serialised form round-trips.
    #[test]
    fn whsec_round_trips() {
        let key = WebhookSecret::generate().unwrap();
        let text = key.to_whsec();
        assert!(text.starts_with("whsec_"));
        assert_eq!(
            WebhookSecret::parse(&text).unwrap().as_bytes(),
            key.as_bytes()
        );
        assert!(WebhookSecret::parse("whsec_!!!").is_err());
    }
}
