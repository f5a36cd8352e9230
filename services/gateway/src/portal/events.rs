//! The events page: the user's recent events (what was published for them and
//! recorded by the dispatcher, read through `crate::app::events::recent`) and the
//! catalogue of event types with an example delivery of each
//! (`portico_domain::event_types`, the list `GET /api/event-types` also serves).
//!
//! Partners and sessions narrowed to some webhooks see the catalogue only: events
//! belong to the whole user, and neither may read all of the user's events.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use portico_domain::event_types::{self, DELIVERY_HEADERS, EventType, Origin};
use portico_domain::pagination::PageRequest;
use serde::Deserialize;

use super::html::{Html, url_encode};
use super::pages::{self, Nav, error_page, time};
use super::sessions::PortalSession;
use crate::app::events::{self, RECENT_WINDOW_HOURS};
use crate::error::ApiError;
use crate::state::AppState;

/// Events per page of the recent list.
const PAGE: u32 = 25;

/// The page's query: the recent list's page.
#[derive(Debug, Default, Deserialize)]
pub struct EventsQuery {
    cursor: Option<String>,
}

/// The anchor of a catalogue entry (`type-order.created`).
fn anchor(name: &str) -> String {
    format!("type-{name}")
}

/// `GET /portal/events`.
pub async fn page(
    State(state): State<AppState>,
    session: PortalSession,
    Query(q): Query<EventsQuery>,
) -> Response {
    let result = async {
        let mut body = Html::new();
        body.raw("<nav aria-label=\"On this page\" class=\"actions\"><a href=\"#recent\">Recent events</a> <a href=\"#catalogue\">Event types</a></nav>");
        recent(&state, &session, q.cursor.as_deref(), &mut body).await?;
        catalogue(&mut body);
        Ok::<_, ApiError>(pages::respond(
            StatusCode::OK,
            pages::page(Some(&session), "Events", Nav::Events, &body),
        ))
    }
    .await;
    result.unwrap_or_else(|e| error_page(&e))
}

async fn recent(
    state: &AppState,
    session: &PortalSession,
    cursor: Option<&str>,
    body: &mut Html,
) -> Result<(), ApiError> {
    body.raw("<section aria-labelledby=\"recent\"><h2 id=\"recent\">Recent events</h2>");
    if session.is_partner() || session.webhook_ids.is_some() {
        body.raw("<p class=\"muted\">This sign-in does not show the account's events. The webhook pages show what was delivered to you.</p></section>");
        return Ok(());
    }
    let page = PageRequest::parse(Some(PAGE), cursor)?;
    let (rows, next) = events::recent(state, &session.caller, page).await?;
    if rows.is_empty() {
        body.raw("<p class=\"empty\">No events in the last ")
            .num(RECENT_WINDOW_HOURS)
            .raw(" hours. Your platform publishes them (<code>POST /api/events</code> with the service token); each appears here once it is dispatched, and every webhook whose filter matches its type receives it. Send a test event from a webhook's page to see one.</p></section>");
        return Ok(());
    }
    body.raw("<p class=\"muted\">Events recorded in the last ")
        .num(RECENT_WINDOW_HOURS)
        .raw(" hours, newest first.</p>")
        .raw("<div class=\"scroll\" role=\"region\" tabindex=\"0\" aria-label=\"Recent events\"><table class=\"list\" id=\"events\"><thead><tr><th scope=\"col\">Accepted</th><th scope=\"col\">Type</th><th scope=\"col\">Event id</th><th scope=\"col\">Data</th></tr></thead><tbody>");
    for e in &rows {
        body.raw("<tr")
            .attr("data-event-id", &e.id.to_string())
            .raw("><td>")
            .text(&time(e.accepted_at))
            .raw("</td><td class=\"type\">");
        if event_types::find(&e.event_type).is_some() {
            body.raw("<a")
                .attr("href", &format!("#{}", anchor(&e.event_type)))
                .raw(">")
                .text(&e.event_type)
                .raw("</a>");
        } else {
            body.text(&e.event_type);
        }
        body.raw("</td><td><code>")
            .text(&e.id.to_string())
            .raw("</code></td><td><code class=\"excerpt\">")
            .text(&e.payload_excerpt);
        if e.payload_excerpt.chars().count()
            >= usize::try_from(portico_storage::events::PAYLOAD_EXCERPT_CHARS).unwrap_or(0)
        {
            body.raw("…");
        }
        body.raw("</code></td></tr>");
    }
    body.raw("</tbody></table></div>");
    if let Some(next) = next {
        body.raw("<p><a")
            .attr(
                "href",
                &format!("/portal/events?cursor={}", url_encode(&next)),
            )
            .raw(">Older events</a></p>");
    }
    body.raw("</section>");
    Ok(())
}

fn catalogue(body: &mut Html) {
    body.raw("<section aria-labelledby=\"catalogue\"><h2 id=\"catalogue\">Event types</h2>")
        .raw("<p>Every delivery is a POST whose JSON body is <code>{\"id\", \"type\", \"timestamp\", \"data\"}</code>, signed with the webhook's secret. Its headers:</p><dl class=\"facts\">");
    for (name, meaning) in DELIVERY_HEADERS {
        body.raw("<dt><code>")
            .text(name)
            .raw("</code></dt><dd>")
            .text_with_code(meaning)
            .raw("</dd>");
    }
    body.raw("</dl><p class=\"muted\">")
        .text_with_code(event_types::NAMING_CONVENTION)
        .raw("</p>");
    for origin in Origin::ALL {
        match origin {
            Origin::Portico => {
                body.raw("<h3>Sent by Portico</h3><p class=\"muted\">Their payloads are part of Portico's contract. Operational events (<code>portico.*</code>) are not matched by <code>*</code>: subscribe to them by name or with <code>portico.*</code>.</p>");
            }
            Origin::Platform => {
                body.raw("<h3>Published by your platform</h3><p class=\"muted\">Conventions the platform follows and the integration templates subscribe to; Portico delivers their data unchanged.</p>");
            }
        }
        for t in event_types::all().iter().filter(|t| t.origin == origin) {
            entry(body, t);
        }
    }
    body.raw("</section>");
}

fn entry(body: &mut Html, t: &EventType) {
    let example =
        serde_json::to_string_pretty(&t.example_delivery()).unwrap_or_else(|_| "{}".to_owned());
    body.raw("<article class=\"event-type\"")
        .attr("id", &anchor(t.name))
        .raw("><h4><code>")
        .text(t.name)
        .raw("</code></h4><p>")
        .text_with_code(t.description)
        .raw(" <span class=\"muted\">Emitted by ")
        .text(t.emitted_by)
        .raw(
            ".</span></p><details><summary>Example delivery</summary><pre><code class=\"example\">",
        )
        .text(&example)
        .raw("</code></pre></details></article>");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every catalogue entry is on the page with an anchor and its example, escaped.
    #[test]
    fn the_catalogue_lists_every_type_with_an_example() {
        let mut h = Html::new();
        catalogue(&mut h);
        let out = h.into_string();
        for t in event_types::all() {
            assert!(
                out.contains(&format!("id=\"type-{}\"", t.name)),
                "{} missing",
                t.name
            );
        }
        assert!(out.contains("&quot;type&quot;: &quot;order.created&quot;"));
        assert!(!out.contains("<script"));
    }

    /// The catalogue's markdown code spans are `<code>` on the page, never literal
    /// backticks: the naming convention, the header meanings and every description.
    #[test]
    fn code_spans_in_the_catalogue_are_rendered() {
        let mut h = Html::new();
        catalogue(&mut h);
        let out = h.into_string();
        assert!(
            out.contains("Lower-case <code>&lt;resource&gt;.&lt;past-tense verb&gt;</code>"),
            "the naming convention's spans"
        );
        assert!(out.contains("<code>order:&lt;id&gt;:created</code>"));
        assert!(out.contains("Space-separated <code>v1,&lt;base64 HMAC-SHA256"));
        // The texts the catalogue writes with spans (between the examples, which are
        // JSON in <pre> and never contain a backtick).
        let prose: String = out
            .split("<pre>")
            .map(|chunk| chunk.split_once("</pre>").map_or(chunk, |(_, after)| after))
            .collect();
        assert!(!prose.contains('`'), "a literal backtick on the page");
        for t in event_types::all() {
            let mut d = Html::new();
            d.text_with_code(t.description);
            assert!(out.contains(d.as_str()), "{}", t.name);
        }
    }
}
