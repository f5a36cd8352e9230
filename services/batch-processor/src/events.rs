//! The events a batch emits, through Portico's own webhooks: `order.created` for each
//! order it created (only when the owner has a webhook that wants it) and
//! `bulk_order.completed` when it reaches a final status.
//!
//! They are written to the outbox in the same transaction as the state they announce
//! (the chunk's orders, the batch's final status), and their ids are derived from
//! deterministic idempotency keys (`order:<id>:created`, `batch:<id>:completed`), so a
//! re-run after a crash lands on the same event and is delivered once.

use chrono::Utc;
use portico_domain::ids::OrderId;
use portico_domain::orders::{Order, format_minor};
use portico_queue::jobs::{EventDispatch, Job};
use portico_storage::bulk_orders::BatchRow;
use serde_json::{Value, json};
use sqlx::{Postgres, Transaction};

use crate::context::BatchRef;

/// Emitted once per created order.
pub const ORDER_CREATED: &str = "order.created";
/// Emitted once per batch, when it reaches a final status.
pub const BULK_ORDER_COMPLETED: &str = "bulk_order.completed";

/// Every webhook filter that matches `event_type` under the webhooks capability's
/// rules ([`portico_domain::webhooks::filter_matches`]): the exact name, each prefix
/// wildcard (`order.*` for `order.created`) and `*`. A filter list can then be tested
/// in SQL with one array overlap.
pub fn matching_filters(event_type: &str) -> Vec<String> {
    let mut filters = vec![event_type.to_owned(), "*".to_owned()];
    let mut rest = event_type;
    while let Some((prefix, _)) = rest.rsplit_once('.') {
        filters.push(format!("{prefix}.*"));
        rest = prefix;
    }
    filters
}

/// True when `user_id` has an active webhook whose filter matches `order.created`.
/// Creating a thousand events nobody receives would only cost write throughput.
pub async fn wants_order_created(
    tx: &mut Transaction<'_, Postgres>,
    user_id: &str,
) -> Result<bool, sqlx::Error> {
    portico_storage::webhooks::any_active_matching(
        &mut **tx,
        user_id,
        &matching_filters(ORDER_CREATED),
    )
    .await
}

fn event(
    user_id: &str,
    event_type: &str,
    key: String,
    data: &Value,
) -> Result<Job, serde_json::Error> {
    let data = serde_json::value::to_raw_value(data)?;
    Ok(Job::EventDispatchV1(EventDispatch {
        event_id: portico_domain::ids::event_id(user_id, &key),
        user_id: user_id.to_owned(),
        event_type: event_type.to_owned(),
        data,
        idempotency_key: key,
        ordering_key: None,
        accepted_at: Utc::now(),
        only_webhook_id: None,
    }))
}

/// The `order.created` event of one order.
pub fn order_created(
    batch: &BatchRef,
    order_id: OrderId,
    order: &Order<'_>,
) -> Result<Job, serde_json::Error> {
    let data = json!({
        "orderId": order_id,
        "clientOrderRef": order.client_order_ref,
        "batchId": batch.id,
        "integrationId": batch.integration_id,
        "currency": order.currency.code,
        "totalMinor": order.total_minor,
        "total": format_minor(order.total_minor, order.currency.exponent),
        "lineItemCount": order.line_items.len(),
    });
    event(
        &batch.user_id,
        ORDER_CREATED,
        format!("order:{order_id}:created"),
        &data,
    )
}

/// The `bulk_order.completed` event of a finished batch.
pub fn batch_completed(batch: &BatchRow) -> Result<Job, serde_json::Error> {
    let counts = batch.counts();
    let summary: serde_json::Map<String, Value> = batch
        .error_summary()
        .into_iter()
        .map(|(code, n)| (code, Value::from(n)))
        .collect();
    let data = json!({
        "batchId": batch.id,
        "status": batch.status().as_str(),
        "counts": {
            "total": counts.total,
            "processed": counts.processed,
            "succeeded": counts.succeeded,
            "failed": counts.failed,
            "duplicate": counts.duplicate,
            "unprocessed": counts.unprocessed,
        },
        "errorSummary": summary,
        "parentBatchId": batch.parent_batch_id,
        "integrationId": batch.integration_id,
        "completedAt": batch.completed_at,
    });
    event(
        &batch.user_id,
        BULK_ORDER_COMPLETED,
        format!("batch:{}:completed", batch.id),
        &data,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use portico_domain::webhooks::filter_matches;

    /// The SQL filter list is exactly the filters the webhooks capability matches.
    #[test]
    fn matching_filters_follow_the_webhook_rules() {
        let filters = matching_filters(ORDER_CREATED);
        assert_eq!(filters, ["order.created", "*", "order.*"]);
        assert!(filters.iter().all(|f| filter_matches(f, ORDER_CREATED)));
        for other in ["order.created.*", "order", "orders.*", "bulk_order.*"] {
            assert!(!filter_matches(other, ORDER_CREATED), "{other}");
        }
        assert_eq!(matching_filters("a.b.c"), ["a.b.c", "*", "a.b.*", "a.*"]);
    }
}
