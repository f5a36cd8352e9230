//! PostgreSQL access for every Portico service.
//!
//! # Layout
//! - this module: connecting, the embedded migrations, the applied schema version
//!   (readiness), and creating a database.
//! - one module per table family below holds every statement of its tables, checked at
//!   compile time; set-based statements (`unnest`) wherever rows come in numbers.
//! - [`bulk_orders`]: bulk-order batches, their chunks of raw orders and per-order
//!   results: submission and reads (gateway), claim, chunks, finish and expiry
//!   (batch-processor); one batch row type both read.
//! - [`orders`]: orders and their line items, created a chunk at a time
//!   (batch-processor) and read back (gateway).
//! - [`webhooks`]: webhook endpoints and their sealed signing secrets; the owner's row
//!   (gateway) and the active-endpoint view with secrets (dispatcher).
//! - [`listen`]: listen endpoints (`portico listen`): marking, the gateway's
//!   heartbeat and the dispatcher's sweep of abandoned ones.
//! - [`retry_jobs`]: retry-failed jobs, from creation (gateway) to re-queueing the
//!   matching deliveries chunk by chunk (dispatcher).
//! - [`integrations`]: partner integrations, their credentials (api keys, secret
//!   hashes, rotation) and their daily call counters.
//! - [`integration_templates`]: integration templates users save (CRUD per owner),
//!   and creating an integration with its credential and webhook in one transaction.
//! - [`usage`]: the partner usage log (batched writes, keyset pages, grouped totals).
//! - [`deliveries`]: webhook deliveries and their attempts: the dispatcher's set-based
//!   hot path (record, claim, write results, endpoint health) and the gateway's reads
//!   and manual retry.
//! - [`events`]: the record of every published event, written a chunk at a time.
//! - [`outbox`]: the transactional outbox: jobs added inside the producer's
//!   transaction, claimed, published and deleted by the relay, and its backlog.
//! - [`dead_letters`]: jobs the workers gave up on, and the operators' list, inspection,
//!   replay and discard with their audit rows.
//! - [`portal_sessions`]: partner-portal login links and browser sessions (hashes only).
//! - [`analytics`]: delivery rollups (per minute, hour and day), added to by the
//!   dispatcher as it records attempts, and the analytics queries that read them.
//! - [`reseal`]: paging through sealed values and replacing them compare-and-swap,
//!   for the re-seal job that moves secrets to the newest secrets key.
//! - [`idempotency`]: idempotency keys of creates: claim, the stored (sealed) answer,
//!   release, and their 24-hour retention.
//! - [`versions`]: a row's version (`updated_at`) locked for a conditional write
//!   (`If-Match`).
//! - [`audit`]: the tamper-evident audit log: one hash chain per owner, appended in
//!   the transaction of the change it records, listed, verified and purged.
//! - [`retention`]: deleting history (events, deliveries, attempts, usage logs, dead
//!   letters) past its retention, in bounded batches or by whole partitions.
//! - [`partitions`]: the day partitions of attempts and bulk-order results: created
//!   ahead, listed, and dropped whole by retention.
//!
//! The schema lives in `migrations/` beside this crate and is embedded in every binary,
//! applied by `portico-gateway migrate` (or at gateway start when configured).

pub mod analytics;
pub mod audit;
pub mod bulk_orders;
pub mod dead_letters;
pub mod deliveries;
pub mod events;
pub mod idempotency;
pub mod integration_templates;
pub mod integrations;
pub mod listen;
pub mod orders;
pub mod outbox;
pub mod partitions;
pub mod portal_sessions;
pub mod recovery;
pub mod reseal;
pub mod retention;
pub mod retry_jobs;
pub mod usage;
pub mod versions;
pub mod webhooks;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{ConnectOptions, PgPool};

/// The schema migrations, embedded at compile time. sqlx takes a PostgreSQL advisory
/// lock while migrating, so several replicas starting at once apply them exactly once.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The newest migration embedded in this binary: readiness fails while the database's
/// schema is older, so no replica serves traffic it would answer with 500s.
pub fn schema_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// What the database says about its schema, for readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppliedSchema {
    /// No migration was ever applied: the migrator's table does not exist.
    NotMigrated,
    /// The newest migration applied successfully; `None` when none succeeded yet.
    Applied(Option<i64>),
}

/// The newest migration the database has applied successfully, compared with
/// [`schema_version`] by readiness. A database never migrated is told apart from a
/// failed read, so readiness can say which step is missing.
///
/// The one runtime-checked statement here: `_sqlx_migrations` belongs to the sqlx
/// migrator, not to `migrations/`, so the scratch database the query cache is
/// generated from (migrated with `psql`) has no such table to check it against.
pub async fn applied_schema_version(
    executor: impl sqlx::PgExecutor<'_>,
) -> Result<AppliedSchema, sqlx::Error> {
    let applied = sqlx::query_scalar::<_, Option<i64>>(
        "SELECT max(version) FROM _sqlx_migrations WHERE success",
    )
    .fetch_one(executor)
    .await;
    match applied {
        Ok(version) => Ok(AppliedSchema::Applied(version)),
        // undefined_table
        Err(e) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("42P01") => {
            Ok(AppliedSchema::NotMigrated)
        }
        Err(e) => Err(e),
    }
}

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database answered with an error or could not be reached.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// The configured URL is not a PostgreSQL URL.
    #[error("invalid DATABASE_URL: {0}")]
    InvalidUrl(String),
}

/// Opens a pool of up to `max_connections`, reused for the life of the process.
///
/// Connections are not pinged when taken from the pool: that would cost a round trip
/// per transaction on the hot paths, and a connection that died in the pool fails its
/// next statement, which every caller already treats as a retryable error (jobs are
/// nak'ed, requests answer 503).
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, StorageError> {
    open(parse_url(url)?, max_connections).await
}

/// The pool settings every Portico pool shares (see [`connect`]).
///
/// JIT compilation is off for Portico's sessions (`jit=off`, unless the `DATABASE_URL`'s
/// `options` set `jit` themselves): every statement Portico runs
/// is short, and PostgreSQL compiles one with LLVM whenever its estimated cost passes
/// `jit_above_cost`, which statements spanning the day partitions of several tables do
/// (the retry poller's claim joins deliveries and events). Compiling took more
/// PostgreSQL CPU than running them: 16 % of it in LLVM and about 20 us per delivery
/// (docs/BENCHMARKS.md).
async fn open(options: PgConnectOptions, max_connections: u32) -> Result<PgPool, StorageError> {
    let sets_jit = options.get_options().is_some_and(|o| o.contains("jit="));
    let options = if sets_jit {
        options
    } else {
        options.options([("jit", "off")])
    };
    let options =
        options.log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1));
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        .connect_with(options)
        .await?)
}

/// Parses `DATABASE_URL`. A URL that names no `sslmode` and points at a loopback
/// address or a Unix socket connects without TLS: sqlx would otherwise negotiate TLS
/// (`prefer`) and encrypt traffic that never leaves the machine, which cost about a
/// quarter of the gateway's CPU when creating webhooks. An explicit `sslmode` is
/// always honoured.
pub fn parse_url(url: &str) -> Result<PgConnectOptions, StorageError> {
    let options: PgConnectOptions = url
        .parse()
        .map_err(|e: sqlx::Error| StorageError::InvalidUrl(e.to_string()))?;
    let names_sslmode = url
        .split_once('?')
        .is_some_and(|(_, query)| query.split('&').any(|kv| kv.starts_with("sslmode=")));
    if !names_sslmode && is_local(options.get_host()) {
        return Ok(options.ssl_mode(PgSslMode::Disable));
    }
    Ok(options)
}

/// Loopback addresses, `localhost` and Unix socket directories.
fn is_local(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether `err` is about the data of a statement rather than the database's health:
/// a data exception (SQLSTATE class 22, e.g. a NUL byte), an integrity violation (23)
/// or a program limit (54, e.g. an index row too large), or a value that could not be
/// encoded. Running the same statement again fails the same way, so workers isolate
/// the item that causes it instead of retrying their whole chunk; every other error
/// (connection, pool, shutdown, serialization) is worth retrying as it is.
pub fn is_data_error(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Encode(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("22") || c.starts_with("23") || c.starts_with("54")),
        _ => false,
    }
}

/// Applies every pending migration.
pub async fn migrate(pool: &PgPool) -> Result<(), StorageError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Creates the database named in `url` if it does not exist yet (local runs and tests
/// start from an empty server).
pub async fn ensure_database(url: &str) -> Result<(), StorageError> {
    let options = parse_url(url)?;
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let admin = options.clone().database("postgres");
    let mut conn = admin.connect().await?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut conn)
        .await?;
    if exists.is_none() {
        let quoted = name.replace('"', "\"\"");
        let create = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{quoted}\"")))
            .execute(&mut conn)
            .await;
        if let Err(err) = create {
            // Another process may have created it between our check and the CREATE.
            let raced = err
                .as_database_error()
                .and_then(|e| e.code())
                .is_some_and(|c| c == "42P04" || c == "23505");
            if !raced {
                return Err(err.into());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls_disabled(url: &str) -> bool {
        let options = parse_url(url).expect("valid url");
        format!("{options:?}").contains("ssl_mode: Disable")
    }

    #[test]
    fn loopback_without_sslmode_skips_tls() {
        assert!(tls_disabled("postgres://postgres@127.0.0.1:5432/test"));
        assert!(tls_disabled("postgres://postgres@localhost/test"));
        assert!(tls_disabled("postgres://postgres@[::1]:5432/test"));
    }

    #[test]
    fn explicit_sslmode_and_remote_hosts_are_left_alone() {
        assert!(!tls_disabled(
            "postgres://postgres@127.0.0.1:5432/test?sslmode=require"
        ));
        assert!(!tls_disabled("postgres://postgres@db.internal:5432/test"));
        assert!(!tls_disabled("postgres://postgres@10.0.0.7:5432/test"));
    }

    #[test]
    fn garbage_is_refused() {
        assert!(matches!(
            parse_url("postgres://postgres@127.0.0.1:notaport/test"),
            Err(StorageError::InvalidUrl(_))
        ));
    }
}
