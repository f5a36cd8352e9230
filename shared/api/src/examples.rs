//! Examples of the main request and response bodies, shown in the OpenAPI document
//! (each body's schema names its example with `#[schema(examples(...))]`). The tests
//! below parse every example as its own Rust type, so an example cannot drift from the
//! body it illustrates: a renamed or removed field fails them.

use serde_json::{Value, json};

const WEBHOOK_ID: &str = "0193a6f0-1111-7c2d-8e3f-4a5b6c7d8e9f";
const BATCH_ID: &str = "0193a6e8-0a1b-7c2d-9e3f-405162738495";
const INTEGRATION_ID: &str = "0193a6d0-7f00-7a11-8b22-c33d44e55f66";

/// `POST /webhooks`.
pub fn create_webhook() -> Value {
    json!({
        "url": "https://example.com/webhooks/portico",
        "events": ["order.created", "bulk_order.*", "portico.webhook.disabled"],
        "description": "Order sync",
        "retryPolicy": {"maxRetries": 5, "baseDelayMs": 1000, "maxDelayMs": 300000},
    })
}

/// A webhook as answered.
pub fn webhook() -> Value {
    json!({
        "id": WEBHOOK_ID,
        "url": "https://example.com/webhooks/portico",
        "events": ["order.created", "bulk_order.*", "portico.webhook.disabled"],
        "description": "Order sync",
        "active": true,
        "disabledReason": null,
        "retryPolicy": {"maxRetries": 5, "baseDelayMs": 1000, "maxDelayMs": 300000},
        "headers": {},
        "orderingEnabled": false,
        "rateLimitPerSecond": null,
        "maxConcurrency": null,
        "createdAt": "2026-12-01T08:00:00Z",
        "updatedAt": "2026-12-01T08:00:00Z",
    })
}

/// The answer of `POST /webhooks`: the webhook and its signing secret.
pub fn created_webhook() -> Value {
    let mut body = webhook();
    if let Value::Object(map) = &mut body {
        map.insert(
            "secret".into(),
            json!("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        );
    }
    body
}

/// `GET /webhooks`.
pub fn webhook_list() -> Value {
    json!({"data": [webhook()], "nextCursor": null})
}

/// `GET /webhooks/{id}/deliveries`.
pub fn delivery_list() -> Value {
    json!({
        "data": [{
            "id": "0193a6f2-6d2f-7c4b-8a21-3e5f7b9c1d23",
            "webhookId": WEBHOOK_ID,
            "eventId": "0193a6f2-4b0d-7a29-8e0f-1c3d5f7a9b01",
            "eventType": "order.created",
            "status": "retrying",
            "attempts": 2,
            "maxRetries": 5,
            "nextAttemptAt": "2026-12-01T08:00:04Z",
            "lastStatusCode": 503,
            "lastError": "HTTP 503",
            "createdAt": "2026-12-01T08:00:00Z",
            "updatedAt": "2026-12-01T08:00:02Z",
        }],
        "nextCursor": "eyJ0IjoiMjAyNi0xMi0wMVQwODowMDowMFoifQ",
    })
}

/// `POST /events`.
pub fn publish_event() -> Value {
    json!({
        "type": "order.created",
        "data": {"orderId": "o-1001", "total": "25.99", "currency": "EUR"},
        "idempotencyKey": "order:o-1001:created",
        "orderingKey": "o-1001",
    })
}

/// `POST /bulk-orders` (JSON).
pub fn submit_batch() -> Value {
    json!({
        "orders": [{
            "clientOrderRef": "PO-1001",
            "currency": "EUR",
            "customer": {"email": "buyer@example.com", "name": "Ada Buyer"},
            "shippingAddress": {"line1": "1 Main St", "city": "Berlin", "postalCode": "10115", "country": "DE"},
            "lineItems": [{"sku": "SKU-1", "quantity": 2, "unitPrice": "12.50"}],
            "metadata": {"channel": "marketplace"},
        }],
        "validateOnly": false,
    })
}

/// A batch as answered.
pub fn batch() -> Value {
    json!({
        "id": BATCH_ID,
        "status": "processing",
        "counts": {"total": 1000, "processed": 400, "succeeded": 398, "failed": 2, "duplicate": 0, "unprocessed": 0},
        "errorSummary": {"invalid_currency": 2},
        "parentBatchId": null,
        "integrationId": INTEGRATION_ID,
        "cancelRequested": false,
        "createdAt": "2026-12-01T08:00:00Z",
        "startedAt": "2026-12-01T08:00:00.120Z",
        "completedAt": null,
        "updatedAt": "2026-12-01T08:00:01Z",
        "expiresAt": "2026-12-31T08:00:00Z",
    })
}

/// `GET /bulk-orders`.
pub fn batch_list() -> Value {
    json!({"data": [batch()], "nextCursor": null})
}

/// `POST /integrations`.
pub fn create_integration() -> Value {
    json!({
        "name": "Acme marketplace",
        "type": "marketplace",
        "webhookUrl": "https://example.com/acme/hooks",
        "scopes": ["bulk_orders:write", "bulk_orders:read", "orders:read"],
        "rateLimitPerSecond": 50,
        "dailyQuota": 1000000,
    })
}

/// An integration as answered.
pub fn integration() -> Value {
    json!({
        "id": INTEGRATION_ID,
        "name": "Acme marketplace",
        "type": "marketplace",
        "webhookUrl": "https://example.com/acme/hooks",
        "scopes": ["bulk_orders:write", "bulk_orders:read", "orders:read"],
        "active": true,
        "apiKey": "ptk_3kq9Zr7TbW2mXc8vNp4hYs6d",
        "expiresAt": null,
        "rateLimitPerSecond": 50,
        "dailyQuota": 1000000,
        "createdAt": "2026-12-01T08:00:00Z",
        "updatedAt": "2026-12-01T08:00:00Z",
        "lastUsedAt": null,
    })
}

/// The answer of `POST /integrations`: the integration and its credentials, once.
pub fn integration_with_credentials() -> Value {
    let mut body = integration();
    if let Value::Object(map) = &mut body {
        map.insert(
            "credentials".into(),
            json!({
                "apiKey": "ptk_3kq9Zr7TbW2mXc8vNp4hYs6d",
                "apiSecret": "pts_Vb7nQ2xK9mR4tW8zL3cF6hJ1pS5dG0aYeU2iOq",
            }),
        );
    }
    body
}

/// `GET /integrations`.
pub fn integration_list() -> Value {
    json!({"data": [integration()], "nextCursor": null})
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::DeserializeOwned;

    fn parses<T: DeserializeOwned>(example: Value, name: &str) {
        if let Err(e) = serde_json::from_value::<T>(example) {
            panic!("the {name} example does not parse: {e}");
        }
    }

    /// Every example is a valid body of its type (request bodies refuse unknown fields,
    /// so a stale field name fails here).
    #[test]
    fn every_example_parses_as_its_body() {
        use crate::bulk_orders::{BatchBody, BatchListBody, SubmitBatchBody};
        use crate::deliveries::DeliveryListBody;
        use crate::events::PublishEventBody;
        use crate::integrations::{
            CreateIntegrationBody, IntegrationBody, IntegrationListBody,
            IntegrationWithCredentialsBody,
        };
        use crate::webhooks::{
            CreateWebhookBody, CreatedWebhookBody, WebhookBody, WebhookListBody,
        };

        parses::<CreateWebhookBody>(create_webhook(), "create webhook");
        parses::<WebhookBody>(webhook(), "webhook");
        parses::<CreatedWebhookBody>(created_webhook(), "created webhook");
        parses::<WebhookListBody>(webhook_list(), "webhook list");
        parses::<DeliveryListBody>(delivery_list(), "delivery list");
        parses::<PublishEventBody>(publish_event(), "publish event");
        parses::<SubmitBatchBody>(submit_batch(), "submit batch");
        parses::<BatchBody>(batch(), "batch");
        parses::<BatchListBody>(batch_list(), "batch list");
        parses::<CreateIntegrationBody>(create_integration(), "create integration");
        parses::<IntegrationBody>(integration(), "integration");
        parses::<IntegrationWithCredentialsBody>(
            integration_with_credentials(),
            "integration with credentials",
        );
        parses::<IntegrationListBody>(integration_list(), "integration list");
    }

    /// Response examples carry every field their body serialises, so they show the
    /// whole shape (a field added to a body must be added to its example).
    #[test]
    fn response_examples_are_complete() {
        use crate::bulk_orders::BatchBody;
        use crate::integrations::IntegrationBody;
        use crate::webhooks::WebhookBody;

        fn round_trip<T: DeserializeOwned + serde::Serialize>(example: Value, name: &str) {
            let parsed: T = serde_json::from_value(example.clone()).expect(name);
            let again = serde_json::to_value(parsed).expect(name);
            let keys = |v: &Value| -> Vec<String> {
                v.as_object()
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default()
            };
            assert_eq!(keys(&again), keys(&example), "{name}");
        }
        round_trip::<WebhookBody>(webhook(), "webhook");
        round_trip::<BatchBody>(batch(), "batch");
        round_trip::<IntegrationBody>(integration(), "integration");
    }
}
