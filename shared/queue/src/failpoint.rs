//! Named crash points for crash-safety tests.
//!
//! `PORTICO_FAILPOINT=<name>` makes the process abort (like `kill -9`: no destructors,
//! no flushing) the first time it reaches [`hit`] with that name. Unset in production;
//! the check is one cached comparison.

use std::sync::OnceLock;

static ACTIVE: OnceLock<Option<String>> = OnceLock::new();

/// Aborts the process if `name` is the configured failpoint.
pub fn hit(name: &str) {
    let active = ACTIVE.get_or_init(|| std::env::var("PORTICO_FAILPOINT").ok());
    if active.as_deref() == Some(name) {
        eprintln!("failpoint {name} reached: aborting");
        std::process::abort();
    }
}
