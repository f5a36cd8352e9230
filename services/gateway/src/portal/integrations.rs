//! A user's integration pages: the list, creating one from a template or from
//! scratch, an integration's scopes and limits (editable), activation, regenerating
//! its credentials with a grace period, its calls per day and recent call log, and
//! the one-time credentials screen. Every action calls `crate::app::integrations` or
//! `crate::app::integration_templates` with the session's caller, as the API does.
//!
//! # Credentials are shown once
//! Creating or regenerating answers with a redirect (so a reload can never create a
//! second integration) to `/portal/integrations/{id}/credentials`. The credentials
//! travel to that one render in a short-lived cookie holding them **sealed** with the
//! gateway's secrets keyring (AES-256-GCM), bound to the session and the integration
//! as associated data: nothing stores them in clear, the database only ever sees the
//! keyed hash of the secret, and a copied cookie opens for no other session or
//! integration. The credentials page clears the cookie in the same response, so a
//! reload (or going back) finds nothing and says so. The cookie is `HttpOnly` and
//! lives [`REVEAL_TTL_SECS`] at most, for the case the redirect is never followed.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use portico_domain::FieldError;
use portico_domain::integrations::{IntegrationType, Scope};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::charts;
use super::forms::{self, Errors, Field};
use super::html::Html;
use super::pages::{self, Nav, badge, csrf_field, error_page, notice, time};
use super::security;
use super::sessions::PortalSession;
use crate::app::integration_templates::{self as templates, FromTemplate, Template};
use crate::app::integrations::{self, Integration, IntegrationPatch, NewIntegration, UsageQuery};
use crate::app::preconditions::Precondition;
use crate::error::ApiError;
use crate::state::AppState;

/// The cookie carrying sealed credentials to their one render.
pub const REVEAL_COOKIE: &str = "portico_portal_credentials";
/// How long sealed credentials wait for their render, at most.
pub const REVEAL_TTL_SECS: i64 = 120;
/// Days of the usage chart.
const USAGE_DAYS: u32 = 30;
/// Calls in the recent call log.
const RECENT_CALLS: u32 = 20;
/// The grace periods the regenerate form offers (seconds, label); `None` is the
/// gateway's configured default.
const GRACE_CHOICES: &[(Option<u32>, &str)] = &[
    (None, "the default grace period"),
    (Some(0), "no grace: revoke the old secret now"),
    (Some(3_600), "1 hour"),
    (Some(86_400), "1 day"),
    (Some(7 * 86_400), "7 days"),
];

/// A submitted form as its name-value pairs, so that repeated fields (the scope
/// checkboxes) are all kept.
#[derive(Debug, Default, Deserialize)]
#[serde(transparent)]
pub struct Pairs(Vec<(String, String)>);

impl Pairs {
    /// The first value of `name`, trimmed; empty when absent.
    fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.trim())
    }

    /// Every value of `name`.
    fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }

    /// The value of `name`, or `None` when empty.
    fn opt(&self, name: &str) -> Option<String> {
        Some(self.get(name))
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    }
}

/// Integrations are a user's: a partner session has no such pages (404, as another
/// user's resource), and a session narrowed to some webhooks may not manage them.
fn require_owner(session: &PortalSession) -> Result<(), ApiError> {
    if session.is_partner() {
        return Err(ApiError::NotFound("page"));
    }
    if session.webhook_ids.is_some() {
        return Err(ApiError::Forbidden(
            "this sign-in is limited to some webhooks and cannot manage integrations; use a full sign-in or the API".into(),
        ));
    }
    Ok(())
}

fn parse_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| ApiError::NotFound("integration"))
}

/// A whole number typed into a limit field, checked to fit its type.
fn limit_field<T: TryFrom<i64>>(
    text: &str,
    path: &str,
    what: &str,
    errors: &mut Vec<FieldError>,
) -> Option<T> {
    match forms::number(text, path, what) {
        Ok(None) => None,
        Ok(Some(n)) => match T::try_from(n) {
            Ok(v) => Some(v),
            Err(_) => {
                errors.push(FieldError::new(
                    "invalid_number",
                    path,
                    format!("{what} must be a positive whole number"),
                ));
                None
            }
        },
        Err(e) => {
            errors.push(e);
            None
        }
    }
}

fn scope_list(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a refused form brings back to its page: which form, what was typed, and the
/// application layer's messages.
struct Refused<'a> {
    form: &'static str,
    values: &'a Pairs,
    errors: &'a [FieldError],
}

impl Refused<'_> {
    fn errors_for<'a>(refused: Option<&'a Self>, form: &str) -> Errors<'a> {
        refused
            .filter(|r| r.form == form)
            .map_or(Errors::default(), |r| Errors(r.errors))
    }

    fn value<'a>(refused: Option<&'a Self>, form: &str, name: &str, default: &'a str) -> &'a str {
        refused
            .filter(|r| r.form == form)
            .map_or(default, |r| r.values.get(name))
    }
}

/// The errors a form can come back with, or the error page for anything else.
fn field_errors(err: ApiError) -> Result<Vec<FieldError>, ApiError> {
    match err {
        ApiError::Validation(errors) => Ok(errors),
        ApiError::Unprocessable { errors, .. } if !errors.is_empty() => Ok(errors),
        other => Err(other),
    }
}

// ---------------------------------------------------------------------------------
// The list and the create forms

/// `GET /portal/integrations`.
pub async fn list(
    State(state): State<AppState>,
    session: PortalSession,
    Query(q): Query<pages::NoticeQuery>,
) -> Response {
    render_list(&state, &session, q.done.as_deref(), None)
        .await
        .unwrap_or_else(|e| error_page(&e))
}

async fn render_list(
    state: &AppState,
    session: &PortalSession,
    done: Option<&str>,
    refused: Option<Refused<'_>>,
) -> Result<Response, ApiError> {
    require_owner(session)?;
    let (all, _) = integrations::list(state, &session.caller, None, Some(100), None).await?;
    let (template_list, _) = templates::list(state, &session.caller, Some(100), None).await?;
    let mut body = Html::new();
    notice(&mut body, done);
    if all.is_empty() {
        body.raw("<p class=\"empty\">No integrations yet. Give a partner access with one: start from a template below (it also subscribes a webhook for the partner) or from scratch. Its API key and secret are shown once, right after.</p>");
    } else {
        body.raw("<div class=\"scroll\" role=\"region\" tabindex=\"0\" aria-label=\"Integrations\"><table class=\"list\"><caption>Your integrations</caption><thead><tr><th scope=\"col\">Name</th><th scope=\"col\">Type</th><th scope=\"col\">Scopes</th><th scope=\"col\">Status</th><th scope=\"col\">Last used</th></tr></thead><tbody>");
        for i in &all {
            body.raw("<tr")
                .attr("data-integration-id", &i.id.to_string())
                .raw("><td><a")
                .attr("href", &format!("/portal/integrations/{}", i.id))
                .raw(">")
                .text(&i.name)
                .raw("</a></td><td>")
                .text(i.integration_type.as_str())
                .raw("</td><td>")
                .text(&scope_list(&i.scopes))
                .raw("</td><td>");
            badge(&mut body, status_of(i));
            body.raw("</td><td>");
            match i.last_used_at {
                Some(t) => {
                    body.text(&time(t));
                }
                None => {
                    body.raw("<span class=\"muted\">never</span>");
                }
            }
            body.raw("</td></tr>");
        }
        body.raw("</tbody></table></div>");
    }
    template_form(&mut body, &session.csrf, &template_list, refused.as_ref());
    scratch_form(&mut body, &session.csrf, refused.as_ref());
    let status = if refused.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok(pages::respond(
        status,
        pages::page(Some(session), "Integrations", Nav::Integrations, &body),
    ))
}

fn status_of(i: &Integration) -> &'static str {
    if !i.active {
        "disabled"
    } else if i.expires_at.is_some_and(|t| t <= Utc::now()) {
        "expired"
    } else {
        "active"
    }
}

const TEMPLATE_FIELDS: &[(&str, &[&str])] = &[
    ("tpl-key", &["/template"]),
    ("tpl-webhook-url", &["/webhookUrl", "/url"]),
    ("tpl-name", &["/name"]),
];

fn template_form(h: &mut Html, csrf: &str, list: &[Template], refused: Option<&Refused<'_>>) {
    let errors = Refused::errors_for(refused, "template");
    h.raw("<section aria-labelledby=\"from-template\"><h2 id=\"from-template\">Create from a template</h2>")
        .raw("<p class=\"muted\">A template sets the type, scopes and limits for a kind of partner and subscribes a webhook to the events it needs.</p>");
    if list.is_empty() {
        h.raw("<p class=\"empty\">No templates are available. Create the integration from scratch below.</p></section>");
        return;
    }
    h.raw("<div class=\"scroll\" role=\"region\" tabindex=\"0\" aria-label=\"Templates\"><table class=\"list\"><caption>Templates</caption><thead><tr><th scope=\"col\">Template</th><th scope=\"col\">Scopes</th><th scope=\"col\">Limits</th><th scope=\"col\">Webhook events</th></tr></thead><tbody>");
    for t in list {
        h.raw("<tr><td><strong>").text(&t.name).raw("</strong>");
        if !t.builtin {
            h.raw(" <span class=\"badge\">yours</span>");
        }
        h.raw("<div class=\"muted\">")
            .text(&t.description)
            .raw("</div></td><td>")
            .text(&scope_list(&t.scopes))
            .raw("</td><td>")
            .num(t.rate_limit_per_second)
            .raw("/s, ")
            .num(t.daily_quota)
            .raw("/day</td><td>")
            .text(&t.events.join(", "))
            .raw("</td></tr>");
    }
    h.raw("</tbody></table></div>");
    errors.summary(h, TEMPLATE_FIELDS);
    h.raw("<form method=\"post\" action=\"/portal/integrations/from-template\" class=\"stack\" id=\"template-form\">");
    csrf_field(h, csrf);
    let chosen = Refused::value(refused, "template", "template", "");
    h.raw("<div class=\"field\"><label for=\"tpl-key\">Template</label><select id=\"tpl-key\" name=\"template\" required>");
    for t in list {
        h.raw("<option").attr("value", &t.key);
        if t.key == chosen {
            h.raw(" selected");
        }
        h.raw(">").text(&t.name).raw("</option>");
    }
    h.raw("</select></div>");
    Field {
        id: "tpl-webhook-url",
        name: "webhook_url",
        label: "Partner's webhook URL",
        hint: Some(
            "Where Portico delivers the template's events to the partner: an https:// address.",
        ),
        kind: "url",
        value: Refused::value(refused, "template", "webhook_url", ""),
        extra: " required",
        paths: &["/webhookUrl", "/url"],
    }
    .render(h, errors);
    Field {
        id: "tpl-name",
        name: "name",
        label: "Name (optional)",
        hint: Some("Leave empty to use the template's name."),
        kind: "text",
        value: Refused::value(refused, "template", "name", ""),
        extra: " maxlength=\"100\"",
        paths: &["/name"],
    }
    .render(h, errors);
    h.raw("<div><button type=\"submit\">Create from template</button></div></form></section>");
}

const SCRATCH_FIELDS: &[(&str, &[&str])] = &[
    ("new-name", &["/name"]),
    ("new-type", &["/type"]),
    ("new-scopes", &["/scopes"]),
    ("new-webhook-url", &["/webhookUrl"]),
    ("new-rate", &["/rateLimitPerSecond"]),
    ("new-quota", &["/dailyQuota"]),
];

/// Scope checkboxes in a fieldset (a group with a legend, for screen readers).
fn scope_boxes(h: &mut Html, id: &'static str, checked: &[String], errors: Errors<'_>) {
    h.raw("<fieldset class=\"field\"")
        .attr("id", id)
        .raw("><legend>Scopes</legend>");
    for s in Scope::ALL {
        let box_id = format!("{id}-{}", s.as_str().replace(':', "-"));
        h.raw("<label class=\"check\"")
            .attr("for", &box_id)
            .raw("><input type=\"checkbox\" name=\"scope\"")
            .attr("id", &box_id)
            .attr("value", s.as_str());
        if checked.iter().any(|c| c == s.as_str()) {
            h.raw(" checked");
        }
        h.raw("> ").text(s.as_str()).raw("</label>");
    }
    let messages = errors.at(&["/scopes"]);
    if !messages.is_empty() {
        h.raw("<p class=\"field-error\">")
            .text(&messages.join(" "))
            .raw("</p>");
    }
    h.raw("</fieldset>");
}

fn scratch_form(h: &mut Html, csrf: &str, refused: Option<&Refused<'_>>) {
    let errors = Refused::errors_for(refused, "scratch");
    h.raw("<section aria-labelledby=\"from-scratch\"><h2 id=\"from-scratch\">Create from scratch</h2>");
    errors.summary(h, SCRATCH_FIELDS);
    h.raw("<form method=\"post\" action=\"/portal/integrations\" class=\"stack\" id=\"scratch-form\">");
    csrf_field(h, csrf);
    Field {
        id: "new-name",
        name: "name",
        label: "Name",
        hint: None,
        kind: "text",
        value: Refused::value(refused, "scratch", "name", ""),
        extra: " required maxlength=\"100\"",
        paths: &["/name"],
    }
    .render(h, errors);
    let chosen = Refused::value(refused, "scratch", "type", "custom");
    h.raw("<div class=\"field\"><label for=\"new-type\">Type</label><select id=\"new-type\" name=\"type\">");
    for t in IntegrationType::ALL {
        h.raw("<option").attr("value", t.as_str());
        if t.as_str() == chosen {
            h.raw(" selected");
        }
        h.raw(">").text(t.as_str()).raw("</option>");
    }
    h.raw("</select></div>");
    let checked: Vec<String> = match refused.filter(|r| r.form == "scratch") {
        Some(r) => r.values.all("scope"),
        None => Scope::DEFAULT
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect(),
    };
    scope_boxes(h, "new-scopes", &checked, errors);
    Field {
        id: "new-webhook-url",
        name: "webhook_url",
        label: "Partner's webhook URL (optional)",
        hint: Some(
            "Recorded with the integration; to deliver events, create a webhook or use a template.",
        ),
        kind: "url",
        value: Refused::value(refused, "scratch", "webhook_url", ""),
        extra: "",
        paths: &["/webhookUrl"],
    }
    .render(h, errors);
    Field {
        id: "new-rate",
        name: "rate_limit_per_second",
        label: "Rate limit, requests per second (optional)",
        hint: Some("Empty uses the gateway's default."),
        kind: "number",
        value: Refused::value(refused, "scratch", "rate_limit_per_second", ""),
        extra: " min=\"1\"",
        paths: &["/rateLimitPerSecond"],
    }
    .render(h, errors);
    Field {
        id: "new-quota",
        name: "daily_quota",
        label: "Daily quota, calls per UTC day (optional)",
        hint: Some("Empty uses the gateway's default."),
        kind: "number",
        value: Refused::value(refused, "scratch", "daily_quota", ""),
        extra: " min=\"1\"",
        paths: &["/dailyQuota"],
    }
    .render(h, errors);
    h.raw("<div><button type=\"submit\">Create integration</button></div></form></section>");
}

/// `POST /portal/integrations`: creates an integration from scratch, then shows its
/// credentials once.
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    session: PortalSession,
    axum::Form(form): axum::Form<Pairs>,
) -> Response {
    let result = async {
        session.check_csrf(form.opt("csrf").as_deref())?;
        require_owner(&session)?;
        let mut errors = Vec::new();
        let rate = limit_field::<u32>(
            form.get("rate_limit_per_second"),
            "/rateLimitPerSecond",
            "The rate limit",
            &mut errors,
        );
        let quota = limit_field::<u64>(
            form.get("daily_quota"),
            "/dailyQuota",
            "The daily quota",
            &mut errors,
        );
        let input = NewIntegration {
            name: form.get("name").to_owned(),
            integration_type: form.get("type").to_owned(),
            webhook_url: form.opt("webhook_url"),
            scopes: Some(form.all("scope")),
            expires_at: None,
            rate_limit_per_second: rate,
            daily_quota: quota,
        };
        let outcome = if errors.is_empty() {
            integrations::create(&state, &session.caller, input).await
        } else {
            Err(ApiError::Validation(errors))
        };
        match outcome {
            Ok(created) => Ok(reveal_redirect(
                &state,
                &headers,
                &session,
                Sealed::new(&created.integration, &created.credentials, None, None),
            )),
            Err(e) => {
                let errors = field_errors(e)?;
                let refused = Refused {
                    form: "scratch",
                    values: &form,
                    errors: &errors,
                };
                render_list(&state, &session, None, Some(refused)).await
            }
        }
    }
    .await;
    result.unwrap_or_else(|e| error_page(&e))
}

/// `POST /portal/integrations/from-template`: creates an integration, its
/// credentials and its webhook from a template, then shows both secrets once.
pub async fn create_from_template(
    State(state): State<AppState>,
    headers: HeaderMap,
    session: PortalSession,
    axum::Form(form): axum::Form<Pairs>,
) -> Response {
    let result = async {
        session.check_csrf(form.opt("csrf").as_deref())?;
        require_owner(&session)?;
        let request = FromTemplate {
            webhook_url: form.opt("webhook_url"),
            name: form.opt("name"),
            ..FromTemplate::default()
        };
        match templates::create_integration(&state, &session.caller, form.get("template"), request)
            .await
        {
            Ok(created) => Ok(reveal_redirect(
                &state,
                &headers,
                &session,
                Sealed::new(
                    &created.integration,
                    &created.credentials,
                    Some((created.webhook.id, created.webhook_secret.as_str())),
                    None,
                ),
            )),
            Err(e) => {
                let errors = match e {
                    ApiError::NotFound(_) => vec![FieldError::new(
                        "template_not_found",
                        "/template",
                        "choose a template from the list",
                    )],
                    other => field_errors(other)?,
                };
                let refused = Refused {
                    form: "template",
                    values: &form,
                    errors: &errors,
                };
                render_list(&state, &session, None, Some(refused)).await
            }
        }
    }
    .await;
    result.unwrap_or_else(|e| error_page(&e))
}

// ---------------------------------------------------------------------------------
// One integration

/// `GET /portal/integrations/{id}`.
pub async fn detail(
    State(state): State<AppState>,
    session: PortalSession,
    Path(id): Path<String>,
    Query(q): Query<pages::NoticeQuery>,
) -> Response {
    render_detail(&state, &session, &id, q.done.as_deref(), None)
        .await
        .unwrap_or_else(|e| error_page(&e))
}

const EDIT_FIELDS: &[(&str, &[&str])] = &[
    ("edit-name", &["/name"]),
    ("edit-scopes", &["/scopes"]),
    ("edit-rate", &["/rateLimitPerSecond"]),
    ("edit-quota", &["/dailyQuota"]),
];

async fn render_detail(
    state: &AppState,
    session: &PortalSession,
    id: &str,
    done: Option<&str>,
    refused: Option<Refused<'_>>,
) -> Result<Response, ApiError> {
    require_owner(session)?;
    let id = parse_id(id)?;
    let i = integrations::get(state, &session.caller, id).await?;
    let base = format!("/portal/integrations/{}", i.id);
    let mut body = Html::new();
    body.raw("<p><a href=\"/portal/integrations\">All integrations</a></p>");
    notice(&mut body, done);
    body.raw("<dl class=\"facts\"><dt>Name</dt><dd>")
        .text(&i.name)
        .raw("</dd><dt>Type</dt><dd>")
        .text(i.integration_type.as_str())
        .raw("</dd><dt>Status</dt><dd class=\"status\">");
    badge(&mut body, status_of(&i));
    body.raw("</dd><dt>API key</dt><dd><code>")
        .text(i.api_key.as_deref().unwrap_or("none"))
        .raw("</code></dd><dt>Scopes</dt><dd>")
        .text(&scope_list(&i.scopes))
        .raw("</dd><dt>Limits</dt><dd>")
        .num(i.rate_limit_per_second)
        .raw(" requests per second, ")
        .num(i.daily_quota)
        .raw(" calls per UTC day</dd><dt>Webhook URL</dt><dd>")
        .text(i.webhook_url.as_deref().unwrap_or("none"))
        .raw("</dd><dt>Expires</dt><dd>")
        .text(&i.expires_at.map_or_else(|| "never".to_owned(), time))
        .raw("</dd><dt>Last used</dt><dd>")
        .text(&i.last_used_at.map_or_else(|| "never".to_owned(), time))
        .raw("</dd><dt>Created</dt><dd>")
        .text(&time(i.created_at))
        .raw("</dd></dl>");

    // Usage: calls per day (the quota's counters) and the recent call log.
    body.raw("<section aria-labelledby=\"usage\"><h2 id=\"usage\">Usage</h2>");
    let days = integrations::daily_usage(state, &session.caller, i.id, USAGE_DAYS).await?;
    if days.iter().all(|(_, n)| *n == 0) {
        body.raw("<p class=\"empty\">No calls in the last 30 days. Calls the partner makes with this integration's API key and secret are counted here per day.</p>");
    } else {
        charts::daily(&mut body, &days);
    }
    let usage = integrations::usage(
        state,
        &session.caller,
        i.id,
        UsageQuery {
            limit: Some(RECENT_CALLS),
            ..UsageQuery::default()
        },
    )
    .await?;
    body.raw("<h3>Recent calls</h3>");
    if usage.entries.is_empty() {
        body.raw("<p class=\"empty\">No calls logged yet.</p>");
    } else {
        body.raw("<div class=\"scroll\" role=\"region\" tabindex=\"0\" aria-label=\"Recent calls\"><table class=\"list\" id=\"calls\"><thead><tr><th scope=\"col\">When</th><th scope=\"col\">Call</th><th scope=\"col\">Status</th><th scope=\"col\">Time</th><th scope=\"col\">Client</th></tr></thead><tbody>");
        for e in &usage.entries {
            body.raw("<tr><td>")
                .text(&time(e.occurred_at))
                .raw("</td><td>")
                .text(&e.method)
                .raw(" ")
                .text(&e.route)
                .raw("</td><td>")
                .num(e.status)
                .raw("</td><td>")
                .num(e.latency_us / 1000)
                .raw(" ms</td><td>")
                .text(e.client_ip.as_deref().unwrap_or("-"))
                .raw("</td></tr>");
        }
        body.raw("</tbody></table></div>");
    }
    body.raw("</section>");

    // Credentials.
    body.raw("<section aria-labelledby=\"credentials\"><h2 id=\"credentials\">Credentials</h2>")
        .raw("<p class=\"muted\">The secret was shown once, when it was issued; Portico keeps only a keyed hash of it. Regenerate to issue a new key and secret; the old ones keep working for the grace period you choose, so the partner can switch without downtime.</p>")
        .raw("<form method=\"post\" class=\"stack\" id=\"regenerate-form\"")
        .attr("action", &format!("{base}/regenerate"))
        .raw(">");
    csrf_field(&mut body, &session.csrf);
    body.raw("<div class=\"field\"><label for=\"grace\">Keep the old secret working for</label><select id=\"grace\" name=\"grace_seconds\">");
    for (secs, label) in GRACE_CHOICES {
        body.raw("<option")
            .attr("value", &secs.map_or_else(String::new, |s| s.to_string()))
            .raw(">")
            .raw(label)
            .raw("</option>");
    }
    body.raw("</select></div><div><button type=\"submit\">Regenerate credentials</button></div></form></section>");

    // Scopes and limits.
    let errors = Refused::errors_for(refused.as_ref(), "edit");
    body.raw("<section aria-labelledby=\"settings\"><h2 id=\"settings\">Scopes and limits</h2>");
    errors.summary(&mut body, EDIT_FIELDS);
    body.raw("<form method=\"post\" class=\"stack\" id=\"edit-form\"")
        .attr("action", &format!("{base}/edit"))
        .raw(">");
    csrf_field(&mut body, &session.csrf);
    body.raw("<input type=\"hidden\" name=\"version\"")
        .attr("value", i.etag().as_str())
        .raw(">");
    let rate = i.rate_limit_per_second.to_string();
    let quota = i.daily_quota.to_string();
    Field {
        id: "edit-name",
        name: "name",
        label: "Name",
        hint: None,
        kind: "text",
        value: Refused::value(refused.as_ref(), "edit", "name", &i.name),
        extra: " required maxlength=\"100\"",
        paths: &["/name"],
    }
    .render(&mut body, errors);
    let checked: Vec<String> = match refused.as_ref().filter(|r| r.form == "edit") {
        Some(r) => r.values.all("scope"),
        None => i.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
    };
    scope_boxes(&mut body, "edit-scopes", &checked, errors);
    Field {
        id: "edit-rate",
        name: "rate_limit_per_second",
        label: "Rate limit, requests per second",
        hint: None,
        kind: "number",
        value: Refused::value(refused.as_ref(), "edit", "rate_limit_per_second", &rate),
        extra: " min=\"1\" required",
        paths: &["/rateLimitPerSecond"],
    }
    .render(&mut body, errors);
    Field {
        id: "edit-quota",
        name: "daily_quota",
        label: "Daily quota, calls per UTC day",
        hint: None,
        kind: "number",
        value: Refused::value(refused.as_ref(), "edit", "daily_quota", &quota),
        extra: " min=\"1\" required",
        paths: &["/dailyQuota"],
    }
    .render(&mut body, errors);
    body.raw("<div><button type=\"submit\">Save scopes and limits</button></div></form>");
    body.raw("<form method=\"post\" class=\"inline\"")
        .attr("action", &format!("{base}/active"))
        .raw(">");
    csrf_field(&mut body, &session.csrf);
    if i.active {
        body.raw("<input type=\"hidden\" name=\"active\" value=\"false\"><button type=\"submit\">Deactivate</button> <span class=\"muted\">Its credentials stop working at once; nothing is deleted.</span>");
    } else {
        body.raw("<input type=\"hidden\" name=\"active\" value=\"true\"><button type=\"submit\">Activate</button>");
    }
    body.raw("</form></section>");
    let status = if refused.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok(pages::respond(
        status,
        pages::page(Some(session), &i.name, Nav::Integrations, &body),
    ))
}

/// `POST /portal/integrations/{id}/edit`: name, scopes and limits, conditional on the
/// version the form was rendered from (a change made meanwhile answers 412 rather
/// than being overwritten).
pub async fn edit(
    State(state): State<AppState>,
    session: PortalSession,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<Pairs>,
) -> Response {
    let result = async {
        session.check_csrf(form.opt("csrf").as_deref())?;
        require_owner(&session)?;
        let uuid = parse_id(&id)?;
        let mut errors = Vec::new();
        let rate = limit_field::<u32>(
            form.get("rate_limit_per_second"),
            "/rateLimitPerSecond",
            "The rate limit",
            &mut errors,
        );
        let quota = limit_field::<u64>(
            form.get("daily_quota"),
            "/dailyQuota",
            "The daily quota",
            &mut errors,
        );
        let patch = IntegrationPatch {
            name: Some(form.get("name").to_owned()),
            scopes: Some(form.all("scope")),
            rate_limit_per_second: rate,
            daily_quota: quota,
            ..IntegrationPatch::default()
        };
        let precondition = Precondition::from_grpc(form.opt("version").as_deref());
        let outcome = if errors.is_empty() {
            integrations::update(&state, &session.caller, uuid, patch, &precondition).await
        } else {
            Err(ApiError::Validation(errors))
        };
        match outcome {
            Ok(_) => Ok(
                Redirect::to(&format!("/portal/integrations/{uuid}?done=saved")).into_response(),
            ),
            Err(e) => {
                let errors = field_errors(e)?;
                let refused = Refused {
                    form: "edit",
                    values: &form,
                    errors: &errors,
                };
                render_detail(&state, &session, &id, None, Some(refused)).await
            }
        }
    }
    .await;
    result.unwrap_or_else(|e| error_page(&e))
}

/// `POST /portal/integrations/{id}/active`: activates or deactivates.
pub async fn set_active(
    State(state): State<AppState>,
    session: PortalSession,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<Pairs>,
) -> Response {
    let result = async {
        session.check_csrf(form.opt("csrf").as_deref())?;
        require_owner(&session)?;
        let uuid = parse_id(&id)?;
        let active = form.get("active") == "true";
        let patch = IntegrationPatch {
            active: Some(active),
            ..IntegrationPatch::default()
        };
        integrations::update(&state, &session.caller, uuid, patch, &Precondition::None).await?;
        let done = if active {
            "integration_activated"
        } else {
            "integration_deactivated"
        };
        Ok::<_, ApiError>(
            Redirect::to(&format!("/portal/integrations/{uuid}?done={done}")).into_response(),
        )
    }
    .await;
    result.unwrap_or_else(|e| error_page(&e))
}

/// `POST /portal/integrations/{id}/regenerate`: new credentials, the old ones kept
/// for the chosen grace period; the new ones are shown once.
pub async fn regenerate(
    State(state): State<AppState>,
    headers: HeaderMap,
    session: PortalSession,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<Pairs>,
) -> Response {
    let result = async {
        session.check_csrf(form.opt("csrf").as_deref())?;
        require_owner(&session)?;
        let uuid = parse_id(&id)?;
        let grace = match form.get("grace_seconds") {
            "" => None,
            text => Some(text.parse::<u32>().map_err(|_| {
                ApiError::field(
                    "invalid_grace_period",
                    "/gracePeriodSeconds",
                    "choose a grace period from the list",
                )
            })?),
        };
        let rotated = integrations::regenerate(&state, &session.caller, uuid, grace).await?;
        Ok::<_, ApiError>(reveal_redirect(
            &state,
            &headers,
            &session,
            Sealed::new(
                &rotated.integration,
                &rotated.credentials,
                None,
                rotated.previous_expires_at,
            ),
        ))
    }
    .await;
    result.unwrap_or_else(|e| error_page(&e))
}

// ---------------------------------------------------------------------------------
// Credentials, once

/// What the reveal cookie carries (sealed).
#[derive(Debug, Serialize, Deserialize)]
struct Sealed {
    /// The integration.
    i: Uuid,
    /// API key.
    k: String,
    /// API secret.
    s: String,
    /// The template's webhook and its signing secret.
    w: Option<(Uuid, String)>,
    /// Until when the previous credentials keep working.
    p: Option<DateTime<Utc>>,
    /// Until when this cookie may be rendered (unix seconds).
    e: i64,
}

impl Sealed {
    fn new(
        integration: &Integration,
        credentials: &portico_domain::credentials::IssuedCredentials,
        webhook: Option<(Uuid, &str)>,
        previous_expires_at: Option<DateTime<Utc>>,
    ) -> Self {
        Sealed {
            i: integration.id,
            k: credentials.api_key.clone(),
            s: credentials.api_secret.clone(),
            w: webhook.map(|(id, secret)| (id, secret.to_owned())),
            p: previous_expires_at,
            e: Utc::now().timestamp() + REVEAL_TTL_SECS,
        }
    }
}

/// The sealing context: the reveal cookie opens only for this session and this
/// integration.
fn reveal_context(session_id: Uuid, integration_id: Uuid) -> Vec<u8> {
    let mut context = b"portico-portal-credentials\0".to_vec();
    context.extend_from_slice(session_id.as_bytes());
    context.extend_from_slice(integration_id.as_bytes());
    context
}

/// Seals `sealed` into the reveal cookie and redirects to the credentials page.
fn reveal_redirect(
    state: &AppState,
    headers: &HeaderMap,
    session: &PortalSession,
    sealed: Sealed,
) -> Response {
    let integration_id = sealed.i;
    let sealed_cookie = serde_json::to_vec(&sealed)
        .map_err(ApiError::internal)
        .and_then(|plain| {
            state
                .secrets_key()
                .seal(&reveal_context(session.id, integration_id), &plain)
                .map_err(ApiError::internal)
        })
        .map(|bytes| URL_SAFE_NO_PAD.encode(bytes));
    let value = match sealed_cookie {
        Ok(v) => v,
        Err(e) => return error_page(&e),
    };
    let secure = security::secure_request(headers, state.config());
    let mut response = Redirect::to(&format!(
        "/portal/integrations/{integration_id}/credentials"
    ))
    .into_response();
    if let Some(cookie) = security::set_cookie(REVEAL_COOKIE, &value, REVEAL_TTL_SECS, secure) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// Opens the reveal cookie for this session and integration, if it is there, intact
/// and not expired.
fn open_reveal(
    state: &AppState,
    headers: &HeaderMap,
    session: &PortalSession,
    integration_id: Uuid,
) -> Option<Sealed> {
    let value = security::cookie(headers, REVEAL_COOKIE)?;
    let bytes = URL_SAFE_NO_PAD.decode(value).ok()?;
    let opened = state
        .secrets_key()
        .open(&reveal_context(session.id, integration_id), &bytes)
        .ok()?;
    let sealed: Sealed = serde_json::from_slice(&opened.plaintext).ok()?;
    (sealed.i == integration_id && sealed.e >= Utc::now().timestamp()).then_some(sealed)
}

/// `GET /portal/integrations/{id}/credentials`: the credentials just issued, this
/// once. The response clears the cookie that brought them, so a reload shows they
/// are gone.
pub async fn credentials(
    State(state): State<AppState>,
    headers: HeaderMap,
    session: PortalSession,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        require_owner(&session)?;
        let uuid = parse_id(&id)?;
        let i = integrations::get(&state, &session.caller, uuid).await?;
        let revealed = open_reveal(&state, &headers, &session, uuid)
            // Regenerated since: these are no longer the integration's credentials.
            .filter(|s| i.api_key.as_deref() == Some(s.k.as_str()));
        let mut body = Html::new();
        match &revealed {
            Some(s) => {
                body.raw("<p class=\"notice\" role=\"status\">Copy these now and give them to the partner over a safe channel. They are shown this once: Portico keeps only a keyed hash of the secret, and this page will not show them again.</p>")
                    .raw("<dl class=\"facts credentials\"><dt>API key</dt><dd><code id=\"api-key\">")
                    .text(&s.k)
                    .raw("</code> <button type=\"button\" data-copy=\"api-key\">Copy</button></dd><dt>API secret</dt><dd class=\"secret\"><code id=\"api-secret\">")
                    .text(&s.s)
                    .raw("</code> <button type=\"button\" data-copy=\"api-secret\">Copy</button></dd>");
                if let Some((webhook_id, secret)) = &s.w {
                    body.raw("<dt>Webhook signing secret</dt><dd class=\"secret\"><code id=\"webhook-secret\">")
                        .text(secret)
                        .raw("</code> <button type=\"button\" data-copy=\"webhook-secret\">Copy</button><div class=\"muted\">The partner verifies deliveries to its URL with it. Its <a")
                        .attr("href", &format!("/portal/webhooks/{webhook_id}"))
                        .raw(">webhook</a> can reveal it again later.</div></dd>");
                }
                body.raw("</dl>");
                if let Some(until) = s.p {
                    body.raw("<p>The previous credentials keep working until ")
                        .text(&time(until))
                        .raw(".</p>");
                }
            }
            None => {
                body.raw("<p class=\"empty\" id=\"credentials-gone\">The credentials were shown once and are not kept, so they cannot be shown again. If they were not saved, regenerate them on the integration's page: the partner then needs the new ones.</p>");
            }
        }
        body.raw("<p><a")
            .attr("href", &format!("/portal/integrations/{uuid}"))
            .raw(">Continue to the integration</a></p>");
        let title = format!("Credentials of {}", i.name);
        let mut response = pages::respond(
            StatusCode::OK,
            pages::page(Some(&session), &title, Nav::Integrations, &body),
        );
        let secure = security::secure_request(&headers, state.config());
        if security::cookie(&headers, REVEAL_COOKIE).is_some()
            && let Some(clear) = security::set_cookie(REVEAL_COOKIE, "", 0, secure)
        {
            response.headers_mut().append(header::SET_COOKIE, clear);
        }
        Ok::<_, ApiError>(response)
    }
    .await;
    result.unwrap_or_else(|e| error_page(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Repeated checkboxes are all kept; single values are trimmed; empty is absent.
    #[test]
    fn form_pairs_keep_repeated_fields() {
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let form = Pairs(vec![
            pair("name", " Acme "),
            pair("scope", "orders:read"),
            pair("scope", "webhooks:read"),
            pair("webhook_url", ""),
        ]);
        assert_eq!(form.get("name"), "Acme");
        assert_eq!(form.all("scope"), ["orders:read", "webhooks:read"]);
        assert_eq!(form.opt("webhook_url"), None);
        assert_eq!(form.get("missing"), "");
    }

    /// The sealing context differs per session and per integration, so a reveal
    /// cookie opens for neither another session nor another integration.
    #[test]
    fn reveal_context_binds_session_and_integration() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        assert_ne!(reveal_context(a, b), reveal_context(b, a));
        assert_ne!(reveal_context(a, a), reveal_context(a, b));
    }

    /// A limit that is no whole number, or does not fit, is a field error at its path.
    #[test]
    fn limits_from_forms() {
        let mut errors = Vec::new();
        assert_eq!(limit_field::<u32>("12", "/r", "R", &mut errors), Some(12));
        assert_eq!(limit_field::<u32>("", "/r", "R", &mut errors), None);
        assert!(errors.is_empty());
        assert_eq!(limit_field::<u32>("-1", "/r", "R", &mut errors), None);
        assert_eq!(limit_field::<u32>("x", "/q", "Q", &mut errors), None);
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["/r", "/q"]);
    }
}
