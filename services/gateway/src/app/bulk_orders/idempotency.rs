//! Idempotency of submissions: the key's rules, finding the batch a key already
//! names, opening a new batch's transaction (or losing the race to a concurrent one)
//! and answering a replay.

use super::*;

pub(super) fn check_idempotency_key(key: Option<&str>) -> Result<(), ApiError> {
    match key {
        Some(k)
            if k.is_empty()
                || k.len() > MAX_IDEMPOTENCY_KEY_LEN
                || !k.bytes().all(|b| (0x21..=0x7e).contains(&b)) =>
        {
            Err(ApiError::field(
                "invalid_idempotency_key",
                "/headers/idempotency-key",
                format!(
                    "Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// The cheap structural check of one order at submission: a JSON object without the
/// NUL character (which PostgreSQL cannot store). Everything else is the processor's
/// validation. `path` is the order's position in the request (`/orders/3`, `/lines/4`).
/// A new batch's open transaction, or the batch an idempotency key already names.
pub(super) enum Begun {
    Fresh {
        tx: Transaction<'static, Postgres>,
        batch_id: BatchId,
    },
    Existing(BatchRow),
}

pub(super) async fn find_by_key(
    state: &AppState,
    user_id: &str,
    key: &str,
) -> Result<Option<BatchRow>, ApiError> {
    Ok(store::find_by_idempotency_key(state.pool(), user_id, key).await?)
}

/// Opens the transaction of a new batch and inserts its row; if the idempotency key is
/// taken (now, or by a concurrent submission that just committed), returns that batch.
pub(super) async fn begin_batch(
    state: &AppState,
    caller: &Caller,
    key: Option<&str>,
    parent_batch_id: Option<BatchId>,
) -> Result<Begun, ApiError> {
    if let Some(key) = key
        && let Some(existing) = find_by_key(state, caller.user_id(), key).await?
    {
        return Ok(Begun::Existing(existing));
    }
    let mut tx = state.pool().begin().await?;
    let batch_id = BatchId::generate();
    let batch = NewBatch {
        id: batch_id,
        user_id: caller.user_id(),
        integration_id: caller.integration_id().map(IntegrationId::from),
        parent_batch_id,
        idempotency_key: key,
        retention_days: i32::try_from(state.config().results_retention_days).unwrap_or(i32::MAX),
    };
    if store::insert_pending(&mut *tx, &batch).await? {
        return Ok(Begun::Fresh { tx, batch_id });
    }
    tx.rollback().await?;
    let key = key.unwrap_or_default();
    match find_by_key(state, caller.user_id(), key).await? {
        Some(existing) => Ok(Begun::Existing(existing)),
        None => Err(ApiError::Conflict(
            "a submission with this Idempotency-Key was just removed; retry".into(),
        )),
    }
}

/// An idempotent replay: the same orders return the earlier batch, others conflict.
pub(super) async fn replay(
    state: &AppState,
    existing: BatchRow,
    hash: &[u8],
) -> Result<Submitted, ApiError> {
    let stored = store::request_hash(state.pool(), existing.id).await?;
    if stored.as_deref() == Some(hash) {
        Ok(Submitted::Accepted {
            batch: existing,
            replay: true,
        })
    } else {
        Err(ApiError::Conflict(
            "this Idempotency-Key was already used with a different request".into(),
        ))
    }
}
