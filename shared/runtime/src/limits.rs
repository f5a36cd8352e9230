//! The open-files limit. Every connection is a file descriptor: the dispatcher holds up
//! to `PORTICO_ENDPOINT_CONCURRENCY` connections per endpoint (32 by default, so 32
//! busy endpoints already pass 1,024), the gateway one per client. Many hosts start
//! services with a soft limit of 1,024 and a far higher hard limit (systemd: 524,288);
//! past the soft limit `accept` and `connect` fail with EMFILE, which looks like an
//! outage. A process may raise its own soft limit up to the hard one without privilege,
//! as the Go runtime does for every program, so each service does that at start.

/// Raises the soft open-files limit to the hard limit and logs the outcome. Never
/// fails the start: where the limit cannot be read or raised, the service runs with the
/// limit it has and says so.
pub fn raise_open_files() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    match (limit.current, limit.maximum) {
        (Some(soft), hard) if hard.is_none_or(|h| h > soft) => {
            let raised = rustix::process::Rlimit {
                current: hard,
                maximum: hard,
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => tracing::info!(
                    from = soft,
                    to = hard.map_or_else(|| "unlimited".to_owned(), |h| h.to_string()),
                    "raised the open-files limit to the hard limit"
                ),
                Err(err) => tracing::warn!(
                    soft,
                    %err,
                    "could not raise the open-files limit; connections past it fail with EMFILE"
                ),
            }
        }
        (soft, _) => tracing::debug!(?soft, "open-files limit already at the hard limit"),
    }
}

#[cfg(test)]
mod tests {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

    /// A soft limit below the hard one is raised to it (lowering and raising one's own
    /// soft limit needs no privilege).
    #[test]
    fn the_soft_limit_reaches_the_hard_limit() {
        let before = getrlimit(Resource::Nofile);
        let lowered = Rlimit {
            current: Some(before.maximum.map_or(256, |h| h.min(256))),
            maximum: before.maximum,
        };
        setrlimit(Resource::Nofile, lowered).expect("lowering the soft limit");
        super::raise_open_files();
        let limit = getrlimit(Resource::Nofile);
        assert_eq!(limit.current, limit.maximum);
    }
}
