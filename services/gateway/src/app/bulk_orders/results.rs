//! Reading batches and their per-order results: one batch, lists, result pages and
//! the download stream.

use super::*;

pub(super) async fn get_batch_row(
    state: &AppState,
    user_id: &str,
    id: BatchId,
) -> Result<BatchRow, ApiError> {
    store::get_for_user(state.pool(), user_id, id)
        .await?
        .ok_or(ApiError::NotFound("batch"))
}

/// One batch of the caller's user, with its progress (also mid-run).
pub async fn get_batch(state: &AppState, caller: &Caller, id: Uuid) -> Result<BatchRow, ApiError> {
    caller.require(Scope::BulkOrdersRead)?;
    get_batch_row(state, caller.user_id(), BatchId(id)).await
}

/// Parses a batch status filter.
pub fn parse_batch_status(text: &str) -> Result<BatchStatus, ApiError> {
    Ok(BatchStatus::parse_field(text, "/status")?)
}

/// Parses a result status filter.
pub fn parse_result_status(text: &str) -> Result<ResultStatus, ApiError> {
    Ok(ResultStatus::parse_field(text, "/status")?)
}

/// The caller's batches, newest first, optionally of one status.
pub async fn list_batches(
    state: &AppState,
    caller: &Caller,
    status: Option<BatchStatus>,
    page: PageRequest,
) -> Result<(Vec<BatchRow>, Option<String>), ApiError> {
    caller.require(Scope::BulkOrdersRead)?;
    let rows = store::list_for_user(
        state.pool(),
        caller.user_id(),
        status,
        page.after.map(|c| (c.created_at, BatchId(c.id))),
        page.fetch_limit(),
    )
    .await?;
    Ok(pagination::finish_page(rows, &page, |r| Cursor {
        created_at: r.created_at,
        id: r.id.as_uuid(),
    }))
}

/// A page request over results: limit as for every list, cursor on the order index.
#[derive(Debug, Clone, Copy)]
pub struct ResultsPage {
    /// Results to return.
    pub limit: u32,
    /// Start after this index.
    pub after: Option<IndexCursor>,
}

impl ResultsPage {
    /// Validates raw `limit` and `cursor` parameters.
    pub fn parse(limit: Option<u32>, cursor: Option<&str>) -> Result<Self, ApiError> {
        let limit = pagination::parse_limit(limit)?;
        let after = match cursor {
            None | Some("") => None,
            Some(c) => Some(IndexCursor::decode(c)?),
        };
        Ok(Self { limit, after })
    }
}

pub(super) fn to_result(row: store::ResultRow) -> OrderResult {
    OrderResult {
        index: i64::from(row.order_index),
        status: row.status(),
        client_order_ref: row.client_order_ref,
        order_id: row.order_id.map(OrderId::as_uuid),
        errors: serde_json::from_value(row.errors).unwrap_or_default(),
    }
}

pub(super) async fn fetch_results(
    state: &AppState,
    batch_id: BatchId,
    status: Option<ResultStatus>,
    after: Option<i32>,
    limit: i64,
) -> Result<Vec<OrderResult>, ApiError> {
    let rows =
        store::list_results(state.pool(), batch_id, status, after.unwrap_or(-1), limit).await?;
    Ok(rows.into_iter().map(to_result).collect())
}

/// Per-order results of a batch in input order, optionally of one status.
pub async fn list_results(
    state: &AppState,
    caller: &Caller,
    batch_id: Uuid,
    status: Option<ResultStatus>,
    page: ResultsPage,
) -> Result<(Vec<OrderResult>, Option<String>), ApiError> {
    caller.require(Scope::BulkOrdersRead)?;
    let batch_id = BatchId(batch_id);
    get_batch_row(state, caller.user_id(), batch_id).await?;
    let mut rows = fetch_results(
        state,
        batch_id,
        status,
        page.after.map(|c| c.0),
        i64::from(page.limit) + 1,
    )
    .await?;
    let next = if rows.len() > page.limit as usize {
        rows.truncate(page.limit as usize);
        rows.last().map(|r| IndexCursor(r.index as i32).encode())
    } else {
        None
    };
    Ok((rows, next))
}

/// Every result of a batch (optionally of one status), in input order, as a stream of
/// pages read with a keyset cursor: a million results never sit in memory at once.
/// Ownership is checked before the stream is returned.
pub async fn stream_results(
    state: &AppState,
    caller: &Caller,
    batch_id: Uuid,
    status: Option<ResultStatus>,
) -> Result<impl Stream<Item = Result<Vec<OrderResult>, ApiError>> + Send + 'static, ApiError> {
    caller.require(Scope::BulkOrdersRead)?;
    let batch_id = BatchId(batch_id);
    get_batch_row(state, caller.user_id(), batch_id).await?;
    let state = state.clone();
    Ok(futures::stream::unfold(Some(-1), move |after| {
        let state = state.clone();
        async move {
            let after = after?;
            match fetch_results(&state, batch_id, status, Some(after), DOWNLOAD_PAGE).await {
                Ok(page) if page.is_empty() => None,
                Ok(page) => {
                    let next = (page.len() as i64 == DOWNLOAD_PAGE)
                        .then(|| page.last().map(|r| r.index as i32))
                        .flatten();
                    Some((Ok(page), next))
                }
                Err(err) => Some((Err(err), None)),
            }
        }
    }))
}
