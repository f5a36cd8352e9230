//! Versions of resources and conditional writes, for both doors: every single resource
//! a client can change carries a strong entity tag ([`ETag`]) derived from its row's
//! version (its id and `updated_at` to the microsecond), and an update or delete may
//! name the version it was based on ([`Precondition`]: `If-Match` over REST, the
//! request's `etag` over gRPC).
//!
//! Why: two clients that read the same webhook and both write back their change would
//! otherwise silently lose one of them. The compare happens inside the write's
//! transaction, after the row is locked ([`portico_storage::versions`]), so no write can
//! land between the check and the change; a stale version answers 412
//! `precondition_failed` (gRPC FAILED_PRECONDITION) and changes nothing.

use axum::http::StatusCode;
use chrono::{DateTime, Utc};

use crate::error::ApiError;

/// A strong entity tag: the quoted form sent in `ETag` and compared with `If-Match`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ETag(String);

impl ETag {
    /// The tag of the version `updated_at` of the resource `id` (a UUID or a template
    /// key): every write bumps `updated_at`, so a new version has a new tag; the id
    /// keeps tags of different resources apart.
    pub fn of(id: impl std::fmt::Display, updated_at: DateTime<Utc>) -> Self {
        ETag(format!("\"{id}.{}\"", updated_at.timestamp_micros()))
    }

    /// The quoted tag, as sent in `ETag` and in gRPC messages.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ETag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a conditional write requires of the current version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Precondition {
    /// No condition: the write applies to whatever version is current.
    #[default]
    None,
    /// `If-Match: *`: the resource must exist (it does when the write finds it).
    Exists,
    /// The current version must be one of these tags (strong comparison: a weak tag
    /// `W/"..."` never matches).
    OneOf(Vec<String>),
}

impl Precondition {
    /// Parses an `If-Match` value (RFC 9110: `*` or a comma-separated list of entity
    /// tags); `None` when the header is absent. A value that is no list of tags
    /// answers 400 `invalid_if_match`.
    pub fn from_if_match(value: Option<&str>) -> Result<Self, ApiError> {
        let Some(value) = value else {
            return Ok(Precondition::None);
        };
        let value = value.trim();
        if value == "*" {
            return Ok(Precondition::Exists);
        }
        let tags = parse_tags(value).ok_or_else(|| {
            ApiError::field(
                "invalid_if_match",
                "/headers/if-match",
                "If-Match must be * or a list of entity tags (\"...\")",
            )
        })?;
        Ok(Precondition::OneOf(tags))
    }

    /// The `etag` of a gRPC update or delete request: empty means no condition, `*`
    /// means "exists", anything else is the one tag the current version must have.
    pub fn from_grpc(etag: Option<&str>) -> Self {
        match etag.map(str::trim) {
            None | Some("") => Precondition::None,
            Some("*") => Precondition::Exists,
            Some(tag) => Precondition::OneOf(vec![tag.to_owned()]),
        }
    }

    /// Checks the locked current version `current` (the caller found the resource):
    /// 412 `precondition_failed` when it is not the one the client named.
    pub fn check(&self, current: &ETag) -> Result<(), ApiError> {
        match self {
            Precondition::None | Precondition::Exists => Ok(()),
            Precondition::OneOf(tags) if tags.iter().any(|t| t == current.as_str()) => Ok(()),
            Precondition::OneOf(_) => Err(precondition_failed()),
        }
    }

    /// Whether a condition was given at all (a write without one need not lock the
    /// row's version first).
    pub fn is_set(&self) -> bool {
        !matches!(self, Precondition::None)
    }
}

/// 412 `precondition_failed`: the resource changed since the client read it.
pub fn precondition_failed() -> ApiError {
    ApiError::Specific {
        status: StatusCode::PRECONDITION_FAILED,
        code: "precondition_failed",
        message: "the resource changed since this version was read (If-Match / etag); \
                  read it again and retry"
            .into(),
    }
}

/// Whether an `If-None-Match` value names `current` (weak comparison, RFC 9110 13.1.2:
/// `W/` is ignored), so a GET may answer 304.
pub fn none_match_hits(value: &str, current: &str) -> bool {
    let value = value.trim();
    if value == "*" {
        return true;
    }
    let current = current.strip_prefix("W/").unwrap_or(current);
    parse_tags(value).is_some_and(|tags| {
        tags.iter()
            .any(|t| t.strip_prefix("W/").unwrap_or(t) == current)
    })
}

/// The entity tags of a comma-separated list (each `"..."` or `W/"..."`, kept with its
/// quotes); `None` when an element is not a tag.
fn parse_tags(value: &str) -> Option<Vec<String>> {
    let tags: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            let opaque = t.strip_prefix("W/").unwrap_or(t);
            let ok = opaque.len() >= 2
                && opaque.starts_with('"')
                && opaque.ends_with('"')
                && !opaque[1..opaque.len() - 1].contains('"');
            ok.then(|| t.to_owned())
        })
        .collect::<Option<_>>()?;
    (!tags.is_empty()).then_some(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_follow_the_version() {
        let at = DateTime::parse_from_rfc3339("2026-01-31T12:00:00.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let tag = ETag::of("abc", at);
        assert_eq!(tag.as_str(), "\"abc.1769860800123456\"");
        assert_ne!(tag, ETag::of("abc", at + chrono::Duration::microseconds(1)));
    }

    #[test]
    fn if_match_parses_and_compares_strongly() {
        let current = ETag("\"a.1\"".into());
        assert_eq!(
            Precondition::from_if_match(None).unwrap(),
            Precondition::None
        );
        assert!(
            Precondition::from_if_match(Some("*"))
                .unwrap()
                .check(&current)
                .is_ok()
        );
        let p = Precondition::from_if_match(Some("\"x.0\", \"a.1\"")).unwrap();
        assert!(p.check(&current).is_ok());
        let stale = Precondition::from_if_match(Some("\"a.0\"")).unwrap();
        assert_eq!(
            stale.check(&current).unwrap_err().code(),
            "precondition_failed"
        );
        let weak = Precondition::from_if_match(Some("W/\"a.1\"")).unwrap();
        assert!(weak.check(&current).is_err());
        assert!(Precondition::from_if_match(Some("a.1")).is_err());
        assert!(Precondition::from_if_match(Some("")).is_err());
    }

    #[test]
    fn if_none_match_compares_weakly() {
        assert!(none_match_hits("W/\"a.1\"", "\"a.1\""));
        assert!(none_match_hits("\"b\", \"a.1\"", "\"a.1\""));
        assert!(none_match_hits("*", "\"a.1\""));
        assert!(!none_match_hits("\"a.0\"", "\"a.1\""));
        assert!(!none_match_hits("garbage", "\"a.1\""));
    }
}
