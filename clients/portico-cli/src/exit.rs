//! Exit codes, documented in `docs/cli.md` and `portico --help`, so scripts can tell
//! a refused request from an outage without parsing text.

use std::process::ExitCode;

/// Success.
pub const OK: u8 = 0;
/// A local failure: unreadable file, bad config, unexpected answer.
pub const FAILURE: u8 = 1;
/// Invalid command line (clap's own code; listed for the documentation).
#[allow(dead_code)]
pub const USAGE: u8 = 2;
/// The API refused the request (4xx other than 401/403): validation, not found, conflict.
pub const REFUSED: u8 = 3;
/// Authentication or authorization failed (401, 403).
pub const AUTH: u8 = 4;
/// The server is unreachable, unavailable or failed (5xx, 429 after retries, transport).
pub const UNAVAILABLE: u8 = 5;
/// `verify`: the signature does not match.
pub const INVALID_SIGNATURE: u8 = 6;
/// `bulk submit`: the batch finished with failed or unprocessed orders, or did not finish.
pub const ORDERS_FAILED: u8 = 7;
/// `audit verify`: a record of the audit log was edited or removed.
pub const AUDIT_CHAIN_BROKEN: u8 = 8;

/// The text of `--help`'s exit-code section.
pub const HELP: &str = "Exit codes:
  0  success
  1  local failure (file, config, unexpected answer)
  2  invalid command line
  3  the API refused the request (400, 404, 409, ...)
  4  authentication or authorization failed (401, 403)
  5  server unreachable, unavailable or failed (5xx, 429 after retries)
  6  verify: signature does not match
  7  bulk submit: orders failed, or the batch did not complete
  8  audit verify: a record was edited or removed";

/// An error that ends the command with a specific code and message.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    /// The exit code.
    pub code: u8,
    /// What to print on stderr (empty: nothing more to say).
    pub message: String,
}

impl Exit {
    /// Ends with `code` after printing `message`.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Exit {
            code,
            message: message.into(),
        }
    }
}

/// The exit code of an HTTP status.
pub fn for_status(status: u16) -> u8 {
    match status {
        401 | 403 => AUTH,
        429 | 500..=599 => UNAVAILABLE,
        _ => REFUSED,
    }
}

/// Prints an error the way every command does and returns its exit code: one line,
/// then one indented line per field error.
pub fn report(err: &anyhow::Error) -> ExitCode {
    if let Some(exit) = err.downcast_ref::<Exit>() {
        if !exit.message.is_empty() {
            eprintln!("error: {}", exit.message);
        }
        return ExitCode::from(exit.code);
    }
    if let Some(client) = err.downcast_ref::<portico_client::Error>() {
        return match client {
            portico_client::Error::Api(api) => {
                eprintln!("error: {api}");
                for field in api.field_errors() {
                    eprintln!("  {}: {} ({})", field.path, field.message, field.code);
                }
                if let Some(wait) = api.retry_after {
                    eprintln!("  retry after {}s", wait.as_secs());
                }
                ExitCode::from(for_status(api.status))
            }
            portico_client::Error::Transport(e) => {
                eprintln!("error: cannot reach the server: {e}");
                ExitCode::from(UNAVAILABLE)
            }
            other => {
                eprintln!("error: {other}");
                ExitCode::from(FAILURE)
            }
        };
    }
    eprintln!("error: {err:#}");
    ExitCode::from(FAILURE)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Statuses map to the documented codes.
    #[test]
    fn status_codes() {
        assert_eq!(for_status(400), REFUSED);
        assert_eq!(for_status(404), REFUSED);
        assert_eq!(for_status(401), AUTH);
        assert_eq!(for_status(403), AUTH);
        assert_eq!(for_status(429), UNAVAILABLE);
        assert_eq!(for_status(503), UNAVAILABLE);
    }
}
