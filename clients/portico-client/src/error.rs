//! What a call can fail with. Portico answers every error as `application/problem+json`
//! (RFC 9457) with a stable `code`; [`Error::Api`] carries that document decoded, with
//! the status, the request id and any `Retry-After`, so callers switch on `code`
//! instead of parsing text.

use std::fmt;
use std::time::Duration;

use portico_domain::FieldError;
use serde::Deserialize;

/// The media type of Portico's error answers.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document as Portico sends it. Every field is optional on the
/// way in, so an error from a proxy in front of Portico (plain problem+json without a
/// `code`, or no JSON at all) still decodes into something printable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Problem {
    /// A URI naming the problem type (`https://portico.dev/problems/<code>`).
    #[serde(rename = "type")]
    pub problem_type: Option<String>,
    /// Short summary of the problem type (the status's reason phrase).
    pub title: Option<String>,
    /// The HTTP status the server put in the document.
    pub status: Option<u16>,
    /// Explanation of this occurrence.
    pub detail: Option<String>,
    /// Stable machine-readable code (`validation_failed`, `not_found`, ...).
    pub code: Option<String>,
    /// Field-level errors of a validation failure.
    pub errors: Vec<FieldError>,
}

/// An error answer of the API: the decoded problem plus what the response head said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status of the response.
    pub status: u16,
    /// The problem document (empty fields when the body was not problem+json).
    pub problem: Problem,
    /// The `x-request-id` of the response, to quote when asking operators.
    pub request_id: Option<String>,
    /// The `Retry-After` of a 429 or 503, when the server sent one.
    pub retry_after: Option<Duration>,
}

impl ApiError {
    /// Builds the error from a response's status, headers and body. Never fails: a
    /// body that is not a problem document keeps its first 200 characters as `detail`.
    pub fn from_parts(status: u16, headers: &reqwest::header::HeaderMap, body: &[u8]) -> Self {
        let problem = serde_json::from_slice::<Problem>(body).unwrap_or_else(|_| {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            Problem {
                detail: (!text.is_empty()).then(|| text.chars().take(200).collect()),
                ..Problem::default()
            }
        });
        let request_id = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let retry_after = headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| crate::retry::parse_retry_after(v, std::time::SystemTime::now()));
        ApiError {
            status,
            problem,
            request_id,
            retry_after,
        }
    }

    /// The stable code: the document's, else one derived from the status, so callers
    /// always have something to switch on.
    pub fn code(&self) -> &str {
        if let Some(code) = self.problem.code.as_deref() {
            return code;
        }
        match self.status {
            400 => "bad_request",
            401 => "unauthenticated",
            403 => "forbidden",
            404 => "not_found",
            409 => "conflict",
            413 => "payload_too_large",
            415 => "unsupported_media_type",
            429 => "rate_limited",
            503 => "unavailable",
            s if s >= 500 => "server_error",
            _ => "http_error",
        }
    }

    /// The field errors of a validation failure (empty otherwise).
    pub fn field_errors(&self) -> &[FieldError] {
        &self.problem.errors
    }
}

/// One line: `<status> <code>: <detail> (request <id>)`, what a command-line tool prints.
impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.code())?;
        match (&self.problem.detail, &self.problem.title) {
            (Some(detail), _) => write!(f, ": {detail}")?,
            (None, Some(title)) => write!(f, ": {title}")?,
            (None, None) => {}
        }
        if let Some(id) = &self.request_id {
            write!(f, " (request {id})")?;
        }
        Ok(())
    }
}

/// Everything a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error status (problem+json decoded).
    #[error("{0}")]
    Api(Box<ApiError>),
    /// No answer: connection refused, timeout, TLS, reading the body.
    #[error("transport: {0}")]
    Transport(#[from] reqwest::Error),
    /// A success answer whose body is not the documented shape.
    #[error("unexpected response body (status {status}): {source}")]
    Decode {
        /// The HTTP status of the answer.
        status: u16,
        /// What did not match.
        source: serde_json::Error,
    },
    /// The client was configured with something unusable (base URL, credentials).
    #[error("configuration: {0}")]
    Config(String),
}

impl Error {
    /// The API error, when the server answered with one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Error::Api(e) => Some(e),
            _ => None,
        }
    }

    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        self.api().map(|e| e.status)
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderMap, HeaderValue};

    use super::*;

    /// A Portico validation problem decodes with its code, detail, field errors, the
    /// request id and the one-line rendering the CLI prints.
    #[test]
    fn decodes_a_validation_problem() {
        let body =
            br#"{"type":"https://portico.dev/problems/validation_failed","title":"Bad Request",
            "status":400,"detail":"2 fields are invalid","code":"validation_failed",
            "errors":[{"code":"invalid_url","path":"/url","message":"url must be absolute"},
                      {"code":"empty","path":"/events","message":"at least one filter"}]}"#;
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("req-1"));
        let err = ApiError::from_parts(400, &headers, body);
        assert_eq!(err.code(), "validation_failed");
        assert_eq!(err.problem.title.as_deref(), Some("Bad Request"));
        assert_eq!(err.problem.status, Some(400));
        assert_eq!(err.field_errors().len(), 2);
        assert_eq!(err.field_errors()[0].path, "/url");
        assert_eq!(err.field_errors()[1].code, "empty");
        assert_eq!(
            err.to_string(),
            "400 validation_failed: 2 fields are invalid (request req-1)"
        );
    }

    /// A 429 carries its Retry-After; a problem without field errors has none.
    #[test]
    fn decodes_rate_limit_with_retry_after() {
        let body = br#"{"type":"x","title":"Too Many Requests","status":429,
            "detail":"rate limited: quota","code":"rate_limited"}"#;
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("7"));
        let err = ApiError::from_parts(429, &headers, body);
        assert_eq!(err.code(), "rate_limited");
        assert_eq!(err.retry_after, Some(Duration::from_secs(7)));
        assert!(err.field_errors().is_empty());
        assert_eq!(err.request_id, None);
    }

    /// A proxy's HTML or empty answer still gives a code from the status and a detail.
    #[test]
    fn non_problem_bodies_fall_back_to_the_status() {
        let headers = HeaderMap::new();
        let err = ApiError::from_parts(502, &headers, b"<html>Bad gateway</html>");
        assert_eq!(err.code(), "server_error");
        assert_eq!(
            err.problem.detail.as_deref(),
            Some("<html>Bad gateway</html>")
        );
        let err = ApiError::from_parts(404, &headers, b"");
        assert_eq!(err.code(), "not_found");
        assert_eq!(err.to_string(), "404 not_found");
        // Problem JSON without a code (another RFC 9457 server) keeps its title.
        let err = ApiError::from_parts(409, &headers, br#"{"title":"Conflict"}"#);
        assert_eq!(err.code(), "conflict");
        assert_eq!(err.to_string(), "409 conflict: Conflict");
    }
}
