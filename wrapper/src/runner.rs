//! The runner: what knows how to execute tasks.
//!
//! The original project's runner had `run(task)` and `abort()`. Here a runner gets a batch (so
//! a Bazel runner can start one Bazel for many targets) and an abort signal instead of a second
//! method (so the client can stop it while `run` is in progress without sharing the runner
//! across tasks). Implement [`TaskRunner`] to shard any kind of work.

use std::future::Future;
use std::time::Duration;

use schemas::{TaskId, TaskReport};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// One task handed to this client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignedTask {
    /// The task's id in the session.
    pub id: TaskId,
    /// The task's text.
    pub text: String,
}

/// What a runner gets with each batch besides its tasks: the signal to stop, and where to
/// report a task the moment it finishes.
///
/// Reporting as tasks finish (rather than only when the whole batch ends) gives every job honest
/// progress and early failures, and lets the coordinator hand the *unfinished remainder* of a
/// straggling batch to an idle job as backup copies.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Fires when the runner is to stop (see [`TaskRunner::run`]).
    pub abort: CancellationToken,
    /// A prerequisite is being built elsewhere: compile first, if the runner can tell compiling
    /// from the rest (see [`schemas::Assignment::compile_first`]).
    pub compile_first: bool,
    finished: Option<mpsc::UnboundedSender<TaskReport>>,
}

impl Batch {
    /// A batch whose finished tasks reach `finished` as they are reported.
    pub fn new(abort: CancellationToken, finished: mpsc::UnboundedSender<TaskReport>) -> Batch {
        Batch {
            abort,
            compile_first: false,
            finished: Some(finished),
        }
    }

    /// A batch whose results are only those [`TaskRunner::run`] returns (when running alone,
    /// and in tests).
    pub fn unstreamed(abort: CancellationToken) -> Batch {
        Batch {
            abort,
            compile_first: false,
            finished: None,
        }
    }

    /// Reports a task's result now, before the batch ends. Reporting it again (or returning it
    /// from [`TaskRunner::run`] as well) changes nothing: the first report of a task counts.
    pub fn finished(&self, report: TaskReport) {
        if let Some(finished) = &self.finished {
            // The receiver outlives the batch; a send can only fail once the run is over.
            let _ = finished.send(report);
        }
    }
}

/// Executes tasks.
pub trait TaskRunner: Send {
    /// Runs `tasks` and returns a report for each that reached a verdict (a failure is a verdict).
    /// A runner that can tell when each task finishes reports it at once with
    /// [`Batch::finished`]; whatever it returns at the end is added to those.
    ///
    /// When `batch.abort` fires, the runner stops what it is doing promptly and cleanly (its
    /// child processes are asked to terminate) and returns the reports it has; the tasks it
    /// leaves out are not reported, and the coordinator hands them to another client or already
    /// has them.
    fn run(
        &mut self,
        tasks: &[AssignedTask],
        batch: Batch,
    ) -> impl Future<Output = Vec<TaskReport>> + Send;

    /// What starting one batch costs, beyond the tasks' own durations (a Bazel invocation's
    /// start-up and analysis, say). The coordinator makes batches long enough to be worth it.
    fn batch_overhead(&self) -> Duration {
        Duration::ZERO
    }

    /// How many tasks of a batch run at once (a Bazel job's test jobs): the coordinator judges
    /// how long a batch still runs by it. One, unless the runner runs tasks side by side.
    fn parallelism(&self) -> u32 {
        1
    }
}

/// Runs one batch with `runner` and returns every task's first report, streamed or returned:
/// for a caller with nobody to stream to (a job finishing alone).
pub(crate) async fn run_collecting<R: TaskRunner>(
    runner: &mut R,
    tasks: &[AssignedTask],
    abort: CancellationToken,
) -> Vec<TaskReport> {
    let (sender, mut streamed) = mpsc::unbounded_channel();
    let returned = runner.run(tasks, Batch::new(abort, sender)).await;
    let mut reports: Vec<TaskReport> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    while let Ok(report) = streamed.try_recv() {
        if seen.insert(report.task) {
            reports.push(report);
        }
    }
    reports.extend(returned.into_iter().filter(|r| seen.insert(r.task)));
    reports
}
