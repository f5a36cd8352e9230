//! Checks the fault tests (chaos, replicas) make after a run: that a repeated
//! delivery was the same message, and that a batch finished with each order once.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use crate::{TestApp, wait_for};

/// Asserts that every delivery repeated under one `webhook-id` carried the same body
/// (whose `id` is that webhook-id), so a receiver deduplicating on it is right; returns
/// how many repeats there were.
pub fn repeats_unchanged(per_id: &HashMap<String, Vec<Value>>) -> usize {
    for (id, bodies) in per_id {
        assert!(
            bodies
                .iter()
                .all(|b| b == &bodies[0] && b["id"] == id.as_str()),
            "a repeated delivery changed under webhook-id {id}"
        );
    }
    per_id.values().map(|v| v.len() - 1).sum()
}

/// Waits (up to `within`) until the batch is `completed`, then asserts it holds exactly
/// one result per order and that no order was stored twice.
pub async fn batch_completed_once(
    app: &TestApp,
    token: &str,
    batch_id: &str,
    orders: i64,
    within: Duration,
) -> anyhow::Result<()> {
    let http = app.http.clone();
    let url = app.api(&format!("/bulk-orders/{batch_id}"));
    wait_for(within, || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let Ok(res) = http.get(url).bearer_auth(token).send().await else {
                return false;
            };
            let batch: Value = res.json().await.unwrap_or_default();
            batch["status"] == "completed"
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("the batch did not complete: {e}"))?;
    let (results, distinct, stored): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM bulk_order_results),
                (SELECT count(DISTINCT order_index) FROM bulk_order_results),
                (SELECT count(*) FROM orders)",
    )
    .fetch_one(&app.pool)
    .await?;
    assert_eq!((results, distinct, stored), (orders, orders, orders));
    Ok(())
}

/// Publishes `events` in one `POST {base}/events/batch` as a service acting for `user`
/// and returns the ids of those accepted (202); a refused or failed request accepts
/// none, which the fault tests count rather than fail on.
pub async fn publish_batch(
    app: &TestApp,
    base: &str,
    user: &str,
    events: Vec<Value>,
) -> Vec<String> {
    let sent = app
        .http
        .post(format!("{base}/events/batch"))
        .bearer_auth(crate::SERVICE_TOKEN)
        .header("x-portico-user-id", user)
        .timeout(Duration::from_secs(5))
        .json(&serde_json::json!({"events": events}))
        .send()
        .await;
    let Ok(res) = sent else { return Vec::new() };
    if res.status() != reqwest::StatusCode::ACCEPTED {
        return Vec::new();
    }
    let body: Value = res.json().await.unwrap_or_default();
    body["data"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A valid one-line order for the fault tests' batches, numbered `{prefix}-{i}`.
pub fn order(prefix: &str, i: usize) -> Value {
    serde_json::json!({
        "clientOrderRef": format!("{prefix}-{i}"),
        "currency": "EUR",
        "customer": {"email": "ada@example.com", "name": "Ada Lovelace"},
        "shippingAddress": {"line1": "1 Main St", "city": "Berlin", "postalCode": "10115", "country": "DE"},
        "lineItems": [{"sku": "SKU-1", "quantity": 1, "unitPrice": "1.00"}],
    })
}
