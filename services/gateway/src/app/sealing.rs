//! Webhook values sealed at rest, as the application reads and writes them: the
//! signing secret's sealing context, custom header values sealed on every write and,
//! on every read, opened for callers allowed to see secrets and masked for others.
//!
//! Why: custom header values are often the receiver's own API keys. Stored in clear
//! they leaked through a database dump and through `GET /webhooks` to partners holding
//! only `webhooks:read`. Values written before sealing are stored in clear until the
//! next write or `portico-gateway reseal`; both forms are read.

use std::collections::BTreeMap;

use portico_domain::ids::WebhookId;
use portico_signing::seal::{self, Keyring};

use crate::error::ApiError;
use crate::identity::{Caller, Scope};

/// What a caller who may not see secrets reads in place of a header value.
pub const MASK: &str = "***";

/// The sealing context of a webhook's signing secret.
pub fn secret_context(id: WebhookId) -> Vec<u8> {
    seal::webhook_secret_context(id.as_uuid().as_bytes())
}

/// Seals every value of `headers` for webhook `id` (names are kept in clear: they are
/// not secret and the owner needs to see which headers are set).
pub fn seal_headers(
    keys: &Keyring,
    id: WebhookId,
    headers: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ApiError> {
    headers
        .iter()
        .map(|(name, value)| {
            seal::seal_header_value(keys, id.as_uuid().as_bytes(), name, value)
                .map(|sealed| (name.clone(), sealed))
                .map_err(ApiError::internal)
        })
        .collect()
}

/// Who may read custom header values: whoever may read the signing secret (users,
/// services, partners with `webhooks:write`).
pub fn may_see_secrets(caller: &Caller) -> bool {
    caller.require(Scope::WebhooksWrite).is_ok()
}

/// A webhook's header values as `caller` may read them: opened, or masked with
/// [`MASK`] when the caller may not see secrets. A value that does not open (a key
/// missing from the keyring) is masked and logged rather than failing the read.
pub fn reveal_headers(
    keys: &Keyring,
    caller: &Caller,
    webhook_id: uuid::Uuid,
    headers: &mut BTreeMap<String, String>,
) {
    let visible = may_see_secrets(caller);
    let id = *webhook_id.as_bytes();
    for (name, value) in headers.iter_mut() {
        *value = if visible {
            match seal::open_header_value(keys, &id, name, value) {
                Ok((plain, _)) => plain,
                Err(err) => {
                    tracing::error!(webhook = %webhook_id, header = %name, %err,
                        "a custom header value does not open; shown masked");
                    MASK.to_owned()
                }
            }
        } else {
            MASK.to_owned()
        };
    }
}
