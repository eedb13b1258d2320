//! The dashboard: a read-only HTTP endpoint on the coordinator's runtime that shows the sessions
//! (`/`), each session's timeline (`/sessions/{id}`), the timing history (`/history`), the same
//! as JSON (`/api/...`), Prometheus metrics (`/metrics`) and `/healthz`.
//!
//! Pages are rendered on the server (HTML with inline SVG, no scripts). Every handler copies
//! what it shows out of the state machine through the hub ([`crate::hub::Hub::read`]), which
//! holds the lock only for the copy, and renders after letting go. On a loopback address anyone
//! on the machine may look; on any other address the dashboard requires the coordinator's token
//! and TLS (see [`auth`] and SECURITY.md).

mod auth;
mod metrics;
mod pages;
mod serve;
mod timeline;

use std::net::SocketAddr;
use std::sync::Arc;

pub use metrics::HttpMetrics;
pub use serve::HttpError;
pub(crate) use serve::{serve, Dashboard};

use crate::hub::Hub;

/// How the dashboard is served.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// The TCP address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Whether failing to bind it stops the coordinator (an address the operator asked for) or
    /// only warns (the default address, which another coordinator on the machine may hold).
    pub required: bool,
}

/// Whether `listen` is reachable only from this machine: 127.0.0.0/8 and ::1. Anything else —
/// an interface's address, and the unspecified `0.0.0.0` / `::` that listen on all of them — may
/// be reached from the network, so the dashboard there requires the token and TLS.
pub fn is_loopback_only(listen: &SocketAddr) -> bool {
    listen.ip().is_loopback()
}

/// What every request handler shares.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    /// The coordinator's state, read through snapshots.
    pub(crate) hub: Arc<Hub>,
    /// The token requests must carry, when off loopback.
    pub(crate) auth: Option<auth::Credentials>,
    /// Counters and the latency histogram.
    pub(crate) metrics: Arc<HttpMetrics>,
}
