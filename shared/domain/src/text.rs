//! Rules for free text and keys that come from outside and end up in PostgreSQL.
//!
//! PostgreSQL refuses the NUL character in `text` and `jsonb` values, so a NUL that got
//! past the door would fail the statement that stores it, and with a set-based
//! statement every other row of the chunk too. Every text field is therefore checked
//! here, at the door, for length and control characters.

use crate::FieldError;

/// Which control characters a field may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lines {
    /// A single line: no control character at all (names, keys, identifiers).
    Single,
    /// Prose: tab, line feed and carriage return are allowed, no other control
    /// character (descriptions).
    Multi,
}

/// Whether `text` holds a control character that `lines` does not allow.
pub fn has_forbidden_control(text: &str, lines: Lines) -> bool {
    text.chars()
        .any(|c| c.is_control() && !(lines == Lines::Multi && matches!(c, '\t' | '\n' | '\r')))
}

/// Checks a key or identifier (idempotency key, ordering key, user id): 1 to
/// `max_bytes` bytes of UTF-8 and no control characters. `what` names the field in the
/// message.
pub fn validate_key(
    value: &str,
    max_bytes: usize,
    code: &str,
    path: &str,
    what: &str,
) -> Result<(), FieldError> {
    if value.is_empty() || value.len() > max_bytes || has_forbidden_control(value, Lines::Single) {
        return Err(FieldError::new(
            code,
            path,
            format!("{what} must be 1-{max_bytes} bytes without control characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_by_kind() {
        assert!(has_forbidden_control("a\0b", Lines::Single));
        assert!(has_forbidden_control("a\0b", Lines::Multi));
        assert!(has_forbidden_control("a\nb", Lines::Single));
        assert!(!has_forbidden_control("a\nb\r\n\tc", Lines::Multi));
        assert!(has_forbidden_control("a\u{7f}", Lines::Multi));
        assert!(has_forbidden_control("a\u{85}", Lines::Multi));
        assert!(!has_forbidden_control("Größe ✓ 注文", Lines::Single));
    }

    #[test]
    fn keys() {
        assert!(validate_key("order-1", 255, "invalid_key", "/k", "key").is_ok());
        for bad in ["", "a\0b", "a\nb", &"x".repeat(256)] {
            let e = validate_key(bad, 255, "invalid_key", "/k", "key").unwrap_err();
            assert_eq!((e.code.as_str(), e.path.as_str()), ("invalid_key", "/k"));
        }
        // The bound is in bytes: 85 three-byte characters fit 255, 86 do not.
        assert!(validate_key(&"注".repeat(85), 255, "c", "/k", "key").is_ok());
        assert!(validate_key(&"注".repeat(86), 255, "c", "/k", "key").is_err());
    }
}
