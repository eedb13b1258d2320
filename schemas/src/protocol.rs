//! The messages clients and the coordinator exchange.
//!
//! One QUIC connection per client, one bidirectional stream on it, opened by the client. Each
//! message is one frame (see [`crate::frame`]). The conversation:
//!
//! ```text
//! client                                   coordinator
//!   Hello {version, client id, token}  ->
//!                                      <-  Welcome            (or Error, then close)
//!   Join {session key, digest}         ->
//!                                      <-  NeedSchema         (no such session yet)
//!   Join {session key, digest, schema} ->
//!                                      <-  Joined {ticket}    (or Error, then close)
//!   Request {max tasks}                ->
//!                                      <-  Assignment {task ids}   (when there is work)
//!   Results [...]                      ->
//!   Request {max tasks}                ->
//!                                      ...
//!                                      <-  Abort {task ids}   (a copy someone else finished)
//!                                      <-  Complete {every task's result, and who ran it}
//! ```
//!
//! A join may name the CI run its job belongs to; `Joined` and `Complete` then say how many
//! sessions that run has, so that jobs of one run which split into several sessions (their
//! commits, options or targets differed) learn that they did not share their work.
//!
//! A client that lost its connection (or whose coordinator restarted) connects again and joins
//! with `resume: Some(ticket)`, the ticket its first `Joined` gave it: it is the same member of
//! the session again, keeps the tasks leased to it, and re-sends the results it reported (the
//! coordinator records each task's result once and ignores the rest).
//!
//! Work is pulled: a `Request` is answered when there is something to hand out, which may be
//! later — when another client's lease comes back, or never, when the session completes first.
//!
//! Compatibility: [`ServerMessage::Error`] stays variant 0 and [`Hello`] stays variant 0 with the
//! protocol version as its first field, in every version, so that a mismatch is always reported
//! in words (see [`peek_protocol_version`]).

use serde::{Deserialize, Serialize};

use crate::schema::{Schema, SchemaDigest};

/// The version of this protocol. Bump it on any change to the messages' encoding.
pub const PROTOCOL_VERSION: u16 = 7;

/// The TLS application protocol (ALPN) that names this protocol. It stays the same across
/// [`PROTOCOL_VERSION`]s from 2 on, so that a peer of another version gets through TLS and is
/// refused by the hello in words rather than by a handshake failure.
pub const ALPN: &[u8] = b"task-sharding/2";

/// A task's index in its session's schema.
pub type TaskId = u32;

/// A member's proof that it is the client that joined a session before: a random secret the
/// coordinator hands out in [`Joined`] and accepts, in a later [`Join`] with the same session key,
/// as that same member (its leases, its name). Never valid for another session.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ticket(pub [u8; 16]);

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A secret: never in logs.
        f.write_str("Ticket(..)")
    }
}

/// A message from a client to the coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientMessage {
    /// The first message on every connection. Must stay variant 0.
    Hello(Hello),
    /// Enter a session (creating it if this is its first client).
    Join(Join),
    /// Ready for work: answered with an assignment when there is some.
    Request(WorkRequest),
    /// Results of tasks this client was assigned.
    Results(Vec<TaskReport>),
}

/// Who is connecting, and proof that it may.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Must stay the first field: the coordinator reads it even when the rest does not decode.
    pub protocol_version: u16,
    /// The name shown next to the tasks this client ran (e.g. the CI job's name).
    pub client_id: String,
    /// The shared secret, when the coordinator requires one.
    pub token: Option<String>,
    /// Where the client runs, for the coordinator's logs.
    pub info: ClientInfo,
}

/// Facts about a client, for logs and summaries only; never trusted for decisions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientInfo {
    /// The machine's host name.
    pub host: String,
    /// The CI job, when one could be told from the environment.
    pub ci_job: Option<String>,
    /// The client's process id.
    pub pid: u32,
    /// The client's software version.
    pub version: String,
}

/// Enter a session.
///
/// A client first joins with the digest only; only when the session does not exist yet does the
/// coordinator answer [`ServerMessage::NeedSchema`], and the client joins again with the whole
/// schema. So a large schema crosses the network once per session, not once per client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Join {
    /// Clients presenting the same key share one session.
    pub session_key: String,
    /// The digest of the client's schema; a join whose digest differs from the session's is
    /// refused. When `schema` is sent, the coordinator recomputes the digest from it.
    pub digest: SchemaDigest,
    /// The name and number of tasks of the client's schema, for the message when digests differ.
    pub schema_name: String,
    /// See `schema_name`.
    pub task_count: u32,
    /// The tasks this client needs finished: sent when the coordinator asks for it.
    pub schema: Option<Schema>,
    /// Where the coordinator files these tasks' timing history, so that the same task in a later
    /// run (another session) finds it: e.g. `bazel:<repository>` or `run:<schema name>`.
    pub history_scope: String,
    /// The ticket of an earlier join to this session, when this client is coming back.
    pub resume: Option<Ticket>,
    /// With `resume`: the tasks this client is running or has run in this session. A
    /// coordinator that restarted without having stored their leases (it was killed within
    /// moments of handing them out) gives the queued ones back to this client rather than to
    /// another, and so accepts the results it re-sends.
    pub running: Vec<TaskId>,
    /// The CI run this job belongs to, when it is one of several jobs meant to share one
    /// session (e.g. `bazel/<run id>/test`, sealed like the key when the run has a secret). The
    /// session key also covers what the jobs run, so jobs of one run that disagree on it (another
    /// commit, other options) split into separate sessions; the coordinator counts the sessions
    /// of each run ([`Joined::run_sessions`]) so that they are told. Added in protocol version 4.
    pub run: Option<String>,
    /// Whether the session stops at its first failing task (Bazel's `--notest_keep_going`): the
    /// coordinator then records every task without a result as not run ([`Outcome::NoStatus`],
    /// no exit code, no client) and completes the session, so every job stops and reports the
    /// same verdict. The join that creates the session decides; the session key covers the
    /// options, so every job of it asks the same. Added in protocol version 5.
    pub fail_fast: bool,
    /// How many of its tasks this client runs at once (a Bazel job's `--local_test_jobs`, or
    /// its CPUs): a batch of them takes about its total work divided by this, at least its
    /// longest task. The coordinator judges how long a batch still runs by it. 0 is read as 1.
    /// Added in protocol version 6.
    pub parallelism: u32,
}

impl Join {
    /// A join for `schema`, with (`with_schema`) or without the schema itself.
    pub fn new(
        session_key: String,
        schema: &Schema,
        history_scope: String,
        with_schema: bool,
    ) -> Join {
        Join {
            session_key,
            digest: schema.digest(),
            schema_name: schema.name.clone(),
            task_count: schema.tasks.len() as u32,
            schema: with_schema.then(|| schema.clone()),
            history_scope,
            resume: None,
            running: Vec::new(),
            run: None,
            fail_fast: false,
            parallelism: 1,
        }
    }
}

/// A request for work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkRequest {
    /// The most tasks the client wants in one assignment (at least one is always given).
    pub max_tasks: u32,
    /// What starting one batch costs this client, in milliseconds (e.g. a Bazel invocation's
    /// fixed overhead): the coordinator makes batches long enough to be worth it.
    pub overhead_ms: u32,
}

/// One task's result, as a client reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskReport {
    /// Which task.
    pub task: TaskId,
    /// How it went.
    pub result: TaskResult,
}

/// How a task went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskResult {
    /// The verdict.
    pub outcome: Outcome,
    /// The process's exit code, where there was one process per task.
    pub exit_code: Option<i32>,
    /// Wall time spent on the task, in milliseconds.
    pub duration_ms: u64,
    /// Whether the task actually ran, as opposed to being served from a cache. Only executed
    /// durations say how long a task takes.
    pub executed: bool,
    /// For a failure: the end of its log (a Bazel test's `test.log`, a command's output), at most
    /// [`crate::log_tail::MAX_LOG_TAIL_LINES`] lines and [`crate::log_tail::MAX_LOG_TAIL_BYTES`],
    /// so that every job can show why it failed. Added in protocol version 3.
    pub log_tail: Option<String>,
    /// What this client spent building the task itself (its own compiling and linking, the
    /// actions that were not cache hits; a dependency it shares with other tasks is that
    /// dependency's), in milliseconds, as well as it can tell; 0 when unknown or nothing was
    /// built. Beside `duration_ms` (the test's own time, as Bazel shows
    /// it), this is what running the task costs, and what the coordinator learns from, so that
    /// compile-heavy targets are not taken for cheap ones. Added in protocol version 5.
    pub build_ms: u64,
}

impl TaskResult {
    /// What running the task cost this client, in milliseconds, when it says anything about
    /// what the task costs: its own time if it executed, plus what was built for it. A test
    /// served from a cache that built nothing says nothing (its next run may execute it).
    /// A build task that was built says what building it cost, even nothing: its outputs
    /// were already there (built for the tasks that depend on it) or in the cache, as they
    /// will be again when it comes after them. Without that, such a task never has a
    /// duration, and a session that has run before is never wholly known.
    pub fn cost_ms(&self) -> Option<u64> {
        match (self.executed, self.outcome, self.build_ms) {
            (true, _, build) => Some(self.duration_ms + build),
            (false, Outcome::Built, build) => Some(build),
            (false, _, 0) => None,
            (false, _, build) => Some(build),
        }
    }
}

/// A task's verdict. The variants past `Failed` are Bazel's; the generic runner uses the first two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Outcome {
    /// It succeeded.
    Passed,
    /// It ran and failed.
    Failed,
    /// It failed, then passed on a retry.
    Flaky,
    /// It ran out of time.
    TimedOut,
    /// It could not be built.
    FailedToBuild,
    /// It was not run to a verdict (e.g. the build stopped first).
    NoStatus,
    /// It was deliberately not run (a filter such as `--test_tag_filters` excluded it). Neither
    /// a success nor a failure; a session of only skipped tasks ran nothing.
    Skipped,
    /// A build task (a target that is built, not tested) was built. Added in protocol
    /// version 4; last, so that earlier variants keep their encoding.
    Built,
}

impl Outcome {
    /// Whether this outcome counts as success for the session.
    pub fn is_success(self) -> bool {
        matches!(
            self,
            Outcome::Passed | Outcome::Flaky | Outcome::Skipped | Outcome::Built
        )
    }

    /// The word shown in summaries, in Bazel's style.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Passed => "PASSED",
            Outcome::Failed => "FAILED",
            Outcome::Flaky => "FLAKY",
            Outcome::TimedOut => "TIMEOUT",
            Outcome::FailedToBuild => "FAILED TO BUILD",
            Outcome::NoStatus => "NO STATUS",
            Outcome::Skipped => "SKIPPED",
            Outcome::Built => "BUILT",
        }
    }
}

/// A message from the coordinator to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ServerMessage {
    /// The request was refused; the connection closes after it. Must stay variant 0.
    Error(ErrorMessage),
    /// The hello was accepted.
    Welcome(Welcome),
    /// The join was accepted.
    Joined(Joined),
    /// Run these tasks and report their results.
    Assignment(Assignment),
    /// Stop these tasks: their results are already known. Do not report them.
    Abort(Vec<TaskId>),
    /// Every task of the session has a result.
    Complete {
        /// Every task's result, and who ran it.
        report: SessionReport,
        /// The sessions of this session's run when it completed (see [`Joined::run_sessions`]).
        /// Added in protocol version 4.
        run_sessions: u32,
    },
    /// No session has this key yet: join again, with the schema, to create it.
    NeedSchema,
}

/// Why something was refused, in a form a program can branch on and a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMessage {
    /// What kind of refusal.
    pub code: ErrorCode,
    /// What happened and what to do about it.
    pub message: String,
}

/// The kinds of refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// Client and coordinator speak different protocol versions.
    VersionMismatch,
    /// The token was missing or wrong, or (mutual TLS) the client certificate.
    Unauthorized,
    /// A frame was too large or did not decode.
    BadFrame,
    /// A message came out of order or named something that does not exist.
    ProtocolViolation,
    /// The schema broke a rule (duplicates, size, digest not matching its contents).
    InvalidSchema,
    /// The session key is taken by a session with a different schema.
    SchemaMismatch,
    /// The coordinator is at a limit (connections, sessions); try again later.
    Busy,
    /// The coordinator is shutting down.
    ShuttingDown,
    /// A join presented a ticket no member of that session holds: the session was forgotten and
    /// started again, or the ticket is from another session. Join again without one.
    UnknownTicket,
}

/// The coordinator's answer to a hello.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The coordinator's protocol version (equal to the client's, or it would have refused).
    pub protocol_version: u16,
    /// The coordinator's software version, for logs.
    pub coordinator_version: String,
}

/// The coordinator's answer to a join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Joined {
    /// Whether this join created the session.
    pub created: bool,
    /// Whether this client came back as the member its `resume` ticket names.
    pub resumed: bool,
    /// What to present to come back as this member after losing the connection.
    pub ticket: Ticket,
    /// Tasks in the session.
    pub tasks: u32,
    /// Tasks that already have a result.
    pub finished: u32,
    /// Clients in the session, this one included.
    pub clients: u32,
    /// The sessions of the run the join named ([`Join::run`]), this one included, whose
    /// lifetimes overlap this one's (a run's later, sequential commands are not counted): more
    /// than one means jobs of the run run different work and do not share it. 0 when the join
    /// named no run. Added in protocol version 4.
    pub run_sessions: u32,
}

/// Tasks to run, and how far the session is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The tasks, now leased to this client.
    pub tasks: Vec<TaskId>,
    /// The session's progress when they were handed out.
    pub progress: Progress,
    /// A prerequisite ([`crate::Task::prerequisite`]) is being built by another client right
    /// now: compile what these tasks need only its headers for first, and build the rest
    /// after, when the prerequisite can come from the shared cache instead of being built here
    /// too. Added in protocol version 7.
    pub compile_first: bool,
}

/// How far a session is, for progress lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Tasks with a result.
    pub finished: u32,
    /// Tasks in the session.
    pub total: u32,
    /// Clients connected to the session.
    pub clients: u32,
}

/// The outcome of a whole session: every task's result and which client produced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionReport {
    /// The schema's name.
    pub schema_name: String,
    /// One record per task, in task id order.
    pub records: Vec<TaskRecord>,
}

/// One task's final result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Which task.
    pub task: TaskId,
    /// How it went.
    pub result: TaskResult,
    /// The id of the client that produced the result.
    pub client: String,
}

impl SessionReport {
    /// Whether every task succeeded.
    pub fn all_succeeded(&self) -> bool {
        self.records.iter().all(|r| r.result.outcome.is_success())
    }
}

/// Reads the protocol version from an encoded [`ClientMessage::Hello`] even when the rest of the
/// frame does not decode (because it comes from another version). `None` when the frame is not a
/// hello at all.
pub fn peek_protocol_version(frame: &[u8]) -> Option<u16> {
    let (variant, version): (u32, u16) = crate::frame::decode_prefix(frame)?;
    (variant == 0).then_some(version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{decode_payload, encode_payload};

    fn hello(version: u16) -> ClientMessage {
        ClientMessage::Hello(Hello {
            protocol_version: version,
            client_id: "job-1".into(),
            token: Some("secret".into()),
            info: ClientInfo::default(),
        })
    }

    fn result(outcome: Outcome, executed: bool, duration_ms: u64, build_ms: u64) -> TaskResult {
        TaskResult {
            outcome,
            exit_code: None,
            duration_ms,
            executed,
            log_tail: None,
            build_ms,
        }
    }

    #[test]
    fn what_a_result_says_a_task_costs() {
        assert_eq!(result(Outcome::Passed, true, 300, 200).cost_ms(), Some(500));
        assert_eq!(
            result(Outcome::Passed, false, 300, 200).cost_ms(),
            Some(200)
        );
        assert_eq!(result(Outcome::Passed, false, 300, 0).cost_ms(), None);
        assert_eq!(result(Outcome::Skipped, false, 0, 0).cost_ms(), None);
        assert_eq!(result(Outcome::Built, false, 0, 900).cost_ms(), Some(900));
    }

    /// Issue 11: the compiled benchmark's warm sessions had durations for 64 of 67 tasks; the
    /// three build tasks, built already for the tests that link them, never got one, so a
    /// session that had run before never counted as wholly known.
    #[test]
    fn regression_a_build_task_that_built_nothing_costs_nothing() {
        assert_eq!(result(Outcome::Built, false, 0, 0).cost_ms(), Some(0));
    }

    #[test]
    fn the_version_is_readable_from_any_hello() {
        let bytes = encode_payload(&hello(7)).unwrap();
        assert_eq!(peek_protocol_version(&bytes), Some(7));
        // A future hello with fields we do not know still shows its version.
        let mut future = encode_payload(&hello(9)).unwrap();
        future.truncate(4);
        future.extend_from_slice(&[0xff; 3]);
        assert_eq!(peek_protocol_version(&future), Some(9));
        let request = encode_payload(&ClientMessage::Request(WorkRequest {
            max_tasks: 1,
            overhead_ms: 0,
        }))
        .unwrap();
        assert_eq!(peek_protocol_version(&request), None);
    }

    #[test]
    fn error_stays_variant_zero() {
        let error = ServerMessage::Error(ErrorMessage {
            code: ErrorCode::Busy,
            message: "x".into(),
        });
        assert_eq!(encode_payload(&error).unwrap()[0], 0);
    }

    #[test]
    fn every_message_round_trips() {
        let schema = Schema::new("s", ["a", "b"]).unwrap();
        let result = TaskResult {
            outcome: Outcome::TimedOut,
            exit_code: Some(3),
            duration_ms: 1234,
            executed: true,
            log_tail: Some("assertion failed\n".into()),
            build_ms: 0,
        };
        let client = [
            hello(PROTOCOL_VERSION),
            ClientMessage::Join(Join {
                session_key: "k".into(),
                digest: schema.digest(),
                schema_name: "s".into(),
                task_count: 2,
                schema: Some(schema.clone()),
                history_scope: "run:s".into(),
                resume: Some(Ticket([7; 16])),
                running: vec![1],
                run: Some("bazel/r/test".into()),
                fail_fast: true,
                parallelism: 4,
            }),
            ClientMessage::Request(WorkRequest {
                max_tasks: 5,
                overhead_ms: 10,
            }),
            ClientMessage::Results(vec![TaskReport {
                task: 1,
                result: result.clone(),
            }]),
        ];
        for message in client {
            let bytes = encode_payload(&message).unwrap();
            assert_eq!(decode_payload::<ClientMessage>(&bytes).unwrap(), message);
        }
        let server = [
            ServerMessage::Welcome(Welcome {
                protocol_version: 1,
                coordinator_version: "0".into(),
            }),
            ServerMessage::Joined(Joined {
                created: true,
                resumed: false,
                ticket: Ticket([9; 16]),
                tasks: 2,
                finished: 0,
                clients: 1,
                run_sessions: 2,
            }),
            ServerMessage::Assignment(Assignment {
                tasks: vec![0, 1],
                progress: Progress {
                    finished: 0,
                    total: 2,
                    clients: 1,
                },
                compile_first: true,
            }),
            ServerMessage::Abort(vec![1]),
            ServerMessage::NeedSchema,
            ServerMessage::Complete {
                report: SessionReport {
                    schema_name: "s".into(),
                    records: vec![TaskRecord {
                        task: 0,
                        result,
                        client: "job-1".into(),
                    }],
                },
                run_sessions: 3,
            },
        ];
        for message in server {
            let bytes = encode_payload(&message).unwrap();
            assert_eq!(decode_payload::<ServerMessage>(&bytes).unwrap(), message);
        }
    }
}
