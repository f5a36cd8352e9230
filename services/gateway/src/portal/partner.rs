//! The partner's page: its integration (scopes, limits, webhook subscription), today's
//! usage and the recent call log, read with the partner routes of the application
//! layer (`app::integrations::current` and `current_usage`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use super::html::Html;
use super::pages::{self, Nav, badge, error_page, time};
use super::sessions::PortalSession;
use crate::app::integrations::{self, UsageQuery};
use crate::error::ApiError;
use crate::state::AppState;

/// `GET /portal/partner`.
pub async fn page(State(state): State<AppState>, session: PortalSession) -> Response {
    if !session.is_partner() {
        return Redirect::to("/portal/webhooks").into_response();
    }
    let result = async {
        let (integration, totals) = integrations::current(&state, &session.caller).await?;
        let mut body = Html::new();
        body.raw("<dl class=\"facts\"><dt>Integration</dt><dd>")
            .text(&integration.name)
            .raw("</dd><dt>Type</dt><dd>")
            .text(integration.integration_type.as_str())
            .raw("</dd><dt>Status</dt><dd>");
        badge(
            &mut body,
            if integration.active { "active" } else { "disabled" },
        );
        body.raw("</dd><dt>Scopes</dt><dd>");
        let scopes: Vec<&str> = integration.scopes.iter().map(|s| s.as_str()).collect();
        body.text(&scopes.join(", "))
            .raw("</dd><dt>Webhook subscription</dt><dd>")
            .text(integration.webhook_url.as_deref().unwrap_or("none"))
            .raw("</dd><dt>Limits</dt><dd>")
            .num(integration.rate_limit_per_second)
            .raw(" requests per second, ")
            .num(integration.daily_quota)
            .raw(" calls per day</dd><dt>Calls today</dt><dd>")
            .num(totals.total)
            .raw("</dd></dl>");
        if !totals.by_status.is_empty() {
            body.raw("<h2>Today by status</h2>");
            bar_chart(&mut body, &totals.by_status);
        }
        body.raw("<h2>Recent calls</h2>");
        match integrations::current_usage(
            &state,
            &session.caller,
            UsageQuery {
                limit: Some(20),
                ..UsageQuery::default()
            },
        )
        .await
        {
            Ok(usage) if !usage.entries.is_empty() => {
                body.raw("<div class=\"scroll\" role=\"region\" tabindex=\"0\" aria-label=\"Recent calls\"><table class=\"list\"><thead><tr><th scope=\"col\">When</th><th scope=\"col\">Call</th><th scope=\"col\">Status</th><th scope=\"col\">Time</th></tr></thead><tbody>");
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
                        .raw(" ms</td></tr>");
                }
                body.raw("</tbody></table></div>");
            }
            Ok(_) => {
                body.raw("<p class=\"empty\">No calls recorded yet. Calls made with this integration's credentials appear here.</p>");
            }
            Err(ApiError::Forbidden(_)) => {
                body.raw("<p class=\"muted\">The integration holds no read scope, so its call log is not shown.</p>");
            }
            Err(e) => return Err(e),
        }
        Ok::<_, ApiError>(pages::respond(
            StatusCode::OK,
            pages::page(Some(&session), "Your integration", Nav::Partner, &body),
        ))
    }
    .await;
    result.unwrap_or_else(|e| error_page(&e))
}

/// A horizontal bar chart as inline SVG (no script, no library): one bar per entry,
/// scaled to the largest value.
pub fn bar_chart(h: &mut Html, values: &std::collections::BTreeMap<String, u64>) {
    let max = values.values().copied().max().unwrap_or(1).max(1) as f64;
    let height = 24.0 * values.len() as f64;
    h.raw("<svg class=\"chart\" role=\"img\" aria-label=\"Calls by status\" viewBox=\"0 0 400 ")
        .coord(height)
        .raw("\" width=\"100%\">");
    for (i, (label, n)) in values.iter().enumerate() {
        let y = 24.0 * i as f64;
        let width = 300.0 * (*n as f64) / max;
        h.raw("<text x=\"0\" y=\"")
            .coord(y + 16.0)
            .raw("\">")
            .text(label)
            .raw("</text><rect x=\"60\" y=\"")
            .coord(y + 4.0)
            .raw("\" height=\"16\" width=\"")
            .coord(width)
            .raw("\" class=\"bar\"></rect><text x=\"")
            .coord(64.0 + width)
            .raw("\" y=\"")
            .coord(y + 16.0)
            .raw("\">")
            .num(*n)
            .raw("</text>");
    }
    h.raw("</svg>");
}
