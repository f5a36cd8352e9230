//! What a delivery sends: the Standard Webhooks body and headers.
//!
//! The body is `{"id", "type", "timestamp", "data"}`, built once per event by
//! concatenating raw JSON (the event's `data` is never parsed or re-serialised, so the
//! receiver gets exactly the bytes the publisher sent) and shared by every endpoint and
//! every retry of that event. The headers are built per attempt: `webhook-timestamp`
//! is the time of this attempt, and `webhook-signature` carries one `v1,` signature per
//! active secret of the endpoint, newest first.

use bytes::Bytes;
use chrono::{DateTime, SubsecRound, Utc};
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use portico_domain::timestamp::Rfc3339Micros;
use uuid::Uuid;

use crate::endpoints::Endpoint;

/// The `user-agent` of every delivery.
pub const USER_AGENT_VALUE: &str = concat!("Portico-Webhooks/", env!("CARGO_PKG_VERSION"));

/// An event ready to be delivered: its identity and its body, built once.
#[derive(Debug)]
pub struct PreparedEvent {
    /// The event id; also the `webhook-id` header, stable across retries and endpoints
    /// so receivers can deduplicate.
    pub id: Uuid,
    /// `id` as text, formatted once.
    pub id_text: String,
    /// The owner.
    pub user_id: String,
    /// The event type.
    pub event_type: String,
    /// When the gateway accepted it, to the microsecond (what PostgreSQL keeps, so a
    /// retry rebuilt from the database sends the same body).
    pub accepted_at: DateTime<Utc>,
    /// The full request body.
    pub body: Bytes,
    /// The event's ordering key, if its publisher gave one.
    pub ordering_key: Option<String>,
    /// The JetStream sequence of the event job (0 when rebuilt from the database).
    pub stream_sequence: u64,
    /// The event job's trace context (NATS headers), parent of the attempt spans.
    pub trace: Option<async_nats::HeaderMap>,
}

impl PreparedEvent {
    /// Prepares an event from its parts; `data` is the raw JSON text of the payload.
    pub fn new(
        id: Uuid,
        user_id: String,
        event_type: String,
        accepted_at: DateTime<Utc>,
        data: &str,
    ) -> Self {
        let accepted_at = accepted_at.trunc_subsecs(6);
        let id_text = id.hyphenated().to_string();
        let body = build_body(&id_text, &event_type, accepted_at, data);
        Self {
            id,
            id_text,
            user_id,
            event_type,
            accepted_at,
            body,
            ordering_key: None,
            stream_sequence: 0,
            trace: None,
        }
    }

    /// Operational events (`portico.*`) never trigger operational events about their
    /// own deliveries, so a failing endpoint cannot feed itself a loop.
    pub fn is_operational(&self) -> bool {
        self.event_type.starts_with("portico.")
    }
}

/// Builds `{"id":..,"type":..,"timestamp":..,"data":<raw>}` by concatenation.
pub fn build_body(id: &str, event_type: &str, accepted_at: DateTime<Utc>, data: &str) -> Bytes {
    let timestamp = Rfc3339Micros::new(accepted_at);
    let mut out = Vec::with_capacity(data.len() + id.len() + event_type.len() + 72);
    out.extend_from_slice(b"{\"id\":\"");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b"\",\"type\":");
    // Event types are validated to [A-Za-z0-9._-], but escaping costs nothing here.
    if serde_json::to_writer(&mut out, event_type).is_err() {
        out.extend_from_slice(b"\"\"");
    }
    out.extend_from_slice(b",\"timestamp\":\"");
    out.extend_from_slice(timestamp.as_str().as_bytes());
    out.extend_from_slice(b"\",\"data\":");
    out.extend_from_slice(data.as_bytes());
    out.push(b'}');
    Bytes::from(out)
}

/// The endpoint has no secret that may sign right now (all expired): sending unsigned
/// data would teach receivers to skip verification, so the attempt fails instead.
#[derive(Debug, thiserror::Error)]
#[error("the webhook has no active signing secret")]
pub struct NoActiveSecret;

/// The headers of one attempt: the endpoint's custom headers first, then ours, so a
/// custom header can never replace a signature or the content type. Custom header
/// values are marked sensitive (they are often the receiver's own API keys): the
/// attempt history records them as `***` ([`headers_json`]).
pub fn request_headers(
    endpoint: &Endpoint,
    event: &PreparedEvent,
    attempt_time: DateTime<Utc>,
) -> Result<HeaderMap, NoActiveSecret> {
    let timestamp = attempt_time.timestamp();
    let signature = endpoint
        .signature(&event.id_text, timestamp, &event.body, attempt_time)
        .ok_or(NoActiveSecret)?;
    let mut headers = HeaderMap::with_capacity(endpoint.headers.len() + 8);
    for (name, value) in &endpoint.headers {
        let mut value = value.clone();
        value.set_sensitive(true);
        headers.append(name.clone(), value);
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    // Uuids, integers and base64 are always valid header values.
    if let Ok(v) = HeaderValue::from_str(&event.id_text) {
        headers.insert(HeaderName::from_static("webhook-id"), v);
    }
    headers.insert(
        HeaderName::from_static("webhook-timestamp"),
        HeaderValue::from(timestamp),
    );
    if let Ok(v) = HeaderValue::from_str(&signature) {
        headers.insert(HeaderName::from_static("webhook-signature"), v);
    }
    Ok(headers)
}

/// The value recorded in place of a sensitive header value (a custom header's).
pub const REDACTED: &str = "***";

/// The headers as recorded on the attempt row: a JSON object of every header sent
/// (repeated names joined with ", "), sensitive values (custom headers) as
/// [`REDACTED`], so the attempt history never holds a receiver's credentials.
pub fn headers_json(headers: &HeaderMap) -> String {
    use serde::ser::{SerializeMap, Serializer};
    // Streamed by serde_json (its escaping), without a map of owned names and values:
    // every attempt records its headers. Key order does not matter, the column is jsonb.
    let mut out = Vec::with_capacity(48 * headers.keys_len() + 2);
    let mut ser = serde_json::Serializer::new(&mut out);
    let written = ser
        .serialize_map(Some(headers.keys_len()))
        .and_then(|mut map| {
            for name in headers.keys() {
                map.serialize_entry(name.as_str(), &Joined(headers.get_all(name)))?;
            }
            map.end()
        });
    // Writing to a Vec cannot fail, and serde_json writes only UTF-8.
    match (written, String::from_utf8(out)) {
        (Ok(()), Ok(json)) => json,
        _ => "{}".to_owned(),
    }
}

/// The values of one header as recorded: joined with ", ", sensitive ones as
/// [`REDACTED`], bytes that are not UTF-8 replaced.
struct Joined<'a>(http::header::GetAll<'a, HeaderValue>);

/// One header value as recorded.
fn recorded_value(value: &HeaderValue) -> std::borrow::Cow<'_, str> {
    if value.is_sensitive() {
        REDACTED.into()
    } else {
        String::from_utf8_lossy(value.as_bytes())
    }
}

impl std::fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, value) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(&recorded_value(value))?;
        }
        Ok(())
    }
}

impl serde::Serialize for Joined<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut values = self.0.iter();
        match (values.next(), values.next()) {
            // Nearly every header has one value: written as a string directly, not
            // through `core::fmt` and serde_json's escaping writer (about 900
            // instructions a header, five headers an attempt).
            (Some(only), None) => serializer.serialize_str(&recorded_value(only)),
            _ => serializer.collect_str(self),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sensitive values are recorded as `***`, the others as sent.
    #[test]
    fn recorded_headers_redact_sensitive_values() {
        let mut headers = HeaderMap::new();
        let mut key = HeaderValue::from_static("sk_live_secret");
        key.set_sensitive(true);
        headers.append(HeaderName::from_static("x-api-key"), key);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.append(
            HeaderName::from_static("x-tricky"),
            HeaderValue::from_static("a \"quoted\" \\ value"),
        );
        headers.append(
            HeaderName::from_static("x-tricky"),
            HeaderValue::from_static("two"),
        );
        let recorded: serde_json::Value = serde_json::from_str(&headers_json(&headers)).unwrap();
        assert_eq!(recorded["x-api-key"], REDACTED);
        assert_eq!(recorded["content-type"], "application/json");
        assert_eq!(recorded["x-tricky"], "a \"quoted\" \\ value, two");
        assert_eq!(recorded.as_object().map(|o| o.len()), Some(3));
    }

    /// The body is the four fields, with `data` embedded byte for byte and the
    /// timestamp in RFC 3339 with microseconds.
    #[test]
    fn body_embeds_raw_data() {
        let at = DateTime::parse_from_rfc3339("2024-05-06T07:08:09.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        let e = PreparedEvent::new(
            Uuid::nil(),
            "u".into(),
            "order.created".into(),
            at,
            r#"{"b": 1,  "a":[2]}"#,
        );
        assert_eq!(
            std::str::from_utf8(&e.body).unwrap(),
            r#"{"id":"00000000-0000-0000-0000-000000000000","type":"order.created","timestamp":"2024-05-06T07:08:09.123456Z","data":{"b": 1,  "a":[2]}}"#
        );
        let v: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
        assert_eq!(v["data"]["a"][0], 2);
        assert!(!e.is_operational());
    }
}
