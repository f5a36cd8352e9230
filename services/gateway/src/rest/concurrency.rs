//! Safe concurrency over REST: entity tags, conditional requests and idempotent
//! creates, in one place for every route ([`crate::app::preconditions`] and
//! [`crate::app::idempotency`] hold the rules both doors share).
//!
//! - Single resources answer with a strong `ETag` ([`with_etag`]); their updates and
//!   deletes take `If-Match` ([`IfMatch`]): a stale tag answers 412
//!   `precondition_failed` and changes nothing; `*` means "exists".
//! - A GET whose `If-None-Match` names the current tag answers 304 without a body
//!   ([`conditional_requests`]).
//! - The creates in [`IDEMPOTENT_CREATES`] take `Idempotency-Key`
//!   ([`conditional_requests`]): the same key and body replay the stored answer with
//!   `Idempotent-Replayed: true`; another body answers 409 `idempotency_key_reused`;
//!   a request still running with the key, 409 `idempotency_key_in_progress`.
//! - [`document`] adds these headers and answers to the OpenAPI document, from the
//!   same tables, so the document and the behaviour cannot drift.

use axum::body::Body;
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::{HeaderBuilder, Object, OpenApi, Ref, RefOr, Required, Type};

use crate::app::idempotency::{self, Claimed, IdempotencyKey};
use crate::app::preconditions::{ETag, Precondition, none_match_hits};
use crate::auth::Caller;
use crate::error::{ApiError, PROBLEM_JSON};
use crate::state::AppState;

/// The header a replayed answer carries.
pub const REPLAYED: &str = "idempotent-replayed";

/// The creates that take `Idempotency-Key` through the stored-answer mechanism (route
/// templates as in the OpenAPI document). Events (`idempotencyKey` in the body), bulk
/// batches and retry-failed jobs have keys of their own, written in the transaction of
/// what they create, and are not listed.
pub const IDEMPOTENT_CREATES: &[&str] = &[
    "/webhooks",
    "/webhooks/{id}/test",
    "/webhooks/{id}/secret/rotate",
    "/webhooks/{id}/deliveries/{deliveryId}/retry",
    "/integrations",
    "/integrations/{id}/regenerate-credentials",
    "/integration-templates/{key}",
    "/integration-templates/{key}/integrations",
    "/portal/sessions",
];

/// The single resources that carry an `ETag` and take `If-Match` on update and delete
/// (and `If-None-Match` on GET).
pub const VERSIONED: &[&str] = &[
    "/webhooks/{id}",
    "/integrations/{id}",
    "/integration-templates/{key}",
];

/// The precondition of an update or delete: `If-Match`, parsed (400
/// `invalid_if_match` when it is no list of entity tags).
#[derive(Debug, Clone, Default)]
pub struct IfMatch(pub Precondition);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let value = match parts.headers.get(header::IF_MATCH) {
            None => None,
            Some(v) => Some(v.to_str().map_err(|_| {
                ApiError::field(
                    "invalid_if_match",
                    "/headers/if-match",
                    "If-Match must be visible ASCII",
                )
            })?),
        };
        Precondition::from_if_match(value).map(IfMatch)
    }
}

/// `response` with the `ETag` header of its resource's version.
pub fn with_etag(etag: Option<ETag>, response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    if let Some(value) = etag.and_then(|t| HeaderValue::from_str(t.as_str()).ok()) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// The route template without the `/api` or `/api/v1` mount.
fn route_template(request: &Request) -> Option<&str> {
    let matched = request.extensions().get::<MatchedPath>()?.as_str();
    Some(
        matched
            .strip_prefix("/api/v1")
            .or_else(|| matched.strip_prefix("/api"))
            .unwrap_or(matched),
    )
}

/// The request path without the `/api` or `/api/v1` mount (both share keys).
fn concrete_route(request: &Request) -> String {
    let path = request.uri().path();
    let path = path
        .strip_prefix("/api/v1")
        .or_else(|| path.strip_prefix("/api"))
        .unwrap_or(path);
    format!("{} {path}", request.method())
}

/// 304 for a GET whose `If-None-Match` names the current tag; idempotent creates;
/// everything else passes through untouched.
pub async fn conditional_requests(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() == Method::GET {
        let none_match = request.headers().get(header::IF_NONE_MATCH).cloned();
        let response = next.run(request).await;
        return match none_match {
            Some(value) => not_modified(response, &value),
            None => response,
        };
    }
    // Every publish passes here: the cheap checks first, and nothing allocated.
    let idempotent = request.method() == Method::POST
        && request.headers().contains_key("idempotency-key")
        && route_template(&request).is_some_and(|r| IDEMPOTENT_CREATES.contains(&r));
    if !idempotent {
        return next.run(request).await;
    }
    match idempotent_create(&state, request, next).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

/// 304 Not Modified (with the tag, without the body) when `if_none_match` names the
/// tag of a 200 answer.
fn not_modified(response: Response, if_none_match: &HeaderValue) -> Response {
    let hit = response.status() == StatusCode::OK
        && match (
            if_none_match.to_str(),
            response
                .headers()
                .get(header::ETAG)
                .map(HeaderValue::to_str),
        ) {
            (Ok(wanted), Some(Ok(current))) => none_match_hits(wanted, current),
            _ => false,
        };
    if !hit {
        return response;
    }
    let mut answer = StatusCode::NOT_MODIFIED.into_response();
    if let Some(tag) = response.headers().get(header::ETAG) {
        answer.headers_mut().insert(header::ETAG, tag.clone());
    }
    answer
}

/// Runs a create once per key: claims the key with the caller and body, runs the
/// handler, stores a successful answer; or replays the stored one.
async fn idempotent_create(
    state: &AppState,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (mut parts, body) = request.into_parts();
    let raw_key = parts
        .headers
        .get("idempotency-key")
        .map(|v| v.as_bytes().to_vec())
        .unwrap_or_default();
    let key = IdempotencyKey::parse(&raw_key)?;
    let caller = Caller::from_request_parts(&mut parts, state).await?;
    let bytes = axum::body::to_bytes(body, state.config().max_body_bytes)
        .await
        .map_err(|_| {
            ApiError::PayloadTooLarge(format!(
                "the body is over {} bytes",
                state.config().max_body_bytes
            ))
        })?;
    let route = concrete_route(&Request::from_parts(parts.clone(), Body::empty()));
    match idempotency::claim(state, &caller, &route, &key, &bytes).await? {
        Claimed::Replay(answer) => {
            let status = u16::try_from(answer.status)
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::OK);
            let mut response = (status, answer.body).into_response();
            if let Some(value) = answer
                .content_type
                .as_deref()
                .and_then(|t| HeaderValue::from_str(t).ok())
            {
                response.headers_mut().insert(header::CONTENT_TYPE, value);
            }
            response
                .headers_mut()
                .insert(REPLAYED, HeaderValue::from_static("true"));
            Ok(response)
        }
        Claimed::Fresh(pending) => {
            let response = next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
            if !response.status().is_success() {
                // Only successes are stored: a corrected retry runs again.
                pending.release().await;
                return Ok(response);
            }
            let (parts, body) = response.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX)
                .await
                .map_err(ApiError::internal)?;
            let content_type = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            pending
                .complete(i32::from(parts.status.as_u16()), content_type, &body)
                .await;
            Ok(Response::from_parts(parts, Body::from(body)))
        }
    }
}

/// Adds the headers and answers of conditional requests and idempotent creates to the
/// operations of `doc` that have them.
pub fn document(doc: &mut OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        if IDEMPOTENT_CREATES.contains(&path.as_str())
            && let Some(op) = item.post.as_mut()
        {
            add_header(
                op,
                "Idempotency-Key",
                "Makes a retried create safe: the same key and body replay the first \
                 answer (with `Idempotent-Replayed: true`) for 24 hours; 1-255 bytes \
                 without control characters; scoped per owner and route.",
            );
            add_problem(
                op,
                "409",
                "idempotency_key_reused: this Idempotency-Key was used with another \
                 request; idempotency_key_in_progress: the first request with it is \
                 still running",
            );
        }
        if VERSIONED.contains(&path.as_str()) {
            if let Some(op) = item.get.as_mut() {
                add_header(
                    op,
                    "If-None-Match",
                    "Answer 304 without a body when the resource's ETag is one of these.",
                );
                op.responses.responses.insert(
                    "304".into(),
                    RefOr::T(
                        ResponseBuilder::new()
                            .description("Not modified: the ETag named in If-None-Match is current")
                            .header(
                                "ETag",
                                HeaderBuilder::new()
                                    .schema(Some(Object::with_type(Type::String)))
                                    .description(Some("The resource's current version"))
                                    .build(),
                            )
                            .build(),
                    ),
                );
            }
            for op in [item.patch.as_mut(), item.put.as_mut(), item.delete.as_mut()]
                .into_iter()
                .flatten()
            {
                add_header(
                    op,
                    "If-Match",
                    "Apply only if the resource's current ETag is one of these (`*`: if \
                     it exists); the ETag comes with every answer that returns the \
                     resource.",
                );
                add_problem(
                    op,
                    "412",
                    "precondition_failed: the resource changed since the version named in \
                     If-Match; nothing changed",
                );
            }
        }
    }
}

fn add_header(op: &mut Operation, name: &str, description: &str) {
    let parameters = op.parameters.get_or_insert_with(Vec::new);
    if parameters.iter().any(|p| {
        matches!(p, RefOr::T(p) if p.name.eq_ignore_ascii_case(name)
            && p.parameter_in == ParameterIn::Header)
    }) {
        return;
    }
    parameters.push(RefOr::T(
        ParameterBuilder::new()
            .name(name)
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(description))
            .schema(Some(Object::with_type(Type::String)))
            .build(),
    ));
}

fn add_problem(op: &mut Operation, status: &str, description: &str) {
    if let Some(RefOr::T(existing)) = op.responses.responses.get_mut(status) {
        existing.description = format!(
            "{}. Also: {description}",
            existing.description.trim_end_matches('.')
        );
        return;
    }
    op.responses
        .responses
        .entry(status.to_owned())
        .or_insert_with(|| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        PROBLEM_JSON,
                        utoipa::openapi::content::ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("Problem")))
                            .build(),
                    )
                    .build(),
            )
        });
}
