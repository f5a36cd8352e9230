//! Webhook pages: the list with a create form, a webhook's detail (settings with the
//! retry policy and throughput limits, custom headers whose values are never shown,
//! enable and disable, reveal and rotate the secret, send a test event, the delivery
//! log filtered by status, event type and time, retry one, retry all failed with a
//! dry-run count) and one delivery's attempts. Every action calls
//! `crate::app::webhooks` or `crate::app::webhook_deliveries` with the session's
//! caller, exactly as the API does; a refused form comes back with the application
//! layer's messages next to its fields ([`super::forms`]).

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, NaiveDateTime, Utc};
use portico_domain::FieldError;
use portico_domain::pagination::PageRequest;
use portico_domain::webhooks::{
    DeliveryStatus, MAX_BASE_DELAY_MS, MAX_CONCURRENCY_LIMIT, MAX_MAX_DELAY_MS,
    MAX_RATE_LIMIT_PER_SECOND, MAX_RETRIES_LIMIT, MIN_BASE_DELAY_MS, NewWebhook, RetryPolicyPatch,
    WebhookPatch,
};
use portico_storage::deliveries::DeliveryFilter;
use serde::Deserialize;
use uuid::Uuid;

use super::charts;
use super::forms::{self, Errors, Field};
use super::html::{Html, url_encode};
use super::pages::{self, Nav, badge, csrf_field, error_page, notice, post_button, time};
use super::sessions::PortalSession;
use crate::app::sealing::{self, MASK};
use crate::app::webhook_deliveries::{self as deliveries, RetryFailedOutcome, RetryFailedRequest};
use crate::app::webhooks::{self, Webhook};
use crate::error::ApiError;
use crate::state::AppState;

/// Deliveries per page of the log.
const LOG_PAGE: u32 = 50;

fn parse_uuid(text: &str, what: &'static str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| ApiError::NotFound(what))
}

fn status_label(w: &Webhook) -> &'static str {
    if !w.active { "disabled" } else { "active" }
}

/// Wraps a table so that it scrolls sideways on a narrow screen instead of
/// overflowing the page; focusable and labelled, so keyboard users can scroll it.
fn scroll_open(h: &mut Html, label: &'static str) {
    h.raw("<div class=\"scroll\" role=\"region\" tabindex=\"0\" aria-label=\"")
        .raw(label)
        .raw("\">");
}

/// The create form's fields and the error pointers each answers for.
const CREATE_FIELDS: &[(&str, &[&str])] = &[
    ("new-url", &["/url"]),
    ("new-events", &["/events"]),
    ("new-description", &["/description"]),
];

/// The create form as submitted (shown again with its errors when refused).
#[derive(Debug, Default, Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    url: String,
    #[serde(default)]
    events: String,
    #[serde(default)]
    description: String,
}

/// `GET /portal/webhooks`.
pub async fn list(State(state): State<AppState>, session: PortalSession) -> Response {
    match render_list(&state, &session, None).await {
        Ok(r) => r,
        Err(e) => error_page(&e),
    }
}

fn create_form(h: &mut Html, csrf: &str, form: Option<(&CreateForm, &[FieldError])>) {
    let (values, errors) = match form {
        Some((f, e)) => (Some(f), Errors(e)),
        None => (None, Errors::default()),
    };
    h.raw("<section aria-labelledby=\"create\"><h2 id=\"create\">Create a webhook</h2>");
    h.raw("<form method=\"post\" action=\"/portal/webhooks\" class=\"stack\">");
    csrf_field(h, csrf);
    Field {
        id: "new-url",
        name: "url",
        label: "URL",
        hint: Some("Where Portico POSTs events: an https:// address your receiver answers on."),
        kind: "url",
        value: values.map_or("", |f| f.url.as_str()),
        extra: " required",
        paths: &["/url"],
    }
    .render(h, errors);
    Field {
        id: "new-events",
        name: "events",
        label: "Event filters",
        hint: Some(
            "Comma-separated event types; a trailing .* matches a family: order.created, order.*",
        ),
        kind: "text",
        value: values.map_or("", |f| f.events.as_str()),
        extra: " required",
        paths: &["/events"],
    }
    .render(h, errors);
    Field {
        id: "new-description",
        name: "description",
        label: "Description (optional)",
        hint: None,
        kind: "text",
        value: values.map_or("", |f| f.description.as_str()),
        extra: "",
        paths: &["/description"],
    }
    .render(h, errors);
    h.raw("<div><button type=\"submit\">Create webhook</button></div></form></section>");
}

async fn render_list(
    state: &AppState,
    session: &PortalSession,
    refused: Option<(&CreateForm, &[FieldError])>,
) -> Result<Response, ApiError> {
    if session.is_partner() {
        return Ok(Redirect::to("/portal/partner").into_response());
    }
    let page = PageRequest::parse(Some(100), None)?;
    let (all, _) = webhooks::list(state, &session.caller, page).await?;
    let shown: Vec<&Webhook> = all
        .iter()
        .filter(|w| session.check_webhook(w.id).is_ok())
        .collect();
    let narrowed = session.webhook_ids.is_some();
    let mut body = Html::new();
    if let Some((_, errors)) = refused {
        Errors(errors).summary(&mut body, CREATE_FIELDS);
    }
    if shown.is_empty() {
        if narrowed {
            body.raw("<p class=\"empty\">This sign-in shows only some webhooks, and none of them exists any more. Ask for a new login link where you found this one.</p>");
        } else {
            body.raw("<p class=\"empty\">No webhooks yet. Create one with the form below (or <code>POST /api/webhooks</code>); it appears here with its deliveries.</p>");
        }
    } else {
        scroll_open(&mut body, "Webhook endpoints");
        body.raw("<table class=\"list\"><caption>Your webhook endpoints</caption><thead><tr><th scope=\"col\">Endpoint</th><th scope=\"col\">Status</th><th scope=\"col\">Events</th><th scope=\"col\">Last delivery</th><th scope=\"col\">Success (24 h)</th></tr></thead><tbody>");
        for w in shown {
            let filter = DeliveryFilter::default();
            let last = deliveries::list(
                state,
                &session.caller,
                w.id,
                filter,
                PageRequest::parse(Some(1), None)?,
            )
            .await?
            .0;
            body.raw("<tr><td><a")
                .attr("href", &format!("/portal/webhooks/{}", w.id))
                .raw(">")
                .text(&w.url)
                .raw("</a>");
            if let Some(d) = &w.description {
                body.raw("<div class=\"muted\">").text(d).raw("</div>");
            }
            body.raw("</td><td>");
            badge(&mut body, status_label(w));
            body.raw("</td><td>")
                .text(&w.events.join(", "))
                .raw("</td><td>");
            match last.first() {
                Some(d) => {
                    badge(&mut body, d.status.as_str());
                    body.raw(" ").text(&time(d.created_at));
                }
                None => {
                    body.raw("<span class=\"muted\">none yet</span>");
                }
            }
            body.raw("</td><td>");
            if let Ok(day) = charts::last_day(state, &session.caller, w.id).await {
                body.text(&charts::rate(&day.totals)).raw(" ");
                charts::sparkline(&mut body, &day);
            }
            body.raw("</td></tr>");
        }
        body.raw("</tbody></table></div>");
    }
    if !narrowed {
        create_form(&mut body, &session.csrf, refused);
    }
    let status = if refused.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok(pages::respond(
        status,
        pages::page(Some(session), "Webhooks", Nav::Webhooks, &body),
    ))
}

/// Splits the event filter field (commas, spaces or lines) into filters.
fn split_events(text: &str) -> Vec<String> {
    text.split([',', ' ', '\n', '\r'])
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `POST /portal/webhooks`: creates a webhook through the application layer (its
/// rules and the address check), then opens its page; a refused form comes back with
/// each message next to its field. A session narrowed to some webhooks cannot create
/// one (it could not see it); partners have no webhook pages.
pub async fn create(
    State(state): State<AppState>,
    session: PortalSession,
    axum::Form(form): axum::Form<CreateForm>,
) -> Response {
    if let Err(e) = session.check_csrf(form.csrf.as_deref()) {
        return error_page(&e);
    }
    if session.is_partner() {
        return error_page(&ApiError::NotFound("page"));
    }
    if session.webhook_ids.is_some() {
        return error_page(&ApiError::Forbidden(
            "this sign-in is limited to some webhooks and cannot create one; create it with the API or from a full sign-in".into(),
        ));
    }
    let description = Some(form.description.trim())
        .filter(|d| !d.is_empty())
        .map(str::to_owned);
    let input = NewWebhook {
        url: form.url.trim().to_owned(),
        events: split_events(&form.events),
        description,
        ..NewWebhook::default()
    };
    match webhooks::create(&state, &session.caller, input).await {
        Ok(created) => Redirect::to(&format!(
            "/portal/webhooks/{}?done=created",
            created.webhook.id
        ))
        .into_response(),
        Err(ApiError::Validation(errors)) => render_list(&state, &session, Some((&form, &errors)))
            .await
            .unwrap_or_else(|e| error_page(&e)),
        Err(e) => error_page(&e),
    }
}

/// The detail page's query: notices, the log's filters (status, event type, a time
/// range) and page. The filters stay in the query string, so a filtered log can be
/// bookmarked, shared and paged.
#[derive(Debug, Default, Deserialize)]
pub struct DetailQuery {
    done: Option<String>,
    status: Option<String>,
    event_type: Option<String>,
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
    dry_run: Option<u64>,
    job: Option<String>,
}

/// The delivery log's filter as read from the query, with what was typed kept for
/// the form.
#[derive(Debug, Default)]
struct LogFilter {
    status: Option<DeliveryStatus>,
    event_type: Option<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    errors: Vec<FieldError>,
}

/// A time typed into the filter: the browser's `datetime-local` form
/// (`2026-12-01T06:00`, with or without seconds, read as UTC) or RFC 3339.
fn parse_filter_time(text: Option<&str>, path: &str) -> Result<Option<DateTime<Utc>>, FieldError> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    [
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%d %H:%M:%S",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
    .map(|t| Some(t.and_utc()))
    .ok_or_else(|| {
        FieldError::new(
            "invalid_timestamp",
            path,
            format!(
                "{text:?} is not a date and time; use the picker or type 2026-12-01T06:00 (UTC)"
            ),
        )
    })
}

impl LogFilter {
    fn from_query(q: &DetailQuery) -> Self {
        let mut f = LogFilter::default();
        if let Some(s) = q.status.as_deref().filter(|s| !s.is_empty()) {
            match DeliveryStatus::parse(s) {
                Some(s) => f.status = Some(s),
                None => f.errors.push(FieldError::new(
                    "invalid_status",
                    "/status",
                    "choose a status from the list",
                )),
            }
        }
        f.event_type = q
            .event_type
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        match parse_filter_time(q.from.as_deref(), "/since") {
            Ok(t) => f.from = t,
            Err(e) => f.errors.push(e),
        }
        match parse_filter_time(q.to.as_deref(), "/until") {
            Ok(t) => f.to = t,
            Err(e) => f.errors.push(e),
        }
        if let (Some(from), Some(to)) = (f.from, f.to)
            && to <= from
        {
            f.errors.push(FieldError::new(
                "invalid_time_range",
                "/until",
                "the end of the time range must be after its start",
            ));
        }
        f
    }

    fn storage(&self) -> DeliveryFilter {
        DeliveryFilter {
            status: self.status,
            event_type: self.event_type.clone(),
            since: self.from,
            until: self.to,
        }
    }

    /// The filter as query parameters (`&`-prefixed), for paging links.
    fn query(&self) -> String {
        let mut q = String::new();
        if let Some(s) = self.status {
            q.push_str("&status=");
            q.push_str(s.as_str());
        }
        if let Some(t) = &self.event_type {
            q.push_str("&event_type=");
            q.push_str(&url_encode(t));
        }
        for (name, t) in [("&from=", self.from), ("&to=", self.to)] {
            if let Some(t) = t {
                q.push_str(name);
                q.push_str(&url_encode(&input_time(t)));
            }
        }
        q
    }
}

/// A time as a `datetime-local` input's value (UTC).
fn input_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// The settings form's values: the webhook's, or what was submitted when refused.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct SettingsForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    url: String,
    #[serde(default)]
    events: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    max_retries: String,
    #[serde(default)]
    base_delay_ms: String,
    #[serde(default)]
    max_delay_ms: String,
    #[serde(default)]
    rate_limit: String,
    #[serde(default)]
    max_concurrency: String,
}

impl SettingsForm {
    fn of(w: &Webhook) -> Self {
        SettingsForm {
            csrf: None,
            url: w.url.clone(),
            events: w.events.join(", "),
            description: w.description.clone().unwrap_or_default(),
            max_retries: w.retry_policy.max_retries.to_string(),
            base_delay_ms: w.retry_policy.base_delay_ms.to_string(),
            max_delay_ms: w.retry_policy.max_delay_ms.to_string(),
            rate_limit: w
                .rate_limit_per_second
                .map(|v| v.to_string())
                .unwrap_or_default(),
            max_concurrency: w.max_concurrency.map(|v| v.to_string()).unwrap_or_default(),
        }
    }
}

/// The settings form's fields and the error pointers each answers for.
const SETTINGS_FIELDS: &[(&str, &[&str])] = &[
    ("url", &["/url"]),
    ("events", &["/events"]),
    ("description", &["/description"]),
    ("max-retries", &["/retryPolicy/maxRetries"]),
    ("base-delay", &["/retryPolicy/baseDelayMs"]),
    ("max-delay", &["/retryPolicy/maxDelayMs"]),
    ("rate-limit", &["/rateLimitPerSecond"]),
    ("max-concurrency", &["/maxConcurrency"]),
];

/// What a detail page shows beyond the webhook: a secret right after reveal or
/// rotation, or a refused form with its errors.
#[derive(Debug, Default)]
struct View<'a> {
    secret: Option<(&'static str, &'a str)>,
    settings: Option<(&'a SettingsForm, &'a [FieldError])>,
    /// The header name a refused header form was about, and the errors.
    header: Option<(&'a str, &'a [FieldError])>,
}

/// `GET /portal/webhooks/{id}`.
pub async fn detail(
    State(state): State<AppState>,
    session: PortalSession,
    Path(id): Path<String>,
    Query(q): Query<DetailQuery>,
) -> Response {
    match render_detail(&state, &session, &id, &q, View::default()).await {
        Ok(r) => r,
        Err(e) => error_page(&e),
    }
}

async fn owned(state: &AppState, session: &PortalSession, id: &str) -> Result<Webhook, ApiError> {
    let id = parse_uuid(id, "webhook")?;
    session.check_webhook(id)?;
    webhooks::get(state, &session.caller, id).await
}

async fn render_detail(
    state: &AppState,
    session: &PortalSession,
    id: &str,
    q: &DetailQuery,
    view: View<'_>,
) -> Result<Response, ApiError> {
    let w = owned(state, session, id).await?;
    let base = format!("/portal/webhooks/{}", w.id);
    let csrf = session.csrf.as_str();
    let mut body = Html::new();
    notice(&mut body, q.done.as_deref());
    // A refused form's summary opens the page, linking to each field further down.
    if let Some((_, errors)) = view.settings {
        Errors(errors).summary(&mut body, SETTINGS_FIELDS);
    }
    if let Some((name, errors)) = view.header {
        let target = w
            .headers
            .keys()
            .position(|k| k.eq_ignore_ascii_case(name))
            .map_or_else(|| "header-name".to_owned(), |i| format!("header-value-{i}"));
        let value_target = if target == "header-name" {
            "header-value"
        } else {
            target.as_str()
        };
        let fields: [(&str, &[&str]); 2] = [
            (value_target, &["/value"]),
            (target.as_str(), &["/headers", "/name"]),
        ];
        Errors(errors).summary(&mut body, &fields);
    }
    if let Some(n) = q.dry_run {
        body.raw("<p class=\"notice\" role=\"status\">Dry run: ")
            .num(n)
            .raw(" failed deliveries would be retried. Nothing was changed.</p>");
    }
    summary_section(&mut body, &w, &base, csrf);
    let filter = LogFilter::from_query(q);
    let log_ok = log_section(state, session, &mut body, &w, &base, q, filter).await?;
    retry_section(state, session, &mut body, &w, &base, q).await;
    analytics_section(state, session, &mut body, &w).await;
    secret_section(&mut body, &base, csrf, view.secret);
    settings_section(&mut body, &w, &base, csrf, view.settings);
    headers_section(&mut body, &w, &base, csrf, view.header);

    let title = w.description.clone().unwrap_or_else(|| w.url.clone());
    let status = if view.settings.is_some() || view.header.is_some() || !log_ok {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok(pages::respond(
        status,
        pages::page(Some(session), &title, Nav::Webhooks, &body),
    ))
}

fn summary_section(body: &mut Html, w: &Webhook, base: &str, csrf: &str) {
    body.raw("<section aria-labelledby=\"summary\"><h2 id=\"summary\">Endpoint</h2><dl class=\"facts\"><dt>URL</dt><dd>")
        .text(&w.url)
        .raw("</dd><dt>Status</dt><dd>");
    badge(body, status_label(w));
    if let Some(reason) = &w.disabled_reason {
        body.raw(" <span class=\"muted\">")
            .text(reason)
            .raw("</span>");
    }
    body.raw("</dd><dt>Events</dt><dd>")
        .text(&w.events.join(", "))
        .raw("</dd><dt>Retry policy</dt><dd>")
        .num(w.retry_policy.max_retries)
        .raw(" retries, from ")
        .num(w.retry_policy.base_delay_ms)
        .raw(" ms to ")
        .num(w.retry_policy.max_delay_ms)
        .raw(" ms</dd><dt>Throughput</dt><dd>");
    match w.rate_limit_per_second {
        Some(r) => {
            body.num(r).raw(" deliveries/s");
        }
        None => {
            body.raw("no rate limit");
        }
    }
    body.raw(", ");
    match w.max_concurrency {
        Some(c) => {
            body.num(c).raw(" at a time");
        }
        None => {
            body.raw("default concurrency");
        }
    }
    body.raw("</dd></dl><div class=\"actions\">");
    if w.active {
        post_button(body, &format!("{base}/disable"), csrf, "Disable");
        post_button(body, &format!("{base}/test"), csrf, "Send test event");
    } else {
        post_button(body, &format!("{base}/enable"), csrf, "Enable");
    }
    body.raw("</div></section>");
}

/// The delivery log with its filter form. Returns false when the filter was refused
/// (its messages are shown next to its fields and no log is listed).
async fn log_section(
    state: &AppState,
    session: &PortalSession,
    body: &mut Html,
    w: &Webhook,
    base: &str,
    q: &DetailQuery,
    mut filter: LogFilter,
) -> Result<bool, ApiError> {
    let csrf = session.csrf.as_str();
    let mut listed = None;
    if filter.errors.is_empty() {
        let page = PageRequest::parse(Some(LOG_PAGE), q.cursor.as_deref())?;
        match deliveries::list(state, &session.caller, w.id, filter.storage(), page).await {
            Ok(found) => listed = Some(found),
            Err(ApiError::Validation(errors)) => filter.errors = errors,
            Err(e) => return Err(e),
        }
    }
    let errors = Errors(&filter.errors);
    body.raw("<section aria-labelledby=\"log\"><h2 id=\"log\">Deliveries</h2>");
    if !errors.is_empty() {
        body.raw("<div class=\"error\" role=\"alert\"><p>The filter needs fixing:</p><ul>");
        for e in errors.0 {
            body.raw("<li>").text(&e.message).raw("</li>");
        }
        body.raw("</ul></div>");
    }
    body.raw("<form method=\"get\" class=\"filters\"")
        .attr("action", base)
        .raw("><div class=\"field\"><label for=\"status\">Status</label><select id=\"status\" name=\"status\"><option value=\"\">all</option>");
    for s in DeliveryStatus::ALL {
        body.raw("<option").attr("value", s.as_str());
        if filter.status == Some(s) {
            body.raw(" selected");
        }
        body.raw(">").text(s.as_str()).raw("</option>");
    }
    body.raw("</select></div>");
    let typed_from = q.from.clone().unwrap_or_default();
    let typed_to = q.to.clone().unwrap_or_default();
    let from = filter.from.map(input_time).unwrap_or(typed_from);
    let to = filter.to.map(input_time).unwrap_or(typed_to);
    Field {
        id: "event-type",
        name: "event_type",
        label: "Event type",
        hint: Some("exact, e.g. order.created"),
        kind: "text",
        value: filter.event_type.as_deref().unwrap_or(""),
        extra: "",
        paths: &["/eventType"],
    }
    .render(body, errors);
    Field {
        id: "from",
        name: "from",
        label: "From (UTC)",
        hint: None,
        kind: "datetime-local",
        value: &from,
        extra: " step=\"1\"",
        paths: &["/since"],
    }
    .render(body, errors);
    Field {
        id: "to",
        name: "to",
        label: "To (UTC)",
        hint: None,
        kind: "datetime-local",
        value: &to,
        extra: " step=\"1\"",
        paths: &["/until"],
    }
    .render(body, errors);
    body.raw("<div class=\"field\"><button type=\"submit\">Filter</button> <a")
        .attr("href", base)
        .raw(">Clear</a></div></form>");
    let Some((log, next)) = listed else {
        body.raw("<p class=\"empty\">Fix the filter above to see deliveries.</p></section>");
        return Ok(false);
    };
    let filtered = filter.status.is_some()
        || filter.event_type.is_some()
        || filter.from.is_some()
        || filter.to.is_some();
    // The live script adds new rows only when they match the same filter.
    scroll_open(body, "Deliveries");
    body.raw("<table class=\"list\" id=\"deliveries\"")
        .attr("data-webhook-id", &w.id.to_string())
        .attr(
            "data-filter-status",
            filter.status.map_or("", DeliveryStatus::as_str),
        )
        .attr(
            "data-filter-event-type",
            filter.event_type.as_deref().unwrap_or(""),
        )
        .attr(
            "data-filter-from",
            &filter.from.map(|t| t.to_rfc3339()).unwrap_or_default(),
        )
        .attr(
            "data-filter-to",
            &filter.to.map(|t| t.to_rfc3339()).unwrap_or_default(),
        )
        .raw("><caption>Newest first; new deliveries appear here as they happen</caption><thead><tr><th scope=\"col\">Created</th><th scope=\"col\">Event</th><th scope=\"col\">Status</th><th scope=\"col\">Attempts</th><th scope=\"col\">Last response</th><th scope=\"col\">Actions</th></tr></thead><tbody aria-live=\"polite\" aria-relevant=\"additions\">");
    if log.is_empty() {
        if filtered {
            body.raw("<tr class=\"empty-row\"><td colspan=\"6\">No delivery matches this filter. Widen it or choose Clear to see every delivery.</td></tr>");
        } else {
            body.raw("<tr class=\"empty-row\"><td colspan=\"6\">No deliveries yet. Send a test event (above) to see one here.</td></tr>");
        }
    }
    for d in &log {
        let href = format!("{base}/deliveries/{}", d.id);
        body.raw("<tr")
            .attr("data-delivery-id", &d.id.to_string())
            .raw("><td><a")
            .attr("href", &href)
            .raw(">")
            .text(&time(d.created_at))
            .raw("</a></td><td>")
            .text(&d.event_type)
            .raw("</td><td class=\"status\">");
        badge(body, d.status.as_str());
        body.raw("</td><td class=\"attempts\">")
            .num(d.attempts)
            .raw("</td><td>");
        match d.last_status_code {
            Some(code) => {
                body.num(code);
            }
            None => {
                body.text(d.last_error.as_deref().unwrap_or("—"));
            }
        }
        body.raw("</td><td>");
        if matches!(d.status, DeliveryStatus::Failed | DeliveryStatus::Retrying) {
            post_button(body, &format!("{href}/retry"), csrf, "Retry");
        }
        body.raw("</td></tr>");
    }
    body.raw("</tbody></table></div>");
    if let Some(next) = next {
        let href = format!("{base}?cursor={}{}", url_encode(&next), filter.query());
        body.raw("<p><a")
            .attr("href", &href)
            .raw(">Older deliveries</a></p>");
    }
    body.raw("</section>");
    Ok(true)
}

async fn retry_section(
    state: &AppState,
    session: &PortalSession,
    body: &mut Html,
    w: &Webhook,
    base: &str,
    q: &DetailQuery,
) {
    body.raw("<section aria-labelledby=\"retry\"><h2 id=\"retry\">Retry failed deliveries</h2>");
    if let Some(job) = q.job.as_deref().and_then(|j| Uuid::parse_str(j).ok())
        && let Ok(job) = deliveries::get_retry_job(state, &session.caller, w.id, job).await
    {
        let max = job.total.max(1);
        body.raw("<p>Retry job <span class=\"job-status\">")
            .text(job.status.as_str())
            .raw("</span>: <progress role=\"progressbar\" aria-valuemin=\"0\" aria-label=\"Failed deliveries retried\"")
            .attr("id", "retry-job")
            .attr("data-job-id", &job.id.to_string())
            .attr("max", &max.to_string())
            .attr("value", &job.processed.to_string())
            .attr("aria-valuemax", &max.to_string())
            .attr("aria-valuenow", &job.processed.to_string())
            .raw("></progress> <span aria-live=\"polite\">")
            .num(job.processed)
            .raw(" of ")
            .num(job.total)
            .raw("</span></p>");
    }
    body.raw("<form method=\"post\" class=\"inline\"")
        .attr("action", &format!("{base}/retry-failed"))
        .raw(">");
    csrf_field(body, &session.csrf);
    body.raw("<button type=\"submit\" name=\"dry_run\" value=\"1\">Count (dry run)</button> <button type=\"submit\" name=\"dry_run\" value=\"0\">Retry all failed</button></form></section>");
}

async fn analytics_section(
    state: &AppState,
    session: &PortalSession,
    body: &mut Html,
    w: &Webhook,
) {
    let Ok(day) = charts::last_day(state, &session.caller, w.id).await else {
        return;
    };
    body.raw("<section aria-labelledby=\"analytics\"><h2 id=\"analytics\">Last 24 hours</h2><dl class=\"facts\"><dt>Success rate</dt><dd>")
        .text(&charts::rate(&day.totals))
        .raw("</dd><dt>Attempts</dt><dd>")
        .num(day.totals.attempts)
        .raw("</dd><dt>Latency p50 / p95</dt><dd>")
        .text(&day.totals.p50_latency_ms.map_or_else(|| "—".to_owned(), |v| format!("{v:.0} ms")))
        .raw(" / ")
        .text(&day.totals.p95_latency_ms.map_or_else(|| "—".to_owned(), |v| format!("{v:.0} ms")))
        .raw("</dd></dl>");
    charts::outcomes(body, &day);
    charts::latency(body, &day);
    body.raw("</section>");
}

/// Signing secret: shown only right after an explicit reveal or rotation.
fn secret_section(body: &mut Html, base: &str, csrf: &str, secret: Option<(&'static str, &str)>) {
    body.raw("<section aria-labelledby=\"secret\"><h2 id=\"secret\">Signing secret</h2>");
    match secret {
        Some((label, value)) => {
            body.raw("<p>")
                .raw(label)
                .raw("</p><p class=\"secret\"><code id=\"secret-value\">")
                .text(value)
                .raw("</code> <button type=\"button\" data-copy=\"secret-value\">Copy</button></p><p class=\"muted\">It is not shown again when you leave or reload this page.</p>");
        }
        None => {
            body.raw("<p class=\"muted\">Hidden. Reveal it to configure your receiver; rotating keeps the old secret valid for a day.</p>");
        }
    }
    body.raw("<div class=\"actions\">");
    post_button(
        body,
        &format!("{base}/secret/reveal"),
        csrf,
        "Reveal secret",
    );
    post_button(
        body,
        &format!("{base}/secret/rotate"),
        csrf,
        "Rotate secret",
    );
    body.raw("</div></section>");
}

fn settings_section(
    body: &mut Html,
    w: &Webhook,
    base: &str,
    csrf: &str,
    refused: Option<(&SettingsForm, &[FieldError])>,
) {
    let current;
    let (values, errors) = match refused {
        Some((f, e)) => (f, Errors(e)),
        None => {
            current = SettingsForm::of(w);
            (&current, Errors::default())
        }
    };
    let retries_hint = format!("0 to {MAX_RETRIES_LIMIT} retries after the first attempt");
    let base_hint = format!(
        "delay before the first retry, {MIN_BASE_DELAY_MS} to {MAX_BASE_DELAY_MS} ms; it doubles each retry"
    );
    let max_hint = format!("cap of any delay, from the base delay up to {MAX_MAX_DELAY_MS} ms");
    let rate_hint =
        format!("deliveries per second, 1 to {MAX_RATE_LIMIT_PER_SECOND}; empty = no limit");
    let conc_hint =
        format!("deliveries in flight at once, 1 to {MAX_CONCURRENCY_LIMIT}; empty = the default");
    body.raw("<section aria-labelledby=\"edit\"><h2 id=\"edit\">Settings</h2>");
    body.raw("<form method=\"post\" class=\"stack\"")
        .attr("action", &format!("{base}/edit"))
        .raw(">");
    csrf_field(body, csrf);
    let fields = [
        Field {
            id: "url",
            name: "url",
            label: "URL",
            hint: None,
            kind: "url",
            value: &values.url,
            extra: " required",
            paths: &["/url"],
        },
        Field {
            id: "events",
            name: "events",
            label: "Event filters",
            hint: Some("comma-separated, e.g. order.created, order.*"),
            kind: "text",
            value: &values.events,
            extra: " required",
            paths: &["/events"],
        },
        Field {
            id: "description",
            name: "description",
            label: "Description",
            hint: None,
            kind: "text",
            value: &values.description,
            extra: "",
            paths: &["/description"],
        },
    ];
    for f in &fields {
        f.render(body, errors);
    }
    body.raw("<fieldset><legend>Retry policy</legend>");
    for f in [
        Field {
            id: "max-retries",
            name: "max_retries",
            label: "Max retries",
            hint: Some(&retries_hint),
            kind: "number",
            value: &values.max_retries,
            extra: " inputmode=\"numeric\"",
            paths: &["/retryPolicy/maxRetries"],
        },
        Field {
            id: "base-delay",
            name: "base_delay_ms",
            label: "Base delay (ms)",
            hint: Some(&base_hint),
            kind: "number",
            value: &values.base_delay_ms,
            extra: " inputmode=\"numeric\"",
            paths: &["/retryPolicy/baseDelayMs"],
        },
        Field {
            id: "max-delay",
            name: "max_delay_ms",
            label: "Max delay (ms)",
            hint: Some(&max_hint),
            kind: "number",
            value: &values.max_delay_ms,
            extra: " inputmode=\"numeric\"",
            paths: &["/retryPolicy/maxDelayMs"],
        },
    ] {
        f.render(body, errors);
    }
    body.raw("</fieldset><fieldset><legend>Throughput</legend>");
    for f in [
        Field {
            id: "rate-limit",
            name: "rate_limit",
            label: "Rate limit",
            hint: Some(&rate_hint),
            kind: "number",
            value: &values.rate_limit,
            extra: " inputmode=\"numeric\"",
            paths: &["/rateLimitPerSecond"],
        },
        Field {
            id: "max-concurrency",
            name: "max_concurrency",
            label: "Concurrency",
            hint: Some(&conc_hint),
            kind: "number",
            value: &values.max_concurrency,
            extra: " inputmode=\"numeric\"",
            paths: &["/maxConcurrency"],
        },
    ] {
        f.render(body, errors);
    }
    body.raw(
        "</fieldset><div><button type=\"submit\">Save settings</button></div></form></section>",
    );
}

/// Custom headers: names in clear, values never (they are often the receiver's own
/// API keys): each shows `***` with a form to replace or remove it, and a form adds
/// one. A refused form shows its message next to the header it was about; a value is
/// never put back into the page.
fn headers_section(
    body: &mut Html,
    w: &Webhook,
    base: &str,
    csrf: &str,
    refused: Option<(&str, &[FieldError])>,
) {
    let action = format!("{base}/headers");
    let row_of_refused =
        refused.and_then(|(name, _)| w.headers.keys().position(|k| k.eq_ignore_ascii_case(name)));
    body.raw("<section aria-labelledby=\"headers\"><h2 id=\"headers\">Custom headers</h2><p class=\"muted\">Sent with every delivery, e.g. an API key your receiver expects. Values are stored sealed and never shown again; replace one to change it.</p>");
    if w.headers.is_empty() {
        body.raw(
            "<p class=\"empty\">No custom headers. Add one below if your receiver needs it.</p>",
        );
    } else {
        scroll_open(body, "Custom headers");
        body.raw("<table class=\"list\"><caption>Headers sent with every delivery</caption><thead><tr><th scope=\"col\">Name</th><th scope=\"col\">Value</th><th scope=\"col\">Change</th></tr></thead><tbody>");
        for (i, name) in w.headers.keys().enumerate() {
            let input_id = format!("header-value-{i}");
            let error_id = format!("header-value-{i}-error");
            let messages = match (refused, row_of_refused) {
                (Some((_, errors)), Some(row)) if row == i => {
                    Errors(errors).at(&["/headers", "/name", "/value"])
                }
                _ => Vec::new(),
            };
            body.raw("<tr><th scope=\"row\"><code>")
                .text(name)
                .raw("</code></th><td><code>")
                .text(MASK)
                .raw("</code></td><td><form method=\"post\" class=\"inline\"")
                .attr("action", &action)
                .raw(">");
            csrf_field(body, csrf);
            body.raw("<input type=\"hidden\" name=\"op\" value=\"set\"><input type=\"hidden\" name=\"name\"")
                .attr("value", name)
                .raw("><label")
                .attr("for", &input_id)
                .raw(">New value for ")
                .text(name)
                .raw("</label> <input type=\"text\" name=\"value\" autocomplete=\"off\" spellcheck=\"false\" required")
                .attr("id", &input_id);
            if !messages.is_empty() {
                body.raw(" aria-invalid=\"true\"")
                    .attr("aria-describedby", &error_id);
            }
            body.raw("> <button type=\"submit\">Replace</button>");
            if !messages.is_empty() {
                body.raw("<p class=\"field-error\"")
                    .attr("id", &error_id)
                    .raw(">")
                    .text(&messages.join(" "))
                    .raw("</p>");
            }
            body.raw("</form><form method=\"post\" class=\"inline\"")
                .attr("action", &action)
                .raw(">");
            csrf_field(body, csrf);
            body.raw("<input type=\"hidden\" name=\"op\" value=\"remove\"><input type=\"hidden\" name=\"name\"")
                .attr("value", name)
                .raw("><button type=\"submit\"")
                .attr("aria-label", &format!("Remove {name}"))
                .raw(">Remove</button></form></td></tr>");
        }
        body.raw("</tbody></table></div>");
    }
    // The add form: errors of a header that is not in the list show here.
    let (typed_name, add_errors): (&str, &[FieldError]) = match (refused, row_of_refused) {
        (Some((name, errors)), None) => (name, errors),
        _ => ("", &[]),
    };
    let errors = Errors(add_errors);
    body.raw("<form method=\"post\" class=\"stack\"")
        .attr("action", &action)
        .raw("><h3>Add a header</h3>");
    csrf_field(body, csrf);
    body.raw("<input type=\"hidden\" name=\"op\" value=\"set\">");
    Field {
        id: "header-name",
        name: "name",
        label: "Header name",
        hint: Some("e.g. X-Api-Key; not Host, Content-Type, webhook-* or x-portico-*"),
        kind: "text",
        value: typed_name,
        extra: " required autocomplete=\"off\" spellcheck=\"false\"",
        paths: &["/headers", "/name"],
    }
    .render(body, errors);
    Field {
        id: "header-value",
        name: "value",
        label: "Header value",
        hint: Some("stored sealed; it is not shown again"),
        kind: "text",
        value: "",
        extra: " required autocomplete=\"off\" spellcheck=\"false\"",
        paths: &["/value"],
    }
    .render(body, errors);
    body.raw("<div><button type=\"submit\">Add header</button></div></form></section>");
}

/// `GET /portal/webhooks/{id}/deliveries/{delivery}`: every attempt of one delivery.
pub async fn delivery(
    State(state): State<AppState>,
    session: PortalSession,
    Path((id, delivery)): Path<(String, String)>,
) -> Response {
    let result = async {
        let w = owned(&state, &session, &id).await?;
        let delivery_id = parse_uuid(&delivery, "delivery")?;
        let (d, attempts) = deliveries::get(&state, &session.caller, w.id, delivery_id).await?;
        let mut body = Html::new();
        body.raw("<p><a")
            .attr("href", &format!("/portal/webhooks/{}", w.id))
            .raw(">Back to the webhook</a></p><dl class=\"facts\"><dt>Event</dt><dd>")
            .text(&d.event_type)
            .raw(" <code>")
            .text(&d.event_id.to_string())
            .raw("</code></dd><dt>Status</dt><dd>");
        badge(&mut body, d.status.as_str());
        body.raw("</dd><dt>Attempts</dt><dd>")
            .num(d.attempts)
            .raw(" (up to ")
            .num(d.max_retries)
            .raw(" retries)</dd>");
        if let Some(next) = d.next_attempt_at {
            body.raw("<dt>Next attempt</dt><dd>")
                .text(&time(next))
                .raw("</dd>");
        }
        body.raw("</dl>");
        if matches!(d.status, DeliveryStatus::Failed | DeliveryStatus::Retrying) {
            post_button(
                &mut body,
                &format!("/portal/webhooks/{}/deliveries/{}/retry", w.id, d.id),
                &session.csrf,
                "Retry now",
            );
        }
        if attempts.is_empty() {
            body.raw("<p class=\"empty\">No attempt yet.</p>");
        }
        for a in attempts.iter().rev() {
            body.raw("<article class=\"attempt\"><h2>Attempt ")
                .num(a.attempt_number)
                .raw("</h2><dl class=\"facts\"><dt>Started</dt><dd>")
                .text(&time(a.started_at))
                .raw("</dd><dt>Duration</dt><dd>")
                .num(a.latency_ms)
                .raw(" ms</dd><dt>Response</dt><dd>");
            match a.response_status {
                Some(code) => {
                    body.num(code);
                }
                None => {
                    body.text("no response");
                }
            }
            if let Some(kind) = &a.error_kind {
                body.raw(" <span class=\"muted\">")
                    .text(kind)
                    .raw(": ")
                    .text(a.error_message.as_deref().unwrap_or(""))
                    .raw("</span>");
            }
            body.raw("</dd></dl><h3>Request headers</h3><pre>");
            for (k, v) in &a.request_headers {
                body.text(k).raw(": ").text(v).raw("\n");
            }
            body.raw("</pre><h3>Response body (excerpt)</h3><pre>")
                .text(a.response_body.as_deref().unwrap_or(""))
                .raw("</pre></article>");
        }
        Ok::<_, ApiError>(pages::respond(
            StatusCode::OK,
            pages::page(Some(&session), "Delivery", Nav::Webhooks, &body),
        ))
    }
    .await;
    result.unwrap_or_else(|e| error_page(&e))
}

/// Reads the settings form into a patch. A number that is not a number is a field
/// error; the rest is still checked by the domain's rules (without writing), so the
/// page shows every problem at once.
fn settings_patch(form: &SettingsForm) -> Result<WebhookPatch, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut read = |text: &str, path: &str, what: &str| match forms::number(text, path, what) {
        Ok(v) => Some(v),
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let max_retries = read(&form.max_retries, "/retryPolicy/maxRetries", "Max retries");
    let base_delay = read(
        &form.base_delay_ms,
        "/retryPolicy/baseDelayMs",
        "Base delay",
    );
    let max_delay = read(&form.max_delay_ms, "/retryPolicy/maxDelayMs", "Max delay");
    let rate = read(&form.rate_limit, "/rateLimitPerSecond", "Rate limit");
    let concurrency = read(&form.max_concurrency, "/maxConcurrency", "Concurrency");
    let retry_policy = RetryPolicyPatch {
        max_retries: max_retries.flatten(),
        base_delay_ms: base_delay.flatten(),
        max_delay_ms: max_delay.flatten(),
    };
    let description = Some(form.description.trim())
        .filter(|d| !d.is_empty())
        .map(str::to_owned);
    let patch = WebhookPatch {
        url: Some(form.url.trim().to_owned()),
        events: Some(split_events(&form.events)),
        description: Some(description),
        retry_policy: (retry_policy != RetryPolicyPatch::default()).then_some(retry_policy),
        // Empty = no limit / the default; unreadable = unchanged (its error is shown).
        rate_limit_per_second: rate,
        max_concurrency: concurrency,
        ..WebhookPatch::default()
    };
    if errors.is_empty() {
        return Ok(patch);
    }
    if let Err(more) = patch.validate() {
        errors.extend(more);
    }
    Err(errors)
}

/// `POST /portal/webhooks/{id}/edit`: URL, event filters, description, retry policy
/// and throughput limits, through `app::webhooks::update`. Refused settings come back
/// with each message next to its field (400).
pub async fn edit(
    State(state): State<AppState>,
    session: PortalSession,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<SettingsForm>,
) -> Response {
    let result = async {
        session.check_csrf(form.csrf.as_deref())?;
        let w = owned(&state, &session, &id).await?;
        let patch = settings_patch(&form).map_err(ApiError::Validation)?;
        webhooks::update(&state, &session.caller, w.id, patch).await?;
        Ok::<_, ApiError>(w.id)
    }
    .await;
    match result {
        Err(ApiError::Validation(errors)) => {
            let view = View {
                settings: Some((&form, &errors)),
                ..View::default()
            };
            render_detail(&state, &session, &id, &DetailQuery::default(), view)
                .await
                .unwrap_or_else(|e| error_page(&e))
        }
        other => done(other, "saved"),
    }
}

/// The header forms: `op=set` adds or replaces `name` with `value`, `op=remove`
/// removes it.
#[derive(Debug, Deserialize)]
pub struct HeaderForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    op: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    value: String,
}

/// The webhook's headers after the form's change. The other values are the opened
/// ones the application layer returned to this caller, so they are sealed again as
/// they were; a caller who only sees them masked cannot change headers (that would
/// store the mask).
fn changed_headers(
    session: &PortalSession,
    w: &Webhook,
    form: &HeaderForm,
) -> Result<BTreeMap<String, String>, ApiError> {
    if !sealing::may_see_secrets(&session.caller) {
        return Err(ApiError::Forbidden(
            "changing custom headers needs the webhooks:write scope".into(),
        ));
    }
    let name = form.name.trim();
    let mut headers: BTreeMap<String, String> = w
        .headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case(name))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    match form.op.as_str() {
        "remove" => {}
        "set" => {
            let mut errors = Vec::new();
            if name.is_empty() {
                errors.push(FieldError::new(
                    "invalid_header",
                    "/name",
                    "enter the header's name, e.g. X-Api-Key",
                ));
            }
            if form.value.is_empty() {
                errors.push(FieldError::new(
                    "invalid_header",
                    "/value",
                    "enter the header's value; to delete a header, use Remove",
                ));
            }
            if !errors.is_empty() {
                return Err(ApiError::Validation(errors));
            }
            headers.insert(name.to_owned(), form.value.clone());
        }
        _ => {
            return Err(ApiError::field(
                "invalid_op",
                "/op",
                "the form asked for neither set nor remove; reload the page and try again",
            ));
        }
    }
    Ok(headers)
}

/// `POST /portal/webhooks/{id}/headers`: adds, replaces or removes one custom header
/// through `app::webhooks::update` (its rules: names, reserved headers, value
/// characters, how many). A refused change comes back next to its form; the value
/// typed is never shown again.
pub async fn headers(
    State(state): State<AppState>,
    session: PortalSession,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<HeaderForm>,
) -> Response {
    let result = async {
        session.check_csrf(form.csrf.as_deref())?;
        let w = owned(&state, &session, &id).await?;
        let headers = changed_headers(&session, &w, &form)?;
        let patch = WebhookPatch {
            headers: Some(headers),
            ..WebhookPatch::default()
        };
        webhooks::update(&state, &session.caller, w.id, patch).await?;
        Ok::<_, ApiError>(w.id)
    }
    .await;
    match result {
        Err(ApiError::Validation(errors)) => {
            let view = View {
                header: Some((form.name.trim(), &errors)),
                ..View::default()
            };
            render_detail(&state, &session, &id, &DetailQuery::default(), view)
                .await
                .unwrap_or_else(|e| error_page(&e))
        }
        other => done(
            other,
            if form.op == "remove" {
                "header_removed"
            } else {
                "header_saved"
            },
        ),
    }
}

fn done(result: Result<Uuid, ApiError>, what: &str) -> Response {
    match result {
        Ok(id) => axum::response::IntoResponse::into_response(Redirect::to(&format!(
            "/portal/webhooks/{id}?done={what}"
        ))),
        Err(e) => error_page(&e),
    }
}

use super::pages::CsrfForm;

async fn set_active(
    state: &AppState,
    session: &PortalSession,
    id: &str,
    form: &CsrfForm,
    active: bool,
) -> Result<Uuid, ApiError> {
    session.check_csrf(form.csrf.as_deref())?;
    let w = owned(state, session, id).await?;
    let patch = WebhookPatch {
        active: Some(active),
        ..WebhookPatch::default()
    };
    webhooks::update(state, &session.caller, w.id, patch).await?;
    Ok(w.id)
}

/// `POST /portal/webhooks/{id}/enable`.
pub async fn enable(
    State(state): State<AppState>,
    session: PortalSession,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Response {
    done(
        set_active(&state, &session, &id, &form, true).await,
        "enabled",
    )
}

/// `POST /portal/webhooks/{id}/disable`.
pub async fn disable(
    State(state): State<AppState>,
    session: PortalSession,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Response {
    done(
        set_active(&state, &session, &id, &form, false).await,
        "disabled",
    )
}

/// `POST /portal/webhooks/{id}/test`.
pub async fn send_test(
    State(state): State<AppState>,
    session: PortalSession,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Response {
    let result = async {
        session.check_csrf(form.csrf.as_deref())?;
        let w = owned(&state, &session, &id).await?;
        webhooks::send_test_event(&state, &session.caller, w.id).await?;
        Ok(w.id)
    }
    .await;
    done(result, "test_sent")
}

/// `POST /portal/webhooks/{id}/secret/reveal`: the detail page with the secret shown
/// (a POST, so it needs the CSRF token and is never cached or linked).
pub async fn reveal_secret(
    State(state): State<AppState>,
    session: PortalSession,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Response {
    let result = async {
        session.check_csrf(form.csrf.as_deref())?;
        let w = owned(&state, &session, &id).await?;
        let secret = webhooks::get_secret(&state, &session.caller, w.id).await?;
        let view = View {
            secret: Some(("The current signing secret:", &secret.secret)),
            ..View::default()
        };
        render_detail(&state, &session, &id, &DetailQuery::default(), view).await
    }
    .await;
    result.unwrap_or_else(|e| error_page(&e))
}

/// `POST /portal/webhooks/{id}/secret/rotate`: a new secret, shown once.
pub async fn rotate_secret(
    State(state): State<AppState>,
    session: PortalSession,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Response {
    let result = async {
        session.check_csrf(form.csrf.as_deref())?;
        let w = owned(&state, &session, &id).await?;
        let secret = webhooks::rotate_secret(&state, &session.caller, w.id, None).await?;
        let view = View {
            secret: Some((
                "The new signing secret (the previous one keeps signing for a day):",
                &secret.secret,
            )),
            ..View::default()
        };
        render_detail(&state, &session, &id, &DetailQuery::default(), view).await
    }
    .await;
    result.unwrap_or_else(|e| error_page(&e))
}

/// `POST /portal/webhooks/{id}/deliveries/{delivery}/retry`.
pub async fn retry_delivery(
    State(state): State<AppState>,
    session: PortalSession,
    Path((id, delivery)): Path<(String, String)>,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Response {
    let result = async {
        session.check_csrf(form.csrf.as_deref())?;
        let w = owned(&state, &session, &id).await?;
        let delivery_id = parse_uuid(&delivery, "delivery")?;
        deliveries::retry(&state, &session.caller, w.id, delivery_id, None).await?;
        Ok(w.id)
    }
    .await;
    done(result, "retried")
}

/// The retry-all-failed form.
#[derive(Debug, Deserialize)]
pub struct RetryFailedForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    dry_run: Option<String>,
}

/// `POST /portal/webhooks/{id}/retry-failed`: a dry-run count, or a retry job.
pub async fn retry_failed(
    State(state): State<AppState>,
    session: PortalSession,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<RetryFailedForm>,
) -> Response {
    let result = async {
        session.check_csrf(form.csrf.as_deref())?;
        let w = owned(&state, &session, &id).await?;
        let dry_run = form.dry_run.as_deref() == Some("1");
        let request = RetryFailedRequest {
            dry_run,
            statuses: vec![DeliveryStatus::Failed],
            event_type: None,
            since: None,
            until: None,
            max_retries: None,
            idempotency_key: None,
        };
        let target = match deliveries::retry_failed(&state, &session.caller, w.id, request).await? {
            RetryFailedOutcome::DryRun { matched } => {
                format!("/portal/webhooks/{}?dry_run={matched}", w.id)
            }
            RetryFailedOutcome::Started(job) | RetryFailedOutcome::Existing(job) => format!(
                "/portal/webhooks/{}?done=retry_started&job={}",
                w.id, job.id
            ),
        };
        Ok::<_, ApiError>(target)
    }
    .await;
    match result {
        Ok(target) => axum::response::IntoResponse::into_response(Redirect::to(&target)),
        Err(e) => error_page(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(status: &str, event_type: &str, from: &str, to: &str) -> DetailQuery {
        let some = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
        DetailQuery {
            status: some(status),
            event_type: some(event_type),
            from: some(from),
            to: some(to),
            ..DetailQuery::default()
        }
    }

    /// The browser's datetime-local value (read as UTC) and RFC 3339 both work, and
    /// the filter comes back as a query string for the paging link, escaped.
    #[test]
    fn the_log_filter_reads_the_query_and_keeps_it_for_paging() {
        let f = LogFilter::from_query(&query(
            "failed",
            "order.created",
            "2026-12-01T06:00",
            "2026-12-01T07:30:15Z",
        ));
        assert!(f.errors.is_empty(), "{:?}", f.errors);
        assert_eq!(f.status, Some(DeliveryStatus::Failed));
        assert_eq!(
            f.query(),
            "&status=failed&event_type=order.created&from=2026-12-01T06%3A00%3A00&to=2026-12-01T07%3A30%3A15"
        );
        let storage = f.storage();
        assert_eq!(storage.event_type.as_deref(), Some("order.created"));
        assert!(storage.since < storage.until);
    }

    /// An unreadable status or time, or an empty range, is a field error saying what
    /// to type, at the pointer its field claims.
    #[test]
    fn a_bad_filter_says_what_to_fix() {
        let f = LogFilter::from_query(&query("nope", "", "yesterday", ""));
        let paths: Vec<&str> = f.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["/status", "/since"]);
        assert!(f.errors[1].message.contains("2026-12-01T06:00"));
        let f = LogFilter::from_query(&query("", "", "2026-12-01T07:00", "2026-12-01T06:00"));
        assert_eq!(f.errors[0].path, "/until");
    }

    /// Numbers that are not numbers are reported with the domain's own checks of
    /// the rest, all at once; empty limits remove them.
    #[test]
    fn the_settings_form_reports_every_problem_at_once() {
        let form = SettingsForm {
            url: "http://127.0.0.1:9/x".into(),
            events: "order.created".into(),
            max_retries: "99".into(),
            base_delay_ms: "soon".into(),
            max_delay_ms: "1000".into(),
            ..SettingsForm::default()
        };
        let errors = settings_patch(&form).unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"/retryPolicy/baseDelayMs"), "{paths:?}");
        assert!(paths.contains(&"/retryPolicy/maxRetries"), "{paths:?}");
        let ok = SettingsForm {
            url: "http://127.0.0.1:9/x".into(),
            events: "order.created, order.*".into(),
            ..SettingsForm::default()
        };
        let patch = settings_patch(&ok).unwrap();
        assert_eq!(patch.rate_limit_per_second, Some(None));
        assert_eq!(patch.max_concurrency, Some(None));
        assert!(patch.retry_policy.is_none());
        assert_eq!(
            patch.events,
            Some(vec!["order.created".to_owned(), "order.*".to_owned()])
        );
    }
}
