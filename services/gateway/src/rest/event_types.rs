//! `GET /api/event-types`: the catalogue of event types Portico delivers
//! ([`portico_domain::event_types`]), for partners writing a receiver and for the portal.
//! The same catalogue fills the OpenAPI document's `webhooks` section
//! ([`crate::rest::openapi::add_webhooks`]).

use axum::response::IntoResponse;
use portico_api::event_types::EventTypeListBody;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// The routes, with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_event_types))
}

/// List every event type Portico delivers, with its payload schema and an example, and
/// the conventions of the free-form types the platform publishes. Any authenticated
/// caller may read it (a partner with any scope too): it describes what a receiver
/// gets, not anyone's data.
#[utoipa::path(get, path = "/event-types", tag = "events",
    responses(
        (status = 200, description = "The catalogue", body = EventTypeListBody),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn list_event_types(_caller: Caller) -> Result<impl IntoResponse, ApiError> {
    Ok(axum::Json(EventTypeListBody::catalogue()))
}

/// The OpenAPI component name of an event type's `data` schema:
/// `bulk_order.completed` becomes `BulkOrderCompletedData`.
pub fn data_schema_name(event_type: &str) -> String {
    let mut name = String::with_capacity(event_type.len() + 4);
    for word in event_type.split(['.', '_', '-']) {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            name.extend(first.to_uppercase());
            name.push_str(chars.as_str());
        }
    }
    name.push_str("Data");
    name
}

/// The OpenAPI 3.1 `webhooks` section: one entry per catalogued event type (keyed by
/// its name), a POST to the receiver's URL with the Standard Webhooks headers and the
/// envelope whose `data` refers to the type's payload schema (a component named by
/// [`data_schema_name`]), with the example delivery. Generated from the catalogue, so
/// the document lists exactly what `GET /event-types` answers.
pub fn document_webhooks(doc: &mut utoipa::openapi::OpenApi) -> Result<(), serde_json::Error> {
    use portico_domain::event_types;
    use serde_json::json;

    let headers: Vec<serde_json::Value> = event_types::DELIVERY_HEADERS
        .iter()
        .map(|(name, description)| {
            json!({
                "name": name,
                "in": "header",
                "required": true,
                "description": description,
                "schema": {"type": "string"},
            })
        })
        .collect();
    let mut webhooks = serde_json::Map::new();
    let components = doc.components.get_or_insert_with(Default::default);
    for t in event_types::all() {
        let schema_name = data_schema_name(t.name);
        components.schemas.insert(
            schema_name.clone(),
            serde_json::from_value(t.payload_schema.clone())?,
        );
        let envelope = event_types::envelope_schema(
            json!({"$ref": format!("#/components/schemas/{schema_name}")}),
        );
        let origin = match t.origin {
            event_types::Origin::Portico => "Emitted by Portico",
            event_types::Origin::Platform => {
                "A platform convention (free-form, delivered as published)"
            }
        };
        webhooks.insert(
            t.name.to_owned(),
            json!({
                "post": {
                    "tags": ["events"],
                    "summary": t.name,
                    "description": format!("{} ({origin}, by {}.)", t.description, t.emitted_by),
                    "operationId": format!("webhook_{}", t.name.replace(['.', '-'], "_")),
                    "parameters": headers,
                    "requestBody": {
                        "required": true,
                        "content": {"application/json": {
                            "schema": envelope,
                            "example": t.example_delivery(),
                        }},
                    },
                    "responses": {
                        "200": {"description": "Any 2xx acknowledges the delivery. Other statuses, timeouts and redirects fail the attempt and are retried with backoff (Retry-After on 429/503 is honoured); 410 Gone disables the endpoint."},
                    },
                },
            }),
        );
    }
    doc.webhooks = Some(serde_json::from_value(serde_json::Value::Object(webhooks))?);
    Ok(())
}
