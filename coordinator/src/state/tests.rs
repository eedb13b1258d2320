//! The state machine's semantics, driven with no sockets and a clock the tests move by hand.

use super::*;
use schemas::{
    ClientInfo, Outcome, Schema, SessionReport, TaskId, TaskReport, TaskResult, WorkRequest,
};

/// A coordinator, a clock, and shorthand for the messages clients send.
struct World {
    coordinator: Coordinator,
    now: Instant,
}

fn schema(name: &str, tasks: usize) -> Schema {
    Schema::new(name, (0..tasks).map(|i| format!("task-{i}"))).unwrap()
}

fn result(outcome: Outcome) -> TaskResult {
    TaskResult {
        outcome,
        exit_code: Some(if outcome == Outcome::Passed { 0 } else { 1 }),
        duration_ms: 10,
        executed: true,
        log_tail: None,
        build_ms: 0,
    }
}

fn passed(tasks: &[TaskId]) -> Vec<TaskReport> {
    tasks
        .iter()
        .map(|&task| TaskReport {
            task,
            result: result(Outcome::Passed),
        })
        .collect()
}

impl World {
    fn new(policy: Policy) -> Self {
        World {
            coordinator: Coordinator::new(policy),
            now: Instant::now(),
        }
    }

    fn send(&mut self, conn: u64, message: ClientMessage) -> Vec<Action> {
        self.coordinator.handle(ConnId(conn), message, self.now)
    }

    fn hello_with(&mut self, conn: u64, token: Option<&str>, version: u16) -> Vec<Action> {
        self.coordinator.connect(ConnId(conn));
        self.send(
            conn,
            ClientMessage::Hello(Hello {
                protocol_version: version,
                client_id: format!("job-{conn}"),
                token: token.map(str::to_string),
                info: ClientInfo::default(),
            }),
        )
    }

    /// Connects, greets and joins; returns what the join answered.
    fn join(&mut self, conn: u64, key: &str, schema: &Schema) -> Vec<Action> {
        let welcome = self.hello_with(conn, None, PROTOCOL_VERSION);
        assert!(
            matches!(welcome[..], [Action::Send(_, ref m)] if matches!(**m, ServerMessage::Welcome(_)))
        );
        self.send(
            conn,
            ClientMessage::Join(Join::new(
                key.into(),
                schema,
                format!("scope:{}", schema.name),
                true,
            )),
        )
    }

    /// Like [`World::join`], for a client running `parallelism` tasks at once.
    fn join_running(
        &mut self,
        conn: u64,
        key: &str,
        schema: &Schema,
        parallelism: u32,
    ) -> Vec<Action> {
        let welcome = self.hello_with(conn, None, PROTOCOL_VERSION);
        assert!(
            matches!(welcome[..], [Action::Send(_, ref m)] if matches!(**m, ServerMessage::Welcome(_)))
        );
        let join = Join {
            parallelism,
            ..Join::new(key.into(), schema, format!("scope:{}", schema.name), true)
        };
        self.send(conn, ClientMessage::Join(join))
    }

    fn request(&mut self, conn: u64, max_tasks: u32) -> Vec<Action> {
        self.request_with_overhead(conn, max_tasks, 0)
    }

    fn request_with_overhead(
        &mut self,
        conn: u64,
        max_tasks: u32,
        overhead_ms: u32,
    ) -> Vec<Action> {
        self.send(
            conn,
            ClientMessage::Request(WorkRequest {
                max_tasks,
                overhead_ms,
            }),
        )
    }

    fn report(&mut self, conn: u64, reports: Vec<TaskReport>) -> Vec<Action> {
        self.send(conn, ClientMessage::Results(reports))
    }

    fn disconnect(&mut self, conn: u64) -> Vec<Action> {
        self.coordinator.disconnect(ConnId(conn), self.now)
    }

    fn leased_to(&self, key: &str, conn: u64) -> Vec<TaskId> {
        let (_, idx) = self.coordinator.clients[&ConnId(conn)]
            .session
            .clone()
            .expect("a member");
        self.coordinator.sessions[key].leased_to(idx)
    }
}

/// The tasks assigned to `conn` in `actions`, if any.
fn assignment(actions: &[Action], conn: u64) -> Option<Vec<TaskId>> {
    actions.iter().find_map(|action| match action {
        Action::Send(c, message) if *c == ConnId(conn) => match &**message {
            ServerMessage::Assignment(assignment) => Some(assignment.tasks.clone()),
            _ => None,
        },
        _ => None,
    })
}

/// Whether the assignment sent on `conn` says to compile first.
fn compile_first(actions: &[Action], conn: u64) -> Option<bool> {
    actions.iter().find_map(|action| match action {
        Action::Send(c, message) if *c == ConnId(conn) => match &**message {
            ServerMessage::Assignment(assignment) => Some(assignment.compile_first),
            _ => None,
        },
        _ => None,
    })
}

fn complete_report(actions: &[Action], conn: u64) -> Option<SessionReport> {
    actions.iter().find_map(|action| match action {
        Action::Send(c, message) if *c == ConnId(conn) => match &**message {
            ServerMessage::Complete { report, .. } => Some(report.clone()),
            _ => None,
        },
        _ => None,
    })
}

/// The error code sent to `conn`, asserting the connection is closed after it.
fn refusal(actions: &[Action], conn: u64) -> (ErrorCode, String) {
    match actions {
        [Action::Send(c, message), Action::Close(closed)]
            if *c == ConnId(conn) && *closed == *c =>
        {
            match &**message {
                ServerMessage::Error(e) => (e.code, e.message.clone()),
                other => panic!("expected an error, got {other:?}"),
            }
        }
        other => panic!("expected an error then a close, got {other:?}"),
    }
}

#[test]
fn two_clients_share_the_work_and_both_get_every_result() {
    let mut world = World::new(Policy::default());
    let schema = schema("s", 4);
    world.join(1, "k", &schema);
    world.join(2, "k", &schema);
    let a = assignment(&world.request(1, 1), 1).unwrap();
    let b = assignment(&world.request(2, 1), 2).unwrap();
    assert_eq!((a.clone(), b.clone()), (vec![0], vec![1]));
    assert!(world.report(1, passed(&a)).is_empty());
    // Two tasks left for two clients: a fair share is one each, however many client 1 would take.
    let a = assignment(&world.request(1, 10), 1).unwrap();
    assert_eq!(a, vec![2]);
    assert!(world.report(2, passed(&b)).is_empty());
    let b = assignment(&world.request(2, 10), 2).unwrap();
    assert_eq!(b, vec![3]);
    assert!(world.report(1, passed(&a)).is_empty());
    // Nothing left to hand out: client 1 waits.
    assert!(world.request(1, 1).is_empty());
    let done = world.report(2, passed(&b));
    let one = complete_report(&done, 1).expect("the waiting client 1 gets the report");
    let two = complete_report(&done, 2).expect("client 2 gets it too");
    assert_eq!(one, two);
    let clients: Vec<&str> = one.records.iter().map(|r| r.client.as_str()).collect();
    assert_eq!(clients, ["job-1", "job-2", "job-1", "job-2"]);
}

#[test]
fn a_lost_clients_tasks_go_at_once_to_a_waiting_client() {
    let mut world = World::new(Policy::default());
    let schema = schema("s", 2);
    world.join(1, "k", &schema);
    world.join(2, "k", &schema);
    assert_eq!(assignment(&world.request(1, 1), 1), Some(vec![0]));
    assert_eq!(assignment(&world.request(2, 1), 2), Some(vec![1]));
    world.report(2, passed(&[1]));
    assert!(world.request(2, 1).is_empty(), "client 2 waits for work");
    // Client 1 dies holding task 0: the task is pushed to client 2 without it asking again.
    let actions = world.disconnect(1);
    assert_eq!(assignment(&actions, 2), Some(vec![0]));
    assert_eq!(world.leased_to("k", 2), vec![0]);
    let done = world.report(2, passed(&[0]));
    let report = complete_report(&done, 2).unwrap();
    assert!(report.records.iter().all(|r| r.client == "job-2"));
}

#[test]
fn returned_tasks_wait_for_the_next_request_when_nobody_is_idle() {
    let mut world = World::new(Policy::default());
    let schema = schema("s", 3);
    world.join(1, "k", &schema);
    world.join(2, "k", &schema);
    assert_eq!(assignment(&world.request(1, 1), 1), Some(vec![0]));
    assert_eq!(assignment(&world.request(2, 1), 2), Some(vec![1]));
    assert!(
        world.disconnect(1).is_empty(),
        "client 2 is busy, so nothing is pushed"
    );
    world.report(2, passed(&[1]));
    // The returned task comes first: it was started before the never-started task 2.
    assert_eq!(assignment(&world.request(2, 1), 2), Some(vec![0]));
}

#[test]
fn a_failing_task_is_a_result_not_a_retry() {
    let mut world = World::new(Policy::default());
    let schema = schema("s", 2);
    world.join(1, "k", &schema);
    assert_eq!(assignment(&world.request(1, 5), 1), Some(vec![0]));
    world.report(
        1,
        vec![TaskReport {
            task: 0,
            result: result(Outcome::Failed),
        }],
    );
    assert_eq!(
        assignment(&world.request(1, 5), 1),
        Some(vec![1]),
        "task 0 is not handed out again"
    );
    let done = world.report(1, passed(&[1]));
    let report = complete_report(&done, 1).unwrap();
    assert_eq!(report.records[0].result.outcome, Outcome::Failed);
    assert!(!report.all_succeeded());
}

#[test]
fn joining_a_completed_session_gets_the_report_at_once() {
    let mut world = World::new(Policy::default());
    let schema = schema("s", 1);
    world.join(1, "k", &schema);
    world.request(1, 1);
    let first = complete_report(&world.report(1, passed(&[0])), 1).unwrap();
    let actions = world.join(2, "k", &schema);
    assert!(
        matches!(&*match &actions[0] { Action::Send(_, m) => m.clone(), _ => panic!() },
        ServerMessage::Joined(j) if !j.created && j.finished == 1)
    );
    assert_eq!(complete_report(&actions, 2), Some(first));
}

#[test]
fn an_empty_schema_is_complete_on_join() {
    let mut world = World::new(Policy::default());
    let actions = world.join(1, "k", &schema("s", 0));
    assert_eq!(complete_report(&actions, 1).unwrap().records, vec![]);
}

#[test]
fn a_conflicting_schema_is_refused_and_the_session_goes_on() {
    let mut world = World::new(Policy::default());
    let schema_a = schema("s", 2);
    world.join(1, "k", &schema_a);
    let (code, message) = refusal(&world.join(2, "k", &schema("s", 3)), 2);
    assert_eq!(code, ErrorCode::SchemaMismatch);
    assert!(
        message.contains("3 tasks") && message.contains("TASK_SHARDING_RUN_ID"),
        "{message}"
    );
    world.disconnect(2);
    assert_eq!(assignment(&world.request(1, 5), 1), Some(vec![0]));
}

#[test]
fn a_digest_that_does_not_match_the_schema_is_refused() {
    let mut world = World::new(Policy::default());
    world.hello_with(1, None, PROTOCOL_VERSION);
    let actions = world.send(
        1,
        ClientMessage::Join(Join {
            digest: schema("other", 1).digest(),
            ..Join::new("k".into(), &schema("s", 1), String::new(), true)
        }),
    );
    assert_eq!(refusal(&actions, 1).0, ErrorCode::InvalidSchema);
}

#[test]
fn tokens_are_checked() {
    let policy = Policy {
        token: Some("sesame".into()),
        ..Policy::default()
    };
    let mut world = World::new(policy);
    let (code, missing) = refusal(&world.hello_with(1, None, PROTOCOL_VERSION), 1);
    assert_eq!(code, ErrorCode::Unauthorized);
    assert!(missing.contains("requires a token"), "{missing}");
    // One wording for a missing and a wrong token (issue 14): a prober learns nothing.
    let (code, wrong) = refusal(&world.hello_with(2, Some("sesam"), PROTOCOL_VERSION), 2);
    assert_eq!(code, ErrorCode::Unauthorized);
    assert_eq!(wrong, missing);
    let welcome = world.hello_with(3, Some("sesame"), PROTOCOL_VERSION);
    assert!(matches!(&welcome[..], [Action::Send(..)]));
}

/// Regression (issue 14): a client id with control characters reached every member's summary
/// and, with a newline, forged coordinator log lines.
#[test]
fn client_ids_with_control_characters_are_refused() {
    let mut world = World::new(Policy::default());
    for (conn, id) in [
        (1, "a\nfake log line"),
        (2, "\u{1b}[2K"),
        (3, ""),
        (4, &"x".repeat(300)),
    ] {
        world.coordinator.connect(ConnId(conn));
        let actions = world.send(
            conn,
            ClientMessage::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                client_id: id.to_string(),
                token: None,
                info: ClientInfo::default(),
            }),
        );
        assert_eq!(
            refusal(&actions, conn).0,
            ErrorCode::ProtocolViolation,
            "{id:?}"
        );
    }
}

#[test]
fn another_protocol_version_is_refused_in_words() {
    let mut world = World::new(Policy::default());
    let (code, message) = refusal(&world.hello_with(1, None, PROTOCOL_VERSION + 1), 1);
    assert_eq!(code, ErrorCode::VersionMismatch);
    assert!(
        message.contains(&format!("version {}", PROTOCOL_VERSION + 1))
            && message.contains(&format!("version {PROTOCOL_VERSION}")),
        "{message}"
    );
    // A hello from a future version that does not even decode is told the same.
    world.coordinator.connect(ConnId(2));
    let error = FrameError::Decode {
        reason: "x".into(),
        hello_version: Some(9),
    };
    assert_eq!(
        refusal(&world.coordinator.bad_frame(ConnId(2), &error), 2).0,
        ErrorCode::VersionMismatch
    );
    let garbage = FrameError::Decode {
        reason: "x".into(),
        hello_version: None,
    };
    assert_eq!(
        refusal(&world.coordinator.bad_frame(ConnId(2), &garbage), 2).0,
        ErrorCode::BadFrame
    );
}

#[test]
fn messages_out_of_order_are_violations() {
    let mut world = World::new(Policy::default());
    world.coordinator.connect(ConnId(1));
    assert_eq!(
        refusal(&world.request(1, 1), 1).0,
        ErrorCode::ProtocolViolation
    );
    world.hello_with(2, None, PROTOCOL_VERSION);
    assert_eq!(
        refusal(&world.request(2, 1), 2).0,
        ErrorCode::ProtocolViolation
    );
    assert_eq!(
        refusal(&world.report(2, passed(&[0])), 2).0,
        ErrorCode::ProtocolViolation
    );
}

#[test]
fn reports_count_once_and_only_from_the_lease_holder() {
    let mut world = World::new(Policy::default());
    let schema = schema("s", 2);
    world.join(1, "k", &schema);
    world.join(2, "k", &schema);
    assert_eq!(assignment(&world.request(1, 1), 1), Some(vec![0]));
    // Client 2 reports a task it does not hold: ignored.
    assert!(world.report(2, passed(&[0])).is_empty());
    assert_eq!(world.leased_to("k", 1), vec![0]);
    // A task id the session does not have is a violation.
    assert_eq!(
        refusal(&world.report(2, passed(&[7])), 2).0,
        ErrorCode::ProtocolViolation
    );
    world.report(1, passed(&[0]));
    // A duplicate of a finished task changes nothing.
    world.report(1, passed(&[0]));
    assert_eq!(assignment(&world.request(1, 1), 1), Some(vec![1]));
    let done = world.report(1, passed(&[1]));
    assert_eq!(complete_report(&done, 1).unwrap().records.len(), 2);
}

#[test]
fn sessions_are_independent() {
    let mut world = World::new(Policy::default());
    world.join(1, "a", &schema("s", 1));
    world.join(2, "b", &schema("t", 1));
    assert_eq!(assignment(&world.request(1, 1), 1), Some(vec![0]));
    assert_eq!(assignment(&world.request(2, 1), 2), Some(vec![0]));
    let done = world.report(1, passed(&[0]));
    assert!(complete_report(&done, 1).is_some());
    assert!(complete_report(&done, 2).is_none());
}

#[test]
fn finished_and_abandoned_sessions_are_forgotten_after_the_ttl() {
    let ttl = Duration::from_secs(60);
    let mut world = World::new(Policy {
        session_ttl: ttl,
        ..Policy::default()
    });
    world.join(1, "done", &schema("s", 1));
    world.request(1, 1);
    world.report(1, passed(&[0]));
    world.join(2, "abandoned", &schema("s", 1));
    world.request(2, 1);
    world.disconnect(2);
    world.now += ttl;
    // The completed session's client is still connected: it stays.
    assert_eq!(
        world.coordinator.tick(world.now).1,
        vec!["abandoned".to_string()]
    );
    world.disconnect(1);
    assert!(
        world.coordinator.tick(world.now).1.is_empty(),
        "ttl counts from the last leave"
    );
    world.now += ttl;
    assert_eq!(
        world.coordinator.tick(world.now).1,
        vec!["done".to_string()]
    );
    assert_eq!(world.coordinator.session_count(), 0);
    // The same key now starts afresh.
    let actions = world.join(3, "done", &schema("s", 1));
    assert!(complete_report(&actions, 3).is_none());
}

#[test]
fn the_session_limit_refuses_new_sessions_only() {
    let mut world = World::new(Policy {
        max_sessions: 1,
        ..Policy::default()
    });
    world.join(1, "a", &schema("s", 1));
    assert_eq!(
        refusal(&world.join(2, "b", &schema("s", 1)), 2).0,
        ErrorCode::Busy
    );
    let actions = world.join(3, "a", &schema("s", 1));
    assert!(matches!(&actions[..], [Action::Send(..)]));
}

#[test]
fn batches_follow_the_clients_limit_and_the_policy() {
    let mut world = World::new(Policy {
        max_batch: 4,
        ..Policy::default()
    });
    let schema = schema("s", 40);
    world.join(1, "k", &schema);
    // A large per-batch overhead asks for long batches; the policy and the client cap them.
    let big = |world: &mut World, max| {
        assignment(&world.request_with_overhead(1, max, 1_000_000), 1)
            .unwrap()
            .len()
    };
    assert_eq!(big(&mut world, 100), 4);
    assert_eq!(big(&mut world, 2), 2);
    assert_eq!(big(&mut world, 0), 1, "at least one");
}

fn report_of(task: TaskId, ms: u64, executed: bool) -> TaskReport {
    TaskReport {
        task,
        result: TaskResult {
            outcome: Outcome::Passed,
            exit_code: Some(0),
            duration_ms: ms,
            executed,
            log_tail: None,
            build_ms: 0,
        },
    }
}

/// The tasks aborted on `conn` in `actions`, if any.
fn aborted(actions: &[Action], conn: u64) -> Option<Vec<TaskId>> {
    actions.iter().find_map(|action| match action {
        Action::Send(c, message) if *c == ConnId(conn) => match &**message {
            ServerMessage::Abort(tasks) => Some(tasks.clone()),
            _ => None,
        },
        _ => None,
    })
}

#[test]
fn history_puts_the_longest_tasks_first_in_the_next_session() {
    let mut world = World::new(Policy::default());
    let schema = schema("s", 4);
    // A first run records how long each task took when it actually ran (not cache hits).
    world.join(1, "run-1", &schema);
    let mut all = Vec::new();
    while all.len() < 4 {
        all.extend(assignment(&world.request(1, 10), 1).unwrap());
    }
    assert_eq!(all, vec![0, 1, 2, 3], "without history: the listed order");
    world.report(
        1,
        vec![
            report_of(0, 100, true),
            report_of(1, 900, true),
            report_of(2, 5000, false),
            report_of(3, 300, true),
        ],
    );
    // The next run of the same scope: longest first. The cache hit's 5000 ms taught nothing,
    // so task 2 gets the median of the known ones (300 ms), ties with task 3 and keeps its
    // listed place before it.
    world.join(2, "run-2", &schema);
    let order: Vec<TaskId> = (0..4)
        .map(|_| {
            let batch = assignment(&world.request(2, 1), 2).unwrap();
            world.report(2, batch.iter().map(|&t| report_of(t, 1, true)).collect());
            batch[0]
        })
        .collect();
    assert_eq!(order, vec![1, 2, 3, 0]);
}

#[test]
fn a_backup_copy_races_a_long_task_and_the_loser_is_aborted() {
    let mut world = World::new(Policy::default());
    let schema = schema("s", 2);
    world
        .coordinator
        .history_mut()
        .record("scope:s", "task-0", 60_000);
    world
        .coordinator
        .history_mut()
        .record("scope:s", "task-1", 10);
    world.join(1, "k", &schema);
    world.join(2, "k", &schema);
    assert_eq!(
        assignment(&world.request(1, 1), 1),
        Some(vec![0]),
        "longest first"
    );
    assert_eq!(assignment(&world.request(2, 1), 2), Some(vec![1]));
    world.report(2, vec![report_of(1, 10, true)]);
    // Client 2 is idle with nothing queued, while task 0 has ~60 s to go on client 1.
    assert_eq!(
        assignment(&world.request(2, 1), 2),
        Some(vec![0]),
        "a backup copy"
    );
    assert_eq!(
        world.leased_to("k", 1),
        vec![0],
        "client 1 still holds the lease"
    );
    // The copy finishes first: its result counts, the original is aborted, and the session
    // completes with task 0 recorded once, from client 2.
    world.now += Duration::from_secs(5);
    let actions = world.report(2, vec![report_of(0, 5_000, true)]);
    assert_eq!(aborted(&actions, 1), Some(vec![0]));
    let report = complete_report(&actions, 1).expect("complete");
    assert_eq!(report.records[0].client, "job-2");
    // The original's late result changes nothing.
    assert!(world.report(1, vec![report_of(0, 60_000, true)]).is_empty());
}

#[test]
fn a_backup_takes_over_when_the_original_holder_dies() {
    let mut world = World::new(Policy::default());
    let schema = schema("s", 2);
    world
        .coordinator
        .history_mut()
        .record("scope:s", "task-0", 60_000);
    world.join(1, "k", &schema);
    world.join(2, "k", &schema);
    assert_eq!(assignment(&world.request(1, 1), 1), Some(vec![0]));
    assert_eq!(assignment(&world.request(2, 1), 2), Some(vec![1]));
    world.report(2, vec![report_of(1, 10, true)]);
    assert_eq!(assignment(&world.request(2, 1), 2), Some(vec![0]));
    // Client 1 dies: the task is not queued again (client 2 runs it already).
    assert!(world.disconnect(1).is_empty());
    assert_eq!(world.leased_to("k", 2), vec![0]);
    let done = world.report(2, vec![report_of(0, 100, true)]);
    assert!(complete_report(&done, 2).is_some());
}

#[test]
fn backups_are_only_made_when_enabled() {
    let schema = schema("s", 3);
    // Off by policy: the idle client just waits.
    let mut world = World::new(Policy {
        backups: false,
        ..Policy::default()
    });
    world
        .coordinator
        .history_mut()
        .record("scope:s", "task-0", 60_000);
    world.join(1, "k", &schema);
    world.join(2, "k", &schema);
    assert_eq!(assignment(&world.request(1, 1), 1), Some(vec![0]));
    // Client 2 takes everything else, then finds nothing to do: it waits, with no copy made.
    while let Some(batch) = assignment(&world.request(2, 5), 2) {
        world.report(2, batch.iter().map(|&t| report_of(t, 10, true)).collect());
    }
    assert!(world.leased_to("k", 2).is_empty());
}

/// Issue 11: results arrive per task as they finish, so a straggling batch's remainder is known;
/// an idle member gets copies of exactly that, each task is recorded once (the first result),
/// and the copy the other member still runs is aborted.
#[test]
fn a_batchs_unfinished_remainder_is_backed_up_and_recorded_once() {
    let schema = schema("s", 4);
    let mut world = World::new(Policy::default());
    for task in 0..4 {
        world
            .coordinator
            .history_mut()
            .record("scope:s", &format!("task-{task}"), 20_000);
    }
    world.join(1, "k", &schema);
    // A large per-batch overhead makes the first batch take all four.
    let batch = assignment(&world.request_with_overhead(1, 4, 100_000), 1).unwrap();
    assert_eq!(batch, vec![0, 1, 2, 3]);
    world.join(2, "k", &schema);
    // Task 0 finishes and is reported on its own, before the batch ends.
    world.now += Duration::from_secs(20);
    world.report(1, vec![report_of(0, 20_000, true)]);
    // Client 2 is idle with nothing queued: it gets copies of the unfinished remainder.
    assert_eq!(assignment(&world.request(2, 10), 2), Some(vec![1, 2, 3]));
    assert_eq!(
        world.leased_to("k", 1),
        vec![1, 2, 3],
        "client 1 keeps its leases"
    );
    // A third idle client gets nothing more: every task has its one copy.
    world.join(3, "k", &schema);
    assert!(world.request(3, 10).is_empty());
    // The copy finishes task 3 first: client 1 is told to stop it, and only it.
    let actions = world.report(2, vec![report_of(3, 5_000, true)]);
    assert_eq!(aborted(&actions, 1), Some(vec![3]));
    // Client 1 finishes 1 and 2 first: client 2 is told to stop those.
    let actions = world.report(1, vec![report_of(1, 20_000, true)]);
    assert_eq!(aborted(&actions, 2), Some(vec![1]));
    let actions = world.report(1, vec![report_of(2, 20_000, true), report_of(3, 1, true)]);
    assert_eq!(aborted(&actions, 2), Some(vec![2]));
    let report = complete_report(&actions, 1).expect("complete");
    let clients: Vec<&str> = report.records.iter().map(|r| r.client.as_str()).collect();
    assert_eq!(
        clients,
        ["job-1", "job-1", "job-1", "job-2"],
        "each result once, the first"
    );
    assert_eq!(
        report.records[3].result.duration_ms, 5_000,
        "the first result of task 3 stands"
    );
    // Late copies change nothing.
    assert!(world.report(2, vec![report_of(1, 1, true)]).is_empty());
}

/// Regression (the differential harness, about one run in three): a job testing on two cores
/// took the last three quick targets at once, and the idle job was at once given copies of all
/// three, run twice for nothing — their 3 × 1.2 s expected (a stand-in inflated by the first
/// target's building) counted as if run one after another. The holder runs them side by side:
/// 1.8 s, not worth a copy that costs two 0.7 s start-ups and must save a second. On a job
/// running one at a time the same remainder does take 3.6 s, and is copied.
#[test]
fn regression_a_quick_remainder_of_a_job_testing_in_parallel_is_not_run_twice() {
    for (parallelism, copied) in [(2, false), (1, true)] {
        let schema = schema("s", 4);
        let mut world = World::new(Policy::default());
        world.join_running(1, "k", &schema, parallelism);
        assert_eq!(assignment(&world.request(1, 1), 1), Some(vec![0]));
        world.now += Duration::from_millis(1_200);
        world.report(1, vec![report_of(0, 1_200, true)]);
        // A large overhead makes it take the rest at once, as a job alone in its session does.
        let batch = assignment(&world.request_with_overhead(1, 10, 100_000), 1).unwrap();
        assert_eq!(batch, vec![1, 2, 3]);
        world.join_running(2, "k", &schema, parallelism);
        let copies = assignment(&world.request_with_overhead(2, 10, 700), 2);
        assert_eq!(
            copies.is_some(),
            copied,
            "parallelism {parallelism}: copies {copies:?}"
        );
    }
}

#[test]
fn the_order_and_batching_of_the_original_project_are_available() {
    let mut world = World::new(Policy {
        order: Order::Listed,
        batching: Batching::Single,
        ..Policy::default()
    });
    let schema = schema("s", 3);
    world
        .coordinator
        .history_mut()
        .record("scope:s", "task-2", 60_000);
    world.join(1, "k", &schema);
    assert_eq!(assignment(&world.request(1, 10), 1), Some(vec![0]));
}

#[test]
fn no_backups_without_grounds_to_expect_a_long_task() {
    // Nothing known and nothing executed yet (only cache hits): no copies on a guess.
    let mut world = World::new(Policy::default());
    let schema = schema("s", 2);
    world.join(1, "k", &schema);
    world.join(2, "k", &schema);
    assert_eq!(assignment(&world.request(1, 1), 1), Some(vec![0]));
    assert_eq!(assignment(&world.request(2, 1), 2), Some(vec![1]));
    world.report(2, vec![report_of(1, 0, false)]);
    assert!(
        world.request(2, 1).is_empty(),
        "client 2 waits instead of copying task 0"
    );
}

#[test]
fn only_the_first_client_sends_the_schema() {
    let mut world = World::new(Policy::default());
    let schema = schema("s", 3);
    let digest_only =
        |key: &str| ClientMessage::Join(Join::new(key.into(), &schema, "x".into(), false));
    // No session yet: the coordinator asks for the schema and keeps the connection.
    world.hello_with(1, None, PROTOCOL_VERSION);
    let actions = world.send(1, digest_only("k"));
    assert!(matches!(&actions[..], [Action::Send(_, m)] if **m == ServerMessage::NeedSchema));
    let actions = world.send(
        1,
        ClientMessage::Join(Join::new("k".into(), &schema, "x".into(), true)),
    );
    assert!(
        matches!(&actions[..], [Action::Send(_, m)] if matches!(**m, ServerMessage::Joined(_)))
    );
    // Later clients join with the digest alone.
    world.hello_with(2, None, PROTOCOL_VERSION);
    let actions = world.send(2, digest_only("k"));
    assert!(
        matches!(&actions[..], [Action::Send(_, m)] if matches!(**m, ServerMessage::Joined(ref j) if j.clients == 2))
    );
    // A digest that differs is refused, with the client's own name and count in the message.
    world.hello_with(3, None, PROTOCOL_VERSION);
    let other = Schema::new("t", ["a"]).unwrap();
    let (code, message) = refusal(
        &world.send(
            3,
            ClientMessage::Join(Join::new("k".into(), &other, "x".into(), false)),
        ),
        3,
    );
    assert_eq!(code, ErrorCode::SchemaMismatch);
    assert!(message.contains("\"t\" (1 tasks"), "{message}");
}

#[test]
fn clients_joining_while_the_schema_is_on_its_way_wait_instead_of_uploading_it() {
    let mut world = World::new(Policy::default());
    let schema = schema("s", 3);
    let digest_only = || ClientMessage::Join(Join::new("k".into(), &schema, "x".into(), false));
    for conn in 1..=3 {
        world.hello_with(conn, None, PROTOCOL_VERSION);
    }
    let asked = world.send(1, digest_only());
    assert!(matches!(&asked[..], [Action::Send(_, m)] if **m == ServerMessage::NeedSchema));
    // Clients 2 and 3 are not asked for the schema: they wait.
    assert!(world.send(2, digest_only()).is_empty());
    assert!(world.send(3, digest_only()).is_empty());
    // Client 1 goes away without sending it: the next in line is asked.
    let next = world.disconnect(1);
    assert!(matches!(&next[..], [Action::Send(ConnId(2), m)] if **m == ServerMessage::NeedSchema));
    // Client 2 sends it: the session exists, and client 3 joins it at once.
    let actions = world.send(
        2,
        ClientMessage::Join(Join::new("k".into(), &schema, "x".into(), true)),
    );
    let joined: Vec<ConnId> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(c, m) if matches!(**m, ServerMessage::Joined(_)) => Some(*c),
            _ => None,
        })
        .collect();
    assert_eq!(joined, vec![ConnId(2), ConnId(3)]);
}

/// The ticket in the `Joined` sent to `conn`.
fn ticket(actions: &[Action], conn: u64) -> Ticket {
    actions
        .iter()
        .find_map(|action| match action {
            Action::Send(c, message) if *c == ConnId(conn) => match &**message {
                ServerMessage::Joined(joined) => Some(joined.ticket),
                _ => None,
            },
            _ => None,
        })
        .expect("joined")
}

impl World {
    /// Connects `conn`, greets and joins `key` as the member `ticket` names, saying it runs
    /// (or ran) `running`.
    fn resume(
        &mut self,
        conn: u64,
        key: &str,
        schema: &Schema,
        ticket: Ticket,
        running: &[TaskId],
    ) -> Vec<Action> {
        self.hello_with(conn, None, PROTOCOL_VERSION);
        let join = Join {
            resume: Some(ticket),
            running: running.to_vec(),
            ..Join::new(key.into(), schema, format!("scope:{}", schema.name), false)
        };
        self.send(conn, ClientMessage::Join(join))
    }

    /// A coordinator restarted from what this one stored (all of it written).
    fn restart(&mut self, policy: Policy) {
        let mut store = persist::MemoryStore::default();
        store.apply(&self.coordinator.journal());
        self.coordinator =
            Coordinator::restore(policy, Estimates::default(), store.snapshot(), self.now);
    }
}

#[test]
fn a_client_that_comes_back_with_its_ticket_is_the_same_member() {
    let mut world = World::new(Policy::default());
    let schema = schema("s", 4);
    let ticket = ticket(&world.join(1, "k", &schema), 1);
    let mine = assignment(&world.request(1, 2), 1).unwrap();
    // Back on a new connection before the old one is noticed lost: the leases stay, the old
    // connection is closed, and the results count.
    let back = world.resume(2, "k", &schema, ticket, &mine);
    assert!(back.contains(&Action::Close(ConnId(1))), "{back:?}");
    assert!(
        matches!(&*back_joined(&back), ServerMessage::Joined(j) if j.resumed && j.ticket == ticket)
    );
    assert_eq!(world.leased_to("k", 2), mine);
    assert!(
        world.disconnect(1).is_empty(),
        "the old connection no longer speaks for it"
    );
    assert_eq!(world.leased_to("k", 2), mine);
    world.report(2, passed(&mine));
    let report = world.coordinator.sessions["k"].records();
    assert!(mine
        .iter()
        .all(|t| report[*t as usize].as_deref() == Some("job-1")));
}

fn back_joined(actions: &[Action]) -> Arc<ServerMessage> {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Send(_, m) if matches!(**m, ServerMessage::Joined(_)) => Some(m.clone()),
            _ => None,
        })
        .expect("joined")
}

#[test]
fn a_result_from_a_client_whose_lease_went_to_another_does_not_count() {
    let mut world = World::new(Policy::default());
    let schema = schema("s", 2);
    let ticket = ticket(&world.join(1, "k", &schema), 1);
    world.join(2, "k", &schema);
    let first = assignment(&world.request(1, 1), 1).unwrap();
    // Client 1 is lost; its task goes to client 2...
    world.disconnect(1);
    let second = assignment(&world.request(2, 1), 2).unwrap();
    assert_eq!(second, first);
    // ...client 1 was only partitioned and comes back naming the task, but client 2 holds it
    // now: client 1's result is not evidence (its lease went back), client 2's counts.
    world.resume(3, "k", &schema, ticket, &first);
    let actions = world.report(3, passed(&first));
    assert_eq!(aborted(&actions, 2), None);
    assert_eq!(
        world.coordinator.sessions["k"].records()[first[0] as usize],
        None
    );
    world.report(2, vec![report_of(first[0], 999, true)]);
    let records = world.coordinator.sessions["k"].records();
    assert_eq!(records[first[0] as usize].as_deref(), Some("job-2"));
}

#[test]
fn a_client_back_with_the_result_of_a_task_still_queued_claims_it_and_it_counts() {
    let mut world = World::new(Policy::default());
    let schema = schema("s", 2);
    let ticket = ticket(&world.join(1, "k", &schema), 1);
    let first = assignment(&world.request(1, 1), 1).unwrap();
    world.disconnect(1);
    world.resume(2, "k", &schema, ticket, &first);
    assert_eq!(world.leased_to("k", 2), first);
    world.report(2, passed(&first));
    let records = world.coordinator.sessions["k"].records();
    assert_eq!(records[first[0] as usize].as_deref(), Some("job-1"));
}

/// The property test's first shrunk case: `[Join, RequestLost, Join, ReportAny]`. The answer to a
/// request went to a connection that had died unseen; the client came back not knowing of the
/// task, the lease went back to the queue, yet its report of the task was accepted.
#[test]
fn a_lease_lost_with_an_unseen_dead_connection_gives_no_say_over_the_task() {
    let mut world = World::new(Policy::default());
    let schema = schema("s", 2);
    let ticket = ticket(&world.join(1, "k", &schema), 1);
    // The assignment is sent on connection 1, which the client has already lost.
    let lost = assignment(&world.request(1, 1), 1).unwrap();
    world.resume(2, "k", &schema, ticket, &[]);
    assert!(world.leased_to("k", 2).is_empty());
    world.report(2, passed(&lost));
    assert_eq!(
        world.coordinator.sessions["k"].records()[lost[0] as usize],
        None
    );
}

/// The property test's second shrunk case: `[Request, RequestLost, Wait(15000), Join,
/// ReportAny]`: the same, with the dead connection noticed (idle timeout) before the client is
/// back.
#[test]
fn a_lease_released_by_the_idle_timeout_gives_no_say_over_the_task() {
    let mut world = World::new(Policy::default());
    let schema = schema("s", 2);
    let ticket = ticket(&world.join(1, "k", &schema), 1);
    let lost = assignment(&world.request(1, 1), 1).unwrap();
    world.now += Duration::from_secs(15);
    world.disconnect(1);
    world.resume(2, "k", &schema, ticket, &[]);
    world.report(2, passed(&lost));
    assert_eq!(
        world.coordinator.sessions["k"].records()[lost[0] as usize],
        None
    );
}

#[test]
fn a_ticket_is_good_for_its_own_session_only() {
    let mut world = World::new(Policy::default());
    let ticket = ticket(&world.join(1, "a", &schema("s", 2)), 1);
    world.join(2, "b", &schema("s", 2));
    let (code, _) = refusal(&world.resume(3, "b", &schema("s", 2), ticket, &[0, 1]), 3);
    assert_eq!(code, ErrorCode::UnknownTicket);
    // The replayed claim took nothing.
    assert!(assignment(&world.request(2, 2), 2).is_some());
}

#[test]
fn after_a_restart_leases_wait_for_their_holders_then_go_to_others() {
    let policy = Policy {
        resume_grace: Duration::from_secs(10),
        ..Policy::default()
    };
    let mut world = World::new(policy.clone());
    let schema = schema("s", 3);
    let one = ticket(&world.join(1, "k", &schema), 1);
    let two = ticket(&world.join(2, "k", &schema), 2);
    let a = assignment(&world.request(1, 1), 1).unwrap();
    let b = assignment(&world.request(2, 1), 2).unwrap();
    world.report(1, passed(&a));
    world.restart(policy);
    // Client 1 comes back and asks for work: the finished task stays finished, the queued one
    // waits while client 2 may still come back (the settle period), then is handed out.
    world.resume(3, "k", &schema, one, &[]);
    assert!(world.request(3, 3).is_empty());
    world.now += Duration::from_secs(5);
    let (actions, _) = world.coordinator.tick(world.now);
    let rest = assignment(&actions, 3).unwrap();
    assert!(!rest.contains(&a[0]) && !rest.contains(&b[0]), "{rest:?}");
    // Client 2 never comes back: after the grace its task goes to client 3 too.
    world.report(3, passed(&rest));
    assert!(world.request(3, 3).is_empty());
    world.now += Duration::from_secs(5);
    let (actions, _) = world.coordinator.tick(world.now);
    assert_eq!(assignment(&actions, 3), Some(b.clone()));
    let _ = two;
}

#[test]
fn a_client_back_after_a_crash_claims_the_task_whose_lease_was_not_stored() {
    let mut world = World::new(Policy::default());
    let schema = schema("s", 2);
    let one = ticket(&world.join(1, "k", &schema), 1);
    // Stored before the lease; the coordinator is killed before it stores the lease.
    let mut store = persist::MemoryStore::default();
    store.apply(&world.coordinator.journal());
    let mine = assignment(&world.request(1, 1), 1).unwrap();
    world.coordinator = Coordinator::restore(
        Policy::default(),
        Estimates::default(),
        store.snapshot(),
        world.now,
    );
    // It comes back saying what it runs: the task is its own again and its result counts.
    world.resume(2, "k", &schema, one, &mine);
    assert_eq!(world.leased_to("k", 2), mine);
    world.report(2, passed(&mine));
    let records = world.coordinator.sessions["k"].records();
    assert_eq!(records[mine[0] as usize].as_deref(), Some("job-1"));
}

/// Regression: a lease whose assignment was lost with a connection the coordinator had not yet
/// seen die stayed with the client when it came back, though the client never knew of it; with
/// no backup copies the session waited for that task forever.
#[test]
fn leases_a_returning_client_does_not_know_of_go_back_to_the_queue() {
    let policy = Policy {
        backups: false,
        ..Policy::default()
    };
    let mut world = World::new(policy);
    let schema = schema("s", 3);
    let one = ticket(&world.join(1, "k", &schema), 1);
    world.join(2, "k", &schema);
    // Client 1 runs a task, reports it, asks for more, and the answer is lost with its connection.
    let ran = assignment(&world.request(1, 1), 1).unwrap();
    world.report(1, passed(&ran));
    let lost = assignment(&world.request(1, 1), 1).unwrap();
    // Client 2 takes the rest and waits for more.
    let rest = assignment(&world.request(2, 3), 2).unwrap();
    world.report(2, passed(&rest));
    assert!(
        world.request(2, 3).is_empty(),
        "nothing is left to hand out"
    );
    // Client 1 comes back naming the task it ran: the lost one goes to the waiting client.
    let back = world.resume(3, "k", &schema, one, &ran);
    assert_eq!(assignment(&back, 2), Some(lost.clone()));
    assert!(world.leased_to("k", 3).is_empty());
    let actions = world.report(2, passed(&lost));
    assert!(complete_report(&actions, 2).is_some(), "{actions:?}");
}

#[test]
fn a_client_that_does_not_send_the_schema_in_time_is_not_waited_for() {
    let mut world = World::new(Policy::default());
    let schema = schema("s", 2);
    let digest_only = |schema: &Schema| {
        ClientMessage::Join(Join::new("k".into(), schema, "scope:s".into(), false))
    };
    world.hello_with(1, None, PROTOCOL_VERSION);
    world.hello_with(2, None, PROTOCOL_VERSION);
    let asked = world.send(1, digest_only(&schema));
    assert!(matches!(&asked[..], [Action::Send(_, m)] if **m == ServerMessage::NeedSchema));
    assert!(
        world.send(2, digest_only(&schema)).is_empty(),
        "client 2 waits"
    );
    // Client 1 stays silent: after a while client 2 is asked instead, and creates the session.
    world.now += SCHEMA_TIMEOUT;
    let (actions, _) = world.coordinator.tick(world.now);
    assert!(
        matches!(&actions[..], [Action::Send(c, m)] if *c == ConnId(2) && **m == ServerMessage::NeedSchema)
    );
    let joined = world.send(
        2,
        ClientMessage::Join(Join::new("k".into(), &schema, "scope:s".into(), true)),
    );
    assert!(matches!(&*back_joined(&joined), ServerMessage::Joined(j) if j.created));
    // The slow client, sending it at last, joins the session that now exists.
    let late = world.send(
        1,
        ClientMessage::Join(Join::new("k".into(), &schema, "scope:s".into(), true)),
    );
    assert!(matches!(&*back_joined(&late), ServerMessage::Joined(j) if !j.created));
}

#[test]
fn forgotten_sessions_are_remembered_for_the_store_only_when_there_is_one() {
    let policy = Policy {
        session_ttl: Duration::from_secs(1),
        ..Policy::default()
    };
    // Kept in memory only: nothing takes journals, so nothing piles up for them.
    let mut world = World::new(policy.clone());
    world.join(1, "k", &schema("s", 0));
    world.disconnect(1);
    world.now += Duration::from_secs(2);
    assert_eq!(world.coordinator.tick(world.now).1, ["k"]);
    assert!(world.coordinator.forgotten.is_empty());
    // With a store: the forgotten session's rows are cleared by the next journal.
    let mut world = World::new(policy);
    world.join(1, "k", &schema("s", 0));
    assert!(world.coordinator.journal().sessions.contains_key("k"));
    world.disconnect(1);
    world.now += Duration::from_secs(2);
    world.coordinator.tick(world.now);
    assert!(world.coordinator.journal().cleared.contains("k"));
}

/// Issue 11: without history, priors (a Bazel test's `size` as a weight) decide the cold
/// queue's order, so the heaviest tasks start first and on different jobs instead of landing
/// in one job's batch.
#[test]
fn priors_spread_the_heaviest_tasks_of_a_cold_session_over_the_jobs() {
    let weights = [1, 1, 4, 1, 2, 4, 1, 1, 2, 1, 4, 1];
    let mut schema = schema("s", weights.len());
    for (task, weight) in schema.tasks.iter_mut().zip(weights) {
        task.weight = Some(weight);
    }
    let mut world = World::new(Policy::default());
    for conn in 1..=3 {
        world.join(conn, "cold", &schema);
    }
    let heavy: Vec<TaskId> = vec![2, 5, 10];
    let firsts: Vec<Vec<TaskId>> = (1..=3)
        .map(|conn| assignment(&world.request_with_overhead(conn, 10, 2000), conn).unwrap())
        .collect();
    for (first, &heavy) in firsts.iter().zip(&heavy) {
        assert_eq!(first, &[heavy], "first batches: {firsts:?}");
    }
    // The weight-2 tasks come next, before the weight-1 ones.
    let next = assignment(&world.request_with_overhead(1, 1, 2000), 1).unwrap();
    assert_eq!(next, [4]);
}

mod logs;
mod runs;
mod view;

impl World {
    /// Like [`World::join`], for a session that stops at its first failure.
    fn join_fail_fast(&mut self, conn: u64, key: &str, schema: &Schema) -> Vec<Action> {
        self.hello_with(conn, None, PROTOCOL_VERSION);
        self.send(
            conn,
            ClientMessage::Join(Join {
                fail_fast: true,
                ..Join::new(key.into(), schema, format!("scope:{}", schema.name), true)
            }),
        )
    }
}

/// Issue 11: with Bazel's `--notest_keep_going` the first failing task stops the whole session:
/// every job is sent the same final report at once (which stops its batch), the tasks nobody
/// finished are NO STATUS, run by no one, and later results change nothing.
#[test]
fn a_session_that_stops_at_its_first_failure_completes_when_a_task_fails() {
    let schema = schema("s", 6);
    let mut world = World::new(Policy::default());
    world.join_fail_fast(1, "k", &schema);
    world.join_fail_fast(2, "k", &schema);
    let first = assignment(&world.request(1, 2), 1).unwrap();
    let second = assignment(&world.request(2, 2), 2).unwrap();
    world.report(1, passed(&first[..1]));
    let failing = TaskReport {
        task: second[0],
        result: result(Outcome::Failed),
    };
    let actions = world.report(2, vec![failing]);
    let to_1 = complete_report(&actions, 1).expect("job 1 is told at once");
    let to_2 = complete_report(&actions, 2).expect("job 2 too");
    assert_eq!(to_1, to_2);
    let outcomes: Vec<(Outcome, &str)> = to_1
        .records
        .iter()
        .map(|r| (r.result.outcome, r.client.as_str()))
        .collect();
    let mut want = vec![(Outcome::NoStatus, ""); 6];
    want[first[0] as usize] = (Outcome::Passed, "job-1");
    want[second[0] as usize] = (Outcome::Failed, "job-2");
    assert_eq!(outcomes, want);
    assert!(to_1
        .records
        .iter()
        .all(|r| r.result.outcome != Outcome::NoStatus
            || (!r.result.executed && r.result.exit_code.is_none())));
    // A result that arrives after the stop changes nothing.
    assert!(world.report(1, passed(&first[1..])).is_empty());

    // Without it, a failure is one result among others.
    let mut world = World::new(Policy::default());
    world.join(1, "k", &schema);
    let batch = assignment(&world.request(1, 2), 1).unwrap();
    let failing = TaskReport {
        task: batch[0],
        result: result(Outcome::Failed),
    };
    assert!(complete_report(&world.report(1, vec![failing]), 1).is_none());
}

/// Issue 11: a job's later batches come from the packages (groups) it already has, so that
/// what their targets share is built once, by it.
#[test]
fn a_job_is_kept_to_the_groups_it_already_has() {
    let mut tasks: Vec<schemas::Task> = (0..16)
        .map(|i: u32| schemas::Task {
            group: Some(if i.is_multiple_of(2) { "//a" } else { "//b" }.into()),
            ..schemas::Task::new(format!("task-{i}"))
        })
        .collect();
    // Two long ones first, one of each package: each job starts with one.
    for task in &mut tasks[..2] {
        task.weight = Some(8);
    }
    let schema = Schema {
        name: "s".into(),
        tasks,
    };
    schema.validate().unwrap();
    let mut world = World::new(Policy::default());
    world.join(1, "k", &schema);
    world.join(2, "k", &schema);
    assert_eq!(assignment(&world.request(1, 1), 1), Some(vec![0]));
    assert_eq!(assignment(&world.request(2, 1), 2), Some(vec![1]));
    world.report(1, passed(&[0]));
    world.report(2, passed(&[1]));
    let group = |t: &TaskId| t % 2;
    for _ in 0..2 {
        for (conn, own) in [(1, 0), (2, 1)] {
            let Some(batch) = assignment(&world.request_with_overhead(conn, 3, 100_000), conn)
            else {
                continue;
            };
            assert!(batch.len() > 1, "batches of several tasks, to choose from");
            assert!(
                batch.iter().all(|t| group(t) == own),
                "job {conn} got {batch:?}"
            );
            world.report(conn, passed(&batch));
        }
    }
}

/// Issue 11: a prerequisite (a library the tests link) is handed out before everything else,
/// even a longer test; a job given work while it is being built elsewhere is told to compile
/// first, with a batch large enough that its compiling covers the prerequisite's build (half
/// as much again: here more than the longest-task bound of the session's start would give);
/// the job building it is not told, nor is anyone once it is built.
#[test]
fn prerequisites_go_first_and_the_others_compile_first_meanwhile() {
    let mut schema = schema("s", 42);
    // Task 0 the longest (weight 10), the prerequisite listed last (weight 8), 1-unit tests.
    schema.tasks[0].weight = Some(10);
    schema.tasks[41].weight = Some(8);
    schema.tasks[41].prerequisite = true;
    let mut world = World::new(Policy::default());
    for conn in 1..=3 {
        world.join(conn, "k", &schema);
    }
    let first = world.request_with_overhead(1, 100, 10);
    assert_eq!(assignment(&first, 1), Some(vec![41]));
    assert_eq!(compile_first(&first, 1), Some(false));
    let second = world.request_with_overhead(2, 100, 10);
    let batch = assignment(&second, 2).unwrap();
    assert_eq!(compile_first(&second, 2), Some(true));
    // The longest test and at least two more: 12 units, not the 10 of the longest alone.
    assert!(batch.contains(&0) && batch.len() >= 3, "{batch:?}");
    world.report(1, passed(&[41]));
    let third = world.request_with_overhead(3, 100, 10);
    assert!(assignment(&third, 3).is_some());
    assert_eq!(compile_first(&third, 3), Some(false));
}

/// Issue 11: batches are sized in expected wall time on the job. One 1-core job holds the
/// session's one huge task; then a 4-core and a 1-core job ask in turn, six slots in all. With
/// 400 s of 1 s tasks queued and a 10 ms overhead a slot's target is 4 × sqrt(400 s × 10 ms / 6)
/// ≈ 3.27 s: the 4-core job is given four slots' worth (13 tasks), the 1-core job one (3 tasks,
/// 4 × sqrt(387 s × 10 ms / 6) ≈ 3.21 s).
#[test]
fn a_job_testing_on_more_cores_is_given_more_tasks_for_the_same_wall_time() {
    let mut schema = schema("s", 401);
    schema.tasks[0].weight = Some(1000);
    let mut world = World::new(Policy::default());
    world.join_running(1, "k", &schema, 4);
    world.join_running(2, "k", &schema, 1);
    world.join_running(3, "k", &schema, 1);
    let huge = assignment(&world.request_with_overhead(3, 500, 10), 3).unwrap();
    assert_eq!(huge, [0]);
    let four = assignment(&world.request_with_overhead(1, 500, 10), 1).unwrap();
    let one = assignment(&world.request_with_overhead(2, 500, 10), 2).unwrap();
    assert_eq!((four.len(), one.len()), (13, 3), "{four:?} {one:?}");
}

/// Regression (the cold demo after batches were sized in wall time): the first of three jobs,
/// alone for a moment and testing on two cores, was given both `large` tests (weight 4) at
/// once, and the demo's three slow tests ran on two jobs. The longest-task bound is on a
/// batch's work, so each slow test goes to a different job.
#[test]
fn regression_a_wide_job_alone_at_the_start_takes_one_heavy_test_not_two() {
    let mut schema = schema("s", 26);
    for (task, weight) in schema.tasks.iter_mut().zip([4, 4, 2]) {
        task.weight = Some(weight);
    }
    let mut world = World::new(Policy::default());
    world.join_running(1, "k", &schema, 2);
    let first = assignment(&world.request_with_overhead(1, 100, 300), 1).unwrap();
    assert_eq!(first, [0]);
    world.join_running(2, "k", &schema, 2);
    let second = assignment(&world.request_with_overhead(2, 100, 300), 2).unwrap();
    assert_eq!(second, [1]);
    world.join_running(3, "k", &schema, 2);
    let third = assignment(&world.request_with_overhead(3, 100, 300), 3).unwrap();
    assert_eq!(third[0], 2, "{third:?}");
}

/// Issue 11 (the compiled benchmark's many invocations): the longest-task bound holds only
/// until the session's first result. Two jobs, 40 tasks of 1 s and one of 2 s, a 500 ms
/// overhead: before any result a batch holds at most the longest task's 2 s; after two of 1 s,
/// half a slot's share of the 38 s queued (4 × sqrt(38 s × 0.5 s / 2) ≈ 12.3 s is more): 9 tasks.
#[test]
fn the_longest_task_bounds_batches_only_until_the_first_result() {
    let mut schema = schema("s", 41);
    schema.tasks[0].weight = Some(2);
    let mut world = World::new(Policy::default());
    world.join(1, "k", &schema);
    world.join(2, "k", &schema);
    let first = assignment(&world.request_with_overhead(1, 100, 500), 1).unwrap();
    assert_eq!(first, [0], "the longest alone");
    let second = assignment(&world.request_with_overhead(2, 100, 500), 2).unwrap();
    assert_eq!(
        second.len(),
        2,
        "no more than the longest task's work: {second:?}"
    );
    world.report(
        2,
        second.iter().map(|&t| report_of(t, 1000, true)).collect(),
    );
    let third = assignment(&world.request_with_overhead(2, 100, 500), 2).unwrap();
    assert_eq!(third.len(), 9, "{third:?}");
}

/// Issue 11: with every duration known, batches are a share of all the unfinished work (the
/// queue and what others still run), not of the queue alone, so the jobs finish together in few
/// invocations. Two jobs, 20 tasks of 1 s known from history, a 500 ms overhead.
#[test]
fn warm_jobs_take_a_share_of_the_unfinished_work() {
    let schema = schema("s", 20);
    let mut world = World::new(Policy::default());
    for task in 0..20 {
        world
            .coordinator
            .history_mut()
            .record("scope:s", &format!("task-{task}"), 1_000);
    }
    world.join(1, "k", &schema);
    world.join(2, "k", &schema);
    // Before any result: the longest task bounds a batch (three overheads are 1.5 s).
    assert_eq!(
        assignment(&world.request_with_overhead(1, 100, 500), 1).map(|b| b.len()),
        Some(1)
    );
    let first = assignment(&world.request_with_overhead(2, 100, 500), 2).unwrap();
    world.now += Duration::from_secs(1);
    world.report(2, passed(&first));
    // 18 s queued and job 1's 1 s: three quarters of half of 19 s is 7.1 s (guided
    // self-scheduling would give a quarter of the queue, 4 tasks).
    let second = assignment(&world.request_with_overhead(2, 100, 500), 2).unwrap();
    assert_eq!(second.len(), 7, "{second:?}");
    // Job 1 finishes its task: 11 s queued and job 2's 7 s: 6.75 s.
    world.report(1, passed(&world.leased_to("k", 1)));
    let third = assignment(&world.request_with_overhead(1, 100, 500), 1).unwrap();
    assert_eq!(third.len(), 6, "{third:?}");
    // Job 2 finishes its 7: 5 s queued and job 1's 6 s: 4.1 s.
    world.report(2, passed(&second));
    let fourth = assignment(&world.request_with_overhead(2, 100, 500), 2).unwrap();
    assert_eq!(fourth.len(), 4, "{fourth:?}");
    // The last task goes to job 1: three batches each for 20 tasks.
    world.report(1, passed(&third));
    let fifth = assignment(&world.request_with_overhead(1, 100, 500), 1).unwrap();
    assert_eq!(fifth.len(), 1, "{fifth:?}");
}
