//! Property tests of the verifiers that read outside input: user JWTs and Standard
//! Webhooks signatures.
//!
//! Each property runs a few hundred generated cases from a fixed seed, so a CI run is
//! repeatable; set `PROPTEST_RNG_SEED` (and `PROPTEST_CASES`) to explore further.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portico_signing::jwt::{Claims, JwtVerifier};
use portico_signing::standard_webhooks::{WebhookSecret, signature_header, verify};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use ring::hmac;

/// A fixed seed unless `PROPTEST_RNG_SEED` is set; `cases` unless `PROPTEST_CASES` is
/// set; no regression files written into the source tree.
fn config(cases: u32) -> Config {
    let default = Config::default();
    Config {
        cases: std::env::var_os("PROPTEST_CASES").map_or(cases, |_| default.cases),
        rng_seed: match default.rng_seed {
            RngSeed::Random => RngSeed::Fixed(0x5165_4E00),
            fixed => fixed,
        },
        failure_persistence: None,
        ..default
    }
}

/// "Now" for every JWT check: any time a token could be checked at.
const NOW: i64 = 1_700_000_000;

fn claims() -> impl Strategy<Value = Claims> {
    (
        ".{1,40}",
        NOW + 1..i64::MAX,
        proptest::option::of(i64::MIN..=NOW),
    )
        .prop_map(|(sub, exp, nbf)| Claims { sub, exp, nbf })
}

/// A token whose three segments are base64url of the given header and payload text,
/// correctly signed with `key`.
fn signed_token(key: &[u8], header: &str, payload: &str) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

proptest! {
    #![proptest_config(config(256))]

    /// Any text, and any three segments of base64url characters, is refused or
    /// verified without panicking.
    #[test]
    fn jwt_verification_never_panics(
        text in prop_oneof![
            ".{0,120}",
            "[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_-]{0,50}",
        ],
        now in any::<i64>(),
    ) {
        let verifier = JwtVerifier::new(b"secret");
        let _ = verifier.verify(&text, now);
    }

    /// Correctly signed tokens with any header and payload text are judged without
    /// panicking; only an HS256 header with valid claims is accepted.
    #[test]
    fn signed_garbage_is_judged_without_panicking(
        header in prop_oneof![
            Just(r#"{"alg":"HS256"}"#.to_owned()),
            "\\{\"alg\":\"[A-Za-z0-9]{0,6}\"\\}",
            ".{0,30}",
        ],
        payload in prop_oneof![
            "\\{\"sub\":\".{0,10}\",\"exp\":-?[0-9]{1,20}(,\"nbf\":-?[0-9]{1,20})?\\}",
            ".{0,40}",
        ],
        now in any::<i64>(),
    ) {
        let verifier = JwtVerifier::new(b"secret");
        let token = signed_token(b"secret", &header, &payload);
        if let Ok(claims) = verifier.verify(&token, now) {
            let alg: serde_json::Value = serde_json::from_str(&header).unwrap_or_default();
            prop_assert_eq!(alg["alg"].as_str(), Some("HS256"));
            prop_assert!(claims.exp > now && !claims.sub.is_empty());
            prop_assert!(claims.nbf.is_none_or(|nbf| nbf <= now));
        }
    }

    /// A token issued for valid claims verifies to those claims; the same token is
    /// refused by another secret, after its expiry and before its not-before.
    #[test]
    fn issued_tokens_verify_only_with_their_secret_and_time(
        claims in claims(),
        secret in prop::collection::vec(any::<u8>(), 1..64),
        other in prop::collection::vec(any::<u8>(), 1..64),
    ) {
        let verifier = JwtVerifier::new(&secret);
        let token = verifier.issue(&claims);
        prop_assert_eq!(verifier.verify(&token, NOW), Ok(claims.clone()));
        if other != secret {
            prop_assert!(JwtVerifier::new(&other).verify(&token, NOW).is_err());
        }
        prop_assert!(verifier.verify(&token, claims.exp).is_err());
        if let Some(nbf) = claims.nbf.and_then(|n| n.checked_sub(1)) {
            prop_assert!(verifier.verify(&token, nbf).is_err());
        }
    }

    /// Changing any one character of a signed token (header, payload, signature or a
    /// separator) makes it refused.
    #[test]
    fn an_altered_token_is_refused(
        claims in claims(),
        position in any::<prop::sample::Index>(),
        replacement in any::<prop::sample::Index>(),
    ) {
        let verifier = JwtVerifier::new(b"s3cret");
        let token = verifier.issue(&claims);
        let mut bytes = token.clone().into_bytes();
        let at = position.index(bytes.len());
        let choices: Vec<u8> = (0x20u8..0x7f).filter(|b| *b != bytes[at]).collect();
        bytes[at] = *replacement.get(&choices);
        let altered = String::from_utf8(bytes).expect("ASCII");
        prop_assert!(verifier.verify(&altered, NOW).is_err(), "{} accepted", altered);
    }

    /// Only HS256 is accepted, even when the token is correctly signed with the key.
    #[test]
    fn other_algorithms_are_refused(alg in "[A-Za-z0-9]{0,8}", claims in claims()) {
        prop_assume!(alg != "HS256");
        let payload = serde_json::to_string(&claims).expect("claims serialise");
        let token = signed_token(b"secret", &format!(r#"{{"alg":"{alg}"}}"#), &payload);
        prop_assert!(JwtVerifier::new(b"secret").verify(&token, NOW).is_err());
    }
}

/// What one Standard Webhooks delivery is made of.
#[derive(Debug, Clone)]
struct Delivery {
    secret: Vec<u8>,
    msg_id: String,
    timestamp: i64,
    body: Vec<u8>,
}

fn delivery() -> impl Strategy<Value = Delivery> {
    (
        prop::collection::vec(any::<u8>(), 16..=64),
        "[A-Za-z0-9_-]{1,40}|.{0,20}",
        0i64..4_000_000_000,
        prop::collection::vec(any::<u8>(), 0..512),
    )
        .prop_map(|(secret, msg_id, timestamp, body)| Delivery {
            secret,
            msg_id,
            timestamp,
            body,
        })
}

fn verify_at(secret: &WebhookSecret, d: &Delivery, ts: &str, header: &str, body: &[u8]) -> bool {
    verify(secret, &d.msg_id, ts, header, body, d.timestamp, 300).is_ok()
}

proptest! {
    #![proptest_config(config(256))]

    /// A delivery signed with a secret verifies with that secret (also from its
    /// `whsec_` form, and when other keys sign beside it), and not with another.
    #[test]
    fn signatures_round_trip(d in delivery(), other in prop::collection::vec(any::<u8>(), 16..=64)) {
        let secret = WebhookSecret::from_bytes(&d.secret);
        let parsed = WebhookSecret::parse(&secret.to_whsec()).expect("its own form parses");
        let stranger = WebhookSecret::from_bytes(&other);
        let ts = d.timestamp.to_string();
        let alone = signature_header(std::slice::from_ref(&secret), &d.msg_id, d.timestamp, &d.body);
        let rotating = signature_header(&[stranger.clone(), secret.clone()], &d.msg_id, d.timestamp, &d.body);
        prop_assert!(verify_at(&secret, &d, &ts, &alone, &d.body));
        prop_assert!(verify_at(&parsed, &d, &ts, &alone, &d.body));
        prop_assert!(verify_at(&secret, &d, &ts, &rotating, &d.body));
        if other != d.secret {
            prop_assert!(!verify_at(&stranger, &d, &ts, &alone, &d.body));
        }
    }

    /// Changing any one byte of the body, or any one character of the message id,
    /// the timestamp or the signature header, makes the delivery refused.
    #[test]
    fn any_single_byte_tamper_is_refused(
        d in delivery(),
        part in 0usize..4,
        position in any::<prop::sample::Index>(),
        flip in 1u8..=255,
        replacement in any::<prop::sample::Index>(),
    ) {
        let secret = WebhookSecret::from_bytes(&d.secret);
        let ts = d.timestamp.to_string();
        let header = signature_header(std::slice::from_ref(&secret), &d.msg_id, d.timestamp, &d.body);
        // Replaces one character of ASCII text with another printable one.
        let change = |text: &str| -> String {
            let mut bytes = text.as_bytes().to_vec();
            let at = position.index(bytes.len());
            let choices: Vec<u8> = (0x20u8..0x7f).filter(|b| *b != bytes[at]).collect();
            bytes[at] = *replacement.get(&choices);
            String::from_utf8(bytes).expect("ASCII")
        };
        let refused = match part {
            0 => {
                prop_assume!(!d.body.is_empty());
                let mut body = d.body.clone();
                let at = position.index(body.len());
                body[at] ^= flip;
                !verify_at(&secret, &d, &ts, &header, &body)
            }
            1 => {
                prop_assume!(!d.msg_id.is_empty() && d.msg_id.is_ascii());
                let msg_id = change(&d.msg_id);
                verify(&secret, &msg_id, &ts, &header, &d.body, d.timestamp, 300).is_err()
            }
            2 => !verify_at(&secret, &d, &change(&ts), &header, &d.body),
            _ => !verify_at(&secret, &d, &ts, &change(&header), &d.body),
        };
        prop_assert!(refused);
    }

    /// Any headers at all, at any time, are refused or verified without panicking.
    #[test]
    fn verification_never_panics(
        ts in prop_oneof![".{0,24}", "-?[0-9]{1,20}"],
        header in prop_oneof![".{0,120}", "(v1,[A-Za-z0-9+/=]{0,50} ?){0,3}"],
        now in any::<i64>(),
        tolerance in any::<i64>(),
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let secret = WebhookSecret::from_bytes(&[7; 32]);
        let _ = verify(&secret, "msg_1", &ts, &header, &body, now, tolerance);
        let _ = WebhookSecret::parse(&header);
    }
}
