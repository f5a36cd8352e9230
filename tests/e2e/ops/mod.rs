//! The README's smoke flow, shared by the operations tests (images, backup/restore,
//! rolling upgrade): they run it against gateways the harness does not start itself
//! (containers, restored databases, older binaries), so every helper takes the
//! gateway's base URL (`http://host:port`) instead of a [`TestApp`]'s services.

#![allow(dead_code)]

use std::collections::HashMap;

use portico_e2e::sink::Sink;
use portico_e2e::{SERVICE_TOKEN, TestApp};
use reqwest::StatusCode;
use serde_json::{Value, json};

// The partner-facing verification example (nested `if`s keep it valid on 2021).
#[allow(clippy::collapsible_if)]
#[path = "../webhook_verification_example.rs"]
mod verification;

/// A webhook the smoke flow created: its id and signing secret.
pub struct Hook {
    /// The webhook id.
    pub id: String,
    /// Its `whsec_...` signing secret.
    pub secret: String,
}

/// Creates a webhook for `user` on `order.*` pointing at `url`.
pub async fn create_webhook(
    app: &TestApp,
    base: &str,
    user: &str,
    url: String,
    base_delay_ms: u64,
) -> anyhow::Result<Hook> {
    let res = app
        .http
        .post(format!("{base}/api/webhooks"))
        .bearer_auth(app.user_token(user))
        .json(&json!({
            "url": url,
            "events": ["order.*"],
            "retryPolicy": {"maxRetries": 20, "baseDelayMs": base_delay_ms, "maxDelayMs": 2000},
        }))
        .send()
        .await?;
    anyhow::ensure!(res.status() == StatusCode::CREATED, "{}", res.text().await?);
    let body: Value = res.json().await?;
    Ok(Hook {
        id: body["id"].as_str().unwrap_or_default().to_owned(),
        secret: body["secret"].as_str().unwrap_or_default().to_owned(),
    })
}

/// Publishes `n` `order.created` events for `user`, tagged `tag` (202 expected).
pub async fn publish(
    app: &TestApp,
    base: &str,
    user: &str,
    n: usize,
    tag: &str,
) -> anyhow::Result<()> {
    let events: Vec<_> = (0..n)
        .map(|i| json!({"type": "order.created", "data": {"tag": tag, "i": i}}))
        .collect();
    let res = app
        .http
        .post(format!("{base}/api/events/batch"))
        .bearer_auth(SERVICE_TOKEN)
        .header("x-portico-user-id", user)
        .json(&json!({ "events": events }))
        .send()
        .await?;
    anyhow::ensure!(
        res.status() == StatusCode::ACCEPTED,
        "{}",
        res.text().await?
    );
    Ok(())
}

/// One valid order of a bulk batch.
pub fn order(tag: &str, i: usize) -> Value {
    json!({
        "clientOrderRef": format!("{tag}-{i}"),
        "currency": "USD",
        "customer": {"email": "o@example.com", "name": "O"},
        "shippingAddress": {"line1": "1 Main St", "city": "Austin", "postalCode": "73301", "country": "US"},
        "lineItems": [{"sku": "S", "quantity": 1, "unitPrice": 100}]
    })
}

/// Submits a batch of `n` orders for `user`; returns its id.
pub async fn submit_batch(
    app: &TestApp,
    base: &str,
    user: &str,
    n: usize,
    tag: &str,
) -> anyhow::Result<String> {
    let orders: Vec<Value> = (0..n).map(|i| order(tag, i)).collect();
    let res = app
        .http
        .post(format!("{base}/api/bulk-orders"))
        .bearer_auth(app.user_token(user))
        .json(&json!({ "orders": orders }))
        .send()
        .await?;
    anyhow::ensure!(
        res.status() == StatusCode::ACCEPTED || res.status() == StatusCode::CREATED,
        "{}",
        res.text().await?
    );
    let body: Value = res.json().await?;
    body["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no batch id in {body}"))
}

/// The batch as the API shows it.
pub async fn batch(app: &TestApp, base: &str, user: &str, id: &str) -> anyhow::Result<Value> {
    Ok(app
        .http
        .get(format!("{base}/api/bulk-orders/{id}"))
        .bearer_auth(app.user_token(user))
        .send()
        .await?
        .json()
        .await?)
}

/// Whether the batch is `completed`.
pub async fn batch_completed(app: &TestApp, base: &str, user: &str, id: &str) -> bool {
    batch(app, base, user, id)
        .await
        .map(|b| b["status"] == "completed")
        .unwrap_or(false)
}

/// Requests the sink received for events tagged `tag`, grouped by `webhook-id`;
/// every one must verify with `secret` (the partner's verification example).
pub fn received_by_id(
    sink: &Sink,
    tag: &str,
    secret: &str,
) -> anyhow::Result<HashMap<String, Vec<Value>>> {
    let mut seen: HashMap<String, Vec<Value>> = HashMap::new();
    for r in sink.received() {
        let body = r.json();
        if body["data"]["tag"] != tag {
            continue;
        }
        verification::verify_webhook(
            secret,
            r.header("webhook-id"),
            r.header("webhook-timestamp"),
            r.header("webhook-signature"),
            &r.body,
        )
        .map_err(|e| anyhow::anyhow!("delivery {} does not verify: {e}", r.header("webhook-id")))?;
        seen.entry(r.header("webhook-id").to_owned())
            .or_default()
            .push(body);
    }
    Ok(seen)
}

/// The events of `tag` the sink received, by their `data.i`: each must have come under
/// exactly one `webhook-id` (repeats of one id are the at-least-once retries a
/// receiver deduplicates; two ids for one event would be a double delivery).
pub fn distinct_events(seen: &HashMap<String, Vec<Value>>) -> anyhow::Result<usize> {
    let mut ids_per_event: HashMap<i64, Vec<&str>> = HashMap::new();
    for (id, bodies) in seen {
        if let Some(i) = bodies.first().and_then(|b| b["data"]["i"].as_i64()) {
            ids_per_event.entry(i).or_default().push(id);
        }
    }
    if let Some((i, ids)) = ids_per_event.iter().find(|(_, ids)| ids.len() > 1) {
        anyhow::bail!("event {i} was delivered under several webhook-ids: {ids:?}");
    }
    Ok(ids_per_event.len())
}
