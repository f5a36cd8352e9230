//! Webhook pages: the list, a webhook's detail (edit, enable and disable, reveal and
//! rotate the secret, send a test event, the delivery log with a status filter, retry
//! one, retry all failed with a dry-run count) and one delivery's attempts. Every
//! action calls `crate::app::webhooks` or `crate::app::webhook_deliveries` with the
//! session's caller, exactly as the API does.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Redirect, Response};
use portico_domain::pagination::PageRequest;
use portico_domain::webhooks::{DeliveryStatus, WebhookPatch};
use portico_storage::deliveries::DeliveryFilter;
use serde::Deserialize;
use uuid::Uuid;

use super::charts;
use super::html::{Html, url_encode};
use super::pages::{self, Nav, badge, csrf_field, error_page, notice, post_button, time};
use super::sessions::PortalSession;
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

/// `GET /portal/webhooks`.
pub async fn list(State(state): State<AppState>, session: PortalSession) -> Response {
    match render_list(&state, &session).await {
        Ok(r) => r,
        Err(e) => error_page(&e),
    }
}

async fn render_list(state: &AppState, session: &PortalSession) -> Result<Response, ApiError> {
    if session.is_partner() {
        return Ok(axum::response::IntoResponse::into_response(Redirect::to(
            "/portal/partner",
        )));
    }
    let page = PageRequest::parse(Some(100), None)?;
    let (all, _) = webhooks::list(state, &session.caller, page).await?;
    let shown: Vec<&Webhook> = all
        .iter()
        .filter(|w| session.check_webhook(w.id).is_ok())
        .collect();
    let mut body = Html::new();
    if shown.is_empty() {
        body.raw("<p class=\"empty\">No webhooks yet. Create one with <code>POST /api/webhooks</code> (or the CLI); it appears here with its deliveries.</p>");
    } else {
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
        body.raw("</tbody></table>");
    }
    Ok(pages::respond(
        StatusCode::OK,
        pages::page(Some(session), "Webhooks", Nav::Webhooks, &body),
    ))
}

/// The detail page's query: notices, the log's filter and page.
#[derive(Debug, Default, Deserialize)]
pub struct DetailQuery {
    done: Option<String>,
    status: Option<String>,
    cursor: Option<String>,
    dry_run: Option<u64>,
    job: Option<String>,
}

/// `GET /portal/webhooks/{id}`.
pub async fn detail(
    State(state): State<AppState>,
    session: PortalSession,
    Path(id): Path<String>,
    Query(q): Query<DetailQuery>,
) -> Response {
    match render_detail(&state, &session, &id, &q, None).await {
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
    secret: Option<(&'static str, &str)>,
) -> Result<Response, ApiError> {
    let w = owned(state, session, id).await?;
    let base = format!("/portal/webhooks/{}", w.id);
    let csrf = session.csrf.as_str();
    let mut body = Html::new();
    notice(&mut body, q.done.as_deref());
    if let Some(n) = q.dry_run {
        body.raw("<p class=\"notice\" role=\"status\">Dry run: ")
            .num(n)
            .raw(" failed deliveries would be retried. Nothing was changed.</p>");
    }
    // Summary.
    body.raw("<section aria-labelledby=\"summary\"><h2 id=\"summary\">Endpoint</h2><dl class=\"facts\"><dt>URL</dt><dd>")
        .text(&w.url)
        .raw("</dd><dt>Status</dt><dd>");
    badge(&mut body, status_label(&w));
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
        .raw(" ms</dd></dl>");
    body.raw("<div class=\"actions\">");
    if w.active {
        post_button(&mut body, &format!("{base}/disable"), csrf, "Disable");
        post_button(&mut body, &format!("{base}/test"), csrf, "Send test event");
    } else {
        post_button(&mut body, &format!("{base}/enable"), csrf, "Enable");
    }
    body.raw("</div></section>");

    // Delivery log.
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(DeliveryStatus::parse(s).ok_or_else(|| {
            ApiError::field("invalid_status", "/status", "choose a status from the list")
        })?),
        None => None,
    };
    let filter = DeliveryFilter {
        status,
        ..DeliveryFilter::default()
    };
    let page = PageRequest::parse(Some(LOG_PAGE), q.cursor.as_deref())?;
    let (log, next) = deliveries::list(state, &session.caller, w.id, filter, page).await?;
    body.raw("<section aria-labelledby=\"log\"><h2 id=\"log\">Deliveries</h2><form method=\"get\" class=\"inline\"")
        .attr("action", &base)
        .raw("><label for=\"status\">Status</label> <select id=\"status\" name=\"status\"><option value=\"\">all</option>");
    for s in DeliveryStatus::ALL {
        body.raw("<option").attr("value", s.as_str());
        if status == Some(s) {
            body.raw(" selected");
        }
        body.raw(">").text(s.as_str()).raw("</option>");
    }
    body.raw("</select> <button type=\"submit\">Filter</button></form>");
    body.raw("<table class=\"list\" id=\"deliveries\"")
        .attr("data-webhook-id", &w.id.to_string())
        .raw("><thead><tr><th scope=\"col\">Created</th><th scope=\"col\">Event</th><th scope=\"col\">Status</th><th scope=\"col\">Attempts</th><th scope=\"col\">Last response</th><th scope=\"col\">Actions</th></tr></thead><tbody>");
    if log.is_empty() {
        body.raw("<tr class=\"empty-row\"><td colspan=\"6\">No deliveries yet. Send a test event to see one here.</td></tr>");
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
        badge(&mut body, d.status.as_str());
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
            post_button(&mut body, &format!("{href}/retry"), csrf, "Retry");
        }
        body.raw("</td></tr>");
    }
    body.raw("</tbody></table>");
    if let Some(next) = next {
        let mut href = format!("{base}?cursor={}", url_encode(&next));
        if let Some(s) = status {
            href.push_str("&status=");
            href.push_str(s.as_str());
        }
        body.raw("<p><a")
            .attr("href", &href)
            .raw(">Older deliveries</a></p>");
    }
    body.raw("</section>");
    // Retry all failed.
    body.raw("<section aria-labelledby=\"retry\"><h2 id=\"retry\">Retry failed deliveries</h2>");
    if let Some(job) = q.job.as_deref().and_then(|j| Uuid::parse_str(j).ok())
        && let Ok(job) = deliveries::get_retry_job(state, &session.caller, w.id, job).await
    {
        body.raw("<p>Retry job ")
            .text(job.status.as_str())
            .raw(": <progress")
            .attr("id", "retry-job")
            .attr("data-job-id", &job.id.to_string())
            .attr("max", &job.total.max(1).to_string())
            .attr("value", &job.processed.to_string())
            .raw("></progress> ")
            .num(job.processed)
            .raw(" of ")
            .num(job.total)
            .raw("</p>");
    }
    body.raw("<form method=\"post\" class=\"inline\"")
        .attr("action", &format!("{base}/retry-failed"))
        .raw(">");
    csrf_field(&mut body, csrf);
    body.raw("<button type=\"submit\" name=\"dry_run\" value=\"1\">Count (dry run)</button> <button type=\"submit\" name=\"dry_run\" value=\"0\">Retry all failed</button></form></section>");

    // The last day, from delivery analytics.
    if let Ok(day) = charts::last_day(state, &session.caller, w.id).await {
        body.raw("<section aria-labelledby=\"analytics\"><h2 id=\"analytics\">Last 24 hours</h2><dl class=\"facts\"><dt>Success rate</dt><dd>")
            .text(&charts::rate(&day.totals))
            .raw("</dd><dt>Attempts</dt><dd>")
            .num(day.totals.attempts)
            .raw("</dd><dt>Latency p50 / p95</dt><dd>")
            .text(&day.totals.p50_latency_ms.map_or_else(|| "—".to_owned(), |v| format!("{v:.0} ms")))
            .raw(" / ")
            .text(&day.totals.p95_latency_ms.map_or_else(|| "—".to_owned(), |v| format!("{v:.0} ms")))
            .raw("</dd></dl>");
        charts::outcomes(&mut body, &day);
        charts::latency(&mut body, &day);
        body.raw("</section>");
    }

    // Signing secret: shown only right after an explicit reveal or rotation.
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
        &mut body,
        &format!("{base}/secret/reveal"),
        csrf,
        "Reveal secret",
    );
    post_button(
        &mut body,
        &format!("{base}/secret/rotate"),
        csrf,
        "Rotate secret",
    );
    body.raw("</div></section>");

    // Edit.
    body.raw("<section aria-labelledby=\"edit\"><h2 id=\"edit\">Edit</h2><form method=\"post\" class=\"stack\"")
        .attr("action", &format!("{base}/edit"))
        .raw(">");
    csrf_field(&mut body, csrf);
    body.raw("<label for=\"url\">URL</label><input id=\"url\" name=\"url\" type=\"url\" required")
        .attr("value", &w.url)
        .raw("><label for=\"events\">Event filters <span class=\"muted\">(comma-separated, e.g. order.created, order.*)</span></label><input id=\"events\" name=\"events\" required")
        .attr("value", &w.events.join(", "))
        .raw("><label for=\"description\">Description</label><input id=\"description\" name=\"description\"")
        .attr("value", w.description.as_deref().unwrap_or(""))
        .raw("><button type=\"submit\">Save</button></form></section>");

    let title = w.description.clone().unwrap_or_else(|| w.url.clone());
    Ok(pages::respond(
        StatusCode::OK,
        pages::page(Some(session), &title, Nav::Webhooks, &body),
    ))
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

/// The edit form.
#[derive(Debug, Deserialize)]
pub struct EditForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    url: String,
    #[serde(default)]
    events: String,
    #[serde(default)]
    description: String,
}

/// `POST /portal/webhooks/{id}/edit`.
pub async fn edit(
    State(state): State<AppState>,
    session: PortalSession,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<EditForm>,
) -> Response {
    let result = async {
        session.check_csrf(form.csrf.as_deref())?;
        let w = owned(&state, &session, &id).await?;
        let events: Vec<String> = form
            .events
            .split([',', ' ', '\n'])
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect();
        let description = Some(form.description.trim())
            .filter(|d| !d.is_empty())
            .map(str::to_owned);
        let patch = WebhookPatch {
            url: Some(form.url.trim().to_owned()),
            events: Some(events),
            description: Some(description),
            ..WebhookPatch::default()
        };
        webhooks::update(&state, &session.caller, w.id, patch).await?;
        Ok::<_, ApiError>(w.id)
    }
    .await;
    done(result, "saved")
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
        render_detail(
            &state,
            &session,
            &id,
            &DetailQuery::default(),
            Some(("The current signing secret:", &secret.secret)),
        )
        .await
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
        render_detail(
            &state,
            &session,
            &id,
            &DetailQuery::default(),
            Some((
                "The new signing secret (the previous one keeps signing for a day):",
                &secret.secret,
            )),
        )
        .await
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
