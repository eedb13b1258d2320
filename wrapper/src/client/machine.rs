//! The client's half of the protocol as a pure state machine, in the spirit of quinn-proto: no
//! sockets, no clocks, no tasks. Inputs go in ([`Machine::handle`], each with the `now` it
//! happened at), actions come out ([`Machine::poll`]), and [`Machine::timeout`] says when to call
//! [`Machine::handle_timeout`]. The shell in [`crate::client`] only moves bytes, runs the timer
//! and runs the runner; a test can drive the same machine through a simulated network.
//!
//! The rules it keeps:
//! - It asks for work once per connection: the coordinator answers every request it gets, so a
//!   request made twice on one connection would bring a second assignment while the first runs.
//!   A request still unanswered when a connection is lost is made again on the next one.
//! - After coming back it re-sends every result it reported, since the coordinator may have
//!   restarted without the last of them (it records each task's result once), and names the
//!   tasks it runs or ran, so that a coordinator which lost their leases gives them back to it.
//! - A ticket the coordinator does not know any more is dropped: the client joins as a new member.
//! - A join refused for load ([`ErrorCode::Busy`]) is tried again, with backoff.
//! - Each result is reported the moment the runner says its task finished, not when the whole
//!   batch has: the coordinator then knows what is left of a long batch and may copy that to an
//!   idle client. A batch stops only when every task it still runs was finished elsewhere.
//! - A lost connection is not the end: the running batch carries on while it reconnects for
//!   `reconnect_for`; when that passes, the batch still finishes and its results are kept (for
//!   the caller to finish the session alone) before the run ends with [`ClientError::GaveUp`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use schemas::{
    Assignment, ClientMessage, ErrorCode, Join, Joined, Progress, Schema, ServerMessage,
    SessionReport, TaskId, TaskReport, Ticket, WorkRequest,
};

use crate::connection::{is_busy, unexpected, ClientError};
use crate::runner::AssignedTask;

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
    /// The session completed (the run ends with its report next); its run then had this many
    /// sessions (see [`Joined::run_sessions`]).
    Completed {
        /// See [`Joined::run_sessions`].
        run_sessions: u32,
    },
}

/// What the machine asks its shell to do.
#[derive(Debug)]
pub enum Action {
    /// Send this on the current connection (drop it if there is none: the machine learns of the
    /// loss and re-sends what matters on the next connection).
    Send(ClientMessage),
    /// Drop the current connection, if any, and make a new one (hello and welcome included);
    /// answer with [`Input::Connected`] or [`Input::Failed`].
    Connect,
    /// Start running this batch, compiling first if the coordinator said so
    /// ([`Assignment::compile_first`]); answer with [`Input::BatchFinished`].
    StartBatch(Vec<AssignedTask>, bool),
    /// Stop the running batch promptly (it still answers with [`Input::BatchFinished`]).
    AbortBatch,
    /// Tell the caller.
    Emit(Event),
    /// The run is over: nothing runs any more. The last action.
    Finish(Result<SessionReport, ClientError>),
}

/// What happened, for the machine.
#[derive(Debug)]
pub enum Input {
    /// The connection asked for with [`Action::Connect`] is up and greeted.
    Connected,
    /// The coordinator sent this.
    Received(ServerMessage),
    /// Connecting, sending or receiving failed (a lost connection is [`ClientError::Lost`]).
    Failed(ClientError),
    /// A task of the running batch finished, before the batch did.
    TaskFinished(TaskReport),
    /// The running batch ended with these reports (those already given as
    /// [`Input::TaskFinished`] may be among them); the next request says `overhead`.
    BatchFinished {
        /// The runner's reports.
        reports: Vec<TaskReport>,
        /// The runner's [`crate::TaskRunner::batch_overhead`] now.
        overhead: Duration,
    },
    /// SIGINT or SIGTERM: stop the runner and end with [`ClientError::Interrupted`].
    Interrupted,
}

/// The settings of one session run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Clients with the same key share the session.
    pub session_key: String,
    /// Where the coordinator files the tasks' timing history.
    pub history_scope: String,
    /// The CI run this job belongs to (see [`Join::run`]).
    pub run: Option<String>,
    /// Whether the session stops at its first failing task (see [`Join::fail_fast`]).
    pub fail_fast: bool,
    /// How many tasks the runner runs at once (see [`Join::parallelism`]).
    pub parallelism: u32,
    /// The tasks.
    pub schema: Schema,
    /// The most tasks to take per assignment.
    pub max_batch: u32,
    /// How long to try to reconnect after losing the coordinator.
    pub reconnect_for: Duration,
    /// How long to retry a first join refused for load.
    pub busy_retry_for: Duration,
}

/// Where the machine stands with its connection.
#[derive(Debug)]
enum Link {
    /// [`Action::Connect`] is out.
    Connecting,
    /// A join is sent; waiting for its answer. `with_schema`: the second, whole-schema join.
    Joining { with_schema: bool },
    /// Joined on this connection.
    Up,
    /// Waiting until then to connect again.
    Backoff { until: Instant },
    /// The run ends (as [`Machine::ending`] says) once the running batch has stopped.
    Stopping,
    /// The run is over.
    Done,
}

/// A reconnect episode (or, before the first join, the busy retries): its deadline and the
/// delay before the next attempt.
#[derive(Debug)]
struct Retry {
    deadline: Instant,
    delay: Duration,
}

/// The first delay between attempts, doubled up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest delay between attempts.
const MAX_DELAY: Duration = Duration::from_secs(2);

/// How the run ends once the running batch has stopped.
#[derive(Debug)]
enum Ending {
    /// The session completed meanwhile (the batch's tasks were finished elsewhere).
    Complete(SessionReport),
    /// It failed; the batch was stopped.
    Failed(ClientError),
    /// The coordinator could not be reached again: the batch finishes and its results are kept.
    GaveUp(ClientError),
}

/// The client's half of the protocol; see the module's documentation.
#[derive(Debug)]
pub struct Machine {
    config: Config,
    link: Link,
    /// This client's ticket in the session, once joined.
    ticket: Option<Ticket>,
    /// Whether it ever joined: before that, only a refusal for load is retried.
    joined_once: bool,
    /// Every result reported, to re-send after reconnecting.
    reported: Vec<TaskReport>,
    /// The tasks of the batch running now, to claim after reconnecting.
    running: Option<Vec<TaskId>>,
    /// The tasks of the running batch already reported ([`Input::TaskFinished`]).
    streamed: Vec<TaskId>,
    /// The tasks of the running batch the coordinator said were finished elsewhere: they are
    /// not reported, and the batch stops once nothing else of it is left.
    aborted: Vec<TaskId>,
    /// The request for work not answered yet. The coordinator forgets it with the connection it
    /// came on, so it is made again on each new connection, and only there.
    requested: Option<WorkRequest>,
    /// The current reconnect episode or busy retries.
    retry: Option<Retry>,
    /// Set when the run is to end once the batch has stopped.
    ending: Option<Ending>,
    /// Actions not yet taken by the shell.
    actions: VecDeque<Action>,
}

impl Machine {
    /// A machine on a connection the shell has already made (and greeted): it joins at once.
    /// `overhead` is the runner's batch overhead, for the first request.
    pub fn new(config: Config, overhead: Duration, now: Instant) -> Self {
        let mut machine = Machine {
            retry: Some(Retry {
                deadline: now + config.busy_retry_for,
                delay: FIRST_DELAY,
            }),
            config,
            link: Link::Connecting,
            ticket: None,
            joined_once: false,
            reported: Vec::new(),
            running: None,
            streamed: Vec::new(),
            aborted: Vec::new(),
            requested: None,
            ending: None,
            actions: VecDeque::new(),
        };
        machine.requested = Some(machine.request(overhead));
        machine.send_join(false);
        machine
    }

    /// The next action for the shell, in order.
    pub fn poll(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When to call [`Machine::handle_timeout`], if a timer runs.
    pub fn timeout(&self) -> Option<Instant> {
        match self.link {
            Link::Backoff { until } => Some(until),
            _ => None,
        }
    }

    /// Whether the run is over ([`Action::Finish`] was queued).
    pub fn is_done(&self) -> bool {
        matches!(self.link, Link::Done)
    }

    /// The tasks of the batch the machine has started and not seen finish.
    pub fn running(&self) -> Option<&[TaskId]> {
        self.running.as_deref()
    }

    /// The timer is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Link::Backoff { until } = self.link {
            if now >= until {
                self.link = Link::Connecting;
                self.actions.push_back(Action::Connect);
            }
        }
    }

    /// Something happened at `now`.
    pub fn handle(&mut self, input: Input, now: Instant) {
        if self.is_done() {
            return;
        }
        match input {
            Input::Connected => {
                if matches!(self.link, Link::Connecting) {
                    self.send_join(false);
                }
            }
            Input::TaskFinished(report) => self.task_finished(report),
            Input::BatchFinished { reports, overhead } => self.batch_finished(reports, overhead),
            Input::Interrupted => self.fail(ClientError::Interrupted),
            // Waiting for the batch to stop: the coordinator has nothing more to say.
            _ if matches!(self.link, Link::Stopping) => {}
            Input::Received(ServerMessage::Error(e)) => self.failed(
                ClientError::Refused {
                    code: e.code,
                    message: e.message,
                },
                now,
            ),
            Input::Received(message) => self.received(message, now),
            Input::Failed(error) => self.failed(error, now),
        }
    }

    fn request(&self, overhead: Duration) -> WorkRequest {
        WorkRequest {
            max_tasks: self.config.max_batch,
            overhead_ms: overhead.as_millis().min(u32::MAX as u128) as u32,
        }
    }

    /// Joins (or, with a ticket, rejoins) on the current connection: the digest first, the whole
    /// schema only if the session does not exist yet.
    fn send_join(&mut self, with_schema: bool) {
        let running = match self.ticket {
            // What it runs, and what it ran: a coordinator killed moments after handing them
            // out may not have stored that they are this client's.
            Some(_) => self
                .running
                .iter()
                .flatten()
                .copied()
                .chain(self.reported.iter().map(|r| r.task))
                .collect(),
            None => Vec::new(),
        };
        let join = Join {
            resume: self.ticket,
            running,
            run: self.config.run.clone(),
            fail_fast: self.config.fail_fast,
            parallelism: self.config.parallelism,
            ..Join::new(
                self.config.session_key.clone(),
                &self.config.schema,
                self.config.history_scope.clone(),
                with_schema,
            )
        };
        self.link = Link::Joining { with_schema };
        self.actions
            .push_back(Action::Send(ClientMessage::Join(join)));
    }

    fn received(&mut self, message: ServerMessage, now: Instant) {
        match (&self.link, message) {
            (Link::Joining { with_schema: false }, ServerMessage::NeedSchema) => {
                self.send_join(true)
            }
            (Link::Joining { .. }, ServerMessage::Joined(joined)) => self.joined(joined),
            (Link::Joining { .. }, other) => self.attempt_failed(unexpected(&other), now),
            (Link::Up, ServerMessage::Assignment(assignment)) if self.running.is_none() => {
                self.requested = None;
                self.assigned(assignment);
            }
            (
                Link::Up,
                ServerMessage::Complete {
                    report,
                    run_sessions,
                },
            ) => {
                self.requested = None;
                self.emit(Event::Completed { run_sessions });
                if self.running.is_some() {
                    self.stop(Ending::Complete(report));
                } else {
                    self.finish(Ok(report));
                }
            }
            (Link::Up, ServerMessage::Abort(ids)) => {
                // Nothing running, or none of ours: whatever it names is already stopped.
                let Some(running) = &self.running else { return };
                let stopped: Vec<TaskId> = ids
                    .into_iter()
                    .filter(|id| {
                        running.contains(id)
                            && !self.streamed.contains(id)
                            && !self.aborted.contains(id)
                    })
                    .collect();
                if stopped.is_empty() {
                    return;
                }
                self.aborted.extend(&stopped);
                // The rest of the batch runs on while any of it is this client's to finish.
                let left = running
                    .iter()
                    .any(|id| !self.streamed.contains(id) && !self.aborted.contains(id));
                if !left {
                    self.actions.push_back(Action::AbortBatch);
                }
                self.emit(Event::Aborted(stopped));
            }
            (_, other) => self.fail(unexpected(&other)),
        }
    }

    fn joined(&mut self, joined: Joined) {
        self.ticket = Some(joined.ticket);
        self.link = Link::Up;
        self.retry = None;
        if std::mem::replace(&mut self.joined_once, true) {
            self.emit(Event::Rejoined(joined));
            if !self.reported.is_empty() {
                let results = ClientMessage::Results(self.reported.clone());
                self.actions.push_back(Action::Send(results));
            }
        } else {
            self.emit(Event::Joined(joined));
        }
        if let Some(request) = self.requested {
            self.actions
                .push_back(Action::Send(ClientMessage::Request(request)));
        }
    }

    fn assigned(
        &mut self,
        Assignment {
            tasks: ids,
            progress,
            compile_first,
        }: Assignment,
    ) {
        let tasks: Result<Vec<AssignedTask>, ClientError> = ids
            .iter()
            .map(|&id| {
                let task = self.config.schema.tasks.get(id as usize).ok_or_else(|| {
                    ClientError::Protocol(format!("assigned task {id}, which is not in the schema"))
                })?;
                Ok(AssignedTask {
                    id,
                    text: task.task.clone(),
                })
            })
            .collect();
        match tasks {
            Ok(tasks) => {
                self.running = Some(ids);
                self.streamed.clear();
                self.aborted.clear();
                self.emit(Event::Assigned(tasks.clone(), progress));
                self.actions
                    .push_back(Action::StartBatch(tasks, compile_first));
            }
            Err(e) => self.fail(e),
        }
    }

    /// A task of the running batch finished: its result goes to the coordinator now (or with
    /// the rejoin, when reconnecting), and is kept to re-send. A task the batch does not run,
    /// already reported or finished elsewhere, is not reported again.
    fn task_finished(&mut self, report: TaskReport) {
        let Some(running) = &self.running else { return };
        let task = report.task;
        if !running.contains(&task) || self.streamed.contains(&task) || self.aborted.contains(&task)
        {
            return;
        }
        self.streamed.push(task);
        self.reported.push(report.clone());
        if matches!(self.link, Link::Up) {
            self.actions
                .push_back(Action::Send(ClientMessage::Results(vec![report.clone()])));
        }
        self.emit(Event::Reported(vec![report]));
    }

    fn batch_finished(&mut self, reports: Vec<TaskReport>, overhead: Duration) {
        let Some(running) = self.running.take() else {
            return;
        };
        // What was reported as it finished, or finished elsewhere, is not reported again.
        let streamed = std::mem::take(&mut self.streamed);
        let aborted = std::mem::take(&mut self.aborted);
        let reports: Vec<TaskReport> = reports
            .into_iter()
            .filter(|r| {
                running.contains(&r.task)
                    && !streamed.contains(&r.task)
                    && !aborted.contains(&r.task)
            })
            .collect();
        match self.ending.take() {
            Some(Ending::Complete(report)) => return self.finish(Ok(report)),
            Some(Ending::Failed(e)) => return self.finish(Err(e)),
            Some(Ending::GaveUp(e)) => {
                // Keep what ran: the caller may finish the session alone with it.
                self.reported.extend(reports.iter().cloned());
                self.emit(Event::Reported(reports));
                return self.finish(Err(e));
            }
            None => {}
        }
        // Kept before sending: re-sent after a reconnect if this send is lost.
        self.reported.extend(reports.iter().cloned());
        let request = self.request(overhead);
        self.requested = Some(request);
        let up = matches!(self.link, Link::Up);
        if !reports.is_empty() {
            if up {
                self.actions
                    .push_back(Action::Send(ClientMessage::Results(reports.clone())));
            }
            // Reconnecting: the rejoin re-sends every result and the request.
            self.emit(Event::Reported(reports));
        }
        if up {
            self.actions
                .push_back(Action::Send(ClientMessage::Request(request)));
        }
    }

    /// Connecting, sending or receiving failed.
    fn failed(&mut self, error: ClientError, now: Instant) {
        let lost = matches!(error, ClientError::Lost(_));
        match self.link {
            Link::Up if lost => {
                let ClientError::Lost(reason) = &error else {
                    unreachable!("checked above")
                };
                self.emit(Event::Reconnecting(reason.to_string()));
                self.retry = Some(Retry {
                    deadline: now + self.config.reconnect_for,
                    delay: FIRST_DELAY,
                });
                self.link = Link::Connecting;
                self.actions.push_back(Action::Connect);
            }
            Link::Connecting | Link::Joining { .. } => self.attempt_failed(error, now),
            // Not from the current connection (a stale send after a loss already handled).
            Link::Backoff { .. } | Link::Done if lost => {}
            _ => self.fail(error),
        }
    }

    /// A connect or join attempt failed: try again after a while, or give up.
    fn attempt_failed(&mut self, error: ClientError, now: Instant) {
        if !self.joined_once {
            // Before the first join only a refusal for load is worth another try.
            let retry = self.retry.as_mut().expect("retries until the first join");
            if is_busy(&error) && now + retry.delay < retry.deadline {
                tracing::info!("{error}; joining again in {:?}", retry.delay);
                self.back_off(now);
            } else {
                self.fail(error);
            }
            return;
        }
        let last = match error {
            // The session was forgotten (or started again): join it as a new member.
            ClientError::Refused {
                code: ErrorCode::UnknownTicket,
                ..
            } => {
                self.ticket = None;
                self.retry.as_mut().expect("reconnecting").delay = Duration::ZERO;
                ClientError::Protocol("the session did not know this client any more".into())
            }
            // A refusal for load passes; other refusals (a wrong token, another version) and
            // interruptions do not change by retrying. Anything else might: even a CA file that
            // cannot be read right now.
            e if is_busy(&e) => e,
            e @ (ClientError::Refused { .. } | ClientError::Interrupted) => return self.fail(e),
            e => e,
        };
        let retry = self.retry.as_mut().expect("reconnecting");
        if now + retry.delay >= retry.deadline {
            let gave_up = ClientError::GaveUp {
                after: self.config.reconnect_for,
                last: Box::new(last),
            };
            if self.running.is_some() {
                // Not stopped: what it runs is this client's to finish alone.
                self.link = Link::Stopping;
                self.ending = Some(Ending::GaveUp(gave_up));
            } else {
                self.finish(Err(gave_up));
            }
            return;
        }
        self.back_off(now);
    }

    /// Waits the retry's delay before connecting again, doubling it for the next time.
    fn back_off(&mut self, now: Instant) {
        let retry = self.retry.as_mut().expect("retrying");
        let delay = retry.delay;
        retry.delay = (delay * 2).clamp(FIRST_DELAY, MAX_DELAY);
        if delay.is_zero() {
            self.link = Link::Connecting;
            self.actions.push_back(Action::Connect);
        } else {
            self.link = Link::Backoff { until: now + delay };
        }
    }

    /// Ends the run with `error`, once the batch (if one runs) has stopped.
    fn fail(&mut self, error: ClientError) {
        if self.running.is_some() {
            self.stop(Ending::Failed(error));
        } else {
            self.finish(Err(error));
        }
    }

    /// Stops the running batch; the run ends as `ending` says when it has. An interruption
    /// overrides any other ending: it is the user's word.
    fn stop(&mut self, ending: Ending) {
        match (&self.ending, &ending) {
            (None | Some(Ending::GaveUp(_)), _) => {
                self.actions.push_back(Action::AbortBatch);
                self.ending = Some(ending);
            }
            (_, Ending::Failed(ClientError::Interrupted)) => self.ending = Some(ending),
            _ => {}
        }
        self.link = Link::Stopping;
    }

    fn finish(&mut self, result: Result<SessionReport, ClientError>) {
        self.link = Link::Done;
        self.actions.push_back(Action::Finish(result));
    }

    fn emit(&mut self, event: Event) {
        self.actions.push_back(Action::Emit(event));
    }
}

#[cfg(test)]
mod tests;
