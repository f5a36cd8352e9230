//! `/readyz` for services that need PostgreSQL and JetStream.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use portico_telemetry::admin::ReadinessCheck;
use sqlx::PgPool;

/// Ready when PostgreSQL answers a query and the NATS connection is up with JetStream
/// answering for our stream.
pub struct DependencyReadiness {
    /// The service's pool.
    pub pool: PgPool,
    /// The service's JetStream context.
    pub jetstream: async_nats::jetstream::Context,
    /// The stream that must exist.
    pub stream: String,
}

impl ReadinessCheck for DependencyReadiness {
    fn check(&self) -> Pin<Box<dyn Future<Output = Vec<String>> + Send + '_>> {
        Box::pin(async move {
            let mut failed = Vec::new();
            let db = tokio::time::timeout(
                Duration::from_secs(2),
                sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&self.pool),
            )
            .await;
            if !matches!(db, Ok(Ok(1))) {
                failed.push("postgresql".to_owned());
            }
            let js = tokio::time::timeout(
                Duration::from_secs(2),
                self.jetstream.get_stream_no_info(&self.stream),
            )
            .await;
            if !matches!(js, Ok(Ok(_))) {
                failed.push("jetstream".to_owned());
            }
            failed
        })
    }
}
