//! `/readyz` for services that need PostgreSQL and JetStream.
//!
//! Every check talks to the server it is about, within [`CHECK_TIMEOUT`]: a replica is
//! only ready when PostgreSQL answers, its schema is at least as new as the binary's
//! migrations (a gateway started before `migrate` would otherwise answer 500 to every
//! call), and the JetStream server answers for the jobs stream (not merely a cached
//! handle: while NATS is down, the stream-info request fails).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::admin::ReadinessCheck;
use portico_storage::AppliedSchema;
use sqlx::PgPool;

/// The longest a readiness probe waits for one dependency.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Ready when PostgreSQL answers with a current schema and JetStream answers for our
/// stream.
pub struct DependencyReadiness {
    /// The service's pool.
    pub pool: PgPool,
    /// The service's JetStream context.
    pub jetstream: async_nats::jetstream::Context,
    /// The stream that must exist.
    pub stream: String,
    /// The newest migration this binary was built with; an older schema is not ready.
    pub schema_version: i64,
}

/// PostgreSQL's part of the check: `None` when ready, else the reason.
async fn database(pool: &PgPool, want: i64) -> Option<String> {
    let applied =
        tokio::time::timeout(CHECK_TIMEOUT, portico_storage::applied_schema_version(pool)).await;
    match applied {
        Ok(Ok(AppliedSchema::Applied(Some(v)))) if v >= want => None,
        Ok(Ok(AppliedSchema::Applied(v))) => Some(format!(
            "schema (migration {} applied, {want} needed: run `portico-gateway migrate`)",
            v.unwrap_or(0)
        )),
        Ok(Ok(AppliedSchema::NotMigrated)) => {
            Some("schema (not migrated: run `portico-gateway migrate`)".to_owned())
        }
        Ok(Err(_)) | Err(_) => Some("postgresql".to_owned()),
    }
}

impl ReadinessCheck for DependencyReadiness {
    fn check(&self) -> Pin<Box<dyn Future<Output = Vec<String>> + Send + '_>> {
        Box::pin(async move {
            // A stream-info request is a real round trip to the JetStream server.
            let js = tokio::time::timeout(CHECK_TIMEOUT, self.jetstream.get_stream(&self.stream));
            let (db, js) = tokio::join!(database(&self.pool, self.schema_version), js);
            let mut failed = Vec::new();
            failed.extend(db);
            if !matches!(js, Ok(Ok(_))) {
                failed.push("jetstream".to_owned());
            }
            failed
        })
    }
}
