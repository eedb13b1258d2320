//! The client: joins a session and drives a [`TaskRunner`] until the session completes.
//!
//! A lost connection is not the end: the client connects again (with backoff, for
//! [`SessionOptions::reconnect_for`]) and comes back as the same member of the session with the
//! ticket it was given, while its runner carries on. What it says and when is decided by
//! [`machine::Machine`], the protocol's client half without I/O; this module is its shell: it
//! moves messages between the machine and the [`Connection`], runs its timer and runs the
//! runner.

pub mod machine;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use schemas::{Schema, SessionReport};
use tokio_util::sync::CancellationToken;

use crate::connection::{ClientError, ConnectOptions, Connection};
use crate::runner::{Batch, TaskRunner};
pub use machine::Event;
use machine::{Action, Config, Input, Machine};

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
    /// The CI run this job belongs to, when its jobs are meant to share this session (see
    /// [`schemas::Join::run`]): jobs of the run that end up in other sessions are then told.
    pub run: Option<String>,
    /// The most tasks to take per assignment.
    pub max_batch: u32,
    /// Whether the session stops at its first failing task (see [`schemas::Join::fail_fast`]).
    pub fail_fast: bool,
    /// Fires on SIGINT/SIGTERM: the runner is stopped and the run ends with
    /// [`ClientError::Interrupted`].
    pub interrupt: CancellationToken,
    /// How long to keep trying to reconnect after losing the coordinator, before giving up
    /// with [`ClientError::GaveUp`].
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
            run: None,
            max_batch: 1,
            fail_fast: false,
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
    on_event: impl FnMut(Event),
) -> Result<SessionReport, ClientError> {
    let config = Config {
        session_key: options.session_key.clone(),
        history_scope: options.history_scope.clone(),
        run: options.run.clone(),
        fail_fast: options.fail_fast,
        parallelism: runner.parallelism(),
        schema: schema.clone(),
        max_batch: options.max_batch,
        reconnect_for: options.reconnect_for,
        busy_retry_for: connect.busy_retry_for,
    };
    let mut shell = Shell {
        machine: Machine::new(config, runner.batch_overhead(), now()),
        connection: Some(connection),
        connecting: None,
        connect,
        interrupt: options.interrupt.clone(),
        interrupted: false,
        abort: CancellationToken::new(),
        on_event,
    };
    let result = loop {
        match shell.act().await {
            Next::Finish(result) => break result,
            Next::Wait => shell.wait().await,
            Next::Run(tasks, compile_first) => {
                shell.abort = CancellationToken::new();
                let (sender, mut finished) = tokio::sync::mpsc::unbounded_channel();
                let reports = {
                    let mut batch = Batch::new(shell.abort.clone(), sender);
                    batch.compile_first = compile_first;
                    let run = runner.run(&tasks, batch);
                    tokio::pin!(run);
                    // The coordinator is still listened to while the batch runs, so an abort
                    // reaches the runner, and a lost connection is made again meanwhile; each
                    // task's result goes out as soon as the runner has it.
                    loop {
                        tokio::select! {
                            reports = &mut run => break reports,
                            Some(report) = finished.recv() => {
                                shell.machine.handle(Input::TaskFinished(report), now());
                                let next = shell.act().await;
                                debug_assert!(matches!(next, Next::Wait), "the batch still runs");
                            }
                            () = shell.wait() => {
                                let next = shell.act().await;
                                debug_assert!(matches!(next, Next::Wait), "the batch still runs");
                            }
                        }
                    }
                };
                // Results the runner gave just before it returned.
                while let Ok(report) = finished.try_recv() {
                    shell.machine.handle(Input::TaskFinished(report), now());
                }
                let overhead = runner.batch_overhead();
                shell
                    .machine
                    .handle(Input::BatchFinished { reports, overhead }, now());
            }
        }
    };
    if let Some(connection) = shell.connection.take() {
        match &result {
            // Nothing is leased any more: the coordinator may learn of the close whenever.
            Ok(_) => drop(tokio::spawn(connection.close())),
            // Leases go back as soon as the coordinator sees the close.
            Err(_) => connection.close().await,
        }
    }
    result
}

/// The clock the machine is told, Tokio's so that tests with paused time hold.
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// What the shell does next, once the machine's actions are taken.
enum Next {
    /// Wait for something to happen.
    Wait,
    /// Run this batch, compiling first if told to.
    Run(Vec<crate::runner::AssignedTask>, bool),
    /// The run is over.
    Finish(Result<SessionReport, ClientError>),
}

/// A connection being made.
type Connecting<'a> = Pin<Box<dyn Future<Output = Result<Connection, ClientError>> + Send + 'a>>;

/// The machine and the I/O it asks for.
struct Shell<'a, F> {
    /// What decides.
    machine: Machine,
    /// The connection; `None` between losing one and making the next.
    connection: Option<Connection>,
    /// The connection being made. It is kept across waits, so that a batch ending meanwhile
    /// never abandons a half-made connection.
    connecting: Option<Connecting<'a>>,
    /// How to make a connection.
    connect: &'a ConnectOptions,
    /// SIGINT or SIGTERM.
    interrupt: CancellationToken,
    /// Whether the interrupt was passed on (it is passed on once).
    interrupted: bool,
    /// Stops the running batch.
    abort: CancellationToken,
    /// The caller's progress lines.
    on_event: F,
}

impl<'a, F: FnMut(Event)> Shell<'a, F> {
    /// Takes the machine's actions, up to one that needs the caller.
    async fn act(&mut self) -> Next {
        while let Some(action) = self.machine.poll() {
            match action {
                Action::Send(message) => {
                    let Some(connection) = self.connection.as_mut() else {
                        continue;
                    };
                    if let Err(e) = connection.send(&message).await {
                        self.connection = None;
                        self.machine.handle(Input::Failed(e), now());
                    }
                }
                Action::Connect => {
                    self.connection = None;
                    let connect = self.connect;
                    self.connecting = Some(Box::pin(async move {
                        Connection::connect(connect).await.map(|(c, _welcome)| c)
                    }));
                }
                Action::StartBatch(tasks, compile_first) => return Next::Run(tasks, compile_first),
                Action::AbortBatch => self.abort.cancel(),
                Action::Emit(event) => (self.on_event)(event),
                Action::Finish(result) => return Next::Finish(result),
            }
        }
        Next::Wait
    }

    /// Waits for the next thing to happen and tells the machine: a message, a loss, a
    /// connection made, the timer or the interrupt. Cancel-safe.
    async fn wait(&mut self) {
        let happened = {
            let Shell {
                connection,
                connecting,
                interrupt,
                interrupted,
                machine,
                ..
            } = &mut *self;
            let timeout = machine.timeout();
            tokio::select! {
                received = async {
                    match connection.as_mut() {
                        Some(connection) => connection.recv().await,
                        None => std::future::pending().await,
                    }
                } => Happened::Received(received),
                made = async {
                    match connecting.as_mut() {
                        Some(connecting) => connecting.await,
                        None => std::future::pending().await,
                    }
                } => Happened::Made(made.map(Box::new)),
                () = async {
                    match timeout {
                        Some(at) => tokio::time::sleep_until(at.into()).await,
                        None => std::future::pending().await,
                    }
                } => Happened::Timer,
                () = interrupt.cancelled(), if !*interrupted => Happened::Interrupted,
            }
        };
        let input = match happened {
            Happened::Received(Ok(message)) => Input::Received(message),
            Happened::Received(Err(e)) => {
                self.connection = None;
                Input::Failed(e)
            }
            Happened::Made(made) => {
                self.connecting = None;
                match made {
                    Ok(connection) => {
                        self.connection = Some(*connection);
                        Input::Connected
                    }
                    Err(e) => Input::Failed(e),
                }
            }
            Happened::Timer => return self.machine.handle_timeout(now()),
            Happened::Interrupted => {
                self.interrupted = true;
                Input::Interrupted
            }
        };
        self.machine.handle(input, now());
    }
}

/// What [`Shell::wait`] saw.
enum Happened {
    /// A message or the connection's end.
    Received(Result<schemas::ServerMessage, ClientError>),
    /// The connection asked for, or why not.
    Made(Result<Box<Connection>, ClientError>),
    /// The machine's timer.
    Timer,
    /// SIGINT or SIGTERM.
    Interrupted,
}
