//! User tokens (JWT): HS256 with a shared secret, and RS256/ES256 with the public keys
//! of a JSON Web Key Set (JWKS) for platforms that sign with asymmetric keys; plus
//! optional issuer, audience and maximum-lifetime rules. Issuing (HS256 only) is for
//! tests and local tooling.
//!
//! The algorithm is taken from the token's header only to pick a key of that algorithm
//! this verifier holds: a token announcing an algorithm it has no key for (including
//! `none`, or HS256 when only a JWKS is configured) is refused before its signature is
//! looked at, so an RSA public key can never be used as an HMAC secret.

use std::sync::{Arc, RwLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::{hmac, signature};
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

/// The registered claims the rules look at, beside [`Claims`].
#[derive(Deserialize)]
struct Registered {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    iat: Option<i64>,
}

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3).
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, wanted: &str) -> bool {
        match self {
            Audience::One(a) => a == wanted,
            Audience::Many(all) => all.iter().any(|a| a == wanted),
        }
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// Rules a token must meet besides its signature and times.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenRules {
    /// When set, `iss` must equal it.
    pub issuer: Option<String>,
    /// When set, `aud` must be or contain it.
    pub audience: Option<String>,
    /// When set, a token may live at most this many seconds (`exp - iat`, or `exp -
    /// now` for a token without `iat`), so a leaked long-lived token is refused.
    pub max_lifetime_secs: Option<i64>,
}

/// One public key of a JWKS.
#[derive(Debug, Clone)]
enum PublicKey {
    /// RS256: modulus and exponent, big-endian.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// ES256: the uncompressed P-256 point (0x04 || x || y).
    P256(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Jwk {
    kid: Option<String>,
    key: PublicKey,
}

impl Jwk {
    fn alg(&self) -> &'static str {
        match self.key {
            PublicKey::Rsa { .. } => "RS256",
            PublicKey::P256(_) => "ES256",
        }
    }

    fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        match &self.key {
            PublicKey::Rsa { n, e } => signature::RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, sig)
                .is_ok(),
            PublicKey::P256(point) => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, sig)
                    .is_ok()
            }
        }
    }
}

#[derive(Deserialize)]
struct JwkSetDoc {
    keys: Vec<serde_json::Value>,
}

fn b64(value: &serde_json::Value, field: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(value.get(field)?.as_str()?).ok()
}

/// Parses a JWKS document into the keys this verifier can use: RSA keys (RS256) and
/// P-256 EC keys (ES256); keys for other uses, curves or algorithms are skipped.
fn parse_jwks(json: &str) -> Result<Vec<Jwk>, SigningError> {
    let doc: JwkSetDoc = serde_json::from_str(json)
        .map_err(|_| SigningError::MalformedSecret("JWKS is not a {\"keys\": [...]} document"))?;
    let mut keys = Vec::new();
    for k in &doc.keys {
        if k.get("use")
            .and_then(|u| u.as_str())
            .is_some_and(|u| u != "sig")
        {
            continue;
        }
        let alg = k.get("alg").and_then(|a| a.as_str());
        let kid = k.get("kid").and_then(|v| v.as_str()).map(str::to_owned);
        let key = match k.get("kty").and_then(|v| v.as_str()) {
            Some("RSA") if alg.is_none_or(|a| a == "RS256") => match (b64(k, "n"), b64(k, "e")) {
                (Some(n), Some(e)) => PublicKey::Rsa { n, e },
                _ => continue,
            },
            Some("EC")
                if k.get("crv").and_then(|v| v.as_str()) == Some("P-256")
                    && alg.is_none_or(|a| a == "ES256") =>
            {
                match (b64(k, "x"), b64(k, "y")) {
                    (Some(x), Some(y)) if x.len() == 32 && y.len() == 32 => {
                        let mut point = Vec::with_capacity(65);
                        point.push(4);
                        point.extend_from_slice(&x);
                        point.extend_from_slice(&y);
                        PublicKey::P256(point)
                    }
                    _ => continue,
                }
            }
            _ => continue,
        };
        keys.push(Jwk { kid, key });
    }
    Ok(keys)
}

/// Verifies user tokens. Cheap to clone; the JWKS keys are shared and can be replaced
/// while requests are verified ([`JwtVerifier::set_jwks`]).
#[derive(Clone)]
pub struct JwtVerifier {
    hs256: Option<hmac::Key>,
    jwks: Arc<RwLock<Vec<Jwk>>>,
    rules: TokenRules,
}

impl JwtVerifier {
    /// A verifier of HS256 tokens signed with `PORTICO_JWT_SECRET`.
    pub fn new(secret: &[u8]) -> Self {
        Self {
            hs256: Some(hmac::Key::new(hmac::HMAC_SHA256, secret)),
            jwks: Arc::default(),
            rules: TokenRules::default(),
        }
    }

    /// A verifier that accepts only RS256/ES256 tokens of a JWKS (none loaded yet).
    pub fn jwks_only() -> Self {
        Self {
            hs256: None,
            jwks: Arc::default(),
            rules: TokenRules::default(),
        }
    }

    /// The same keys with these rules.
    pub fn with_rules(mut self, rules: TokenRules) -> Self {
        self.rules = rules;
        self
    }

    /// Replaces the JWKS keys with those of `json`; returns how many are usable. A
    /// document that does not parse leaves the current keys in place.
    pub fn set_jwks(&self, json: &str) -> Result<usize, SigningError> {
        let keys = parse_jwks(json)?;
        let n = keys.len();
        if let Ok(mut current) = self.jwks.write() {
            *current = keys;
        }
        Ok(n)
    }

    /// Whether the token's key id is one this verifier holds (an unknown id means the
    /// platform rotated its keys: time to fetch the JWKS again).
    pub fn knows_kid(&self, kid: &str) -> bool {
        self.jwks
            .read()
            .map(|keys| keys.iter().any(|k| k.kid.as_deref() == Some(kid)))
            .unwrap_or(false)
    }

    /// Checks algorithm, signature, expiry, not-before and the rules, and returns the
    /// claims.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, SigningError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(SigningError::Verification("token is not a JWT"));
        };
        let header: Header = decode_json(h)?;
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| SigningError::Verification("signature is not base64url"))?;
        let signed = &token.as_bytes()[..h.len() + 1 + p.len()];
        match header.alg.as_str() {
            "HS256" => {
                let key = self
                    .hs256
                    .as_ref()
                    .ok_or(SigningError::Verification("unsupported algorithm"))?;
                hmac::verify(key, signed, &sig)
                    .map_err(|_| SigningError::Verification("bad signature"))?;
            }
            alg @ ("RS256" | "ES256") => {
                let keys = self
                    .jwks
                    .read()
                    .map_err(|_| SigningError::Verification("key set unavailable"))?;
                let mut candidates = keys.iter().filter(|k| {
                    k.alg() == alg
                        && (header.kid.is_none() || k.kid.as_deref() == header.kid.as_deref())
                });
                let mut any = false;
                let verified = candidates.any(|k| {
                    any = true;
                    k.verify(signed, &sig)
                });
                if !any {
                    return Err(SigningError::Verification(
                        "no key for the token's kid and algorithm",
                    ));
                }
                if !verified {
                    return Err(SigningError::Verification("bad signature"));
                }
            }
            _ => return Err(SigningError::Verification("unsupported algorithm")),
        }
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
        self.check_rules(p, &claims, now)?;
        Ok(claims)
    }

    fn check_rules(&self, payload: &str, claims: &Claims, now: i64) -> Result<(), SigningError> {
        let rules = &self.rules;
        if rules == &TokenRules::default() {
            return Ok(());
        }
        let registered: Registered = decode_json(payload)?;
        if let Some(issuer) = &rules.issuer
            && registered.iss.as_deref() != Some(issuer.as_str())
        {
            return Err(SigningError::Verification("wrong issuer"));
        }
        if let Some(audience) = &rules.audience
            && !registered
                .aud
                .as_ref()
                .is_some_and(|a| a.contains(audience))
        {
            return Err(SigningError::Verification("wrong audience"));
        }
        if let Some(max) = rules.max_lifetime_secs {
            let lifetime = claims.exp.saturating_sub(registered.iat.unwrap_or(now));
            if lifetime > max {
                return Err(SigningError::Verification(
                    "token lives longer than allowed",
                ));
            }
        }
        Ok(())
    }

    /// Issues an HS256 token; used by tests, the bench tool and local tooling. A
    /// JWKS-only verifier has no secret and issues an unsigned-looking garbage token.
    pub fn issue(&self, claims: &Claims) -> String {
        self.issue_json(&serde_json::to_value(claims).unwrap_or_default())
    }

    /// Issues an HS256 token with any payload (tests of the issuer/audience rules).
    pub fn issue_json(&self, payload: &serde_json::Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(payload).unwrap_or_default());
        let signing_input = format!("{header}.{payload}");
        let sig = match &self.hs256 {
            Some(key) => hmac::sign(key, signing_input.as_bytes()).as_ref().to_vec(),
            None => Vec::new(),
        };
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
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

    fn sign_with(
        alg: &str,
        kid: &str,
        payload: &serde_json::Value,
        sign: impl Fn(&[u8]) -> Vec<u8>,
    ) -> String {
        let header = URL_SAFE_NO_PAD
            .encode(serde_json::json!({"alg": alg, "kid": kid, "typ": "JWT"}).to_string());
        let payload = URL_SAFE_NO_PAD.encode(payload.to_string());
        let input = format!("{header}.{payload}");
        let sig = sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    /// An ES256 token signed with a key of the JWKS verifies; a key id it does not know,
    /// another key with the same id, and HS256 on a JWKS-only verifier do not.
    #[test]
    fn es256_tokens_verify_against_the_jwks() {
        let rng = ring::rand::SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        let point = signature::KeyPair::public_key(&pair).as_ref().to_vec();
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..]),
        }]});
        let v = JwtVerifier::jwks_only();
        assert_eq!(v.set_jwks(&jwks.to_string()).unwrap(), 1);
        assert!(v.knows_kid("k1") && !v.knows_kid("k2"));
        let payload = serde_json::json!({"sub": "user-1", "exp": 2000});
        let sign = |m: &[u8]| pair.sign(&rng, m).unwrap().as_ref().to_vec();
        assert_eq!(
            v.verify(&sign_with("ES256", "k1", &payload, sign), 1000)
                .unwrap()
                .sub,
            "user-1"
        );
        assert!(
            v.verify(&sign_with("ES256", "k2", &payload, sign), 1000)
                .is_err()
        );
        let other = signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let other = signature::EcdsaKeyPair::from_pkcs8(alg, other.as_ref(), &rng).unwrap();
        let forged = sign_with("ES256", "k1", &payload, |m| {
            other.sign(&rng, m).unwrap().as_ref().to_vec()
        });
        assert!(v.verify(&forged, 1000).is_err());
        // No HMAC secret: an HS256 token is refused whatever it is signed with.
        let hs = JwtVerifier::new(b"x").issue_json(&payload);
        assert!(v.verify(&hs, 1000).is_err());
    }

    /// An RS256 token signed with the test RSA key verifies against its public half.
    #[test]
    fn rs256_tokens_verify_against_the_jwks() {
        let pair =
            signature::RsaKeyPair::from_der(include_bytes!("../testdata/rsa2048-test-only.der"))
                .unwrap();
        let public = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(pair.public());
        let jwks = serde_json::json!({"keys": [{
            "kty": "RSA", "kid": "r1", "alg": "RS256",
            "n": URL_SAFE_NO_PAD.encode(&public.n),
            "e": URL_SAFE_NO_PAD.encode(&public.e),
        }]});
        let v = JwtVerifier::jwks_only();
        assert_eq!(v.set_jwks(&jwks.to_string()).unwrap(), 1);
        let rng = ring::rand::SystemRandom::new();
        let sign = |m: &[u8]| {
            let mut sig = vec![0; pair.public().modulus_len()];
            pair.sign(&signature::RSA_PKCS1_SHA256, &rng, m, &mut sig)
                .unwrap();
            sig
        };
        let payload = serde_json::json!({"sub": "user-1", "exp": 2000});
        assert!(
            v.verify(&sign_with("RS256", "r1", &payload, sign), 1000)
                .is_ok()
        );
        // The same RSA key announced as ES256 finds no key.
        assert!(
            v.verify(&sign_with("ES256", "r1", &payload, sign), 1000)
                .is_err()
        );
    }

    /// Issuer, audience (string or array) and maximum lifetime are enforced when set.
    #[test]
    fn issuer_audience_and_lifetime_rules() {
        let v = JwtVerifier::new(b"s").with_rules(TokenRules {
            issuer: Some("https://platform.example".into()),
            audience: Some("portico".into()),
            max_lifetime_secs: Some(3600),
        });
        let token = |p: serde_json::Value| v.issue_json(&p);
        let ok = serde_json::json!({"sub": "u", "exp": 2000, "iat": 1000,
            "iss": "https://platform.example", "aud": ["other", "portico"]});
        assert!(v.verify(&token(ok.clone()), 1500).is_ok());
        let mut wrong_iss = ok.clone();
        wrong_iss["iss"] = "https://evil.example".into();
        assert!(v.verify(&token(wrong_iss), 1500).is_err());
        let mut wrong_aud = ok.clone();
        wrong_aud["aud"] = "someone-else".into();
        assert!(v.verify(&token(wrong_aud), 1500).is_err());
        let mut long = ok.clone();
        long["exp"] = 100_000.into();
        assert!(v.verify(&token(long), 1500).is_err());
        let mut no_iat = ok;
        no_iat.as_object_mut().unwrap().remove("iat");
        assert!(v.verify(&token(no_iat), 1500).is_ok());
    }
}
