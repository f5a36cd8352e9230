//! REST routes of webhooks, one module per sub-resource: [`endpoints`] (and the test
//! event), [`secrets`], [`deliveries`] and [`retry_jobs`]. Thin adapters: parse, call
//! [`crate::app::webhooks`] or [`crate::app::webhook_deliveries`], render the bodies of
//! [`portico_api`].

pub mod deliveries;
pub mod endpoints;
pub mod retry_jobs;
pub mod secrets;

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, Query, Request};
use axum::http::header;
use chrono::{DateTime, Utc};
use portico_domain::FieldError;
use serde::de::DeserializeOwned;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::error::ApiError;
use crate::rest::json::ApiJson;
use crate::state::AppState;

/// The routes, with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(endpoints::create_webhook, endpoints::list_webhooks))
        .routes(routes!(
            endpoints::get_webhook,
            endpoints::update_webhook,
            endpoints::delete_webhook
        ))
        .routes(routes!(secrets::get_secret))
        .routes(routes!(secrets::rotate_secret))
        .routes(routes!(endpoints::send_test_event))
        .routes(routes!(deliveries::list_deliveries))
        .routes(routes!(deliveries::get_delivery))
        .routes(routes!(deliveries::retry_delivery))
        .routes(routes!(retry_jobs::retry_failed))
        .routes(routes!(retry_jobs::get_retry_job))
        .routes(routes!(retry_jobs::cancel_retry_job))
}

/// A JSON body that may be left out entirely (then `T::default()`), for actions whose
/// every field is optional (rotate, retry).
pub struct OptionalJson<T>(pub T);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = req.headers();
        let has_body = headers.contains_key(header::TRANSFER_ENCODING)
            || headers
                .get(header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() != b"0");
        if !has_body {
            return Ok(OptionalJson(T::default()));
        }
        let ApiJson(value) = ApiJson::<T>::from_request(req, state).await?;
        Ok(OptionalJson(value))
    }
}

/// The query parameters, or 400 `invalid_query` naming what is wrong.
pub(crate) fn query<T>(extracted: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    extracted
        .map(|Query(q)| q)
        .map_err(|e| ApiError::field("invalid_query", "/query", e.body_text()))
}

/// A path id, or 400 `invalid_id` pointing at the parameter.
pub(crate) fn parse_id(text: &str, name: &str) -> Result<Uuid, ApiError> {
    text.parse().map_err(|_| {
        ApiError::field(
            "invalid_id",
            &format!("/{name}"),
            format!("{name} must be a UUID"),
        )
    })
}

/// The value of one parsed query field, or `None` with its error kept in `errors`, so a
/// request hears about every bad field at once rather than the first.
pub(crate) fn collect_field<T>(
    errors: &mut Vec<FieldError>,
    parsed: Result<T, FieldError>,
) -> Option<T> {
    parsed.map_err(|e| errors.push(e)).ok()
}

/// An optional RFC 3339 time (empty = absent), or `invalid_timestamp` at `path`.
pub(crate) fn parse_time(
    text: Option<&str>,
    path: &str,
) -> Result<Option<DateTime<Utc>>, FieldError> {
    text.filter(|t| !t.is_empty())
        .map(|t| {
            DateTime::parse_from_rfc3339(t)
                .map(|d| d.with_timezone(&Utc))
                .map_err(|_| {
                    FieldError::new(
                        "invalid_timestamp",
                        path,
                        format!("{t:?} is not an RFC 3339 timestamp (e.g. 2026-01-31T12:00:00Z)"),
                    )
                })
        })
        .transpose()
}
