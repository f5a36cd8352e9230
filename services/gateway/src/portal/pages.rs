//! The page frame every portal page shares, error pages, and signing in and out:
//! the login link, the partner sign-in form, logout.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html as HtmlBody, IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::html::Html;
use super::security;
use super::sessions::{self, PortalSession};
use crate::error::ApiError;
use crate::state::AppState;

/// Which part of the navigation is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// Webhooks pages.
    Webhooks,
    /// Batches pages.
    Batches,
    /// The partner's integration page.
    Partner,
    /// A user's integrations pages.
    Integrations,
    /// The events page.
    Events,
    /// Nothing (sign-in, errors).
    None,
}

/// A whole page: head, navigation (with the logout form when signed in), the body.
pub fn page(session: Option<&PortalSession>, title: &str, nav: Nav, body: &Html) -> Html {
    let mut h = Html::new();
    h.raw("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">")
        .raw("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")
        .el("<title>", title, " · Portico</title>")
        .raw("<link rel=\"stylesheet\" href=\"/portal/assets/portal.css\">")
        .raw("<script type=\"module\" src=\"/portal/assets/portal.js\"></script>")
        .raw("</head><body>")
        .raw("<a class=\"skip\" href=\"#main\">Skip to content</a>")
        .raw("<header class=\"top\"><span class=\"brand\">Portico</span>");
    if let Some(s) = session {
        h.raw("<nav aria-label=\"Main\">");
        if s.is_partner() {
            nav_link(
                &mut h,
                "/portal/partner",
                "Integration",
                nav == Nav::Partner,
            );
        } else {
            nav_link(&mut h, "/portal/webhooks", "Webhooks", nav == Nav::Webhooks);
        }
        nav_link(&mut h, "/portal/batches", "Batches", nav == Nav::Batches);
        if !s.is_partner() && s.webhook_ids.is_none() {
            nav_link(
                &mut h,
                "/portal/integrations",
                "Integrations",
                nav == Nav::Integrations,
            );
        }
        nav_link(&mut h, "/portal/events", "Events", nav == Nav::Events);
        h.raw("</nav><form method=\"post\" action=\"/portal/logout\" class=\"logout\">");
        csrf_field(&mut h, &s.csrf);
        h.raw("<button type=\"submit\">Sign out</button></form>");
    }
    h.raw("</header><main id=\"main\"")
        .attr("data-csrf", session.map_or("", |s| s.csrf.as_str()))
        .raw(">")
        .el("<h1>", title, "</h1>")
        .push(body)
        .raw("</main></body></html>");
    h
}

fn nav_link(h: &mut Html, href: &'static str, label: &'static str, current: bool) {
    h.raw("<a href=\"").raw(href).raw("\"");
    if current {
        h.raw(" aria-current=\"page\"");
    }
    h.raw(">").raw(label).raw("</a>");
}

/// The hidden CSRF input of a form.
pub fn csrf_field(h: &mut Html, csrf: &str) {
    h.raw("<input type=\"hidden\" name=\"csrf\"")
        .attr("value", csrf)
        .raw(">");
}

/// A one-button form posting to `action` (a path built from ids).
pub fn post_button(h: &mut Html, action: &str, csrf: &str, label: &'static str) {
    h.raw("<form method=\"post\" class=\"inline\"")
        .attr("action", action)
        .raw(">");
    csrf_field(h, csrf);
    h.raw("<button type=\"submit\">")
        .raw(label)
        .raw("</button></form>");
}

/// A timestamp as people read it.
pub fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A status badge: the class says the colour, the text says the status.
pub fn badge(h: &mut Html, status: &str) {
    let class = match status {
        "succeeded" | "active" | "completed" => "badge ok",
        "failed" | "disabled" | "failing" | "cancelled" => "badge bad",
        "retrying" | "completed_with_errors" | "duplicate" | "unprocessed" => "badge warn",
        _ => "badge",
    };
    h.raw("<span")
        .attr("class", class)
        .raw(">")
        .text(status)
        .raw("</span>");
}

/// A notice after a POST, from a fixed list (the query says which; no text from the
/// URL is shown).
pub fn notice(h: &mut Html, code: Option<&str>) {
    let text = match code {
        Some("saved") => "Saved.",
        Some("created") => {
            "Webhook created. Reveal its signing secret below to configure your receiver, then send a test event."
        }
        Some("header_saved") => "Header saved. Its value is stored sealed and not shown again.",
        Some("header_removed") => "Header removed.",
        Some("enabled") => "The webhook is enabled.",
        Some("disabled") => "The webhook is disabled.",
        Some("test_sent") => "A test event was sent; its delivery appears below.",
        Some("retried") => "The delivery is scheduled for a new attempt.",
        Some("retry_started") => "Retrying the failed deliveries; progress shows below.",
        Some("cancel_requested") => "Cancel requested; the batch stops after the chunk in flight.",
        Some("retry_batch") => "A new batch retries the failed and unprocessed orders.",
        Some("signed_out") => "You are signed out.",
        Some("integration_activated") => "The integration is active; its credentials work again.",
        Some("integration_deactivated") => {
            "The integration is deactivated; its credentials stop working at once."
        }
        _ => return,
    };
    h.raw("<p class=\"notice\" role=\"status\">")
        .raw(text)
        .raw("</p>");
}

/// Renders a page as a response with `status`.
pub fn respond(status: StatusCode, page: Html) -> Response {
    (status, HtmlBody(page.into_string())).into_response()
}

/// An error as a page: the message says what to fix; internal details stay in the log.
pub fn error_page(err: &ApiError) -> Response {
    let status = err.status();
    let message = match err {
        ApiError::Internal(detail) => {
            tracing::error!(%detail, "portal request failed");
            "Something went wrong on our side. Try again in a moment.".to_owned()
        }
        ApiError::Validation(errors) => errors
            .iter()
            .map(|e| e.message.clone())
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    };
    let mut body = Html::new();
    body.raw("<p class=\"error\" role=\"alert\">")
        .text(&message)
        .raw("</p><p><a href=\"/portal/home\">Back to the portal</a></p>");
    let title = if status == StatusCode::NOT_FOUND {
        "Not found"
    } else {
        "Something needs fixing"
    };
    respond(status, page(None, title, Nav::None, &body))
}

/// `GET /portal` and `/portal/home`: the start page of the session's kind.
pub async fn home(session: PortalSession) -> Redirect {
    if session.is_partner() {
        Redirect::to("/portal/partner")
    } else {
        Redirect::to("/portal/webhooks")
    }
}

/// The login link's query.
#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    token: Option<String>,
}

/// `GET /portal/login?token=`: uses the one-time link and sets the session cookie, then
/// redirects to a URL without the token.
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    let token = q.token.unwrap_or_default();
    match sessions::open_link(&state, &token).await {
        Ok(Some(session_token)) => signed_in(&state, &headers, &session_token, "/portal/home"),
        Ok(None) => {
            let mut body = Html::new();
            body.raw("<p class=\"error\" role=\"alert\">This login link is invalid, already used or expired. Ask for a new one where you found it, or sign in with your integration's credentials.</p>")
                .raw("<p><a href=\"/portal/sign-in\">Partner sign-in</a></p>");
            respond(
                StatusCode::UNAUTHORIZED,
                page(None, "Login link not valid", Nav::None, &body),
            )
        }
        Err(e) => error_page(&e),
    }
}

fn signed_in(state: &AppState, headers: &HeaderMap, token: &str, to: &'static str) -> Response {
    let secure = security::secure_request(headers, state.config());
    let max_age = i64::from(state.config().portal.portal_session_ttl_secs);
    let mut response = Redirect::to(to).into_response();
    if let Some(cookie) = security::set_cookie(security::SESSION_COOKIE, token, max_age, secure) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    if let Some(clear) = security::set_cookie(security::SIGN_IN_COOKIE, "", 0, secure) {
        response.headers_mut().append(header::SET_COOKIE, clear);
    }
    response
}

fn sign_in_page(
    state: &AppState,
    headers: &HeaderMap,
    error: Option<&str>,
    done: Option<&str>,
) -> Response {
    let secure = security::secure_request(headers, state.config());
    let token = match security::new_token() {
        Ok(t) => t,
        Err(e) => return error_page(&e),
    };
    let mut body = Html::new();
    notice(&mut body, done);
    body.raw("<p>Partners: sign in with your integration's API key and secret. Platform users open the login link their platform gives them.</p>");
    if let Some(e) = error {
        body.raw("<p class=\"error\" role=\"alert\">")
            .text(e)
            .raw("</p>");
    }
    body.raw("<form method=\"post\" action=\"/portal/sign-in\" class=\"stack\">");
    csrf_field(&mut body, &token);
    body.raw("<label for=\"api_key\">API key</label>")
        .raw("<input id=\"api_key\" name=\"api_key\" autocomplete=\"username\" required>")
        .raw("<label for=\"api_secret\">API secret</label>")
        .raw("<input id=\"api_secret\" name=\"api_secret\" type=\"password\" autocomplete=\"current-password\" required>")
        .raw("<button type=\"submit\">Sign in</button></form>");
    let status = if error.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    let mut response = respond(status, page(None, "Sign in", Nav::None, &body));
    if let Some(cookie) = security::set_cookie(security::SIGN_IN_COOKIE, &token, 1800, secure) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// The notice query of a page.
#[derive(Debug, Default, Deserialize)]
pub struct NoticeQuery {
    /// Which fixed notice to show.
    pub done: Option<String>,
}

/// `GET /portal/sign-in`: the partner sign-in form.
pub async fn sign_in_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<NoticeQuery>,
) -> Response {
    sign_in_page(&state, &headers, None, q.done.as_deref())
}

/// The sign-in form's fields.
#[derive(Debug, Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    api_key: String,
    #[serde(default)]
    api_secret: String,
}

/// `POST /portal/sign-in`: checks the double-submit token, then the credentials
/// (through the credentials verifier and its throttle), and starts a partner session.
pub async fn sign_in(
    State(state): State<AppState>,
    parts: axum::http::request::Parts,
    axum::Form(form): axum::Form<SignInForm>,
) -> Response {
    let headers = &parts.headers;
    let expected = security::cookie(headers, security::SIGN_IN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !security::csrf_matches(expected, form.csrf.as_deref()) {
        return error_page(&ApiError::Specific {
            status: StatusCode::FORBIDDEN,
            code: "csrf_token_invalid",
            message:
                "the sign-in form expired or did not come from this portal; reload it and try again"
                    .into(),
        });
    }
    let client = crate::net::peer_address(
        headers,
        &parts.extensions,
        state.config().trust_forwarded_for,
    )
    .unwrap_or_else(|| "-".to_owned());
    match sessions::partner_sign_in(&state, &form.api_key, &form.api_secret, &client).await {
        Ok(token) => signed_in(&state, headers, &token, "/portal/partner"),
        Err(ApiError::RateLimited { .. }) => sign_in_page(
            &state,
            headers,
            Some("Too many wrong secrets from here. Wait a minute before trying again."),
            None,
        ),
        Err(ApiError::Internal(detail)) => error_page(&ApiError::Internal(detail)),
        Err(ApiError::Unavailable(m)) => error_page(&ApiError::Unavailable(m)),
        Err(_) => sign_in_page(
            &state,
            headers,
            Some(
                "The API key and secret do not match an active integration. Check both and try again.",
            ),
            None,
        ),
    }
}

/// A form with only the CSRF token.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    /// The session's CSRF token.
    #[serde(default)]
    pub csrf: Option<String>,
}

/// `POST /portal/logout`: revokes the session and clears the cookie.
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    session: PortalSession,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Response {
    if let Err(e) = session.check_csrf(form.csrf.as_deref()) {
        return error_page(&e);
    }
    if let Err(e) = sessions::sign_out(&state, &session.token).await {
        return error_page(&e);
    }
    let secure = security::secure_request(&headers, state.config());
    let mut response = Redirect::to("/portal/sign-in?done=signed_out").into_response();
    if let Some(clear) = security::set_cookie(security::SESSION_COOKIE, "", 0, secure) {
        response.headers_mut().append(header::SET_COOKIE, clear);
    }
    response
}

/// `POST /portal/live-ticket` (CSRF token in `x-csrf-token`): a single-use ticket for
/// the live-updates WebSocket (`/api/v1/live?ticket=`), issued for the session's caller
/// and ending with the session. A session narrowed to some webhooks gets none: a
/// ticket would reach every webhook of the user, so those pages update on reload.
pub async fn live_ticket(
    State(state): State<AppState>,
    session: PortalSession,
    headers: HeaderMap,
) -> Response {
    let presented = headers
        .get(security::CSRF_HEADER)
        .and_then(|v| v.to_str().ok());
    if let Err(e) = session.check_csrf(presented) {
        return (
            e.status(),
            axum::Json(serde_json::json!({ "error": "csrf" })),
        )
            .into_response();
    }
    if session.webhook_ids.is_some() {
        return (
            StatusCode::FORBIDDEN,
            axum::Json(serde_json::json!({ "error": "narrowed sessions have no live updates" })),
        )
            .into_response();
    }
    let (ticket, expires_at) =
        state
            .live()
            .tickets()
            .issue(&session.caller, Some(session.expires_at), Utc::now());
    axum::Json(serde_json::json!({ "ticket": ticket, "expiresAt": expires_at })).into_response()
}
