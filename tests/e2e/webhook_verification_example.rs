use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;

/// How far `webhook-timestamp` may be from our clock (replay protection).
const TOLERANCE_SECS: i64 = 5 * 60;

/// Verifies a Portico webhook request and returns its body once it is authentic.
///
/// `secret` is the webhook's signing secret (`whsec_...`); `webhook_id`,
/// `webhook_timestamp` and `webhook_signature` are the request headers of those
/// names; `body` is the raw request body exactly as received (verify before parsing).
pub fn verify_webhook<'a>(
    secret: &str,
    webhook_id: &str,
    webhook_timestamp: &str,
    webhook_signature: &str,
    body: &'a [u8],
) -> Result<&'a [u8], &'static str> {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .map_err(|_| "the secret is not whsec_<base64>")?;
    let timestamp: i64 = webhook_timestamp
        .parse()
        .map_err(|_| "webhook-timestamp is not an integer")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "the clock is before 1970")?
        .as_secs() as i64;
    if (now - timestamp).abs() > TOLERANCE_SECS {
        return Err("webhook-timestamp is too far from now");
    }
    // The signed content is "{webhook-id}.{webhook-timestamp}.{body}".
    let mut signed =
        Vec::with_capacity(webhook_id.len() + webhook_timestamp.len() + body.len() + 2);
    signed.extend_from_slice(webhook_id.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(webhook_timestamp.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
    // One "v1,<base64>" entry per active secret, separated by spaces: any may match.
    for entry in webhook_signature.split(' ') {
        if let Some(signature) = entry.strip_prefix("v1,") {
            if let Ok(signature) = STANDARD.decode(signature) {
                // ring compares in constant time.
                if hmac::verify(&key, &signed, &signature).is_ok() {
                    return Ok(body);
                }
            }
        }
    }
    Err("no valid signature")
}
