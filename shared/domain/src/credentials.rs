//! The format of partner API credentials, modelled on GitHub's tokens.
//!
//! - API key (the public id): `ptk_` + 24 base62 characters.
//! - API secret: `pts_` + 32 base62 random characters + 6 base62 characters of the
//!   CRC32 of the random part.
//!
//! Why: the fixed prefixes let secret scanners (GitHub push protection, gitleaks,
//! trufflehog) find a leaked key with one regular expression, and tell a Portico
//! secret from any other 42-character string. The checksum lets the gateway refuse a
//! mistyped, truncated or invented secret with pure arithmetic, before it touches the
//! cache or the database, and lets a scanner confirm a candidate without calling us.
//! The random part carries 32 x log2(62) = 190 bits of entropy, so the secret needs no
//! slow password hash: a keyed HMAC is enough (see `portico_signing::keyed_hash`).

use portico_signing::SigningError;

/// Prefix of the public API key id.
pub const API_KEY_PREFIX: &str = "ptk_";
/// Random base62 characters after [`API_KEY_PREFIX`].
pub const API_KEY_RANDOM_LEN: usize = 24;
/// Total length of an API key.
pub const API_KEY_LEN: usize = API_KEY_PREFIX.len() + API_KEY_RANDOM_LEN;
/// Prefix of the API secret.
pub const SECRET_PREFIX: &str = "pts_";
/// Random base62 characters after [`SECRET_PREFIX`].
pub const SECRET_RANDOM_LEN: usize = 32;
/// Base62 characters of the CRC32 checksum at the end of a secret (62^6 > 2^32).
pub const SECRET_CHECKSUM_LEN: usize = 6;
/// Total length of an API secret.
pub const SECRET_LEN: usize = SECRET_PREFIX.len() + SECRET_RANDOM_LEN + SECRET_CHECKSUM_LEN;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a presented key or secret is not one Portico could have issued. The variants
/// are deliberately coarse: they tell a developer what to fix without helping anyone
/// forge a checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialFormatError {
    /// The API key does not start with `ptk_` or has the wrong length or characters.
    #[error("the API key is not a Portico key (expected ptk_ followed by 24 letters and digits)")]
    MalformedApiKey,
    /// The secret does not start with `pts_` or has the wrong length or characters.
    #[error(
        "the API secret is not a Portico secret (expected pts_ followed by 38 letters and digits)"
    )]
    MalformedSecret,
    /// The secret is well formed but its checksum does not match: a typo or a forgery.
    #[error("the API secret's checksum does not match (mistyped or truncated secret?)")]
    BadChecksum,
}

/// A freshly issued pair; the secret is shown to the owner once and then only its
/// keyed hash is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCredentials {
    /// The public key id.
    pub api_key: String,
    /// The secret, in full.
    pub api_secret: String,
}

/// Issues a new key id and secret from the system's secure random source.
pub fn generate() -> Result<IssuedCredentials, SigningError> {
    let key_random = random_base62(API_KEY_RANDOM_LEN)?;
    let secret_random = random_base62(SECRET_RANDOM_LEN)?;
    let mut api_key = String::with_capacity(API_KEY_LEN);
    api_key.push_str(API_KEY_PREFIX);
    api_key.push_str(&key_random);
    Ok(IssuedCredentials {
        api_key,
        api_secret: secret_from_random(&secret_random),
    })
}

/// Builds a secret from its random part by appending the checksum (exposed for tests
/// and tools that need a well-formed secret from known bytes).
pub fn secret_from_random(random: &str) -> String {
    let mut secret = String::with_capacity(SECRET_LEN);
    secret.push_str(SECRET_PREFIX);
    secret.push_str(random);
    secret.push_str(&checksum_text(random.as_bytes()));
    secret
}

/// Checks an API key's form (prefix, length, alphabet). There is no checksum in the
/// public id; its lookup is what authenticates nothing on its own.
pub fn parse_api_key(text: &str) -> Result<&str, CredentialFormatError> {
    let random = text
        .strip_prefix(API_KEY_PREFIX)
        .ok_or(CredentialFormatError::MalformedApiKey)?;
    if random.len() != API_KEY_RANDOM_LEN || !is_base62(random.as_bytes()) {
        return Err(CredentialFormatError::MalformedApiKey);
    }
    Ok(text)
}

/// Checks a secret's form and checksum, with no I/O: garbage never reaches the
/// database. Allocation-free, a few hundred nanoseconds.
pub fn parse_secret(text: &str) -> Result<&str, CredentialFormatError> {
    let rest = text
        .strip_prefix(SECRET_PREFIX)
        .ok_or(CredentialFormatError::MalformedSecret)?;
    if rest.len() != SECRET_RANDOM_LEN + SECRET_CHECKSUM_LEN || !is_base62(rest.as_bytes()) {
        return Err(CredentialFormatError::MalformedSecret);
    }
    let (random, checksum) = rest.split_at(SECRET_RANDOM_LEN);
    if checksum_bytes(random.as_bytes()) != checksum.as_bytes() {
        return Err(CredentialFormatError::BadChecksum);
    }
    Ok(text)
}

fn is_base62(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_alphanumeric)
}

/// `n` uniformly distributed base62 characters: bytes >= 248 (4 x 62) are rejected so
/// `b % 62` has no bias.
fn random_base62(n: usize) -> Result<String, SigningError> {
    let mut out = String::with_capacity(n);
    while out.len() < n {
        let bytes = portico_signing::random_bytes::<64>()?;
        for b in bytes {
            if b < 248 && out.len() < n {
                out.push(char::from(BASE62[usize::from(b % 62)]));
            }
        }
    }
    Ok(out)
}

fn checksum_bytes(data: &[u8]) -> [u8; SECRET_CHECKSUM_LEN] {
    let mut value = crc32(data);
    let mut out = [b'0'; SECRET_CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    out
}

fn checksum_text(data: &[u8]) -> String {
    checksum_bytes(data)
        .iter()
        .map(|b| char::from(*b))
        .collect()
}

/// CRC-32 (IEEE 802.3, the zlib/PNG polynomial: what `crc32` in zlib, Python's
/// `zlib.crc32` and secret scanners compute), from the `crc` crate.
pub fn crc32(data: &[u8]) -> u32 {
    const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
    CRC32.checksum(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CRC32 matches the standard check value, so any scanner can recompute it.
    #[test]
    fn crc32_is_the_standard_one() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    /// Generated credentials have the documented shapes and parse back.
    #[test]
    fn generated_credentials_have_the_documented_shape() {
        let issued = generate().unwrap();
        assert!(issued.api_key.starts_with("ptk_"));
        assert_eq!(issued.api_key.len(), API_KEY_LEN);
        assert!(issued.api_secret.starts_with("pts_"));
        assert_eq!(issued.api_secret.len(), SECRET_LEN);
        assert_eq!(parse_api_key(&issued.api_key), Ok(issued.api_key.as_str()));
        assert_eq!(
            parse_secret(&issued.api_secret),
            Ok(issued.api_secret.as_str())
        );
        let other = generate().unwrap();
        assert_ne!(issued, other);
    }

    /// Changing any single character of a secret's random part or checksum is caught
    /// by the checksum (CRC32 detects every single-character substitution).
    #[test]
    fn checksum_catches_any_one_character_change() {
        let secret = generate().unwrap().api_secret;
        let bytes = secret.as_bytes();
        for i in SECRET_PREFIX.len()..bytes.len() {
            for replacement in [b'0', b'z', b'Q'] {
                if bytes[i] == replacement {
                    continue;
                }
                let mut changed = bytes.to_vec();
                changed[i] = replacement;
                let changed = String::from_utf8(changed).unwrap();
                assert_eq!(
                    parse_secret(&changed),
                    Err(CredentialFormatError::BadChecksum),
                    "position {i}"
                );
            }
        }
    }

    /// Wrong prefixes, lengths and alphabets are refused before any checksum.
    #[test]
    fn garbage_is_refused() {
        let secret = generate().unwrap().api_secret;
        for bad in [
            String::new(),
            "pts_".to_owned(),
            secret.replacen("pts_", "ptk_", 1),
            secret[..secret.len() - 1].to_owned(),
            format!("{secret}a"),
            secret.replacen('_', "-", 1),
            format!("pts_{}", "é".repeat(19)),
            format!("pts_{}", "!".repeat(38)),
        ] {
            assert_eq!(
                parse_secret(&bad),
                Err(CredentialFormatError::MalformedSecret),
                "{bad}"
            );
        }
        for bad in [
            "",
            "ptk_",
            "ptk_abc",
            "pts_aaaaaaaaaaaaaaaaaaaaaaaa",
            "ptk_aaaaaaaaaaaaaaaaaaaaaaa!",
        ] {
            assert_eq!(
                parse_api_key(bad),
                Err(CredentialFormatError::MalformedApiKey),
                "{bad}"
            );
        }
        let known = secret_from_random("abcdefghijklmnopqrstuvwxyz012345");
        assert!(parse_secret(&known).is_ok());
    }
}
