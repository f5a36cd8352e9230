//! Sealing with rotating keys: several AES-256-GCM keys, each with an id, the newest
//! sealing and every one opening, and the record a secret belongs to bound as
//! associated data.
//!
//! Why: a single key that can never change is a key that cannot be rotated after a
//! leak or a staff change, and a ciphertext that opens whatever row it is copied into
//! lets someone with write access to the database move a secret from one webhook to
//! another. So every sealed value names the key that sealed it and is bound to its
//! record (a webhook id, a header name) by AEAD associated data.
//!
//! # Format
//! - version 1 (written now): `"PSK1" || kid_len (1 byte) || kid || nonce (12) ||
//!   ciphertext || tag`; the associated data is `"portico-seal-v1" 0 kid 0 context`,
//!   so neither the key id nor the record can be swapped without the tag failing.
//! - version 0 (before key rotation): `nonce (12) || ciphertext || tag`, no associated
//!   data, sealed under `PORTICO_SECRETS_KEY`. Still opened (with every configured key),
//!   never written; the re-seal job moves such values to version 1.
//!
//! A version-0 value begins with a random nonce, so it may start with `PSK1` by chance
//! (one in 2^32): opening falls back to version 0 when a version-1 parse fails, so such
//! a value still opens.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use crate::SigningError;

/// The first bytes of a version-1 sealed value.
const MAGIC: &[u8; 4] = b"PSK1";
/// Domain separation of version-1 associated data.
const AAD_LABEL: &[u8] = b"portico-seal-v1";
/// AES-GCM tag length.
const TAG_LEN: usize = 16;
/// The id `PORTICO_SECRETS_KEY` (the single key of older deployments) gets in a keyring.
pub const LEGACY_KEY_ID: &str = "default";
/// The id of the public dev-mode key.
pub const DEV_KEY_ID: &str = "insecure-dev";

/// One key of a [`Keyring`].
struct Key {
    id: String,
    key: LessSafeKey,
}

/// The secrets keys of a deployment, newest first: the first seals, all open. Built
/// once at start-up from `PORTICO_SECRETS_KEYS` and `PORTICO_SECRETS_KEY`.
pub struct Keyring {
    keys: Vec<Key>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("key_ids", &self.key_ids())
            .finish_non_exhaustive()
    }
}

/// What [`Keyring::open`] found.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened {
    /// The plaintext.
    pub plaintext: Vec<u8>,
    /// True when the value is in the current format and under the newest key, so the
    /// re-seal job leaves it alone.
    pub current: bool,
}

fn unbound(raw: &[u8]) -> Result<LessSafeKey, SigningError> {
    let key = UnboundKey::new(&AES_256_GCM, raw)
        .map_err(|_| SigningError::MalformedSecret("a secrets key must be 32 bytes"))?;
    Ok(LessSafeKey::new(key))
}

fn decode_key(text: &str) -> Result<LessSafeKey, SigningError> {
    let raw = STANDARD
        .decode(text.trim())
        .map_err(|_| SigningError::MalformedSecret("a secrets key is not base64"))?;
    unbound(&raw)
}

fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn aad(kid: &str, context: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(AAD_LABEL.len() + kid.len() + context.len() + 2);
    out.extend_from_slice(AAD_LABEL);
    out.push(0);
    out.extend_from_slice(kid.as_bytes());
    out.push(0);
    out.extend_from_slice(context);
    out
}

impl Keyring {
    /// Builds the keyring from configuration: `keys` is `PORTICO_SECRETS_KEYS`
    /// (`kid:base64,kid:base64`, newest first; may be empty) and `single` is
    /// `PORTICO_SECRETS_KEY` (one key, id [`LEGACY_KEY_ID`]), appended after them so
    /// deployments that only set it keep working unchanged. Key ids are unique, 1 to
    /// 64 characters of `A-Za-z0-9-_.`. At least one key is required.
    pub fn from_config(keys: Option<&str>, single: Option<&str>) -> Result<Self, SigningError> {
        let mut ring = Vec::new();
        for entry in keys
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let (id, key) = entry.split_once(':').ok_or(SigningError::MalformedSecret(
                "PORTICO_SECRETS_KEYS entries are kid:base64",
            ))?;
            ring.push((id.trim().to_owned(), decode_key(key)?));
        }
        if let Some(text) = single.filter(|t| !t.trim().is_empty()) {
            ring.push((LEGACY_KEY_ID.to_owned(), decode_key(text)?));
        }
        Self::from_keys(ring)
    }

    fn from_keys(ring: Vec<(String, LessSafeKey)>) -> Result<Self, SigningError> {
        if ring.is_empty() {
            return Err(SigningError::MalformedSecret("no secrets key configured"));
        }
        let mut keys: Vec<Key> = Vec::with_capacity(ring.len());
        for (id, key) in ring {
            if !valid_key_id(&id) {
                return Err(SigningError::MalformedSecret(
                    "a key id is 1 to 64 characters of A-Za-z0-9-_.",
                ));
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(SigningError::MalformedSecret("key ids must be unique"));
            }
            keys.push(Key { id, key });
        }
        Ok(Self { keys })
    }

    /// A keyring of one key given as raw bytes, with an id (tests and tools).
    pub fn single(id: &str, raw: &[u8]) -> Result<Self, SigningError> {
        Self::from_keys(vec![(id.to_owned(), unbound(raw)?)])
    }

    /// A fixed, publicly known key for dev mode only: secrets are still encrypted, but
    /// anyone can decrypt them, which is why production refuses to start without a key.
    /// The same bytes as the dev key before rotation, so dev databases keep opening.
    pub fn insecure_dev() -> Self {
        // Only a wrong length fails; 32 is right and the id is valid.
        Self::single(DEV_KEY_ID, &[7u8; 32]).unwrap_or_else(|_| unreachable!("32-byte key"))
    }

    /// The key ids, newest (the sealing key) first.
    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    /// The id of the key that seals.
    pub fn current_key_id(&self) -> &str {
        // from_keys refuses an empty ring.
        self.keys.first().map_or("", |k| k.id.as_str())
    }

    /// Seals `plaintext` under the newest key, bound to `context` (the record it
    /// belongs to: the same context must be given to open it).
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SigningError> {
        let key = self.keys.first().ok_or(SigningError::Decryption)?;
        let nonce_bytes = crate::random_bytes::<NONCE_LEN>()?;
        let kid = key.id.as_bytes();
        let mut out =
            Vec::with_capacity(MAGIC.len() + 1 + kid.len() + NONCE_LEN + plaintext.len() + 16);
        out.extend_from_slice(MAGIC);
        // valid_key_id bounds the length to 64.
        out.push(kid.len() as u8);
        out.extend_from_slice(kid);
        out.extend_from_slice(&nonce_bytes);
        let mut body = plaintext.to_vec();
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(aad(&key.id, context)),
                &mut body,
            )
            .map_err(|_| SigningError::Decryption)?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens a value [`Keyring::seal`] produced for `context`, or a version-0 value
    /// (any configured key; version 0 bound nothing, so `context` is not checked).
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Opened, SigningError> {
        if let Some(opened) = self.open_v1(context, sealed) {
            return opened;
        }
        self.open_v0(sealed)
    }

    /// `None` when `sealed` is not a version-1 value, so version 0 is tried.
    fn open_v1(&self, context: &[u8], sealed: &[u8]) -> Option<Result<Opened, SigningError>> {
        let rest = sealed.strip_prefix(MAGIC)?;
        let (&kid_len, rest) = rest.split_first()?;
        let kid_len = usize::from(kid_len);
        if rest.len() < kid_len + NONCE_LEN + TAG_LEN {
            return None;
        }
        let (kid, rest) = rest.split_at(kid_len);
        let kid = std::str::from_utf8(kid).ok()?;
        let (index, key) = self.keys.iter().enumerate().find(|(_, k)| k.id == kid)?;
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = body.to_vec();
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(aad(kid, context)), &mut body)
            .ok()?;
        Some(Ok(Opened {
            plaintext: plain.to_vec(),
            current: index == 0,
        }))
    }

    fn open_v0(&self, sealed: &[u8]) -> Result<Opened, SigningError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(SigningError::Decryption);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        for key in &self.keys {
            let nonce =
                Nonce::try_assume_unique_for_key(nonce).map_err(|_| SigningError::Decryption)?;
            let mut body = rest.to_vec();
            if let Ok(plain) = key.key.open_in_place(nonce, Aad::empty(), &mut body) {
                return Ok(Opened {
                    plaintext: plain.to_vec(),
                    current: false,
                });
            }
        }
        Err(SigningError::Decryption)
    }
}

/// The associated data of a webhook's signing secret: the webhook's id (its 16 UUID
/// bytes), so a secret copied to another webhook's row does not open.
pub fn webhook_secret_context(webhook_id: &[u8; 16]) -> Vec<u8> {
    let mut out = b"webhook-secret/".to_vec();
    out.extend_from_slice(webhook_id);
    out
}

/// The associated data of a custom header value of a webhook: the webhook's id and the
/// header's name (ASCII-lowercased, as HTTP compares names), so a value moved to
/// another webhook or another header does not open.
pub fn webhook_header_context(webhook_id: &[u8; 16], header: &str) -> Vec<u8> {
    let mut out = b"webhook-header/".to_vec();
    out.extend_from_slice(webhook_id);
    out.push(b'/');
    out.extend_from_slice(header.to_ascii_lowercase().as_bytes());
    out
}

/// The prefix of a sealed custom header value as stored in a webhook's `headers` JSON
/// (`$sealed$` + base64 of a version-1 value). A stored value without it is a value
/// written before header values were sealed, sent as it is until the re-seal job or
/// the next write seals it.
pub const SEALED_HEADER_PREFIX: &str = "$sealed$";

/// Seals a custom header value of a webhook for storage, bound to the webhook and the
/// header name.
pub fn seal_header_value(
    ring: &Keyring,
    webhook_id: &[u8; 16],
    name: &str,
    value: &str,
) -> Result<String, SigningError> {
    let sealed = ring.seal(&webhook_header_context(webhook_id, name), value.as_bytes())?;
    Ok(format!("{SEALED_HEADER_PREFIX}{}", STANDARD.encode(sealed)))
}

/// Opens a stored custom header value: a sealed one with the keyring (`current` as in
/// [`Opened`]), one stored before sealing as it is (`current` false, so the re-seal job
/// seals it). An error means a sealed value that does not open (wrong key, or moved
/// to another webhook or header).
pub fn open_header_value(
    ring: &Keyring,
    webhook_id: &[u8; 16],
    name: &str,
    stored: &str,
) -> Result<(String, bool), SigningError> {
    let Some(encoded) = stored.strip_prefix(SEALED_HEADER_PREFIX) else {
        return Ok((stored.to_owned(), false));
    };
    let sealed = STANDARD
        .decode(encoded)
        .map_err(|_| SigningError::Decryption)?;
    let opened = ring.open(&webhook_header_context(webhook_id, name), &sealed)?;
    let text = String::from_utf8(opened.plaintext).map_err(|_| SigningError::Decryption)?;
    Ok((text, opened.current))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(raw: &[u8]) -> String {
        STANDARD.encode(raw)
    }

    /// The v0 layout as the previous `SecretsKey::seal` wrote it.
    fn seal_v0(raw_key: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let key = unbound(raw_key).unwrap();
        let nonce = [9u8; NONCE_LEN];
        let mut body = plaintext.to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut body)
            .unwrap();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&body);
        out
    }

    /// The newest key seals; an older key still opens what it sealed, reported as not
    /// current; a keyring without that key cannot open it.
    #[test]
    fn newest_seals_and_every_key_opens() {
        let old = Keyring::from_config(Some(&format!("k1:{}", b64(&[1; 32]))), None).unwrap();
        let sealed_old = old.seal(b"ctx", b"secret").unwrap();
        let both = Keyring::from_config(
            Some(&format!("k2:{},k1:{}", b64(&[2; 32]), b64(&[1; 32]))),
            None,
        )
        .unwrap();
        assert_eq!(both.current_key_id(), "k2");
        let opened = both.open(b"ctx", &sealed_old).unwrap();
        assert_eq!(opened.plaintext, b"secret");
        assert!(!opened.current);
        let sealed_new = both.seal(b"ctx", b"secret").unwrap();
        assert!(both.open(b"ctx", &sealed_new).unwrap().current);
        assert_eq!(old.open(b"ctx", &sealed_new), Err(SigningError::Decryption));
    }

    /// A value does not open for another record, and tampering with the key id or the
    /// body is detected.
    #[test]
    fn context_and_key_id_are_bound() {
        let ring = Keyring::single("a", &[3; 32]).unwrap();
        let sealed = ring.seal(b"webhook-1", b"secret").unwrap();
        assert_eq!(
            ring.open(b"webhook-2", &sealed),
            Err(SigningError::Decryption)
        );
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(ring.open(b"webhook-1", &bad), Err(SigningError::Decryption));
        // The same key under another id: the id is in the associated data.
        let renamed = Keyring::single("b", &[3; 32]).unwrap();
        let mut relabelled = sealed.clone();
        relabelled[5] = b'b';
        assert_eq!(
            renamed.open(b"webhook-1", &relabelled),
            Err(SigningError::Decryption)
        );
    }

    /// Ciphertexts written before key ids (version 0) open under `PORTICO_SECRETS_KEY`,
    /// whatever id it has now, and are never reported current.
    #[test]
    fn version_zero_still_opens() {
        let legacy = seal_v0(&[5; 32], b"whsec-raw");
        let ring = Keyring::from_config(
            Some(&format!("new:{}", b64(&[6; 32]))),
            Some(&b64(&[5; 32])),
        )
        .unwrap();
        assert_eq!(ring.key_ids(), vec!["new", LEGACY_KEY_ID]);
        let opened = ring.open(b"anything", &legacy).unwrap();
        assert_eq!(opened.plaintext, b"whsec-raw");
        assert!(!opened.current);
        // A v0 value whose nonce happens to begin with the magic still opens.
        let key = unbound(&[5; 32]).unwrap();
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..4].copy_from_slice(MAGIC);
        nonce[4] = 3;
        let mut body = b"x".to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut body)
            .unwrap();
        let mut odd = nonce.to_vec();
        odd.extend_from_slice(&body);
        assert_eq!(ring.open(b"", &odd).unwrap().plaintext, b"x");
        // The dev key keeps the bytes of the old dev key.
        let dev_v0 = seal_v0(&[7; 32], b"dev");
        assert_eq!(
            Keyring::insecure_dev()
                .open(b"", &dev_v0)
                .unwrap()
                .plaintext,
            b"dev"
        );
    }

    /// Header values round-trip, are bound to their webhook and name (names compare
    /// without case), and values stored before sealing pass through.
    #[test]
    fn header_values_are_sealed_per_webhook_and_name() {
        let ring = Keyring::single("k", &[4; 32]).unwrap();
        let (w1, w2) = ([1u8; 16], [2u8; 16]);
        let stored = seal_header_value(&ring, &w1, "X-Api-Key", "sk_live_1").unwrap();
        assert!(stored.starts_with(SEALED_HEADER_PREFIX));
        assert!(!stored.contains("sk_live_1"));
        assert_eq!(
            open_header_value(&ring, &w1, "x-api-key", &stored).unwrap(),
            ("sk_live_1".to_owned(), true)
        );
        assert!(open_header_value(&ring, &w2, "x-api-key", &stored).is_err());
        assert!(open_header_value(&ring, &w1, "x-other", &stored).is_err());
        assert_eq!(
            open_header_value(&ring, &w1, "x-team", "plain").unwrap(),
            ("plain".to_owned(), false)
        );
        assert!(open_header_value(&ring, &w1, "x", "$sealed$!!").is_err());
    }

    /// Configuration errors are refused with a reason, never a panic.
    #[test]
    fn bad_configuration_is_refused() {
        let k = b64(&[1; 32]);
        assert!(Keyring::from_config(None, None).is_err());
        assert!(Keyring::from_config(Some(""), Some("  ")).is_err());
        assert!(Keyring::from_config(Some(&k), None).is_err(), "no kid");
        assert!(Keyring::from_config(Some(&format!("a:{k},a:{k}")), None).is_err());
        assert!(Keyring::from_config(Some("a:c2hvcnQ="), None).is_err());
        assert!(Keyring::from_config(Some(&format!("bad id:{k}")), None).is_err());
        assert!(Keyring::from_config(Some(&format!("{LEGACY_KEY_ID}:{k}")), Some(&k)).is_err());
        assert!(Keyring::from_config(None, Some(&k)).is_ok());
    }
}
