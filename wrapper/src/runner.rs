//! The runner: what knows how to execute tasks.
//!
//! The original project's runner had `run(task)` and `abort()`. Here a runner gets a batch (so
//! a Bazel runner can start one Bazel for many targets) and an abort signal instead of a second
//! method (so the client can stop it while `run` is in progress without sharing the runner
//! across tasks). Implement [`TaskRunner`] to shard any kind of work.

use std::future::Future;
use std::time::Duration;

use schemas::{TaskId, TaskReport};
use tokio_util::sync::CancellationToken;

/// One task handed to this client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignedTask {
    /// The task's id in the session.
    pub id: TaskId,
    /// The task's text.
    pub text: String,
}

/// Executes tasks.
pub trait TaskRunner: Send {
    /// Runs `tasks` and returns a report for each that reached a verdict (a failure is a verdict).
    ///
    /// When `abort` fires, the runner stops what it is doing promptly and cleanly (its child
    /// processes are asked to terminate) and returns the reports it has; the tasks it leaves out
    /// are not reported, and the coordinator hands them to another client or already has them.
    fn run(
        &mut self,
        tasks: &[AssignedTask],
        abort: CancellationToken,
    ) -> impl Future<Output = Vec<TaskReport>> + Send;

    /// What starting one batch costs, beyond the tasks' own durations (a Bazel invocation's
    /// start-up and analysis, say). The coordinator makes batches long enough to be worth it.
    fn batch_overhead(&self) -> Duration {
        Duration::ZERO
    }
}
