//! The task-sharding client library: make identical CI jobs share their work, whatever the work
//! is.
//!
//! Every job of a CI run starts the same program. Each connects to a coordinator and joins one
//! session, named by a key every job computes alike; the coordinator hands each job batches of
//! the session's tasks, and every job ends with the results of all of them. What a task *is* —
//! a process, a Bazel target, a request to a test farm — is the runner's business, and the
//! runner is what you write.
//!
//! # Writing a runner
//!
//! Implement [`TaskRunner`]: given a batch of [`AssignedTask`]s, run them and report a
//! [`TaskReport`] for each that reached a verdict: with [`Batch::finished`] the moment it does
//! (every job then sees it at once, and an idle job can take over what is left of a long batch),
//! or in the list `run` returns. When the batch's abort token fires (other jobs finished those
//! tasks first, or the user pressed Ctrl-C), stop promptly and return what you have; tasks left
//! out go to another job.
//!
//! Then hand it to [`drive`], with [`ConnectOptions`] (from [`ConnectOptions::builder`]) saying
//! where the coordinator is and how to trust it, and [`SessionOptions`] naming the session:
//!
//! ```no_run
//! use std::time::Instant;
//! use wrapper::{
//!     drive, interrupt_on_signals, AssignedTask, Batch, ConnectOptions, Outcome, Schema,
//!     SessionOptions, TaskOutcome, TaskReport, TaskResult, TaskRunner, Trust,
//! };
//!
//! struct Shout;
//!
//! impl TaskRunner for Shout {
//!     async fn run(&mut self, tasks: &[AssignedTask], batch: Batch) -> Vec<TaskReport> {
//!         for task in tasks {
//!             if batch.abort.is_cancelled() {
//!                 break;
//!             }
//!             let started = Instant::now();
//!             println!("{}!", task.text.to_uppercase());
//!             batch.finished(TaskReport {
//!                 task: task.id,
//!                 result: TaskResult {
//!                     outcome: TaskOutcome::Passed,
//!                     exit_code: Some(0),
//!                     duration_ms: started.elapsed().as_millis() as u64,
//!                     executed: true,
//!                     log_tail: None,
//!                     build_ms: 0,
//!                 },
//!             });
//!         }
//!         Vec::new() // everything was reported as it finished
//!     }
//! }
//!
//! # async fn example() {
//! let schema = Schema::new("shout", ["hello", "world"]).unwrap();
//! let connect = ConnectOptions::builder("127.0.0.1:7400", Trust::CaFile("cert.pem".into())).build();
//! let session = SessionOptions {
//!     interrupt: interrupt_on_signals(),
//!     ..SessionOptions::new("shout/run-42", "shout")
//! };
//! match drive(&connect, &schema, &mut Shout, &session, |_progress| {}).await {
//!     Outcome::Complete(report) | Outcome::Alone { report, .. } => {
//!         println!("all passed: {}", report.all_succeeded())
//!     }
//!     Outcome::Unavailable(e) => eprintln!("no coordinator: {e}"),
//!     Outcome::Interrupted { .. } => eprintln!("interrupted"),
//! }
//! # }
//! ```
//!
//! `wrapper/examples/custom_runner.rs` is the same as a complete program.
//!
//! # The parts
//!
//! - [`runner`]: the [`TaskRunner`] trait, what you implement.
//! - [`driver`]: [`drive`], one job's whole part in a session: connect, [`run_session`], and
//!   finish alone when the coordinator is lost for good. `task-sharding run` and
//!   `task-sharding bazel` are both built on it.
//! - [`client`]: [`run_session`], the protocol: join, run what is assigned, reconnect and
//!   resume when the connection is lost. Its rules live in [`client::machine`], a state machine
//!   without I/O that tests drive message by message.
//! - [`connection`]: QUIC + TLS to the coordinator; [`trust`]: CA file or pinned fingerprint,
//!   and the client certificate; [`connect_options`]: the builder.
//! - [`command_runner`]: the generic runner, one process per task (`task-sharding run`).
//! - [`bazel`]: `task-sharding bazel`, a runner for Bazel test targets behind `tools/bazel`.
//! - [`ci`]: the CI run and job, told from the environment; [`summary`]: the session's summary.
#![warn(missing_docs, unreachable_pub)]

pub mod bazel;
pub mod ci;
pub mod client;
pub mod command_runner;
pub mod connect_options;
pub mod connection;
pub mod driver;
pub mod failing_logs;
pub mod junit;
pub mod run_warnings;
pub mod runner;
pub mod summary;
pub mod trust;

// The `task-sharding` binary's own parts: its command line, `run` subcommand and exit codes.
mod cli;
mod exit;
mod output_tail;
mod run_command;

pub use client::{run_session, Event, SessionOptions};
pub use connect_options::ConnectOptionsBuilder;
pub use connection::{ClientError, ConnectOptions};
pub use driver::{drive, interrupt_on_signals, Outcome, Progress};
pub use runner::{AssignedTask, Batch, TaskRunner};
pub use schemas::{
    Outcome as TaskOutcome, Schema, SessionReport, TaskId, TaskRecord, TaskReport, TaskResult,
};
pub use tokio_util::sync::CancellationToken;
pub use trust::{ClientIdentity, Trust};

/// The `task-sharding` binary's `main`: not part of the library's interface.
#[doc(hidden)]
pub fn binary_main() -> std::process::ExitCode {
    cli::main()
}
