//! Validation failures, reported field by field so a client can fix all of them at once.

use serde::{Deserialize, Serialize};

/// One thing wrong with an input: where (a JSON pointer into the request body, using
/// its camelCase names), why (a stable machine-readable code) and a human message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// Stable code clients can switch on, e.g. `invalid_url`.
    pub code: String,
    /// JSON pointer to the offending value, e.g. `/lineItems/0/quantity`.
    pub path: String,
    /// Human-readable explanation.
    pub message: String,
}

impl FieldError {
    /// Builds a field error.
    pub fn new(code: &str, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            path: path.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at {}: {}", self.code, self.path, self.message)
    }
}
