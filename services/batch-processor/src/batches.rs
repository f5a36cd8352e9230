//! Processing one bulk-order batch.

use portico_queue::consumer::{JobMessage, Outcome};
use sqlx::PgPool;
use uuid::Uuid;

/// Processes the batch `batch_id` and returns what to do with its job.
pub async fn process(_pool: &PgPool, batch_id: Uuid, _message: &JobMessage) -> Outcome {
    tracing::error!(%batch_id, "bulk-order processing is not implemented yet");
    Outcome::RetryAfter(std::time::Duration::from_secs(60))
}
