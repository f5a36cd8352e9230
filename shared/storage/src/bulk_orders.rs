//! The bulk-order batch row as both the gateway and the batch-processor read it.
//!
//! The gateway renders it (REST and gRPC); the processor reads it back in the
//! transaction that finishes a batch to build the `bulk_order.completed` event. One row
//! type and one column list keep the two readings identical.

use chrono::{DateTime, Utc};
use portico_domain::bulk_orders::{BatchCounts, BatchStatus};
use uuid::Uuid;

/// The columns of [`BatchRow`], for `SELECT` and `RETURNING` clauses.
#[macro_export]
macro_rules! batch_columns {
    () => {
        "id, user_id, integration_id, parent_batch_id, status, total, processed, succeeded, \
         failed, duplicate, unprocessed, error_summary, cancel_requested, created_at, \
         started_at, completed_at, updated_at, expires_at"
    };
}

/// One `bulk_order_batches` row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BatchRow {
    /// The batch id.
    pub id: Uuid,
    /// The owner.
    pub user_id: String,
    /// The integration whose credentials submitted it.
    pub integration_id: Option<Uuid>,
    /// The batch this one retries (retry-failed).
    pub parent_batch_id: Option<Uuid>,
    /// One of [`BatchStatus`]'s names.
    pub status: String,
    /// Orders in the batch.
    pub total: i32,
    /// Orders with a final result.
    pub processed: i32,
    /// Orders created.
    pub succeeded: i32,
    /// Orders refused.
    pub failed: i32,
    /// Orders that already existed.
    pub duplicate: i32,
    /// Orders a cancel or a failure left unprocessed.
    pub unprocessed: i32,
    /// Failed orders per error code.
    pub error_summary: serde_json::Value,
    /// The owner asked to stop it.
    pub cancel_requested: bool,
    /// Submission time.
    pub created_at: DateTime<Utc>,
    /// When processing began.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a final status.
    pub completed_at: Option<DateTime<Utc>>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When the retention job deletes it with its results.
    pub expires_at: DateTime<Utc>,
}

impl BatchRow {
    /// The status as a type (an unknown name, impossible under the CHECK constraint,
    /// reads as failed rather than panicking).
    pub fn status(&self) -> BatchStatus {
        BatchStatus::parse(&self.status).unwrap_or(BatchStatus::Failed)
    }

    /// The progress counters.
    pub fn counts(&self) -> BatchCounts {
        BatchCounts {
            total: i64::from(self.total),
            processed: i64::from(self.processed),
            succeeded: i64::from(self.succeeded),
            failed: i64::from(self.failed),
            duplicate: i64::from(self.duplicate),
            unprocessed: i64::from(self.unprocessed),
        }
    }

    /// The error summary as (code, count) pairs, sorted by code.
    pub fn error_summary(&self) -> Vec<(String, i64)> {
        let mut pairs: Vec<(String, i64)> = match &self.error_summary {
            serde_json::Value::Object(map) => map
                .iter()
                .map(|(k, v)| (k.clone(), v.as_i64().unwrap_or(0)))
                .collect(),
            _ => Vec::new(),
        };
        pairs.sort();
        pairs
    }
}
