//! Keyset pagination: a cursor is the (created_at, id) of the last row a client saw,
//! encoded opaquely, so pages stay stable while rows are inserted and cost an index
//! seek, never an OFFSET scan.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::FieldError;

/// Default page size when `limit` is absent.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page a client may ask for.
pub const MAX_LIMIT: u32 = 500;

/// Position after which the next page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Sort key of the last row returned.
    pub created_at: DateTime<Utc>,
    /// Tie-breaker of the last row returned.
    pub id: Uuid,
}

impl Cursor {
    /// The opaque text handed to clients as `nextCursor`.
    pub fn encode(&self) -> String {
        let text = format!("{}|{}", self.created_at.timestamp_micros(), self.id);
        URL_SAFE_NO_PAD.encode(text)
    }

    /// Parses a cursor a client sent back.
    pub fn decode(text: &str) -> Result<Self, FieldError> {
        let bad = || {
            FieldError::new(
                "invalid_cursor",
                "/cursor",
                "cursor is not one this API issued",
            )
        };
        let raw = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
        let raw = String::from_utf8(raw).map_err(|_| bad())?;
        let (micros, id) = raw.split_once('|').ok_or_else(bad)?;
        let micros: i64 = micros.parse().map_err(|_| bad())?;
        Ok(Self {
            created_at: DateTime::from_timestamp_micros(micros).ok_or_else(bad)?,
            id: id.parse().map_err(|_| bad())?,
        })
    }
}

/// Validates a raw `limit` (absent or 0 = the default), the same for every list.
pub fn parse_limit(limit: Option<u32>) -> Result<u32, FieldError> {
    match limit {
        None | Some(0) => Ok(DEFAULT_LIMIT),
        Some(n) if n > MAX_LIMIT => Err(FieldError::new(
            "invalid_limit",
            "/limit",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        )),
        Some(n) => Ok(n),
    }
}

/// A validated page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// Rows to return (1..=MAX_LIMIT).
    pub limit: u32,
    /// Start after this position, or from the newest row.
    pub after: Option<Cursor>,
}

impl PageRequest {
    /// Validates raw `limit` and `cursor` parameters (0 or absent limit = default).
    pub fn parse(limit: Option<u32>, cursor: Option<&str>) -> Result<Self, FieldError> {
        let limit = parse_limit(limit)?;
        let after = match cursor {
            None | Some("") => None,
            Some(c) => Some(Cursor::decode(c)?),
        };
        Ok(Self { limit, after })
    }

    /// Rows to fetch: one more than the page, to learn whether another page exists.
    pub fn fetch_limit(&self) -> i64 {
        i64::from(self.limit) + 1
    }
}

/// Cuts a fetched `limit + 1` rows down to the page and computes `nextCursor`.
pub fn finish_page<T>(
    mut rows: Vec<T>,
    page: &PageRequest,
    key: impl Fn(&T) -> Cursor,
) -> (Vec<T>, Option<String>) {
    if rows.len() > page.limit as usize {
        rows.truncate(page.limit as usize);
        let next = rows.last().map(|r| key(r).encode());
        (rows, next)
    } else {
        (rows, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cursors round-trip, garbage is refused, limits are bounded.
    #[test]
    fn cursor_round_trip_and_limits() {
        let c = Cursor {
            created_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            id: Uuid::now_v7(),
        };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        assert!(Cursor::decode("nope").is_err());
        assert_eq!(PageRequest::parse(None, None).unwrap().limit, DEFAULT_LIMIT);
        assert!(PageRequest::parse(Some(MAX_LIMIT + 1), None).is_err());
        let rows: Vec<u32> = (0..6).collect();
        let page = PageRequest::parse(Some(5), None).unwrap();
        let (rows, next) = finish_page(rows, &page, |_| c);
        assert_eq!(rows.len(), 5);
        assert!(next.is_some());
    }
}
