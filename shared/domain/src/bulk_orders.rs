//! Bulk-order batches: the state machine, result statuses, the chunk layout and the
//! results cursor, shared by the gateway (which writes batches) and the batch-processor
//! (which works through them), so both read the same words the same way.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::FieldError;

/// Orders per stored chunk. Chunk `k` of a batch holds the orders with indexes
/// `k * ORDERS_PER_CHUNK ..`; the processor commits one chunk per transaction, and
/// retry-failed finds an order's JSON by `index / ORDERS_PER_CHUNK`. Changing it only
/// affects batches created afterwards if that lookup is changed to use `first_index`.
pub const ORDERS_PER_CHUNK: usize = 1000;

/// Where a batch is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub enum BatchStatus {
    /// Committed and queued; no order processed yet.
    Pending,
    /// A processor is working through its chunks.
    Processing,
    /// Finished; every order succeeded or was a duplicate.
    Completed,
    /// Finished; some orders failed, some did not.
    CompletedWithErrors,
    /// Finished; every order failed, or the batch as a whole could not be processed.
    Failed,
    /// Cancelled by its owner; orders not reached are reported `unprocessed`.
    Cancelled,
}

impl BatchStatus {
    /// Every status, in state-machine order.
    pub const ALL: [BatchStatus; 6] = [
        BatchStatus::Pending,
        BatchStatus::Processing,
        BatchStatus::Completed,
        BatchStatus::CompletedWithErrors,
        BatchStatus::Failed,
        BatchStatus::Cancelled,
    ];

    /// The wire and database name.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchStatus::Pending => "pending",
            BatchStatus::Processing => "processing",
            BatchStatus::Completed => "completed",
            BatchStatus::CompletedWithErrors => "completed_with_errors",
            BatchStatus::Failed => "failed",
            BatchStatus::Cancelled => "cancelled",
        }
    }

    /// Parses a wire name.
    pub fn parse(text: &str) -> Option<Self> {
        <Self as crate::wire::WireName>::from_wire(text)
    }

    /// True once the batch can no longer change.
    pub fn is_final(self) -> bool {
        !matches!(self, BatchStatus::Pending | BatchStatus::Processing)
    }

    /// The final status of a batch that worked through all of its orders: completed
    /// without failures, failed when nothing but failures, otherwise with errors.
    pub fn finished(counts: &BatchCounts) -> Self {
        if counts.failed == 0 && counts.unprocessed == 0 {
            BatchStatus::Completed
        } else if counts.succeeded == 0 && counts.duplicate == 0 {
            BatchStatus::Failed
        } else {
            BatchStatus::CompletedWithErrors
        }
    }
}

/// The outcome of one order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub enum ResultStatus {
    /// The order was created (or, in a validation report, is valid).
    Succeeded,
    /// The order is invalid; its errors say where and why.
    Failed,
    /// An order with this clientOrderRef already exists; its id is reported.
    Duplicate,
    /// Never processed: the batch was cancelled or gave up first.
    Unprocessed,
}

impl ResultStatus {
    /// Every status.
    pub const ALL: [ResultStatus; 4] = [
        ResultStatus::Succeeded,
        ResultStatus::Failed,
        ResultStatus::Duplicate,
        ResultStatus::Unprocessed,
    ];

    /// The wire and database name.
    pub fn as_str(self) -> &'static str {
        match self {
            ResultStatus::Succeeded => "succeeded",
            ResultStatus::Failed => "failed",
            ResultStatus::Duplicate => "duplicate",
            ResultStatus::Unprocessed => "unprocessed",
        }
    }

    /// Parses a wire name.
    pub fn parse(text: &str) -> Option<Self> {
        <Self as crate::wire::WireName>::from_wire(text)
    }
}

/// A batch's progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchCounts {
    /// Orders in the batch.
    pub total: i64,
    /// Orders with a final result: succeeded + failed + duplicate.
    pub processed: i64,
    /// Orders created.
    pub succeeded: i64,
    /// Orders refused by validation.
    pub failed: i64,
    /// Orders whose clientOrderRef already existed.
    pub duplicate: i64,
    /// Orders left without processing by a cancel or a batch failure.
    pub unprocessed: i64,
}

/// The position in a batch's results after which the next page starts: the
/// `order_index` of the last result returned, encoded opaquely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexCursor(pub i32);

impl IndexCursor {
    /// The opaque text handed to clients as `nextCursor`.
    pub fn encode(self) -> String {
        URL_SAFE_NO_PAD.encode(format!("i|{}", self.0))
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
        let raw = std::str::from_utf8(&raw).map_err(|_| bad())?;
        let index = raw.strip_prefix("i|").ok_or_else(bad)?;
        index.parse().map(IndexCursor).map_err(|_| bad())
    }
}

/// Finds a JSON `\u0000` escape in raw JSON text. PostgreSQL text and JSONB cannot hold
/// the NUL character, so an order carrying one is refused at submission with its
/// position instead of failing the whole transaction later. An escaped backslash
/// followed by `u0000` (`\\u0000`) is ordinary text and not matched.
pub fn contains_nul_escape(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    let mut from = 0;
    while let Some(pos) = raw[from..].find("u0000") {
        let at = from + pos;
        let backslashes = bytes[..at]
            .iter()
            .rev()
            .take_while(|b| **b == b'\\')
            .count();
        if backslashes % 2 == 1 {
            return true;
        }
        from = at + 1;
    }
    false
}

crate::wire_name!(BatchStatus, ResultStatus);

#[cfg(test)]
mod tests {
    use super::*;

    /// Names round-trip; only pending and processing are not final.
    #[test]
    fn statuses_round_trip() {
        for s in BatchStatus::ALL {
            assert_eq!(serde_json::json!(s), s.as_str());
            assert_eq!(BatchStatus::parse(s.as_str()), Some(s));
        }
        for s in ResultStatus::ALL {
            assert_eq!(serde_json::json!(s), s.as_str());
            assert_eq!(ResultStatus::parse(s.as_str()), Some(s));
        }
        assert!(BatchStatus::parse("done").is_none());
        assert!(!BatchStatus::Processing.is_final() && BatchStatus::Cancelled.is_final());
    }

    /// The final status follows from the counts.
    #[test]
    fn final_status_from_counts() {
        let counts = |succeeded, failed, duplicate| BatchCounts {
            total: succeeded + failed + duplicate,
            processed: succeeded + failed + duplicate,
            succeeded,
            failed,
            duplicate,
            unprocessed: 0,
        };
        assert_eq!(
            BatchStatus::finished(&counts(3, 0, 1)),
            BatchStatus::Completed
        );
        assert_eq!(
            BatchStatus::finished(&counts(0, 0, 2)),
            BatchStatus::Completed
        );
        assert_eq!(
            BatchStatus::finished(&counts(2, 1, 0)),
            BatchStatus::CompletedWithErrors
        );
        assert_eq!(BatchStatus::finished(&counts(0, 3, 0)), BatchStatus::Failed);
    }

    /// Cursors round-trip and garbage is refused.
    #[test]
    fn index_cursor_round_trip() {
        let c = IndexCursor(41_999);
        assert_eq!(IndexCursor::decode(&c.encode()), Ok(c));
        assert!(IndexCursor::decode("bm9wZQ").is_err());
        assert!(IndexCursor::decode("!!").is_err());
    }

    /// Only a real `\u0000` escape is found.
    #[test]
    fn nul_escapes_are_found() {
        assert!(contains_nul_escape(r#"{"a":"x\u0000y"}"#));
        assert!(contains_nul_escape(r#"{"a":"\\\u0000"}"#));
        assert!(!contains_nul_escape(r#"{"a":"\\u0000"}"#));
        assert!(!contains_nul_escape(r#"{"a":"u0000"}"#));
    }
}
