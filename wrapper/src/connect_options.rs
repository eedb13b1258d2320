//! A builder for [`ConnectOptions`]: the two things a runner must say (where the coordinator
//! is, how to trust it), and defaults for the rest, with this job's facts filled in.

use std::time::Duration;

use crate::connection::ConnectOptions;
use crate::trust::{ClientIdentity, Trust};

/// The default of [`ConnectOptions::connect_timeout`] (`--connect-timeout`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The default of [`ConnectOptions::idle_timeout`] (`--idle-timeout`): the coordinator's own.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// The default of [`ConnectOptions::busy_retry_for`]: as long as a lost coordinator is waited
/// for.
pub const DEFAULT_BUSY_RETRY_FOR: Duration = crate::client::DEFAULT_RECONNECT_FOR;

/// Builds [`ConnectOptions`]; start with [`ConnectOptions::builder`].
#[derive(Debug, Clone)]
pub struct ConnectOptionsBuilder {
    /// Becomes [`ConnectOptions::coordinator`].
    coordinator: String,
    /// Becomes [`ConnectOptions::trust`].
    trust: Trust,
    /// Becomes [`ConnectOptions::token`].
    token: Option<String>,
    /// Becomes [`ConnectOptions::client_identity`].
    client_identity: Option<ClientIdentity>,
    /// Becomes [`ConnectOptions::client_id`]; `None` is `HOST-PID`.
    client_id: Option<String>,
    /// Becomes [`ConnectOptions::connect_timeout`].
    connect_timeout: Duration,
    /// Becomes [`ConnectOptions::idle_timeout`].
    idle_timeout: Duration,
    /// Becomes [`ConnectOptions::busy_retry_for`].
    busy_retry_for: Duration,
}

impl ConnectOptions {
    /// Options for the coordinator at `coordinator` (`host:port`), verified with `trust`; no
    /// token, no client certificate, the default timeouts, and a client id of `HOST-PID`.
    pub fn builder(coordinator: impl Into<String>, trust: Trust) -> ConnectOptionsBuilder {
        ConnectOptionsBuilder {
            coordinator: coordinator.into(),
            trust,
            token: None,
            client_identity: None,
            client_id: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            busy_retry_for: DEFAULT_BUSY_RETRY_FOR,
        }
    }
}

impl ConnectOptionsBuilder {
    /// The token the coordinator requires (its `--token-file`), if any.
    pub fn token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// The certificate to present when the coordinator requires one (its `--client-ca`).
    pub fn client_identity(mut self, identity: Option<ClientIdentity>) -> Self {
        self.client_identity = identity;
        self
    }

    /// This job's name in summaries, instead of `HOST-PID`.
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    /// How long to try reaching the coordinator.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long the coordinator may stay silent before the connection counts as lost.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// How long to keep retrying while the coordinator refuses for load (a connection or
    /// session limit), before giving up.
    pub fn busy_retry_for(mut self, duration: Duration) -> Self {
        self.busy_retry_for = duration;
        self
    }

    /// The options, with this host, process and CI job told to the coordinator for its logs.
    pub fn build(self) -> ConnectOptions {
        let host = process_setup::host_name().unwrap_or_else(|| "unknown-host".into());
        let pid = std::process::id();
        ConnectOptions {
            coordinator: self.coordinator,
            trust: self.trust,
            token: self.token,
            client_identity: self.client_identity,
            client_id: self.client_id.unwrap_or_else(|| format!("{host}-{pid}")),
            info: schemas::ClientInfo {
                ci_job: crate::ci::job_name(|name| std::env::var(name).ok()),
                host,
                pid,
                version: env!("CARGO_PKG_VERSION").into(),
            },
            connect_timeout: self.connect_timeout,
            idle_timeout: self.idle_timeout,
            busy_retry_for: self.busy_retry_for,
        }
    }
}
