//! The client: joins a session and drives a [`TaskRunner`] until the session completes.

use std::collections::HashSet;

use schemas::{
    Assignment, ClientMessage, Join, Joined, Progress, Schema, ServerMessage, SessionReport,
    TaskId, TaskReport, WorkRequest,
};
use tokio_util::sync::CancellationToken;

use crate::connection::{unexpected, ClientError, Connection};
use crate::runner::{AssignedTask, TaskRunner};

/// What a session run reports as it goes, for progress lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Joined; how far the session already is.
    Joined(Joined),
    /// These tasks were assigned to this client; the session's progress then.
    Assigned(Vec<AssignedTask>, Progress),
    /// The coordinator said another client finished these first; they were stopped.
    Aborted(Vec<TaskId>),
    /// This client reported these results.
    Reported(Vec<TaskReport>),
}

/// Settings for one session run.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Clients with the same key share the session.
    pub session_key: String,
    /// Where the coordinator files the tasks' timing history (see [`schemas::Join`]).
    pub history_scope: String,
    /// The most tasks to take per assignment.
    pub max_batch: u32,
    /// Fires on SIGINT/SIGTERM: the runner is stopped and the run ends with
    /// [`ClientError::Interrupted`].
    pub interrupt: CancellationToken,
}

/// Joins the session for `schema` and runs what the coordinator assigns until every task of the
/// session has a result; returns that final report (the same one every client receives).
pub async fn run_session<R: TaskRunner>(
    connection: &mut Connection,
    schema: &Schema,
    runner: &mut R,
    options: &SessionOptions,
    mut on_event: impl FnMut(Event),
) -> Result<SessionReport, ClientError> {
    // The digest first; the whole schema only if the session does not exist yet.
    let join = |with_schema| {
        ClientMessage::Join(Join::new(
            options.session_key.clone(),
            schema,
            options.history_scope.clone(),
            with_schema,
        ))
    };
    connection.send(&join(false)).await?;
    let mut answer = receive(connection, &options.interrupt).await?;
    if answer == ServerMessage::NeedSchema {
        connection.send(&join(true)).await?;
        answer = receive(connection, &options.interrupt).await?;
    }
    match answer {
        ServerMessage::Joined(joined) => on_event(Event::Joined(joined)),
        other => return Err(unexpected(&other)),
    }
    let request = |runner: &R| {
        ClientMessage::Request(WorkRequest {
            max_tasks: options.max_batch,
            overhead_ms: runner.batch_overhead().as_millis().min(u32::MAX as u128) as u32,
        })
    };
    connection.send(&request(runner)).await?;
    loop {
        match receive(connection, &options.interrupt).await? {
            ServerMessage::Assignment(Assignment {
                tasks: ids,
                progress,
            }) => {
                let tasks = ids
                    .iter()
                    .map(|&id| {
                        let task = schema.tasks.get(id as usize).ok_or_else(|| {
                            ClientError::Protocol(format!(
                                "assigned task {id}, which is not in the schema"
                            ))
                        })?;
                        Ok(AssignedTask {
                            id,
                            text: task.task.clone(),
                        })
                    })
                    .collect::<Result<Vec<_>, ClientError>>()?;
                on_event(Event::Assigned(tasks.clone(), progress));
                match run_batch(connection, runner, &tasks, options, &mut on_event).await? {
                    BatchEnd::Reports(reports) => {
                        connection
                            .send(&ClientMessage::Results(reports.clone()))
                            .await?;
                        on_event(Event::Reported(reports));
                        connection.send(&request(runner)).await?;
                    }
                    BatchEnd::Complete(report) => return Ok(report),
                }
            }
            ServerMessage::Complete(report) => return Ok(report),
            // Nothing is running; whatever it names is already stopped.
            ServerMessage::Abort(_) => {}
            other => return Err(unexpected(&other)),
        }
    }
}

/// How running one batch ended.
enum BatchEnd {
    /// The runner finished; these are its reports.
    Reports(Vec<TaskReport>),
    /// The session completed meanwhile (the batch's tasks were finished elsewhere).
    Complete(SessionReport),
}

/// Runs a batch while still listening to the coordinator, so an abort reaches the runner.
async fn run_batch<R: TaskRunner>(
    connection: &mut Connection,
    runner: &mut R,
    tasks: &[AssignedTask],
    options: &SessionOptions,
    on_event: &mut impl FnMut(Event),
) -> Result<BatchEnd, ClientError> {
    let abort = CancellationToken::new();
    let ours: HashSet<TaskId> = tasks.iter().map(|t| t.id).collect();
    let run = runner.run(tasks, abort.clone());
    tokio::pin!(run);
    let mut completed = None;
    let reports = loop {
        tokio::select! {
            reports = &mut run => break reports,
            message = connection.recv(), if completed.is_none() => match message {
                Ok(ServerMessage::Abort(ids)) => {
                    let stopped: Vec<TaskId> = ids.into_iter().filter(|id| ours.contains(id)).collect();
                    if !stopped.is_empty() {
                        abort.cancel();
                        on_event(Event::Aborted(stopped));
                    }
                }
                Ok(ServerMessage::Complete(report)) => {
                    abort.cancel();
                    completed = Some(report);
                }
                Ok(other) => {
                    abort.cancel();
                    run.await;
                    return Err(unexpected(&other));
                }
                Err(e) => {
                    // The runner's work is lost with the connection; stop it rather than leave
                    // a process running for nobody.
                    abort.cancel();
                    run.await;
                    return Err(e);
                }
            },
            () = options.interrupt.cancelled() => {
                abort.cancel();
                run.await;
                return Err(ClientError::Interrupted);
            }
        }
    };
    Ok(match completed {
        Some(report) => BatchEnd::Complete(report),
        None => BatchEnd::Reports(reports),
    })
}

/// Receives the next message, or [`ClientError::Interrupted`] when interrupted first.
async fn receive(
    connection: &mut Connection,
    interrupt: &CancellationToken,
) -> Result<ServerMessage, ClientError> {
    tokio::select! {
        message = connection.recv() => message,
        () = interrupt.cancelled() => Err(ClientError::Interrupted),
    }
}
