//! `portico-gateway reseal`: moves every sealed value to the newest secrets key.
//!
//! Why a subcommand: like `migrate`, it is an operator's one-off step of a key
//! rotation (add the new key first in `PORTICO_SECRETS_KEYS` on every replica, run
//! this, then remove the old key), run as a Job next to the serving replicas. Webhook
//! signing secrets and custom header values are read in keyset pages of
//! `--batch` (`PORTICO_RESEAL_BATCH`) rows; each value that is not already under the newest key is
//! opened, sealed again under it and written back compare-and-swap
//! ([`portico_storage::reseal`]). So the job is idempotent (a second run finds nothing
//! to do), resumable (stopped half way, the next run skips what is done) and safe next
//! to live writes (a value rotated or edited meanwhile is left as its writer left it).
//! Values that do not open with any configured key are counted and reported, never
//! rewritten: removing a key they need would lose them.

use portico_domain::ids::WebhookId;
use portico_signing::seal::{self, Keyring};
use portico_storage::reseal as store;
use sqlx::PgPool;

use crate::config::{ConfigError, GatewayConfig, keyring, peppers};

/// Credentials per pepper id (`None`: hashed before peppers had ids), for the report.
pub type PepperCounts = Vec<(Option<String>, i64)>;

/// The `reseal` sub-command: connects, re-seals everything under the newest key and
/// counts the live credentials per pepper (a hash cannot be re-computed without its
/// secret, so an old pepper stays configured until its count is zero).
pub async fn run(
    config: &GatewayConfig,
    batch: i64,
) -> Result<(ResealReport, PepperCounts), ResealError> {
    let keys = keyring(config)?;
    peppers(config)?;
    let pool = portico_storage::connect(&config.common.database_url, 2).await?;
    tracing::info!(newest = keys.current_key_id(), keys = ?keys.key_ids(), "re-sealing");
    let report = reseal_all(&pool, &keys, batch).await?;
    record(&pool, &keys, &report).await?;
    let counts = store::credentials_per_pepper(&pool).await?;
    pool.close().await;
    Ok((report, counts))
}

/// Writes the run to the audit log's system chain (no user's resources changed in
/// substance: the same secrets, sealed under another key), as the operator `reseal`.
async fn record(pool: &PgPool, keys: &Keyring, r: &ResealReport) -> Result<(), ResealError> {
    let operator = crate::identity::Operator {
        name: "reseal".to_owned(),
        request_id: None,
        client_addr: None,
    };
    let entry = crate::app::audit::AuditEntry::new(
        "secrets.resealed",
        "secrets_key",
        keys.current_key_id(),
    )
    .detail("secretsResealed", r.secrets_resealed)
    .detail("secretsUnreadable", r.secrets_unreadable)
    .detail("webhooksResealed", r.webhooks_resealed)
    .detail("webhooksUnreadable", r.webhooks_unreadable);
    let mut tx = pool.begin().await?;
    crate::app::audit::record_operator(&mut tx, &operator, None, entry)
        .await
        .map_err(|e| ResealError::Audit(e.to_string()))?;
    tx.commit().await?;
    Ok(())
}

/// What one run did, per kind of value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResealReport {
    /// Signing secrets sealed again under the newest key.
    pub secrets_resealed: u64,
    /// Signing secrets already under the newest key.
    pub secrets_current: u64,
    /// Signing secrets changed by a rotation while the job ran (left alone).
    pub secrets_changed_meanwhile: u64,
    /// Signing secrets that open with no configured key.
    pub secrets_unreadable: u64,
    /// Webhooks whose header values were sealed again (or sealed for the first time).
    pub webhooks_resealed: u64,
    /// Webhooks whose header values were all under the newest key.
    pub webhooks_current: u64,
    /// Webhooks edited while the job ran (left alone).
    pub webhooks_changed_meanwhile: u64,
    /// Webhooks with a header value that opens with no configured key (left alone).
    pub webhooks_unreadable: u64,
}

/// Why the job stopped.
#[derive(Debug, thiserror::Error)]
pub enum ResealError {
    /// The keys or peppers are misconfigured.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Connecting to PostgreSQL failed.
    #[error(transparent)]
    Connect(#[from] portico_storage::StorageError),
    /// A database statement failed; rerun to resume.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Sealing failed (the system random source).
    #[error("sealing: {0}")]
    Seal(#[from] portico_signing::SigningError),
    /// The run's audit record could not be written (the values are re-sealed).
    #[error("audit record: {0}")]
    Audit(String),
}

/// Re-seals every signing secret and every webhook's custom header values under the
/// newest key of `keys`, `batch` rows per statement.
pub async fn reseal_all(
    pool: &PgPool,
    keys: &Keyring,
    batch: i64,
) -> Result<ResealReport, ResealError> {
    let batch = batch.max(1);
    let mut report = ResealReport::default();
    reseal_secrets(pool, keys, batch, &mut report).await?;
    reseal_headers(pool, keys, batch, &mut report).await?;
    Ok(report)
}

async fn reseal_secrets(
    pool: &PgPool,
    keys: &Keyring,
    batch: i64,
    report: &mut ResealReport,
) -> Result<(), ResealError> {
    let mut after = None;
    loop {
        let page = store::secrets_after(pool, after, batch).await?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = Some(last.id);
        for secret in &page {
            let context = seal::webhook_secret_context(secret.webhook_id.as_uuid().as_bytes());
            let opened = match keys.open(&context, &secret.ciphertext) {
                Ok(opened) => opened,
                Err(err) => {
                    tracing::error!(secret = %secret.id, webhook = %secret.webhook_id.as_uuid(), %err,
                        "a signing secret opens with no configured key; left as it is");
                    report.secrets_unreadable += 1;
                    continue;
                }
            };
            if opened.current {
                report.secrets_current += 1;
                continue;
            }
            let sealed = keys.seal(&context, &opened.plaintext)?;
            if store::replace_secret(pool, secret.id, &secret.ciphertext, &sealed).await? {
                report.secrets_resealed += 1;
            } else {
                report.secrets_changed_meanwhile += 1;
            }
        }
        tracing::info!(
            resealed = report.secrets_resealed,
            current = report.secrets_current,
            "re-sealing signing secrets"
        );
    }
}

/// What to do with one webhook's headers.
enum HeadersPlan {
    Current,
    Unreadable,
    Reseal(serde_json::Value),
}

fn plan_headers(keys: &Keyring, webhook_id: WebhookId, stored: &serde_json::Value) -> HeadersPlan {
    let serde_json::Value::Object(map) = stored else {
        // Not written by the API; the dispatcher skips it too.
        return HeadersPlan::Current;
    };
    let id = webhook_id.as_uuid();
    let mut all_current = true;
    let mut out = serde_json::Map::with_capacity(map.len());
    for (name, value) in map {
        let Some(text) = value.as_str() else {
            out.insert(name.clone(), value.clone());
            continue;
        };
        match seal::open_header_value(keys, id.as_bytes(), name, text) {
            Ok((_, true)) => {
                out.insert(name.clone(), value.clone());
            }
            Ok((plain, false)) => {
                match seal::seal_header_value(keys, id.as_bytes(), name, &plain) {
                    Ok(sealed) => {
                        all_current = false;
                        out.insert(name.clone(), serde_json::Value::String(sealed));
                    }
                    Err(_) => return HeadersPlan::Unreadable,
                }
            }
            Err(err) => {
                tracing::error!(webhook = %id, header = %name, %err,
                    "a custom header value opens with no configured key; webhook left as it is");
                return HeadersPlan::Unreadable;
            }
        }
    }
    if all_current {
        HeadersPlan::Current
    } else {
        HeadersPlan::Reseal(serde_json::Value::Object(out))
    }
}

async fn reseal_headers(
    pool: &PgPool,
    keys: &Keyring,
    batch: i64,
    report: &mut ResealReport,
) -> Result<(), ResealError> {
    let mut after = None;
    loop {
        let page = store::headers_after(pool, after, batch).await?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = Some(last.webhook_id);
        for row in &page {
            match plan_headers(keys, row.webhook_id, &row.headers) {
                HeadersPlan::Current => report.webhooks_current += 1,
                HeadersPlan::Unreadable => report.webhooks_unreadable += 1,
                HeadersPlan::Reseal(new) => {
                    if store::replace_headers(pool, row.webhook_id, &row.headers, &new).await? {
                        report.webhooks_resealed += 1;
                    } else {
                        report.webhooks_changed_meanwhile += 1;
                    }
                }
            }
        }
        tracing::info!(
            resealed = report.webhooks_resealed,
            current = report.webhooks_current,
            "re-sealing custom header values"
        );
    }
}
