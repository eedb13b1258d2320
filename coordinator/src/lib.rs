//! The task-sharding coordinator.
//!
//! - [`state`]: the pure state machine that makes every decision (sessions, leases, results).
//! - [`history_store`]: the timing history on disk, which the scheduler reads.
//! - [`session_store`]: sessions on disk, which a restarted coordinator resumes.
//! - [`tls`]: the certificate the coordinator presents: loaded, or generated and written down so
//!   clients can trust it.
//! - [`server`]: the QUIC endpoint and its accept loop; [`connection`] serves one client;
//!   [`admission`] decides who may connect (limits in all and per address).
//! - [`http`]: the read-only dashboard (sessions, timelines, history, metrics) over HTTP.
//!
//! Tests start a server on `127.0.0.1:0` with [`server::Server::bind`] and hand
//! [`server::Server::run`] their own shutdown future; `main` hands it SIGINT/SIGTERM.
#![warn(missing_docs, unreachable_pub)]

pub mod admission;
pub mod history_store;
pub mod http;
pub mod private_dir;
pub mod server;
pub mod session_store;
pub mod state;
pub mod tls;

mod connection;
mod hub;
