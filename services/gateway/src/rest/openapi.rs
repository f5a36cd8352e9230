//! The answers every operation shares, added to the generated OpenAPI document from
//! each operation's own shape, so no handler can forget one:
//!
//! - every operation: 400 (`invalid_user_id`: a service call's `x-portico-user-id` is
//!   no user id), 401, 403, 429 (partner rate limit or quota: every request with
//!   Basic credentials is checked, whatever the route), 503;
//! - a path with an id: 400 `invalid_id` (not a UUID) and 404;
//! - a request body: 400 `malformed_body`, 413 and 415;
//! - query parameters: 400 `invalid_query`;
//! - an `Idempotency-Key` header: 400 `invalid_idempotency_key`.
//!
//! A status a handler already documents keeps its description; a 400 gets the shared
//! reasons appended, so its list of codes is complete.

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::{OpenApi, Ref, RefOr};

/// Media type of every error answer (the responses' own constant).
pub use crate::error::PROBLEM_JSON as PROBLEM;

const UNAUTHENTICATED: &str = "Missing, malformed, expired or wrongly signed credentials \
    (unauthenticated); the service token without x-portico-user-id (missing_user_id); a \
    token whose sub is no user id (invalid_token_subject)";
const FORBIDDEN: &str = "Authenticated but not allowed: a partner without the scope, or the wrong kind of caller \
     (forbidden)";
const RATE_LIMITED: &str =
    "Partner credentials over their rate limit or daily quota (rate_limited); see Retry-After";
const UNAVAILABLE: &str = "A dependency is unavailable or the request timed out; nothing \
    changed, retry (unavailable)";
const NOT_FOUND: &str = "No such resource for this caller (not_found)";
const TOO_LARGE: &str = "The body is over the size limit (payload_too_large)";
const UNSUPPORTED: &str =
    "No body, or a body not sent as JSON (Content-Type: application/json) (unsupported_media_type)";

/// The event type and event filter schemas, defined with the API bodies; here too for
/// the gateway's own annotations.
pub use portico_api::schema::{event_filters, event_type};

/// Adds the shared answers to every operation of `doc`.
pub fn add_common_responses(doc: &mut OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let has_path_id = path.contains('{');
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            add_to_operation(operation, has_path_id);
        }
    }
}

fn add_to_operation(operation: &mut Operation, has_path_id: bool) {
    let parameters: Vec<(ParameterIn, String)> = operation
        .parameters
        .iter()
        .flatten()
        .filter_map(|p| match p {
            RefOr::T(p) => Some((p.parameter_in.clone(), p.name.to_ascii_lowercase())),
            RefOr::Ref(_) => None,
        })
        .collect();
    let has_query = parameters
        .iter()
        .any(|(location, _)| matches!(location, ParameterIn::Query));
    let has_idempotency_key = parameters.iter().any(|(location, name)| {
        matches!(location, ParameterIn::Header) && name == "idempotency-key"
    });
    let has_body = operation.request_body.is_some();

    let mut bad_request = Vec::new();
    if has_path_id {
        bad_request.push("invalid_id: a path id is not a UUID");
    }
    if has_body {
        bad_request.push("malformed_body: not JSON, wrong types or unknown fields");
    }
    if has_query {
        bad_request.push("invalid_query: a query parameter does not parse");
    }
    if has_idempotency_key {
        bad_request.push("invalid_idempotency_key: Idempotency-Key is not visible ASCII");
    }
    bad_request.push("invalid_user_id: a service call's x-portico-user-id is not a user id");
    let responses = &mut operation.responses.responses;
    match responses.get_mut("400") {
        Some(RefOr::T(existing)) => {
            existing.description = format!(
                "{}. Also (validation_failed or malformed_body): {}",
                existing.description.trim_end_matches('.'),
                bad_request.join("; ")
            );
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            responses.insert(
                "400".into(),
                problem(&format!(
                    "Invalid request (validation_failed or malformed_body): {}",
                    bad_request.join("; ")
                )),
            );
        }
    }
    let mut add = |status: &str, description: &str| {
        responses
            .entry(status.to_owned())
            .or_insert_with(|| problem(description));
    };
    add("401", UNAUTHENTICATED);
    add("403", FORBIDDEN);
    add("429", RATE_LIMITED);
    add("503", UNAVAILABLE);
    if has_path_id {
        add("404", NOT_FOUND);
    }
    if has_body {
        add("413", TOO_LARGE);
        add("415", UNSUPPORTED);
    }
}

fn problem(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                PROBLEM,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build(),
    )
}

#[cfg(test)]
mod tests {
    fn statuses(doc: &serde_json::Value, path: &str, method: &str) -> Vec<String> {
        doc["paths"][path][method]["responses"]
            .as_object()
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Every operation documents the shared answers that its shape makes possible.
    #[test]
    fn every_operation_documents_the_shared_answers() {
        let (_, doc) = crate::rest::api();
        let doc = serde_json::to_value(&doc).expect("the document serialises");
        let paths = doc["paths"].as_object().expect("paths");
        assert!(paths.len() > 20);
        for (path, item) in paths {
            for (method, operation) in item.as_object().expect("a path item") {
                let responses = operation["responses"].as_object().expect("responses");
                for status in ["400", "401", "403", "429", "503"] {
                    assert!(responses.contains_key(status), "{method} {path} {status}");
                }
                if path.contains('{') {
                    assert!(responses.contains_key("404"), "{method} {path}");
                    let text = responses["400"]["description"].as_str().unwrap_or("");
                    assert!(text.contains("invalid_id"), "{method} {path}: {text}");
                }
                if operation.get("requestBody").is_some() {
                    for status in ["413", "415"] {
                        assert!(responses.contains_key(status), "{method} {path} {status}");
                    }
                }
            }
        }
        // Statuses documented by hand keep their own description.
        assert_eq!(
            doc["paths"]["/integrations/me"]["get"]["responses"]["403"]["description"],
            "Not a partner"
        );
        assert!(statuses(&doc, "/events/batch", "post").contains(&"403".to_owned()));
    }

    /// The enums clients rely on are schemas listing their wire names, and the bodies
    /// that carry them refer to those schemas.
    #[test]
    fn enums_list_their_values() {
        use portico_domain::bulk_orders::{BatchStatus, ResultStatus};
        use portico_domain::integrations::{IntegrationType, Scope};
        use portico_domain::webhooks::{DeliveryStatus, RetryJobStatus};

        let (_, doc) = crate::rest::api();
        let doc = serde_json::to_value(&doc).expect("the document serialises");
        let schemas = &doc["components"]["schemas"];
        let expected: [(&str, Vec<&str>); 7] = [
            (
                "DeliveryStatus",
                DeliveryStatus::ALL.map(DeliveryStatus::as_str).to_vec(),
            ),
            (
                "BatchStatus",
                BatchStatus::ALL.map(BatchStatus::as_str).to_vec(),
            ),
            (
                "ResultStatus",
                ResultStatus::ALL.map(ResultStatus::as_str).to_vec(),
            ),
            (
                "IntegrationType",
                IntegrationType::ALL.map(IntegrationType::as_str).to_vec(),
            ),
            ("Scope", Scope::ALL.map(Scope::as_str).to_vec()),
            (
                "RetryJobStatus",
                RetryJobStatus::ALL.map(RetryJobStatus::as_str).to_vec(),
            ),
            (
                "DeadLetterStatus",
                vec!["unresolved", "replayed", "discarded"],
            ),
        ];
        for (name, values) in expected {
            assert_eq!(schemas[name]["enum"], serde_json::json!(values), "{name}");
        }
        for (body, field, schema) in [
            ("DeliveryBody", "status", "DeliveryStatus"),
            ("DeliveryDetailBody", "status", "DeliveryStatus"),
            ("BatchBody", "status", "BatchStatus"),
            ("ResultBody", "status", "ResultStatus"),
            ("IntegrationBody", "type", "IntegrationType"),
            ("RetryJobBody", "status", "RetryJobStatus"),
        ] {
            assert_eq!(
                schemas[body]["properties"][field]["$ref"],
                format!("#/components/schemas/{schema}"),
                "{body}.{field}"
            );
        }
        // Request bodies and filters are documented with the same schemas; their
        // values are still parsed by the application, so unknown ones keep their codes.
        for (body, field, schema) in [
            ("CreateIntegrationBody", "type", "IntegrationType"),
            ("UpdateIntegrationBody", "type", "IntegrationType"),
        ] {
            assert!(
                schemas[body]["properties"][field]
                    .to_string()
                    .contains(&format!("#/components/schemas/{schema}")),
                "{body}.{field}: {}",
                schemas[body]["properties"][field]
            );
        }
        for body in ["CreateIntegrationBody", "UpdateIntegrationBody"] {
            assert!(
                schemas[body]["properties"]["scopes"]
                    .to_string()
                    .contains("#/components/schemas/Scope"),
                "{body}.scopes: {}",
                schemas[body]["properties"]["scopes"]
            );
        }
        for (path, name, schema) in [
            ("/bulk-orders", "status", "BatchStatus"),
            ("/bulk-orders/{id}/results", "status", "ResultStatus"),
            (
                "/bulk-orders/{id}/results/download",
                "status",
                "ResultStatus",
            ),
            ("/webhooks/{id}/deliveries", "status", "DeliveryStatus"),
            ("/integrations", "type", "IntegrationType"),
            ("/admin/dead-letters", "status", "DeadLetterStatus"),
        ] {
            let parameter = doc["paths"][path]["get"]["parameters"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["name"] == name))
                .unwrap_or_else(|| panic!("{path} ?{name}"));
            assert_eq!(parameter["required"], false, "{path} ?{name}");
            assert!(
                parameter["schema"]
                    .to_string()
                    .contains(&format!("#/components/schemas/{schema}")),
                "{path} ?{name}: {parameter}"
            );
        }
    }
}
