//! HS256 JSON Web Tokens: verification of user tokens, and issuing them for tests
//! and local tooling.
//!
//! Only HS256 is accepted; a token announcing any other algorithm (including `none`)
//! is refused before its signature is looked at.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::SigningError;

/// The claims Portico reads from a user token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user's id: every resource is owned by it.
    pub sub: String,
    /// Expiry, seconds since the epoch; required.
    pub exp: i64,
    /// Not-before, seconds since the epoch; optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

/// Verifies HS256 tokens with one shared secret.
#[derive(Clone)]
pub struct JwtVerifier {
    key: hmac::Key,
}

impl JwtVerifier {
    /// Builds a verifier for `PORTICO_JWT_SECRET`.
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// Checks algorithm, signature, expiry and not-before, and returns the claims.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, SigningError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(SigningError::Verification("token is not a JWT"));
        };
        let header: Header = decode_json(h)?;
        if header.alg != "HS256" {
            return Err(SigningError::Verification("unsupported algorithm"));
        }
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| SigningError::Verification("signature is not base64url"))?;
        let signed_len = h.len() + 1 + p.len();
        hmac::verify(&self.key, &token.as_bytes()[..signed_len], &sig)
            .map_err(|_| SigningError::Verification("bad signature"))?;
        let claims: Claims = decode_json(p)?;
        if claims.exp <= now {
            return Err(SigningError::Verification("token expired"));
        }
        if claims.nbf.is_some_and(|nbf| nbf > now) {
            return Err(SigningError::Verification("token not yet valid"));
        }
        if claims.sub.is_empty() {
            return Err(SigningError::Verification("token has no subject"));
        }
        Ok(claims)
    }

    /// Issues a token; used by tests, the bench tool and local tooling.
    pub fn issue(&self, claims: &Claims) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signing_input = format!("{header}.{payload}");
        let sig = hmac::sign(&self.key, signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }
}

fn decode_json<T: for<'de> Deserialize<'de>>(part: &str) -> Result<T, SigningError> {
    let raw = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| SigningError::Verification("segment is not base64url"))?;
    serde_json::from_slice(&raw)
        .map_err(|_| SigningError::Verification("segment is not valid JSON"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            sub: "user-1".into(),
            exp,
            nbf: None,
        }
    }

    /// A token issued with the secret verifies; other secrets, expiry and `alg: none` do not.
    #[test]
    fn verifies_signature_expiry_and_algorithm() {
        let v = JwtVerifier::new(b"s3cret");
        let token = v.issue(&claims(2000));
        assert_eq!(v.verify(&token, 1000).unwrap().sub, "user-1");
        assert!(JwtVerifier::new(b"other").verify(&token, 1000).is_err());
        assert!(v.verify(&token, 3000).is_err());
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        let payload = token.split('.').nth(1).unwrap();
        assert!(
            v.verify(&format!("{none_header}.{payload}."), 1000)
                .is_err()
        );
        assert!(v.verify("garbage", 1000).is_err());
    }
}
