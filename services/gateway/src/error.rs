//! The gateway's one error type and its two mappings: to `application/problem+json`
//! (RFC 9457) for REST and to a gRPC status. Each variant has a stable `code` clients
//! can switch on. Internal errors are logged with their cause and answered without it.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use portico_domain::FieldError;
use std::collections::HashMap;
use std::time::Duration;
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// The `domain` of every gRPC `google.rpc.ErrorInfo` Portico sends: its `reason` is
/// then one of Portico's stable error codes (the `code` of problem+json).
pub const ERROR_DOMAIN: &str = "portico.dev";

/// The media type of every error answer (RFC 9457), for the responses and for the
/// OpenAPI document alike (defined with the API bodies, so clients share it).
pub use portico_api::PROBLEM_JSON;
/// The problem document of every error answer (defined with the API bodies).
pub use portico_api::Problem;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The input is invalid; each field error says where and why.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// The body is not acceptable JSON (syntax, types, unknown fields).
    #[error("malformed request: {0}")]
    MalformedBody(String),
    /// The body is not of a supported media type.
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    /// The body is larger than allowed.
    #[error("payload too large: {0}")]
    PayloadTooLarge(String),
    /// No credentials, or credentials that do not verify.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// Like [`ApiError::Unauthenticated`], with a more specific stable code: the
    /// service token without `x-portico-user-id` (`missing_user_id`), a token whose
    /// `sub` is no usable user id (`invalid_token_subject`).
    #[error("unauthenticated: {message}")]
    UnauthenticatedAs {
        /// The stable code.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Authenticated, but not allowed to do this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// No such resource for this caller (another user's resource answers this too).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The route does not exist.
    #[error("no route {0}")]
    NoRoute(String),
    /// The route exists but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The request conflicts with current state (e.g. an idempotency key reused with another body).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The resource is in a state that does not allow this (e.g. cancelling a finished batch).
    #[error("precondition failed: {0}")]
    FailedPrecondition(String),
    /// A rate limit or quota was hit; retry after the given seconds.
    #[error("rate limited: {message}")]
    RateLimited {
        /// What limit was hit.
        message: String,
        /// Seconds until a retry can succeed.
        retry_after_secs: u64,
    },
    /// A dependency is unavailable; the request changed nothing and can be retried.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// An answer with its own stable code under a status of the kinds above (e.g. 409
    /// `dead_letter_resolved`, 404 `operator_access_disabled`): the status gives the
    /// class, the code the exact reason.
    #[error("{message}")]
    Specific {
        /// The HTTP status (a 4xx; gRPC maps 404 to NOT_FOUND, 409 to FAILED_PRECONDITION).
        status: StatusCode,
        /// The stable code.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Well-formed input a rule of its target refuses, with its own code and the fields
    /// at fault (e.g. `template_field_forbidden`: a field an integration template does
    /// not let a request set): 422, gRPC INVALID_ARGUMENT.
    #[error("{message}")]
    Unprocessable {
        /// The stable code.
        code: &'static str,
        /// What is wrong.
        message: String,
        /// Each field at fault.
        errors: Vec<FieldError>,
    },
    /// The capability is not built yet.
    #[error("not implemented: {0}")]
    NotImplemented(&'static str),
    /// A bug or an unexpected dependency failure; details are logged, never returned.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// Wraps any unexpected error as internal, keeping its text for the log.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        ApiError::Internal(err.to_string())
    }

    /// One invalid field.
    pub fn field(code: &str, path: &str, message: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldError::new(code, path, message)])
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) | ApiError::MalformedBody(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthenticated(_) | ApiError::UnauthenticatedAs { .. } => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) | ApiError::NoRoute(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::FailedPrecondition(_) => StatusCode::CONFLICT,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Specific { status, .. } => *status,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Validation(_) => "validation_failed",
            ApiError::MalformedBody(_) => "malformed_body",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::UnauthenticatedAs { code, .. } => code,
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::NoRoute(_) => "route_not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::FailedPrecondition(_) => "failed_precondition",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Specific { code, .. } => code,
            ApiError::Unprocessable { code, .. } => code,
            ApiError::NotImplemented(_) => "not_implemented",
            ApiError::Internal(_) => "internal",
        }
    }

    /// What the client is told (internal details never leave the process).
    fn detail(&self) -> String {
        match self {
            ApiError::Internal(_) => "an unexpected error occurred; it has been logged".to_owned(),
            ApiError::Validation(errors) => match errors.as_slice() {
                [one] => one.message.clone(),
                many => format!("{} fields are invalid", many.len()),
            },
            other => other.to_string(),
        }
    }

    /// The gRPC richer error model's details (`google.rpc.Status.details`), so a
    /// gRPC client learns as much as a REST one from problem+json: always an
    /// `ErrorInfo` whose reason is the stable `code` (domain [`ERROR_DOMAIN`]); for a
    /// validation failure a `BadRequest` with one violation per bad field (its
    /// `field` the same JSON pointer as REST's `errors[].path`, its `reason` the
    /// field's code); for a rate limit a `RetryInfo` with the Retry-After delay.
    fn rich_details(&self) -> ErrorDetails {
        let mut details = ErrorDetails::new();
        details.set_error_info(self.code(), ERROR_DOMAIN, HashMap::new());
        match self {
            ApiError::Validation(errors) | ApiError::Unprocessable { errors, .. } => {
                details.set_bad_request(
                    errors
                        .iter()
                        .map(|e| FieldViolation {
                            field: e.path.clone(),
                            description: e.message.clone(),
                            reason: e.code.clone(),
                            localized_message: None,
                        })
                        .collect::<Vec<_>>(),
                );
            }
            ApiError::RateLimited {
                retry_after_secs, ..
            } => {
                details.set_retry_info(Some(Duration::from_secs(*retry_after_secs)));
            }
            _ => {}
        }
        details
    }

    fn log(&self) {
        if let ApiError::Internal(cause) = self {
            tracing::error!(%cause, "internal error");
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log();
        let status = self.status();
        let problem = Problem {
            problem_type: format!("https://portico.dev/problems/{}", self.code()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: self.detail(),
            code: self.code().to_owned(),
            errors: match &self {
                ApiError::Validation(errors) | ApiError::Unprocessable { errors, .. } => {
                    errors.clone()
                }
                _ => Vec::new(),
            },
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let ApiError::RateLimited {
            retry_after_secs, ..
        } = &self
            && let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

/// The one mapping of every gRPC failure: the matching status code, the field errors
/// (or the detail) as message, the rich details ([`ApiError::rich_details`]) and the
/// `x-portico-error-code` metadata that predates them.
impl From<ApiError> for tonic::Status {
    fn from(err: ApiError) -> Self {
        err.log();
        let message = match &err {
            ApiError::Validation(errors) | ApiError::Unprocessable { errors, .. } => errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
            _ => err.detail(),
        };
        let code = match &err {
            ApiError::Validation(_)
            | ApiError::Unprocessable { .. }
            | ApiError::MalformedBody(_)
            | ApiError::UnsupportedMediaType(_) => tonic::Code::InvalidArgument,
            // What the gRPC library itself answers for a message over its limit.
            ApiError::PayloadTooLarge(_) => tonic::Code::OutOfRange,
            ApiError::Unauthenticated(_) | ApiError::UnauthenticatedAs { .. } => {
                tonic::Code::Unauthenticated
            }
            ApiError::Forbidden(_) => tonic::Code::PermissionDenied,
            ApiError::NotFound(_) | ApiError::NoRoute(_) => tonic::Code::NotFound,
            ApiError::MethodNotAllowed | ApiError::NotImplemented(_) => tonic::Code::Unimplemented,
            ApiError::Conflict(_) => tonic::Code::AlreadyExists,
            ApiError::FailedPrecondition(_) => tonic::Code::FailedPrecondition,
            ApiError::RateLimited { .. } => tonic::Code::ResourceExhausted,
            ApiError::Unavailable(_) => tonic::Code::Unavailable,
            ApiError::Specific { status, .. } => match *status {
                StatusCode::NOT_FOUND => tonic::Code::NotFound,
                StatusCode::UNAUTHORIZED => tonic::Code::Unauthenticated,
                StatusCode::FORBIDDEN => tonic::Code::PermissionDenied,
                StatusCode::BAD_REQUEST => tonic::Code::InvalidArgument,
                _ => tonic::Code::FailedPrecondition,
            },
            ApiError::Internal(_) => tonic::Code::Internal,
        };
        let mut status = tonic::Status::with_error_details(code, message, err.rich_details());
        // Kept for clients written before the rich details: the same code as ErrorInfo.
        if let Ok(v) = err.code().parse() {
            status.metadata_mut().insert("x-portico-error-code", v);
        }
        status
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => {
                ApiError::Unavailable("database".into())
            }
            // A value PostgreSQL refuses (class 22: a NUL byte, a number out of range)
            // came from the request: a validator is missing, but the caller still gets
            // a clear 400, never a 500.
            sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("22")) => {
                tracing::warn!(error = %db, "input refused by PostgreSQL; a validator is missing");
                ApiError::field(
                    "invalid_input",
                    "",
                    "a value in the request cannot be stored (control characters or out of range)",
                )
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<portico_queue::QueueError> for ApiError {
    fn from(err: portico_queue::QueueError) -> Self {
        match err {
            portico_queue::QueueError::Outbox(db) => db.into(),
            other => {
                tracing::warn!(error = %other, "queue unavailable");
                ApiError::Unavailable("job queue".into())
            }
        }
    }
}

impl From<FieldError> for ApiError {
    fn from(err: FieldError) -> Self {
        ApiError::Validation(vec![err])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_validation_failure_carries_each_field_and_the_code_over_grpc() {
        let status = tonic::Status::from(ApiError::Validation(vec![
            FieldError::new("invalid_url", "/url", "url must be an absolute https URL"),
            FieldError::new("empty_events", "/events", "events must not be empty"),
        ]));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let details = status.get_error_details();
        let violations = &details
            .bad_request()
            .expect("a BadRequest")
            .field_violations;
        let seen: Vec<_> = violations
            .iter()
            .map(|v| (v.field.as_str(), v.reason.as_str()))
            .collect();
        assert_eq!(seen, [("/url", "invalid_url"), ("/events", "empty_events")]);
        let info = details.error_info().expect("an ErrorInfo");
        assert_eq!(info.reason, "validation_failed");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(
            status
                .metadata()
                .get("x-portico-error-code")
                .map(|v| v.to_str().ok()),
            Some(Some("validation_failed"))
        );
    }

    #[test]
    fn a_rate_limit_carries_its_retry_delay_over_grpc() {
        let status = tonic::Status::from(ApiError::RateLimited {
            message: "too many requests".into(),
            retry_after_secs: 7,
        });
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        let details = status.get_error_details();
        assert_eq!(
            details.retry_info().and_then(|r| r.retry_delay),
            Some(Duration::from_secs(7))
        );
        assert!(details.bad_request().is_none());
        assert_eq!(
            details.error_info().map(|i| i.reason.as_str()),
            Some("rate_limited")
        );
    }
}
