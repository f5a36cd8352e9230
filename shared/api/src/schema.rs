//! Schema pieces several bodies share, written once so the OpenAPI document states the
//! same rule everywhere the domain checks it, and serde helpers of the wire format.

use serde::{Deserialize, Deserializer};
use utoipa::openapi::schema::{Array, ArrayBuilder, Object, ObjectBuilder, Type};

/// An event type as `portico_domain::webhooks::validate_event_type` accepts it:
/// dot-separated segments of ASCII letters, digits, `_` and `-`, 1-128 characters.
pub fn event_type() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"))
        .min_length(Some(1))
        .max_length(Some(128))
        .examples(["order.created"])
        .build()
}

/// A webhook's event filters as `validate_event_filters` accepts them: 1-100 entries,
/// each an exact event type, a prefix (`order.*`) or `*`.
pub fn event_filters() -> Array {
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(r"^(\*|[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*(\.\*)?)$"))
                .max_length(Some(128)),
        )
        .min_items(Some(1))
        .max_items(Some(100))
        .examples([serde_json::json!(["order.created", "bulk_order.*"])])
        .build()
}

/// `Some(None)` for an explicit `null`, `Some(Some(v))` for a value; with
/// `#[serde(default)]` a missing field stays `None`, so a PATCH can clear a field.
pub fn double_option<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}
