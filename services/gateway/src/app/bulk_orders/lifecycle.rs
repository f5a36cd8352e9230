//! A batch after submission: cancel, and retry-failed (a child batch of its failed
//! and unprocessed orders).

use super::*;

/// Asks a pending or processing batch to stop: the processor finishes the chunks in
/// flight and reports the rest `unprocessed`. A finished batch cannot be cancelled.
pub async fn cancel(state: &AppState, caller: &Caller, id: Uuid) -> Result<BatchRow, ApiError> {
    caller.require(Scope::BulkOrdersWrite)?;
    let id = BatchId(id);
    let mut tx = state.pool().begin().await?;
    match store::request_cancel(&mut *tx, caller.user_id(), id).await? {
        Some(row) => {
            let entry =
                crate::app::audit::AuditEntry::new("bulk_batch.cancelled", "bulk_batch", id);
            crate::app::audit::record(&mut tx, caller, entry).await?;
            tx.commit().await?;
            Ok(row)
        }
        None => {
            let existing = get_batch_row(state, caller.user_id(), id).await?;
            Err(ApiError::FailedPrecondition(format!(
                "the batch is {} and can no longer be cancelled",
                existing.status
            )))
        }
    }
}

/// Creates a child batch (parent = `id`) of the orders of a finished batch whose result
/// is `failed` or `unprocessed`, copied from the stored chunks in one statement.
pub async fn retry_failed(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    idempotency_key: Option<String>,
) -> Result<(BatchRow, bool), ApiError> {
    caller.require(Scope::BulkOrdersWrite)?;
    let id = BatchId(id);
    let parent = get_batch_row(state, caller.user_id(), id).await?;
    if !parent.status().is_final() {
        return Err(ApiError::FailedPrecondition(format!(
            "the batch is {}; retry-failed needs a finished batch",
            parent.status
        )));
    }
    let key = idempotency_key.as_deref();
    check_idempotency_key(key)?;
    let hash = ring::digest::digest(
        &ring::digest::SHA256,
        format!("retry-failed:{id}").as_bytes(),
    );
    let (mut tx, child_id) = match begin_batch(state, caller, key, Some(id)).await? {
        Begun::Existing(existing) => {
            return match replay(state, existing, hash.as_ref()).await? {
                Submitted::Accepted { batch, .. } => Ok((batch, true)),
                Submitted::Validated(_) => Err(ApiError::internal("unexpected report")),
            };
        }
        Begun::Fresh { tx, batch_id } => (tx, batch_id),
    };
    let total = store::copy_retried_orders(&mut *tx, child_id, id).await?;
    if total == 0 {
        tx.rollback().await?;
        return Err(ApiError::FailedPrecondition(
            "the batch has no failed or unprocessed orders to retry".into(),
        ));
    }
    let entry =
        crate::app::audit::AuditEntry::new("bulk_batch.retry_failed", "bulk_batch", child_id)
            .detail("parentBatchId", id.to_string())
            .detail("orders", total);
    crate::app::audit::record(&mut tx, caller, entry).await?;
    let batch = commit_batch(state, tx, child_id, total as usize, hash.as_ref()).await?;
    Ok((batch, false))
}
