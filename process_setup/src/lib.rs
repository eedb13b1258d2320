//! What every task-sharding process sets up alike, so that the coordinator and the client agree:
//! one log setup and one source for the host's name. Kept out of `schemas`, which does no I/O.
#![warn(missing_docs, unreachable_pub)]

/// The coordinator's default log filter: it is a service, and its log is its record.
pub const COORDINATOR_LOG: &str = "info";
/// The client's default log filter: it runs inside a CI job whose output is the build's, so it
/// speaks only of trouble (its progress lines are printed, not logged).
pub const CLIENT_LOG: &str = "warn";

/// Sends `tracing` output to stderr, filtered by `RUST_LOG` or else by `default_filter`
/// ([`COORDINATOR_LOG`] or [`CLIENT_LOG`]), in colour only on a terminal. Call once, first
/// thing in `main`.
pub fn init_logging(default_filter: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// This host's name, trimmed; `None` when the system has none to give.
pub fn host_name() -> Option<String> {
    let name = hostname::get().ok()?;
    let name = name.to_string_lossy();
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_host_name_is_trimmed_and_never_empty() {
        if let Some(name) = super::host_name() {
            assert_eq!(name.trim(), name);
            assert!(!name.is_empty());
        }
    }
}
