//! The session driver: one job's whole part in a session, with its fallbacks.
//!
//! `task-sharding run`, `task-sharding bazel` and a custom runner's `main` all do the same:
//! connect, join, run what is assigned ([`run_session`]), and when the coordinator is lost for
//! good after joining, run the tasks not known to be finished alone ([`run_alone`]). What differs
//! between them (the words, the exit codes, what "falling back" means before joining) is left
//! to the caller, which reads the [`Outcome`].
//!
//! The one rule: an error before the session is joined (unreachable, refused, a schema that
//! disagrees with the session's) is [`Outcome::Unavailable`], for the caller to decide; an
//! error after it is joined means this job finishes alone, since it is already committed to
//! the session's tasks and the coordinator cannot be asked any more.

use std::collections::BTreeMap;

use schemas::{Schema, SessionReport, TaskId, TaskRecord, TaskResult};
use tokio_util::sync::CancellationToken;

use crate::client::{run_session, Event, SessionOptions};
use crate::connection::{ClientError, ConnectOptions, Connection};
use crate::runner::{AssignedTask, TaskRunner};

/// How a job's part in a session ended.
#[derive(Debug)]
pub enum Outcome {
    /// The session completed; every client of it received this same report.
    Complete(SessionReport),
    /// The coordinator was lost (or failed) after joining; this job ran the rest itself. The
    /// report holds this job's own results and those it ran alone.
    Alone {
        /// What this job can tell about every task of the schema.
        report: SessionReport,
        /// Why the session could not go on.
        cause: ClientError,
    },
    /// No session was joined: the coordinator was unreachable or refused this job. Nothing ran.
    Unavailable(ClientError),
    /// [`SessionOptions::interrupt`] fired (SIGINT or SIGTERM, see [`interrupt_on_signals`]);
    /// the runner was stopped.
    Interrupted {
        /// Whether it fired while finishing alone, when no other job takes the unfinished
        /// tasks.
        alone: bool,
    },
}

/// What the driver reports as it goes, for progress lines.
#[derive(Debug)]
pub enum Progress<'a> {
    /// Connected to the coordinator (and greeted); joining next.
    Connected,
    /// Something happened in the session.
    Session(&'a Event),
    /// The session cannot go on (`cause`); this job now runs the `rest` tasks it does not know
    /// to be finished.
    FinishingAlone {
        /// Why.
        cause: &'a ClientError,
        /// How many tasks run alone.
        rest: usize,
    },
}

impl Progress<'_> {
    /// The progress line every front end prints alike, naming tasks and clients as the caller
    /// does (("targets", "job") or ("tasks", "client")): a lost or regained connection, or
    /// finishing alone. `None` for the rest, whose lines differ.
    pub fn common_line(&self, tasks: &str, clients: &str) -> Option<String> {
        match self {
            Progress::Session(event) => event.connection_line(tasks, clients),
            Progress::FinishingAlone { cause, rest } => Some(format!(
                "task-sharding: error: {cause}\ntask-sharding: warning: the coordinator is \
                 unavailable; running the {rest} {tasks} not known to be finished here"
            )),
            Progress::Connected => None,
        }
    }
}

/// Connects with `connect`, runs `schema`'s session with `runner`, and finishes alone if the
/// coordinator is lost after joining.
pub async fn drive<R: TaskRunner>(
    connect: &ConnectOptions,
    schema: &Schema,
    runner: &mut R,
    session: &SessionOptions,
    mut on_progress: impl FnMut(Progress<'_>),
) -> Outcome {
    let connection = match Connection::connect(connect).await {
        Ok((connection, _welcome)) => connection,
        Err(ClientError::Interrupted) => return Outcome::Interrupted { alone: false },
        Err(e) => return Outcome::Unavailable(e),
    };
    on_progress(Progress::Connected);
    let mut joined = false;
    let mut mine: BTreeMap<TaskId, TaskResult> = BTreeMap::new();
    let outcome = run_session(connection, connect, schema, runner, session, |event| {
        match &event {
            Event::Joined(_) => joined = true,
            Event::Reported(reports) => {
                mine.extend(reports.iter().map(|r| (r.task, r.result.clone())));
            }
            _ => {}
        }
        on_progress(Progress::Session(&event));
    })
    .await;
    let cause = match outcome {
        Ok(report) => return Outcome::Complete(report),
        Err(ClientError::Interrupted) => return Outcome::Interrupted { alone: false },
        Err(e) if !joined => return Outcome::Unavailable(e),
        Err(e) => e,
    };
    on_progress(Progress::FinishingAlone {
        cause: &cause,
        rest: schema.tasks.len() - mine.len(),
    });
    let interrupt = &session.interrupt;
    let report = run_alone(schema, runner, &mine, &connect.client_id, interrupt).await;
    if interrupt.is_cancelled() {
        return Outcome::Interrupted { alone: true };
    }
    Outcome::Alone { report, cause }
}

/// The coordinator is gone for good: runs every task of `schema` without a result in `mine`
/// here, in one batch, and returns the report this client can make on its own (`mine` under
/// `client_id`, the rest under `client_id (alone)`). The runner is stopped when `interrupt`
/// fires: there is nobody left to hand its tasks to, but a signal is still the user's word.
pub async fn run_alone<R: TaskRunner>(
    schema: &Schema,
    runner: &mut R,
    mine: &BTreeMap<TaskId, TaskResult>,
    client_id: &str,
    interrupt: &CancellationToken,
) -> SessionReport {
    let rest: Vec<AssignedTask> = schema
        .tasks
        .iter()
        .enumerate()
        .filter(|(id, _)| !mine.contains_key(&(*id as TaskId)))
        .map(|(id, task)| AssignedTask {
            id: id as TaskId,
            text: task.task.clone(),
        })
        .collect();
    let mut records: BTreeMap<TaskId, TaskRecord> = mine
        .iter()
        .map(|(&task, result)| {
            let record = TaskRecord {
                task,
                result: result.clone(),
                client: client_id.to_string(),
            };
            (task, record)
        })
        .collect();
    if !rest.is_empty() {
        let alone = alone_name(client_id);
        for report in crate::runner::run_collecting(runner, &rest, interrupt.clone()).await {
            let record = TaskRecord {
                task: report.task,
                result: report.result,
                client: alone.clone(),
            };
            records.insert(record.task, record);
        }
    }
    SessionReport {
        schema_name: schema.name.clone(),
        records: records.into_values().collect(),
    }
}

/// Marks the results a client ran on its own after losing the coordinator.
const ALONE_SUFFIX: &str = " (alone)";

/// The name under which `client_id`'s results run alone are reported: `job-2 (alone)`.
fn alone_name(client_id: &str) -> String {
    format!("{client_id}{ALONE_SUFFIX}")
}

/// The job behind a report's client name: `job-2` for both `job-2` and `job-2 (alone)`, so that
/// counting jobs does not count a job that lost its coordinator twice.
pub fn job_of(client: &str) -> &str {
    client.strip_suffix(ALONE_SUFFIX).unwrap_or(client)
}

/// A token that fires on the first SIGINT or SIGTERM, for [`SessionOptions::interrupt`]. The
/// handlers are in place when this returns, so no signal sent after it is missed. Must be called
/// within a Tokio runtime.
pub fn interrupt_on_signals() -> CancellationToken {
    use tokio::signal::unix::{signal, SignalKind};
    let interrupt = CancellationToken::new();
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // No handlers (a runtime without signal support): the default action, ending the
        // process, stays in place.
        return interrupt;
    };
    let fire = interrupt.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        fire.cancel();
    });
    interrupt
}
