//! The client: joins a session and drives a [`TaskRunner`] until the session completes.
//!
//! A lost connection is not the end: the client connects again (with backoff, for
//! [`SessionOptions::reconnect_for`]) and comes back as the same member of the session with the
//! ticket it was given, while its runner carries on. It then re-sends every result it reported,
//! since the coordinator may have restarted without the last of them; the coordinator records
//! each task's result once and ignores the rest. A request for work still unanswered is made
//! again on the new connection, once: the coordinator answers every request it gets, so a
//! request made twice would bring a second assignment while the first runs.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use schemas::{
    Assignment, ClientMessage, ErrorCode, Join, Joined, Progress, Schema, ServerMessage,
    SessionReport, TaskId, TaskReport, Ticket, WorkRequest,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::connection::{is_busy, unexpected, ClientError, ConnectOptions, Connection};
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
    /// The connection was lost (the reason); reconnecting.
    Reconnecting(String),
    /// Connected and joined again (see [`Joined::resumed`]).
    Rejoined(Joined),
}

impl Event {
    /// The progress line for a lost or regained connection (`None` for other events), naming
    /// tasks and clients as the caller does: ("targets", "job") or ("tasks", "client").
    pub fn connection_line(&self, tasks: &str, clients: &str) -> Option<String> {
        match self {
            Event::Reconnecting(reason) => Some(format!(
                "task-sharding: warning: lost the coordinator ({reason}); reconnecting, the \
                 running {tasks} carry on"
            )),
            Event::Rejoined(joined) => Some(format!(
                "task-sharding: reconnected{}: {}/{} {tasks} finished, {} {clients}(s)",
                if joined.resumed {
                    " and resumed"
                } else {
                    " as a new member"
                },
                joined.finished,
                joined.tasks,
                joined.clients
            )),
            _ => None,
        }
    }
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
    /// How long to keep trying to reconnect after losing the coordinator, before giving up
    /// with [`ClientError::Lost`].
    pub reconnect_for: Duration,
}

/// The default of [`SessionOptions::reconnect_for`]: long enough for a coordinator to restart.
pub const DEFAULT_RECONNECT_FOR: Duration = Duration::from_secs(60);

impl SessionOptions {
    /// The session `session_key`, its timings filed under `history_scope`; one task at a time,
    /// reconnecting for [`DEFAULT_RECONNECT_FOR`], and an `interrupt` only the caller fires
    /// (see [`crate::driver::interrupt_on_signals`]).
    pub fn new(session_key: impl Into<String>, history_scope: impl Into<String>) -> Self {
        SessionOptions {
            session_key: session_key.into(),
            history_scope: history_scope.into(),
            max_batch: 1,
            interrupt: CancellationToken::new(),
            reconnect_for: DEFAULT_RECONNECT_FOR,
        }
    }
}

/// Joins the session for `schema` on `connection` and runs what the coordinator assigns until
/// every task of the session has a result; returns that final report (the same one every client
/// receives). Reconnects with `connect` when the connection is lost.
pub async fn run_session<R: TaskRunner>(
    connection: Connection,
    connect: &ConnectOptions,
    schema: &Schema,
    runner: &mut R,
    options: &SessionOptions,
    mut on_event: impl FnMut(Event),
) -> Result<SessionReport, ClientError> {
    let joining = Arc::new(Joining {
        session_key: options.session_key.clone(),
        history_scope: options.history_scope.clone(),
        schema: schema.clone(),
        interrupt: options.interrupt.clone(),
    });
    let mut connection = connection;
    // A coordinator at its session limit (or budgets) refuses the join for load: try again,
    // on a new connection, for as long as connecting would be retried.
    let busy_until = tokio::time::Instant::now() + connect.busy_retry_for;
    let mut delay = Duration::from_millis(100);
    let joined = loop {
        match joining.join(&mut connection, None, &[]).await {
            Err(e) if is_busy(&e) && tokio::time::Instant::now() + delay < busy_until => {
                tracing::info!("{e}; joining again in {delay:?}");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = options.interrupt.cancelled() => return Err(ClientError::Interrupted),
                }
                delay = (delay * 2).min(Duration::from_secs(2));
                connection = Connection::connect(connect).await?.0;
            }
            other => break other?,
        }
    };
    let mut link = Link {
        connection: Some(connection),
        connect,
        options,
        joining,
        ticket: Some(joined.ticket),
        reported: Vec::new(),
        running: Vec::new(),
        reconnecting: None,
        requested: None,
    };
    on_event(Event::Joined(joined));
    let result = drive(&mut link, runner, &mut on_event).await;
    if let Some(connection) = link.connection.take() {
        match &result {
            // Nothing is leased any more: the coordinator may learn of the close whenever.
            Ok(_) => drop(tokio::spawn(connection.close())),
            // Leases go back as soon as the coordinator sees the close.
            Err(_) => connection.close().await,
        }
    }
    result
}

async fn drive<R: TaskRunner>(
    link: &mut Link<'_>,
    runner: &mut R,
    on_event: &mut impl FnMut(Event),
) -> Result<SessionReport, ClientError> {
    let max_tasks = link.options.max_batch;
    let request = |runner: &R| WorkRequest {
        max_tasks,
        overhead_ms: runner.batch_overhead().as_millis().min(u32::MAX as u128) as u32,
    };
    link.request(request(runner), on_event).await?;
    loop {
        match link.next(on_event).await? {
            ServerMessage::Assignment(Assignment {
                tasks: ids,
                progress,
            }) => {
                let tasks = ids
                    .iter()
                    .map(|&id| {
                        let task = link.joining.schema.tasks.get(id as usize).ok_or_else(|| {
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
                match run_batch(link, runner, &tasks, on_event).await? {
                    BatchEnd::Reports(reports) => {
                        // Kept before sending: re-sent after a reconnect if this send is lost.
                        link.reported.extend(reports.iter().cloned());
                        link.send(&ClientMessage::Results(reports.clone()), on_event)
                            .await?;
                        on_event(Event::Reported(reports));
                        link.request(request(runner), on_event).await?;
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

/// Runs a batch while still listening to the coordinator, so an abort reaches the runner. A
/// lost connection does not stop the runner: the client reconnects meanwhile and reports
/// when it is done.
async fn run_batch<R: TaskRunner>(
    link: &mut Link<'_>,
    runner: &mut R,
    tasks: &[AssignedTask],
    on_event: &mut impl FnMut(Event),
) -> Result<BatchEnd, ClientError> {
    let abort = CancellationToken::new();
    let ours: HashSet<TaskId> = tasks.iter().map(|t| t.id).collect();
    let interrupt = link.options.interrupt.clone();
    link.running = tasks.iter().map(|t| t.id).collect();
    let outcome = run_tasks(link, runner, tasks, &abort, &ours, &interrupt, on_event).await;
    link.running.clear();
    outcome
}

async fn run_tasks<R: TaskRunner>(
    link: &mut Link<'_>,
    runner: &mut R,
    tasks: &[AssignedTask],
    abort: &CancellationToken,
    ours: &HashSet<TaskId>,
    interrupt: &CancellationToken,
    on_event: &mut impl FnMut(Event),
) -> Result<BatchEnd, ClientError> {
    let run = runner.run(tasks, abort.clone());
    tokio::pin!(run);
    let mut completed = None;
    // Set when the coordinator could not be reached again: the batch still finishes, and the
    // error is returned after it.
    let mut gave_up = None;
    let reports = loop {
        tokio::select! {
            reports = &mut run => break reports,
            incoming = link.next(on_event), if completed.is_none() && gave_up.is_none() => match incoming {
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
                Err(e @ ClientError::Lost(_)) => gave_up = Some(e),
                Err(e) => {
                    abort.cancel();
                    run.await;
                    return Err(e);
                }
            },
            () = interrupt.cancelled() => {
                abort.cancel();
                run.await;
                return Err(ClientError::Interrupted);
            }
        }
    };
    if let Some(e) = gave_up {
        // Keep what ran: the caller may finish the session alone with it.
        link.reported.extend(reports.iter().cloned());
        on_event(Event::Reported(reports));
        return Err(e);
    }
    Ok(match completed {
        Some(report) => BatchEnd::Complete(report),
        None => BatchEnd::Reports(reports),
    })
}

/// The connection to the coordinator, made again whenever it is lost.
struct Link<'a> {
    /// The connection; `None` between losing one and making the next.
    connection: Option<Connection>,
    connect: &'a ConnectOptions,
    options: &'a SessionOptions,
    /// What a join sends (the schema included), shared with reconnect tasks.
    joining: Arc<Joining>,
    /// This client's ticket in the session, once joined.
    ticket: Option<Ticket>,
    /// Every result reported, to re-send after reconnecting.
    reported: Vec<TaskReport>,
    /// The tasks of the batch running now, to claim after reconnecting.
    running: Vec<TaskId>,
    /// A reconnect in progress, and how many of `reported` it re-sends. It runs as its own task,
    /// so that a caller giving up on waiting for it (a batch ending meanwhile) never abandons
    /// a half-joined connection, which the coordinator would take for the client leaving.
    reconnecting: Option<(JoinHandle<Result<Rejoined, ClientError>>, usize)>,
    /// The request for work not answered yet. The coordinator forgets it with the connection it
    /// came on, so it is made again on each new connection, and only there: made twice on one,
    /// it would be answered twice.
    requested: Option<WorkRequest>,
}

/// The parts of a join that do not change.
struct Joining {
    session_key: String,
    history_scope: String,
    schema: Schema,
    interrupt: CancellationToken,
}

/// What a successful reconnect yields.
struct Rejoined {
    connection: Connection,
    joined: Joined,
}

impl Joining {
    /// Joins (or, with a ticket, rejoins) the session on `connection`: the digest first, the
    /// whole schema only if the session does not exist yet.
    async fn join(
        &self,
        connection: &mut Connection,
        resume: Option<Ticket>,
        running: &[TaskId],
    ) -> Result<Joined, ClientError> {
        let join = |with_schema| {
            ClientMessage::Join(Join {
                resume,
                running: if resume.is_some() {
                    running.to_vec()
                } else {
                    Vec::new()
                },
                ..Join::new(
                    self.session_key.clone(),
                    &self.schema,
                    self.history_scope.clone(),
                    with_schema,
                )
            })
        };
        connection.send(&join(false)).await?;
        let mut answer = receive(connection, &self.interrupt).await?;
        if answer == ServerMessage::NeedSchema {
            connection.send(&join(true)).await?;
            answer = receive(connection, &self.interrupt).await?;
        }
        match answer {
            ServerMessage::Joined(joined) => Ok(joined),
            other => Err(unexpected(&other)),
        }
    }

    /// Connects again with backoff until `reconnect_for` has passed, rejoins as the member
    /// `ticket` names (or as a new one if the session forgot it) and re-sends `reported`.
    async fn reconnect(
        self: Arc<Self>,
        connect: ConnectOptions,
        reconnect_for: Duration,
        mut ticket: Option<Ticket>,
        running: Vec<TaskId>,
        reported: Vec<TaskReport>,
    ) -> Result<Rejoined, ClientError> {
        let deadline = Instant::now() + reconnect_for;
        let mut delay = Duration::from_millis(100);
        loop {
            let attempt = async {
                let (mut connection, _) = Connection::connect(&connect).await?;
                let joined = self.join(&mut connection, ticket, &running).await?;
                if !reported.is_empty() {
                    connection
                        .send(&ClientMessage::Results(reported.clone()))
                        .await?;
                }
                Ok(Rejoined { connection, joined })
            };
            let last_error = match tokio::select! {
                result = attempt => result,
                () = self.interrupt.cancelled() => Err(ClientError::Interrupted),
            } {
                Ok(rejoined) => return Ok(rejoined),
                // The session was forgotten (or started again): join it as a new member.
                Err(ClientError::Refused {
                    code: ErrorCode::UnknownTicket,
                    ..
                }) => {
                    ticket = None;
                    delay = Duration::ZERO;
                    "the session did not know this client any more".to_string()
                }
                // A refusal for load passes; other refusals (a wrong token, another version)
                // and interruptions do not change by retrying. Anything else might: even a CA
                // file that cannot be read right now.
                Err(e) if is_busy(&e) => e.to_string(),
                Err(e @ ClientError::Refused { .. }) => return Err(e),
                Err(ClientError::Interrupted) => return Err(ClientError::Interrupted),
                Err(e) => e.to_string(),
            };
            if Instant::now() + delay >= deadline {
                return Err(ClientError::Lost(format!(
                    "could not reconnect within {}: {last_error}",
                    humantime::format_duration(reconnect_for)
                )));
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.interrupt.cancelled() => return Err(ClientError::Interrupted),
            }
            delay = (delay * 2).clamp(Duration::from_millis(100), Duration::from_secs(2));
        }
    }
}

impl Link<'_> {
    /// Asks for work, once until it is answered (see [`Link::requested`]).
    async fn request(
        &mut self,
        request: WorkRequest,
        on_event: &mut impl FnMut(Event),
    ) -> Result<(), ClientError> {
        self.requested = Some(request);
        self.send(&ClientMessage::Request(request), on_event).await
    }

    /// Sends a message; when the connection is lost, reconnects and drops the message. What it
    /// said is not lost: the reconnect re-sends every result in `reported` and the request in
    /// `requested`.
    async fn send(
        &mut self,
        message: &ClientMessage,
        on_event: &mut impl FnMut(Event),
    ) -> Result<(), ClientError> {
        let Some(connection) = self.connection.as_mut() else {
            // A reconnect is under way, and sends it once it is done.
            return Ok(());
        };
        match connection.send(message).await {
            Err(ClientError::Lost(reason)) => {
                self.connection = None;
                on_event(Event::Reconnecting(reason));
                self.reconnect(on_event).await
            }
            other => other,
        }
    }

    /// The next message, reconnecting (and rejoining) as often as needed, until the coordinator
    /// cannot be reached for [`SessionOptions::reconnect_for`]. Cancel-safe.
    async fn next(
        &mut self,
        on_event: &mut impl FnMut(Event),
    ) -> Result<ServerMessage, ClientError> {
        loop {
            let interrupt = self.options.interrupt.clone();
            let Some(connection) = self.connection.as_mut() else {
                self.reconnect(on_event).await?;
                continue;
            };
            match receive(connection, &interrupt).await {
                Ok(message) => {
                    if matches!(
                        message,
                        ServerMessage::Assignment(_) | ServerMessage::Complete(_)
                    ) {
                        self.requested = None;
                    }
                    return Ok(message);
                }
                Err(ClientError::Lost(reason)) => {
                    self.connection = None;
                    on_event(Event::Reconnecting(reason));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reconnects: starts a reconnect task unless one runs, and waits for it (cancel-safe: the
    /// task runs on if this wait is dropped, and the next call picks it up).
    async fn reconnect(&mut self, on_event: &mut impl FnMut(Event)) -> Result<(), ClientError> {
        if self.reconnecting.is_none() {
            let task = self.joining.clone().reconnect(
                self.connect.clone(),
                self.options.reconnect_for,
                self.ticket,
                // What it runs, and what it ran: a coordinator killed moments after handing
                // them out may not have stored that they are this client's.
                self.running
                    .iter()
                    .copied()
                    .chain(self.reported.iter().map(|r| r.task))
                    .collect(),
                self.reported.clone(),
            );
            self.reconnecting = Some((tokio::spawn(task), self.reported.len()));
        }
        let (handle, _) = self.reconnecting.as_mut().expect("started");
        let outcome = handle.await;
        let (_, resent) = self.reconnecting.take().expect("started");
        let Rejoined {
            mut connection,
            joined,
        } = outcome.map_err(|e| ClientError::Protocol(format!("the reconnect failed: {e}")))??;
        self.ticket = Some(joined.ticket);
        // Results reported while the reconnect ran, then the request the old connection took
        // with it.
        let results = (self.reported.len() > resent)
            .then(|| ClientMessage::Results(self.reported[resent..].to_vec()));
        let request = self.requested.map(ClientMessage::Request);
        for message in results.iter().chain(request.iter()) {
            if let Err(e) = connection.send(message).await {
                // Lost again at once: the next reconnect re-sends everything.
                on_event(Event::Reconnecting(e.to_string()));
                return Box::pin(self.reconnect(on_event)).await;
            }
        }
        self.connection = Some(connection);
        on_event(Event::Rejoined(joined));
        Ok(())
    }
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
