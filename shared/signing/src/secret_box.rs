//! Encryption at rest for webhook signing secrets.
//!
//! Signing secrets must be readable by the dispatcher (it signs with them), so they
//! cannot be hashed; they are sealed with AES-256-GCM under `PORTICO_SECRETS_KEY`. A
//! database dump alone does not reveal them. Layout: `nonce (12 bytes) || ciphertext || tag`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use crate::SigningError;

/// The key that seals secrets at rest; built once at start-up from configuration.
pub struct SecretsKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(<redacted>)")
    }
}

impl SecretsKey {
    /// Parses a key given as base64 of exactly 32 bytes (`openssl rand -base64 32`).
    pub fn from_base64(text: &str) -> Result<Self, SigningError> {
        let raw = STANDARD
            .decode(text.trim())
            .map_err(|_| SigningError::MalformedSecret("PORTICO_SECRETS_KEY is not base64"))?;
        Self::from_bytes(&raw)
    }

    /// Builds a key from 32 raw bytes.
    pub fn from_bytes(raw: &[u8]) -> Result<Self, SigningError> {
        let unbound = UnboundKey::new(&AES_256_GCM, raw)
            .map_err(|_| SigningError::MalformedSecret("PORTICO_SECRETS_KEY must be 32 bytes"))?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
        })
    }

    /// A fixed, publicly known key for dev mode only: secrets are still encrypted, but
    /// anyone can decrypt them, which is why production refuses to start without a key.
    pub fn insecure_dev_key() -> Self {
        // `from_bytes` only fails on a wrong length; 32 is right.
        Self::from_bytes(&[7u8; 32]).unwrap_or_else(|_| unreachable!("32-byte key"))
    }

    /// Seals `plaintext` with a fresh random nonce.
    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, SigningError> {
        let nonce_bytes = crate::random_bytes::<NONCE_LEN>()?;
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + 16);
        out.extend_from_slice(&nonce_bytes);
        let mut body = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::empty(),
                &mut body,
            )
            .map_err(|_| SigningError::Decryption)?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens what [`SecretsKey::seal`] produced.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, SigningError> {
        if sealed.len() < NONCE_LEN + 16 {
            return Err(SigningError::Decryption);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| SigningError::Decryption)?;
        let mut body = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::empty(), &mut body)
            .map_err(|_| SigningError::Decryption)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sealed data opens with the same key and not with another; tampering is detected.
    #[test]
    fn seal_open_round_trip_and_tamper_detection() {
        let key = SecretsKey::from_bytes(&[1u8; 32]).unwrap();
        let sealed = key.seal(b"whsec_abc").unwrap();
        assert_eq!(key.open(&sealed).unwrap(), b"whsec_abc");
        let other = SecretsKey::from_bytes(&[2u8; 32]).unwrap();
        assert_eq!(other.open(&sealed), Err(SigningError::Decryption));
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(key.open(&bad), Err(SigningError::Decryption));
        assert!(SecretsKey::from_base64("c2hvcnQ=").is_err());
    }
}
