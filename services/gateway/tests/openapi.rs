//! The published contract: `docs/api/openapi.yaml` is the document the gateway serves
//! at `/api/openapi.yaml`, generated from the code. When a handler, a body or the
//! event-type catalogue changes, this test fails until the committed copy is
//! regenerated with
//!
//! ```text
//! PORTICO_UPDATE_OPENAPI=1 cargo test -p portico-gateway --test openapi
//! ```
//!
//! and the other tests here check what the document promises: OpenAPI 3.1, a
//! `webhooks` entry per catalogued event type with the Standard Webhooks headers, enums
//! for every closed set of values, examples on the main operations.

use std::path::PathBuf;

use portico_domain::event_types;
use serde_json::Value;

/// Where the committed document lives, from the repository root.
const COMMITTED: &str = "docs/api/openapi.yaml";
/// The command that rewrites it.
const REGENERATE: &str = "PORTICO_UPDATE_OPENAPI=1 cargo test -p portico-gateway --test openapi";

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(COMMITTED)
}

fn generated_yaml() -> String {
    let (_, doc) = portico_gateway::rest::api();
    doc.to_yaml().expect("the document serialises to YAML")
}

fn generated_json() -> Value {
    let (_, doc) = portico_gateway::rest::api();
    serde_json::to_value(&doc).expect("the document serialises to JSON")
}

/// The committed document is exactly what the code generates (or is rewritten when
/// `PORTICO_UPDATE_OPENAPI` is set).
#[test]
fn committed_openapi_document_is_current() {
    let generated = generated_yaml();
    let path = committed_path();
    if std::env::var_os("PORTICO_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).expect("write the committed document");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()));
        panic!(
            "{COMMITTED} is stale (first difference at line {}: committed {:?}, generated {:?}); \
             regenerate it with `{REGENERATE}` and commit it",
            line + 1,
            committed.lines().nth(line).unwrap_or("<end>"),
            generated.lines().nth(line).unwrap_or("<end>"),
        );
    }
}

/// OpenAPI 3.1, with a `webhooks` entry for every catalogued event type: a POST with the
/// three Standard Webhooks headers, the envelope, the type's payload schema as a
/// component, and the example delivery.
#[test]
fn webhooks_describe_every_event_type() {
    let doc = generated_json();
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    let webhooks = doc["webhooks"].as_object().expect("a webhooks section");
    assert_eq!(webhooks.len(), event_types::all().len());
    for t in event_types::all() {
        let post = &webhooks[t.name]["post"];
        let names: Vec<&str> = post["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .filter(|p| p["in"] == "header" && p["required"] == true)
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(
            names,
            ["webhook-id", "webhook-timestamp", "webhook-signature"],
            "{}",
            t.name
        );
        let content = &post["requestBody"]["content"]["application/json"];
        let schema_name = portico_gateway::rest::event_types::data_schema_name(t.name);
        assert_eq!(
            content["schema"]["properties"]["data"]["$ref"],
            format!("#/components/schemas/{schema_name}"),
            "{}",
            t.name
        );
        assert_eq!(content["example"], t.example_delivery(), "{}", t.name);
        // The component is the catalogue's schema, nothing lost on the way.
        assert_eq!(
            doc["components"]["schemas"][&schema_name], t.payload_schema,
            "{schema_name}"
        );
        assert!(post["responses"]["200"].is_object(), "{}", t.name);
    }
    // The catalogue is also an operation.
    assert!(doc["paths"]["/event-types"]["get"].is_object());
}

/// Closed sets of values are enums in the schemas that carry them.
#[test]
fn closed_sets_are_enums() {
    let doc = generated_json();
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["Origin"]["enum"],
        serde_json::json!(event_types::Origin::ALL.map(event_types::Origin::as_str))
    );
    assert_eq!(
        schemas["EventTypeBody"]["properties"]["origin"]["$ref"],
        "#/components/schemas/Origin"
    );
}

/// The main create and list operations show an example of what they take and answer.
#[test]
fn main_operations_have_examples() {
    let doc = generated_json();
    let schemas = &doc["components"]["schemas"];
    let has_example = |schema: &Value| -> bool {
        let schema = match schema["$ref"].as_str() {
            Some(r) => &schemas[r.trim_start_matches("#/components/schemas/")],
            None => schema,
        };
        schema.get("example").is_some() || schema.get("examples").is_some()
    };
    for (path, method, what) in [
        ("/webhooks", "post", "request"),
        ("/webhooks", "post", "201"),
        ("/webhooks", "get", "200"),
        ("/events", "post", "request"),
        ("/bulk-orders", "post", "request"),
        ("/bulk-orders", "get", "200"),
        ("/integrations", "post", "request"),
        ("/integrations", "get", "200"),
        ("/webhooks/{id}/deliveries", "get", "200"),
    ] {
        let operation = &doc["paths"][path][method];
        let content = if what == "request" {
            &operation["requestBody"]["content"]["application/json"]
        } else {
            &operation["responses"][what]["content"]["application/json"]
        };
        assert!(
            content.get("example").is_some()
                || content.get("examples").is_some()
                || has_example(&content["schema"]),
            "{method} {path} {what} has no example"
        );
    }
}

/// The download format and the reason a webhook was disabled are listed values too.
#[test]
fn more_closed_sets_are_enums() {
    let doc = generated_json();
    let format = doc["paths"]["/bulk-orders/{id}/results/download"]["get"]["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "format"))
        .map(|p| p["schema"].to_string())
        .unwrap_or_default();
    assert!(
        format.contains("\"ndjson\"") && format.contains("\"csv\"") && format.contains("enum"),
        "{format}"
    );
    assert_eq!(
        doc["components"]["schemas"]["PorticoWebhookDisabledData"]["properties"]["reason"]["enum"],
        serde_json::json!(["gone", "failing", null])
    );
}

/// Every answer that carries an `ETag` declares it (the creates, reads and updates of the
/// versioned resources, the 304, and the credential regeneration that bumps a version),
/// no other answer claims one, and every operation that honours `If-Match` declares it
/// and its 412.
#[test]
fn entity_tags_are_declared_where_they_are_sent() {
    use portico_gateway::rest::concurrency::VERSIONED;

    let doc = generated_json();
    let mut sent: Vec<(String, &str, &str)> = [
        ("/webhooks", "post", "201"),
        ("/integrations", "post", "201"),
        ("/integrations/{id}/regenerate-credentials", "post", "200"),
        ("/integration-templates/{key}", "post", "201"),
    ]
    .into_iter()
    .map(|(p, m, s)| (p.to_owned(), m, s))
    .collect();
    for path in VERSIONED {
        for (method, status) in [("get", "200"), ("get", "304"), ("patch", "200")] {
            sent.push(((*path).to_owned(), method, status));
        }
    }
    for (path, method, status) in &sent {
        let header = &doc["paths"][path.as_str()][method]["responses"][status]["headers"]["ETag"];
        assert_eq!(
            header["schema"]["type"], "string",
            "{method} {path} {status}"
        );
        assert!(
            header["description"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{method} {path} {status}"
        );
    }

    let paths = doc["paths"].as_object().expect("paths");
    let mut declared = Vec::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().into_iter().flatten() {
            for (status, response) in op["responses"].as_object().into_iter().flatten() {
                if response["headers"].get("ETag").is_some() {
                    declared.push((path.clone(), method.as_str(), status.as_str()));
                }
            }
            let if_match = op["parameters"].as_array().into_iter().flatten().any(|p| {
                p["in"] == "header"
                    && p["name"]
                        .as_str()
                        .is_some_and(|n| n.eq_ignore_ascii_case("if-match"))
            });
            let versioned_write = VERSIONED.contains(&path.as_str())
                && ["patch", "put", "delete"].contains(&method.as_str());
            assert_eq!(if_match, versioned_write, "{method} {path}: If-Match");
            if if_match {
                let refused = &op["responses"]["412"];
                assert_eq!(
                    refused["content"]["application/problem+json"]["schema"]["$ref"],
                    "#/components/schemas/Problem",
                    "{method} {path}"
                );
                assert!(
                    refused["description"]
                        .as_str()
                        .is_some_and(|d| d.contains("precondition_failed")),
                    "{method} {path}"
                );
            }
        }
    }
    declared.sort();
    let mut expected: Vec<(String, &str, &str)> = sent;
    expected.sort();
    assert_eq!(declared, expected);
}
