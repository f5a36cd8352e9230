//! Cryptography Portico relies on, in one small crate so it is reviewed in one place.
//!
//! # Layout
//! - [`standard_webhooks`]: webhook signatures in the Standard Webhooks format
//!   (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>`), so partners
//!   verify with any Standard Webhooks library, unchanged.
//! - [`seal`]: AES-256-GCM encryption of secrets at rest under rotating keys
//!   (`PORTICO_SECRETS_KEYS`), each value naming its key and bound to its record.
//! - [`secret_box`]: the single-key sealing of before key rotation, kept for tools and
//!   tests that read old values ([`seal`] opens them too).
//! - [`keyed_hash`]: HMAC-SHA256 with a server-side pepper and constant-time comparison,
//!   for API secrets that must never be stored in the clear.
//! - [`jwt`]: HS256 JSON Web Tokens, the user tokens issued by the platform's login.
//!
//! Everything is built on `ring`, the crypto provider already in the tree for TLS.

pub mod jwt;
pub mod keyed_hash;
pub mod seal;
pub mod secret_box;
pub mod standard_webhooks;

/// Why a cryptographic operation failed. Callers map these to their own boundary
/// errors; none of them carries secret material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigningError {
    /// A secret or key is not in its documented format.
    #[error("malformed secret: {0}")]
    MalformedSecret(&'static str),
    /// Ciphertext could not be decrypted (wrong key or tampered data).
    #[error("decryption failed")]
    Decryption,
    /// A signature, token or header did not verify.
    #[error("verification failed: {0}")]
    Verification(&'static str),
    /// The system random source failed.
    #[error("random source unavailable")]
    Random,
}

/// Fills a fresh array with cryptographically secure random bytes.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], SigningError> {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| SigningError::Random)?;
    Ok(out)
}

/// Compares two byte strings in time that depends only on their lengths, so a bearer
/// token cannot be guessed byte by byte from response timings.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}
