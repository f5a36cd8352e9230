//! A tiny HTML builder whose only way to add text is escaped.
//!
//! Markup comes only from `&'static str` literals ([`Html::raw`]): text from a request,
//! the database or a partner ([`Html::text`], [`Html::attr`]) is always escaped, so no
//! value can open a tag, close an attribute or start a script. A template crate would
//! give the same guarantee with more build time; the portal's pages are small enough
//! that this and plain functions read as well (see `docs/portal.md`).

use std::fmt::Write;

/// Escapes text for an HTML text node or a double-quoted attribute value: `&`, `<`,
/// `>`, `"` and `'` become character references; everything else is kept.
pub fn escape(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// Percent-encodes a value for a URL query or path segment (RFC 3986 unreserved
/// characters are kept), so a value never changes a link's structure.
pub fn url_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// HTML under construction. Markup only from literals, text only escaped.
#[derive(Debug, Default, Clone)]
pub struct Html(String);

impl Html {
    /// An empty fragment.
    pub fn new() -> Self {
        Self(String::with_capacity(4096))
    }

    /// Appends markup. Only literals are accepted, so nothing from outside can be
    /// appended unescaped.
    pub fn raw(&mut self, markup: &'static str) -> &mut Self {
        self.0.push_str(markup);
        self
    }

    /// Appends escaped text.
    pub fn text(&mut self, text: &str) -> &mut Self {
        escape(text, &mut self.0);
        self
    }

    /// Appends ` name="value"` with the value escaped; `name` is a literal.
    pub fn attr(&mut self, name: &'static str, value: &str) -> &mut Self {
        self.0.push(' ');
        self.0.push_str(name);
        self.0.push_str("=\"");
        escape(value, &mut self.0);
        self.0.push('"');
        self
    }

    /// Appends a number (nothing to escape).
    pub fn num(&mut self, n: impl Into<i128>) -> &mut Self {
        let _ = write!(self.0, "{}", n.into());
        self
    }

    /// Appends escaped text whose markdown code spans (`` `like this` ``) become
    /// `<code>` elements: the catalogue's descriptions are written for the docs and
    /// the OpenAPI document, which render them, and the portal must not show the
    /// backticks. Only single-backtick spans are recognised; a backtick without a
    /// partner, or an empty pair, stays as written. Everything, inside spans too, is
    /// escaped.
    pub fn text_with_code(&mut self, text: &str) -> &mut Self {
        let mut rest = text;
        while let Some(open) = rest.find('`') {
            let after = &rest[open + 1..];
            match after.find('`') {
                Some(len) if len > 0 => {
                    self.text(&rest[..open])
                        .raw("<code>")
                        .text(&after[..len])
                        .raw("</code>");
                    rest = &after[len + 1..];
                }
                // An empty pair: both backticks stay, as written.
                Some(_) => {
                    self.text(&rest[..open + 2]);
                    rest = &after[1..];
                }
                None => break,
            }
        }
        self.text(rest)
    }

    /// Appends `<tag>text</tag>` with `text` escaped.
    pub fn el(&mut self, open: &'static str, text: &str, close: &'static str) -> &mut Self {
        self.raw(open).text(text).raw(close)
    }

    /// Appends another fragment built the same way.
    pub fn push(&mut self, other: &Html) -> &mut Self {
        self.0.push_str(&other.0);
        self
    }

    /// Appends an SVG number with one decimal (coordinates).
    pub fn coord(&mut self, value: f64) -> &mut Self {
        let v = if value.is_finite() { value } else { 0.0 };
        let _ = write!(self.0, "{v:.1}");
        self
    }

    /// The finished markup.
    pub fn into_string(self) -> String {
        self.0
    }

    /// The markup so far.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every character that could change the structure of a page is escaped, in text
    /// and in attributes; other text (including non-ASCII) is kept as is.
    #[test]
    fn text_and_attributes_are_escaped() {
        let mut h = Html::new();
        h.raw("<p")
            .attr("title", "\"><script>alert(1)</script>")
            .raw(">")
            .text("<img src=x onerror='x'> & ünï")
            .raw("</p>");
        assert_eq!(
            h.as_str(),
            "<p title=\"&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;\">&lt;img src=x onerror=&#39;x&#39;&gt; &amp; ünï</p>"
        );
        assert!(!h.as_str().contains("<script"));
    }

    /// Code spans become `<code>`, their content and the text around them escaped;
    /// an unpaired backtick or an empty pair stays literal.
    #[test]
    fn code_spans_become_code_elements() {
        let mut h = Html::new();
        h.text_with_code("Lower-case `<resource>.<verb>` & `*`; a `stray");
        assert_eq!(
            h.as_str(),
            "Lower-case <code>&lt;resource&gt;.&lt;verb&gt;</code> &amp; <code>*</code>; a `stray"
        );
        let mut h = Html::new();
        h.text_with_code("`<script>` `` done ` ");
        assert_eq!(h.as_str(), "<code>&lt;script&gt;</code> `` done ` ");
        let mut h = Html::new();
        h.text_with_code("no spans");
        assert_eq!(h.as_str(), "no spans");
    }

    /// Values in links are percent-encoded, so they cannot add parameters or paths.
    #[test]
    fn url_values_are_percent_encoded() {
        assert_eq!(url_encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(url_encode("failed"), "failed");
    }

    /// Numbers and coordinates never carry text.
    #[test]
    fn numbers_render_plainly() {
        let mut h = Html::new();
        h.num(42u32).raw(" ").coord(1.26).raw(" ").coord(f64::NAN);
        assert_eq!(h.as_str(), "42 1.3 0.0");
    }
}
