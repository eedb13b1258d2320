//! The task-sharding client: connect to a coordinator, join a session, run what you are given.
//!
//! - [`connection`]: QUIC + TLS to the coordinator ([`trust`]: CA file or pinned fingerprint).
//! - [`client`]: joins a session and drives a [`runner::TaskRunner`] until the session completes.
//! - [`command_runner`]: the generic runner — one process per task from a command template.
//! - [`ci`]: the CI run and job, told from the environment.
//! - [`summary`]: the session's summary, identical in every job.
//! - [`bazel`]: `task-sharding bazel`, the Bazel wrapper behind `tools/bazel`.
//! - [`cli`], [`run_command`]: the `task-sharding` binary.
#![warn(missing_docs, unreachable_pub)]

pub mod bazel;
pub mod ci;
pub mod cli;
pub mod client;
pub mod command_runner;
pub mod connection;
pub mod exit;
pub mod junit;
pub mod run_command;
pub mod runner;
pub mod summary;
pub mod trust;
