//! Keyed hashes for secrets that are verified but never read back (API secrets).
//!
//! API secrets are 256-bit random strings, so a slow password hash buys nothing; an
//! HMAC-SHA256 under a server-side pepper means a leaked table cannot be brute-forced
//! without the pepper, and verification stays in the microseconds.
//!
//! Peppers rotate ([`Peppers`]): a deployment configures several, each with an id, the
//! newest hashing new secrets. A hash cannot be re-computed without the secret, so the
//! id of the pepper is stored with the hash (`'P' || id_len || id || hmac`), and a
//! hash written before peppers had ids (exactly the 32 HMAC bytes) is verified with
//! every configured pepper. An old pepper stays configured until every credential it
//! hashed was regenerated or expired.

use ring::hmac;

/// One server-side pepper (`PORTICO_API_KEY_PEPPER`, or one entry of
/// `PORTICO_API_KEY_PEPPERS`).
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

/// The id `PORTICO_API_KEY_PEPPER` (the single pepper of older deployments) gets.
pub const LEGACY_PEPPER_ID: &str = "default";
/// The HMAC-SHA256 output length: a stored hash of exactly this length has no id.
const MAC_LEN: usize = 32;
/// The first byte of a hash stored with its pepper id.
const TAGGED: u8 = b'P';

/// The peppers of a deployment, newest first: the first hashes new secrets, a stored
/// hash is verified with the pepper it names. Cheap to clone.
#[derive(Clone)]
pub struct Peppers {
    peppers: Vec<(String, Pepper)>,
}

impl std::fmt::Debug for Peppers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.peppers.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("Peppers")
            .field("ids", &ids)
            .finish_non_exhaustive()
    }
}

impl Peppers {
    /// Builds the peppers from configuration: `peppers` is `PORTICO_API_KEY_PEPPERS`
    /// (`id:pepper,id:pepper`, newest first; a pepper may contain `:` but not `,`) and
    /// `single` is `PORTICO_API_KEY_PEPPER` (id [`LEGACY_PEPPER_ID`]), appended after
    /// them. Ids are unique, 1 to 64 characters of `A-Za-z0-9-_.`; peppers non-empty.
    pub fn from_config(
        peppers: Option<&str>,
        single: Option<&str>,
    ) -> Result<Self, crate::SigningError> {
        use crate::SigningError::MalformedSecret;
        let mut out: Vec<(String, Pepper)> = Vec::new();
        let listed = peppers
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| {
                e.split_once(':')
                    .map(|(id, p)| (id.trim(), p))
                    .ok_or(MalformedSecret(
                        "PORTICO_API_KEY_PEPPERS entries are id:pepper",
                    ))
            });
        let single = single
            .filter(|p| !p.is_empty())
            .map(|p| Ok((LEGACY_PEPPER_ID, p)));
        for entry in listed.chain(single) {
            let (id, pepper) = entry?;
            let valid_id = !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !valid_id {
                return Err(MalformedSecret(
                    "a pepper id is 1 to 64 characters of A-Za-z0-9-_.",
                ));
            }
            if pepper.is_empty() {
                return Err(MalformedSecret("a pepper must not be empty"));
            }
            if out.iter().any(|(other, _)| other == id) {
                return Err(MalformedSecret("pepper ids must be unique"));
            }
            out.push((id.to_owned(), Pepper::new(pepper.as_bytes())));
        }
        if out.is_empty() {
            return Err(MalformedSecret("no API key pepper configured"));
        }
        Ok(Self { peppers: out })
    }

    /// One pepper with an id (dev mode, tests).
    pub fn single(id: &str, raw: &[u8]) -> Self {
        Self {
            peppers: vec![(id.to_owned(), Pepper::new(raw))],
        }
    }

    /// The id of the pepper that hashes new secrets.
    pub fn current_id(&self) -> &str {
        self.peppers.first().map_or("", |(id, _)| id.as_str())
    }

    /// The ids, newest first.
    pub fn ids(&self) -> Vec<&str> {
        self.peppers.iter().map(|(id, _)| id.as_str()).collect()
    }

    /// The stored form of `secret`'s hash under the newest pepper, with its id.
    pub fn hash(&self, secret: &[u8]) -> Vec<u8> {
        let Some((id, pepper)) = self.peppers.first() else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(2 + id.len() + MAC_LEN);
        out.push(TAGGED);
        // Ids are at most 64 bytes.
        out.push(id.len() as u8);
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&pepper.hash(secret));
        out
    }

    /// The pepper id a stored hash names; `None` for a hash stored without one.
    pub fn stored_id(stored: &[u8]) -> Option<&str> {
        if stored.len() == MAC_LEN {
            return None;
        }
        let (&tag, rest) = stored.split_first()?;
        let (&len, rest) = rest.split_first()?;
        let len = usize::from(len);
        if tag != TAGGED || rest.len() != len + MAC_LEN {
            return None;
        }
        std::str::from_utf8(&rest[..len]).ok()
    }

    /// Constant-time check of `secret` against a stored hash: with the pepper the hash
    /// names, or, for a hash stored without an id, with each configured pepper.
    pub fn verify(&self, secret: &[u8], stored: &[u8]) -> bool {
        if stored.len() == MAC_LEN {
            return self.peppers.iter().any(|(_, p)| p.verify(secret, stored));
        }
        let Some(id) = Self::stored_id(stored) else {
            return false;
        };
        let mac = &stored[stored.len() - MAC_LEN..];
        self.peppers
            .iter()
            .find(|(known, _)| known == id)
            .is_some_and(|(_, p)| p.verify(secret, mac))
    }

    /// True when `stored` was hashed with the newest pepper (nothing to migrate).
    pub fn is_current(&self, stored: &[u8]) -> bool {
        Self::stored_id(stored) == Some(self.current_id())
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

    /// New secrets are hashed with the newest pepper and carry its id; hashes of an
    /// older pepper and id-less hashes of before rotation still verify; a hash whose
    /// pepper was removed does not.
    #[test]
    fn rotated_peppers_verify_what_they_hashed() {
        let legacy = Pepper::new(b"old-pepper").hash(b"s1");
        let v1 = Peppers::from_config(Some("p1:first"), Some("old-pepper")).unwrap();
        assert_eq!(v1.ids(), vec!["p1", LEGACY_PEPPER_ID]);
        let h1 = v1.hash(b"s2");
        assert_eq!(Peppers::stored_id(&h1), Some("p1"));
        assert!(v1.is_current(&h1));
        let v2 = Peppers::from_config(Some("p2:sec:ond,p1:first"), Some("old-pepper")).unwrap();
        assert!(v2.verify(b"s1", &legacy));
        assert!(v2.verify(b"s2", &h1));
        assert!(!v2.verify(b"s3", &h1));
        assert!(!v2.is_current(&h1));
        let h2 = v2.hash(b"s3");
        assert_eq!(Peppers::stored_id(&h2), Some("p2"));
        assert!(v2.verify(b"s3", &h2));
        let dropped = Peppers::from_config(Some("p2:sec:ond"), None).unwrap();
        assert!(!dropped.verify(b"s2", &h1));
        assert!(!dropped.verify(b"s1", &legacy));
        assert!(!dropped.verify(b"s3", &h2[..h2.len() - 1]));
    }

    /// Configuration errors are refused, never a panic.
    #[test]
    fn bad_pepper_configuration_is_refused() {
        assert!(Peppers::from_config(None, None).is_err());
        assert!(Peppers::from_config(Some("nocolon"), None).is_err());
        assert!(Peppers::from_config(Some("a:x,a:y"), None).is_err());
        assert!(Peppers::from_config(Some("a:"), None).is_err());
        assert!(Peppers::from_config(Some("bad id:x"), None).is_err());
        assert!(Peppers::from_config(None, Some("p")).is_ok());
    }
}
