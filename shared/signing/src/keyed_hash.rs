//! Keyed hashes for secrets that are verified but never read back (API secrets).
//!
//! API secrets are 256-bit random strings, so a slow password hash buys nothing; an
//! HMAC-SHA256 under a server-side pepper means a leaked table cannot be brute-forced
//! without the pepper, and verification stays in the microseconds.

use ring::hmac;

/// The server-side pepper; one per deployment (`PORTICO_API_KEY_PEPPER`).
#[derive(Clone)]
pub struct Pepper {
    key: hmac::Key,
}

impl std::fmt::Debug for Pepper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pepper(<redacted>)")
    }
}

impl Pepper {
    /// Builds the pepper from configuration bytes.
    pub fn new(raw: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, raw),
        }
    }

    /// The keyed hash of `secret`, 32 bytes, as stored.
    pub fn hash(&self, secret: &[u8]) -> Vec<u8> {
        hmac::sign(&self.key, secret).as_ref().to_vec()
    }

    /// Constant-time check of `secret` against a stored hash.
    pub fn verify(&self, secret: &[u8], stored: &[u8]) -> bool {
        hmac::verify(&self.key, secret, stored).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The right secret verifies, a wrong one or another pepper does not.
    #[test]
    fn verifies_only_the_right_secret_under_the_right_pepper() {
        let pepper = Pepper::new(b"pepper-1");
        let stored = pepper.hash(b"secret");
        assert!(pepper.verify(b"secret", &stored));
        assert!(!pepper.verify(b"secreT", &stored));
        assert!(!Pepper::new(b"pepper-2").verify(b"secret", &stored));
    }
}
