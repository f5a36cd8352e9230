//! The REST door: axum handlers that parse JSON, call [`crate::app`], and render JSON
//! or problem+json. The same router is mounted under `/api` and `/api/v1`; the OpenAPI
//! document is generated from the handlers' annotations, so it cannot drift.

pub mod admin;
pub mod analytics;
pub mod audit;
pub mod bulk_orders;
pub mod concurrency;
pub mod event_types;
pub mod events;
pub mod integration_templates;
pub mod integrations;
pub mod json;
pub mod keep_alive;
pub mod listen;
pub mod live;
pub mod middleware;
pub mod openapi;
pub mod partner_calls;
pub mod portal_sessions;
pub mod webhooks;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Uri, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::state::AppState;

/// The OpenAPI document's fixed parts; paths are added by each routes() function.
#[derive(OpenApi)]
#[openapi(
    info(title = "Portico API", description = "Signed webhooks, bulk order intake and partner credentials. Errors are application/problem+json (RFC 9457) with a stable `code`."),
    servers((url = "/api/v1", description = "Version 1"), (url = "/api", description = "Current version")),
    modifiers(&SecuritySchemes),
    // Schemas only query parameters refer to (bodies bring their own).
    components(schemas(crate::app::dead_letters::ResolutionFilter)),
    tags(
        (name = "events", description = "Events published by internal services"),
        (name = "webhooks", description = "Webhook endpoints, deliveries and retries"),
        (name = "analytics", description = "Delivery analytics: outcomes, attempts and latency percentiles over time, slowest and most-failing endpoints"),
        (name = "bulk-orders", description = "Bulk order batches"),
        (name = "orders", description = "Orders"),
        (name = "integrations", description = "Partner integrations and credentials"),
        (name = "integration-templates", description = "Integration templates (built-in and your own) and creating an integration with its webhook from one"),
        (name = "portal", description = "Partner portal login links and sessions"),
        (name = "admin", description = "Operators only (PORTICO_OPERATOR_TOKEN): dead letters"),
        (name = "audit", description = "The tamper-evident audit log of every change, and its verification"),
        (name = "live", description = "Live updates over a WebSocket (see docs/api/live.md)"),
    )
)]
struct ApiDoc;

struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "userJwt",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "serviceToken",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "partnerBasic",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
        components.add_security_scheme(
            "operatorToken",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The routes of every capability and the generated OpenAPI document.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(events::publish_event))
        .routes(routes!(events::publish_events))
        .merge(event_types::routes())
        .merge(webhooks::routes())
        .merge(analytics::routes())
        .merge(bulk_orders::routes())
        .merge(integrations::routes())
        .merge(integration_templates::routes())
        .merge(admin::routes())
        .merge(audit::routes())
        .merge(live::routes())
        .merge(listen::routes())
        .merge(portal_sessions::routes())
        .split_for_parts();
    // Before the shared answers, which document the Idempotency-Key's 400 from it.
    concurrency::document(&mut doc);
    openapi::add_common_responses(&mut doc);
    // After the shared answers: webhooks are requests Portico sends, not operations.
    if let Err(e) = event_types::document_webhooks(&mut doc) {
        tracing::error!(%e, "the event-type catalogue does not fit the OpenAPI document");
    }
    (router, doc)
}

/// The whole REST application: `/api`, `/api/v1`, the OpenAPI documents and the admin
/// endpoints, with request ids, body limit, timeout, panic safety and metrics.
pub fn router(state: AppState, admin: Router) -> Router {
    let (api, openapi) = api();
    // The portal serves downloads through the API's own routes.
    let portal_api = api.clone().with_state(state.clone());
    let json = openapi.to_pretty_json().unwrap_or_default();
    let yaml = openapi.to_yaml().unwrap_or_default();
    let api = api
        .route(
            "/openapi.json",
            get(move || async move { ([(header::CONTENT_TYPE, "application/json")], json) }),
        )
        .route(
            "/openapi.yaml",
            get(move || async move { ([(header::CONTENT_TYPE, "application/yaml")], yaml) }),
        );
    let request_id = HeaderName::from_static("x-request-id");
    let max_body = state.config().max_body_bytes;
    let origin_state = state.clone();
    let timeout = Duration::from_millis(state.config().request_timeout_ms);
    let routed = Router::new()
        .nest("/api/v1", api.clone())
        .nest("/api", api)
        .fallback(no_route)
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // The API's per-route layers read the matched route (metrics, conditional
        // requests, partner-call logging), so they wrap each route; as one stack, so a
        // request pays one boxed route service for all six, not one per layer.
        // Listed outermost first.
        .layer(
            tower::ServiceBuilder::new()
                // Outside the timeout, so a timed-out partner call is still logged.
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    partner_calls::authenticate_and_log,
                ))
                .layer(axum::middleware::map_response(timeout_problem))
                .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    timeout,
                ))
                .layer(DefaultBodyLimit::max(max_body))
                // Inside the timeout: a create that times out releases its idempotency key.
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    concurrency::conditional_requests,
                ))
                .layer(axum::middleware::from_fn(middleware::observe)),
        )
        .with_state(state.clone())
        .nest("/portal", crate::portal::router(state, portal_api))
        .merge(admin);
    // The layers every request passes, whatever its route, wrap the routed application
    // once, as one tower stack: `Router::layer` would wrap each route on its own, and
    // every such layer then costs each request a boxed clone of the route's service,
    // a oneshot and a boxed future (about a fifth of the gateway's CPU went to the
    // middleware plumbing in profiles). Listed outermost first.
    let outer = tower::ServiceBuilder::new()
        // Sees the body after every other layer and the handler are done.
        .layer(axum::middleware::from_fn(keep_alive::drain_or_close))
        .layer(axum::middleware::map_response(add_version_header))
        .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
        .layer(PropagateRequestIdLayer::new(request_id))
        // A panic's answer has a body type of its own: back to axum's.
        .map_response(IntoResponse::into_response)
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal("handler panicked".into()).into_response()
        }))
        // The audit log sees each request's id and client (the admin routes change
        // nothing it records).
        .layer(axum::middleware::from_fn_with_state(
            origin_state,
            middleware::audit_origin,
        ))
        .service(routed);
    Router::new().fallback_service(outer)
}

async fn no_route(uri: Uri) -> ApiError {
    ApiError::NoRoute(uri.path().to_owned())
}

/// The timeout layer answers 503 with an empty body; every error is problem+json.
async fn timeout_problem(response: axum::response::Response) -> axum::response::Response {
    if response.status() == axum::http::StatusCode::SERVICE_UNAVAILABLE
        && !response.headers().contains_key(header::CONTENT_TYPE)
    {
        return ApiError::Unavailable("the request took longer than its time limit".into())
            .into_response();
    }
    response
}

async fn add_version_header(mut response: axum::response::Response) -> axum::response::Response {
    response.headers_mut().insert(
        "x-portico-version",
        HeaderValue::from_static(env!("CARGO_PKG_VERSION")),
    );
    response
}
