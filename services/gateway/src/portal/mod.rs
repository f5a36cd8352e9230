//! The partner portal: server-rendered HTML under `/portal/`, served by the gateway
//! itself, with its stylesheet and script compiled into the binary (`include_str!`),
//! so `cargo build` alone builds it and it needs no other site.
//!
//! Every page resolves its session to the same [`crate::identity::Caller`] the API
//! uses and calls [`crate::app`], so isolation, validation and limits are the API's.
//! The only SQL of its own is the sessions table (`portico_storage::portal_sessions`).
//!
//! # Layout
//! - [`html`]: the escaping HTML builder (markup only from literals).
//! - [`forms`]: labelled inputs with the application layer's field errors beside them.
//! - [`security`]: configuration, tokens, cookies, CSRF, the response headers.
//! - [`sessions`]: login links, partner sign-in, the session of a request.
//! - [`crate::rest::portal_sessions`] (with the other REST routes): `POST /api/portal/sessions`,
//!   `DELETE /api/portal/sessions/{id}`.
//! - [`pages`]: the page frame, errors, sign-in, login, logout.
//! - [`charts`]: inline SVG charts from delivery analytics.
//! - [`webhooks`], [`batches`], [`integrations`], [`events`], [`partner`]: the pages.

pub mod batches;
pub mod charts;
#[cfg(test)]
mod contrast;
pub mod events;
pub mod forms;
pub mod html;
pub mod integrations;
pub mod pages;
pub mod partner;
pub mod security;
pub mod sessions;
pub mod webhooks;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

pub use security::PortalConfig;

use crate::state::AppState;

/// The portal's stylesheet, compiled in.
const CSS: &str = include_str!("../../assets/portal.css");
/// The portal's script (an ES module), compiled in.
const JS: &str = include_str!("../../assets/portal.js");

/// The `/portal` routes, with the security headers on every answer. `api` is the REST
/// router (with state) that serves downloads for the portal.
pub fn router(state: AppState, api: Router) -> Router {
    let csp = HeaderValue::from_str(&state.config().portal.content_security_policy())
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"));
    Router::new()
        .route("/", get(pages::home))
        .route("/home", get(pages::home))
        .route("/login", get(pages::login))
        .route("/sign-in", get(pages::sign_in_form).post(pages::sign_in))
        .route("/logout", post(pages::logout))
        .route("/live-ticket", post(pages::live_ticket))
        .route("/webhooks", get(webhooks::list).post(webhooks::create))
        .route("/webhooks/{id}", get(webhooks::detail))
        .route("/webhooks/{id}/edit", post(webhooks::edit))
        .route("/webhooks/{id}/headers", post(webhooks::headers))
        .route("/webhooks/{id}/enable", post(webhooks::enable))
        .route("/webhooks/{id}/disable", post(webhooks::disable))
        .route("/webhooks/{id}/test", post(webhooks::send_test))
        .route(
            "/webhooks/{id}/secret/reveal",
            post(webhooks::reveal_secret),
        )
        .route(
            "/webhooks/{id}/secret/rotate",
            post(webhooks::rotate_secret),
        )
        .route("/webhooks/{id}/retry-failed", post(webhooks::retry_failed))
        .route(
            "/webhooks/{id}/deliveries/{delivery}",
            get(webhooks::delivery),
        )
        .route(
            "/webhooks/{id}/deliveries/{delivery}/retry",
            post(webhooks::retry_delivery),
        )
        .route("/batches", get(batches::list))
        .route("/batches/upload", post(batches::upload))
        .route("/batches/{id}", get(batches::detail))
        .route("/batches/{id}/download", get(batches::download))
        .route("/batches/{id}/cancel", post(batches::cancel))
        .route("/batches/{id}/retry-failed", post(batches::retry_failed))
        .route(
            "/integrations",
            get(integrations::list).post(integrations::create),
        )
        .route(
            "/integrations/from-template",
            post(integrations::create_from_template),
        )
        .route("/integrations/{id}", get(integrations::detail))
        .route("/integrations/{id}/edit", post(integrations::edit))
        .route("/integrations/{id}/active", post(integrations::set_active))
        .route(
            "/integrations/{id}/regenerate",
            post(integrations::regenerate),
        )
        .route(
            "/integrations/{id}/credentials",
            get(integrations::credentials),
        )
        .route("/events", get(events::page))
        .route("/partner", get(partner::page))
        .route("/assets/portal.css", get(css))
        .route("/assets/portal.js", get(js))
        .fallback(not_found)
        .layer(axum::Extension(batches::ApiRoutes(api)))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                let csp = csp.clone();
                async move {
                    let mut response = next.run(req).await;
                    security::add_headers(&mut response, &csp);
                    response
                }
            },
        ))
        .with_state(state)
}

async fn not_found() -> Response {
    pages::error_page(&crate::error::ApiError::NotFound("page"))
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}
