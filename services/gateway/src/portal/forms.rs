//! Form fields with their labels and field errors, so a form that the application
//! layer refused comes back with each message next to the field it is about.
//!
//! Why here: the application layer reports problems as [`FieldError`]s whose `path`
//! is the JSON pointer of the API's body (`/url`, `/retryPolicy/maxRetries`,
//! `/headers/X-Api-Key`). A portal form names its fields differently, so each field
//! says which pointers are its own; a message whose pointer no field claims still
//! shows in the summary at the top of the form.

use portico_domain::FieldError;

use super::html::Html;

/// The errors of one submitted form.
#[derive(Debug, Clone, Copy, Default)]
pub struct Errors<'a>(pub &'a [FieldError]);

impl<'a> Errors<'a> {
    /// The messages of errors at `path` or below it (`/events` claims `/events/1`).
    pub fn at(&self, paths: &[&str]) -> Vec<&'a str> {
        self.0
            .iter()
            .filter(|e| paths.iter().any(|p| covers(p, &e.path)))
            .map(|e| e.message.as_str())
            .collect()
    }

    /// Whether there is no error at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The summary of a refused form, put at the top of the page so it is seen
    /// whatever the form's place (`role="alert"`, so it is announced): every message,
    /// each linking to its field when a field claims it.
    pub fn summary(&self, h: &mut Html, fields: &[(&str, &[&str])]) {
        if self.0.is_empty() {
            return;
        }
        h.raw("<div class=\"error\" role=\"alert\"><p>Nothing was saved. Fix this and submit again:</p><ul>");
        for e in self.0 {
            let target = fields
                .iter()
                .find(|(_, paths)| paths.iter().any(|p| covers(p, &e.path)))
                .map(|(id, _)| *id);
            h.raw("<li>");
            match target {
                Some(id) => {
                    h.raw("<a")
                        .attr("href", &format!("#{id}"))
                        .raw(">")
                        .text(&e.message)
                        .raw("</a>");
                }
                None => {
                    h.text(&e.message);
                }
            }
            h.raw("</li>");
        }
        h.raw("</ul></div>");
    }
}

/// Whether the error pointer `path` is `prefix` or lies below it.
fn covers(prefix: &str, path: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// One labelled input.
#[derive(Debug, Clone)]
pub struct Field<'a> {
    /// The element id (also the summary's link target).
    pub id: &'a str,
    /// The form field name.
    pub name: &'static str,
    /// The visible label.
    pub label: &'static str,
    /// A hint under the label (what to enter), tied to the input by
    /// `aria-describedby`.
    pub hint: Option<&'a str>,
    /// The `type` attribute (`text`, `url`, `number`, `datetime-local`, ...).
    pub kind: &'static str,
    /// The current value (escaped).
    pub value: &'a str,
    /// Further literal attributes, e.g. ` min="0" max="20" required`.
    pub extra: &'static str,
    /// The error pointers this field answers for.
    pub paths: &'a [&'a str],
}

impl Field<'_> {
    /// Renders the label, the hint, the input and its errors. An input with errors
    /// gets `aria-invalid` and `aria-describedby` pointing at its messages, so a
    /// screen reader reads what to fix when the field gets focus.
    pub fn render(&self, h: &mut Html, errors: Errors<'_>) {
        let messages = errors.at(self.paths);
        let hint_id = format!("{}-hint", self.id);
        let error_id = format!("{}-error", self.id);
        h.raw("<div class=\"field\"><label")
            .attr("for", self.id)
            .raw(">")
            .raw(self.label)
            .raw("</label>");
        if let Some(hint) = self.hint {
            h.raw("<span class=\"hint\"")
                .attr("id", &hint_id)
                .raw(">")
                .text(hint)
                .raw("</span>");
        }
        h.raw("<input")
            .attr("id", self.id)
            .attr("name", self.name)
            .attr("type", self.kind)
            .attr("value", self.value)
            .raw(self.extra);
        let mut described = Vec::new();
        if self.hint.is_some() {
            described.push(hint_id.as_str());
        }
        if !messages.is_empty() {
            described.push(error_id.as_str());
            h.raw(" aria-invalid=\"true\"");
        }
        if !described.is_empty() {
            h.attr("aria-describedby", &described.join(" "));
        }
        h.raw(">");
        if !messages.is_empty() {
            h.raw("<p class=\"field-error\"")
                .attr("id", &error_id)
                .raw(">")
                .text(&messages.join(" "))
                .raw("</p>");
        }
        h.raw("</div>");
    }
}

/// A whole number typed into a form field: empty is `None`; anything else that is
/// not a whole number is a field error at `path` saying what to type.
pub fn number(text: &str, path: &str, what: &str) -> Result<Option<i64>, FieldError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<i64>().map(Some).map_err(|_| {
        FieldError::new(
            "invalid_number",
            path,
            format!("{what} must be a whole number (digits only), e.g. 5"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(path: &str, message: &str) -> FieldError {
        FieldError::new("x", path, message)
    }

    /// A field claims its pointer and those below it, not a sibling with the same
    /// prefix.
    #[test]
    fn fields_claim_their_pointers() {
        let list = [
            err("/events/1", "bad filter"),
            err("/eventsX", "other"),
            err("/url", "bad url"),
        ];
        let errors = Errors(&list);
        assert_eq!(errors.at(&["/events"]), ["bad filter"]);
        assert_eq!(errors.at(&["/url"]), ["bad url"]);
        assert!(errors.at(&["/description"]).is_empty());
    }

    /// An input with an error is marked invalid and described by its message; the
    /// message is escaped; the summary links to the field.
    #[test]
    fn an_error_renders_next_to_its_field() {
        let list = [err("/url", "use <https>")];
        let errors = Errors(&list);
        let mut h = Html::new();
        errors.summary(&mut h, &[("url", &["/url"])]);
        Field {
            id: "url",
            name: "url",
            label: "URL",
            hint: None,
            kind: "url",
            value: "\"x",
            extra: " required",
            paths: &["/url"],
        }
        .render(&mut h, errors);
        let out = h.into_string();
        assert!(
            out.contains("<a href=\"#url\">use &lt;https&gt;</a>"),
            "{out}"
        );
        assert!(out.contains("<label for=\"url\">URL</label>"), "{out}");
        assert!(
            out.contains(
                "value=\"&quot;x\" required aria-invalid=\"true\" aria-describedby=\"url-error\">"
            ),
            "{out}"
        );
        assert!(
            out.contains("<p class=\"field-error\" id=\"url-error\">use &lt;https&gt;</p>"),
            "{out}"
        );
    }

    /// Numbers: empty is none, digits parse, anything else says what to type.
    #[test]
    fn numbers_from_forms() {
        assert_eq!(number(" ", "/a", "A").ok(), Some(None));
        assert_eq!(number("12", "/a", "A").ok(), Some(Some(12)));
        let e = number("1.5", "/retryPolicy/maxRetries", "Max retries").unwrap_err();
        assert_eq!(e.path, "/retryPolicy/maxRetries");
        assert!(e.message.contains("whole number"));
    }
}
