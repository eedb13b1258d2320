//! Property test of the state machine: under random interleavings of joins, requests, reports
//! (including late, duplicate, re-sent and foreign ones), disconnects, partitions (the client
//! lives on and comes back with its ticket), time passing, and coordinator restarts from what was
//! stored (gracefully, or killed with the last changes unwritten), the bookkeeping stays
//! consistent, no task is held by more than its holder and one backup copy, a stored result never
//! changes, every session completes once its clients do the work, each task's result is recorded
//! once, and every client of a session receives the same report.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use schemas::{
    ClientInfo, ErrorCode, Outcome, Schema, SessionReport, TaskId, TaskRecord, TaskReport,
    TaskResult, Ticket, WorkRequest,
};

use super::persist::{MemoryStore, SlotState};
use super::*;

const CLIENTS: u8 = 4;

/// How many tasks client `index` says it runs at once: 1, 2 or 3, so that batches are sized
/// for jobs of different widths and the sessions' count of connected slots is checked.
fn parallelism_of(index: usize) -> u32 {
    index as u32 % 3 + 1
}
const TASKS: usize = 12;
const SESSIONS: [&str; 2] = ["a", "b"];
/// The session that stops at its first failing task (Bazel's `--notest_keep_going`).
const FAIL_FAST: usize = 1;

#[derive(Debug, Clone)]
enum Step {
    /// Client slot connects (if it is not) and joins one of the sessions; with a ticket for that
    /// session, it comes back as that member.
    Join(u8, usize),
    /// Client slot asks for work.
    Request(u8),
    /// Client slot reports the first `n` tasks it runs, with this outcome and executed flag.
    Report(u8, usize, bool, bool),
    /// Client slot re-sends every result it reported (as a client does after coming back).
    Resend(u8),
    /// Client slot reports a task it may not hold (late, duplicate, or never assigned).
    ReportAny(u8, TaskId),
    /// Client slot joins a session presenting the ticket of the other session (a replay).
    JoinForeign(u8, usize),
    /// Client slot's process dies: its connection ends and it is gone.
    Kill(u8),
    /// Client slot's connection ends, but it lives on, still running its tasks.
    Partition(u8),
    /// Client slot asks for work and its connection dies with the answer on the way, before the
    /// coordinator notices (it does once the idle timeout has passed).
    RequestLost(u8),
    /// Time passes.
    Wait(u64),
    /// The server writes the journal to the store.
    Flush,
    /// The coordinator restarts from the store: after writing it (graceful) or not (killed).
    Restart(bool),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..CLIENTS, 0..SESSIONS.len()).prop_map(|(c, s)| Step::Join(c, s)),
        4 => (0..CLIENTS).prop_map(Step::Request),
        4 => (0..CLIENTS, 1..4usize, any::<bool>(), any::<bool>())
            .prop_map(|(c, n, failed, executed)| Step::Report(c, n, failed, executed)),
        1 => (0..CLIENTS).prop_map(Step::Resend),
        1 => (0..CLIENTS, 0..TASKS as TaskId).prop_map(|(c, t)| Step::ReportAny(c, t)),
        1 => (0..CLIENTS, 0..SESSIONS.len()).prop_map(|(c, s)| Step::JoinForeign(c, s)),
        1 => (0..CLIENTS).prop_map(Step::Kill),
        1 => (0..CLIENTS).prop_map(Step::Partition),
        1 => (0..CLIENTS).prop_map(Step::RequestLost),
        2 => prop_oneof![0..3_000u64, 0..40_000u64].prop_map(Step::Wait),
        2 => Just(Step::Flush),
        1 => any::<bool>().prop_map(Step::Restart),
    ]
}

/// What the test knows of one client slot.
#[derive(Debug, Default)]
struct Slot {
    /// Its current connection, if connected.
    conn: Option<ConnId>,
    /// The session it joined, or is joining, on that connection.
    session: Option<usize>,
    /// Its ticket, and for which session: kept while the process lives.
    ticket: Option<(usize, Ticket)>,
    /// Tasks assigned to it on its current connection and not yet reported or aborted.
    holding: BTreeSet<TaskId>,
    /// Tasks it still runs from before it lost a connection: it may report them after coming
    /// back, but the coordinator may have handed them to others meanwhile.
    stale: BTreeSet<TaskId>,
    /// Every result it reported, to re-send.
    reported: Vec<TaskReport>,
}

struct Model {
    coordinator: Coordinator,
    store: MemoryStore,
    now: Instant,
    next_conn: u64,
    slots: Vec<Slot>,
    schemas: Vec<Schema>,
    /// Every client id ever assigned each (session, task).
    assigned_to: BTreeMap<(usize, TaskId), BTreeSet<String>>,
    /// The reports received, per session.
    reports: BTreeMap<usize, Vec<SessionReport>>,
    /// Results seen in the store: a stored result must never change.
    durable: BTreeMap<(String, TaskId), TaskRecord>,
    /// Connections dead to their client that the coordinator has not noticed yet, and since when.
    unnoticed: Vec<(ConnId, Instant)>,
    /// How many times the coordinator restarted: seeds each run's tickets.
    runs: u64,
}

/// How long the coordinator takes to notice a connection that went silent.
const IDLE_TIMEOUT: Duration = Duration::from_secs(15);

impl Slot {
    /// What it runs and what it ran, with repeats, as a client names them when it comes back.
    fn claims(&self) -> Vec<TaskId> {
        self.stale
            .iter()
            .copied()
            .chain(self.reported.iter().map(|r| r.task))
            .collect()
    }
}

/// The coordinator's rules, with tickets drawn from a fixed seed per coordinator run (each
/// restart its own, as a real coordinator draws from the system each time): a failing case
/// replays exactly.
fn policy_for_run(run: u64) -> Policy {
    Policy {
        rng_seed: Some(run),
        ..Policy::default()
    }
}

fn policy() -> Policy {
    policy_for_run(0)
}

fn client_id(slot: u8) -> String {
    format!("client-{slot}")
}

impl Model {
    fn new(history: &[(usize, u64)]) -> Model {
        let mut coordinator = Coordinator::new(policy());
        for &(task, ms) in history {
            coordinator
                .history_mut()
                .record("scope", &format!("task-{task}"), ms);
        }
        Model {
            coordinator,
            store: MemoryStore::default(),
            now: Instant::now(),
            next_conn: 1,
            slots: (0..CLIENTS).map(|_| Slot::default()).collect(),
            schemas: SESSIONS
                .iter()
                .map(|name| {
                    let mut schema =
                        Schema::new(*name, (0..TASKS).map(|i| format!("task-{i}"))).unwrap();
                    // Prerequisites head the queue and have others compile first: the same
                    // accounting must hold.
                    for task in schema.tasks.iter_mut().step_by(3) {
                        task.prerequisite = true;
                    }
                    schema
                })
                .collect(),
            assigned_to: BTreeMap::new(),
            reports: BTreeMap::new(),
            durable: BTreeMap::new(),
            unnoticed: Vec::new(),
            runs: 0,
        }
    }

    fn slot_of(&self, conn: ConnId) -> Option<usize> {
        self.slots.iter().position(|s| s.conn == Some(conn))
    }

    /// Carries out the coordinator's actions on the model. A final report is stored before it
    /// is sent, as the hub does.
    fn apply(&mut self, actions: Vec<Action>) {
        let completes = actions.iter().any(|action| {
            matches!(action, Action::Send(_, m) if matches!(**m, ServerMessage::Complete { .. }))
        });
        if completes {
            self.flush();
        }
        let mut closed = Vec::new();
        for action in actions {
            match action {
                Action::Send(conn, message) => {
                    let Some(index) = self.slot_of(conn) else {
                        continue;
                    };
                    let slot = &mut self.slots[index];
                    match &*message {
                        ServerMessage::Joined(joined) => {
                            let session = slot.session.expect("joined a session");
                            slot.ticket = Some((session, joined.ticket));
                        }
                        ServerMessage::Assignment(assignment) => {
                            let session = slot.session.expect("assigned before joining");
                            for &task in &assignment.tasks {
                                slot.holding.insert(task);
                                self.assigned_to
                                    .entry((session, task))
                                    .or_default()
                                    .insert(client_id(index as u8));
                            }
                        }
                        ServerMessage::Abort(tasks) => {
                            for task in tasks {
                                slot.holding.remove(task);
                                slot.stale.remove(task);
                            }
                        }
                        ServerMessage::Complete { report, .. } => {
                            let session = slot.session.expect("complete before joining");
                            self.reports
                                .entry(session)
                                .or_default()
                                .push(report.clone());
                            slot.holding.clear();
                            slot.stale.clear();
                        }
                        ServerMessage::Error(error) if error.code == ErrorCode::UnknownTicket => {
                            // The session was forgotten and started again: join it afresh.
                            slot.ticket = None;
                        }
                        ServerMessage::NeedSchema => {
                            // Join again, with the schema.
                            let session = slot.session.expect("asked for a schema");
                            let resume = slot.ticket.and_then(|(s, t)| (s == session).then_some(t));
                            let join = Join {
                                resume,
                                running: slot.claims(),
                                fail_fast: session == FAIL_FAST,
                                parallelism: parallelism_of(index),
                                ..Join::new(
                                    SESSIONS[session].into(),
                                    &self.schemas[session],
                                    "scope".into(),
                                    true,
                                )
                            };
                            let more =
                                self.coordinator
                                    .handle(conn, ClientMessage::Join(join), self.now);
                            self.apply(more);
                        }
                        _ => {}
                    }
                }
                Action::Close(conn) => closed.push(conn),
            }
        }
        for conn in closed {
            self.partition(conn);
        }
    }

    /// `conn` ends; its client lives on.
    fn partition(&mut self, conn: ConnId) {
        if let Some(index) = self.slot_of(conn) {
            let slot = &mut self.slots[index];
            slot.conn = None;
            slot.session = None;
            let holding = std::mem::take(&mut slot.holding);
            slot.stale.extend(holding);
        }
        let actions = self.coordinator.disconnect(conn, self.now);
        self.apply(actions);
    }

    fn send(&mut self, index: u8, message: ClientMessage) {
        if let Some(conn) = self.slots[index as usize].conn {
            let actions = self.coordinator.handle(conn, message, self.now);
            self.apply(actions);
        }
    }

    fn connect(&mut self, index: u8, session: usize) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.coordinator.connect(conn);
        let hello = ClientMessage::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client_id: client_id(index),
            token: None,
            info: ClientInfo::default(),
        });
        let slot = &mut self.slots[index as usize];
        slot.conn = Some(conn);
        slot.session = Some(session);
        let actions = self.coordinator.handle(conn, hello, self.now);
        self.apply(actions);
        conn
    }

    fn join(&mut self, index: u8, session: usize, resume: Option<Ticket>) {
        let join = Join {
            resume,
            running: self.slots[index as usize].claims(),
            fail_fast: session == FAIL_FAST,
            parallelism: parallelism_of(index as usize),
            ..Join::new(
                SESSIONS[session].into(),
                &self.schemas[session],
                "scope".into(),
                false,
            )
        };
        self.send(index, ClientMessage::Join(join));
    }

    fn run(&mut self, step: &Step) {
        match *step {
            Step::Join(index, session) => {
                let slot = &self.slots[index as usize];
                if slot.conn.is_some() {
                    return;
                }
                let resume = slot.ticket.and_then(|(s, t)| (s == session).then_some(t));
                if resume.is_none() {
                    // A client works for one session: what it ran belongs to the other one.
                    let slot = &mut self.slots[index as usize];
                    slot.stale.clear();
                    slot.reported.clear();
                }
                self.connect(index, session);
                self.join(index, session, resume);
            }
            Step::JoinForeign(index, session) => {
                let slot = &self.slots[index as usize];
                let Some((theirs, ticket)) = slot.ticket else {
                    return;
                };
                // Only where the session exists: otherwise the join creates it, as a new member.
                if slot.conn.is_some()
                    || theirs == session
                    || !self.coordinator.sessions.contains_key(SESSIONS[session])
                {
                    return;
                }
                let conn = self.connect(index, session);
                let join = Join {
                    resume: Some(ticket),
                    fail_fast: session == FAIL_FAST,
                    ..Join::new(
                        SESSIONS[session].into(),
                        &self.schemas[session],
                        "scope".into(),
                        false,
                    )
                };
                let actions = self
                    .coordinator
                    .handle(conn, ClientMessage::Join(join), self.now);
                assert!(
                    actions.iter().any(|a| matches!(a, Action::Send(_, m)
                        if matches!(&**m, ServerMessage::Error(e) if e.code == ErrorCode::UnknownTicket))),
                    "a foreign ticket was accepted: {actions:?}"
                );
                // The slot keeps its own ticket: it was a replay, not a forgotten session.
                self.apply(actions);
                self.slots[index as usize].ticket = Some((theirs, ticket));
            }
            Step::Request(index) => {
                let request = ClientMessage::Request(WorkRequest {
                    max_tasks: 3,
                    overhead_ms: 10,
                });
                self.send(index, request);
            }
            Step::Report(index, n, failed, executed) => {
                let slot = &mut self.slots[index as usize];
                if slot.conn.is_none() {
                    return;
                }
                let tasks: Vec<TaskId> = slot
                    .holding
                    .iter()
                    .chain(&slot.stale)
                    .take(n)
                    .copied()
                    .collect();
                for task in &tasks {
                    slot.holding.remove(task);
                    slot.stale.remove(task);
                }
                let outcome = if failed {
                    Outcome::Failed
                } else {
                    Outcome::Passed
                };
                let reports: Vec<TaskReport> = tasks
                    .iter()
                    .map(|&task| report(task, outcome, executed))
                    .collect();
                slot.reported.extend(reports.iter().cloned());
                self.send(index, ClientMessage::Results(reports));
            }
            Step::Resend(index) => {
                let reports = self.slots[index as usize].reported.clone();
                self.send(index, ClientMessage::Results(reports));
            }
            Step::ReportAny(index, task) => {
                let reports = vec![report(task, Outcome::Passed, true)];
                self.send(index, ClientMessage::Results(reports));
            }
            Step::Kill(index) => {
                if let Some(conn) = self.slots[index as usize].conn {
                    self.partition(conn);
                }
                self.slots[index as usize] = Slot::default();
            }
            Step::Partition(index) => {
                if let Some(conn) = self.slots[index as usize].conn {
                    self.partition(conn);
                }
            }
            Step::RequestLost(index) => {
                let slot = &mut self.slots[index as usize];
                let Some(conn) = slot.conn.take() else {
                    return;
                };
                slot.session = None;
                let holding = std::mem::take(&mut slot.holding);
                slot.stale.extend(holding);
                let request = ClientMessage::Request(WorkRequest {
                    max_tasks: 3,
                    overhead_ms: 10,
                });
                // The answer goes to a connection no client reads any more.
                let actions = self.coordinator.handle(conn, request, self.now);
                self.apply(actions);
                self.unnoticed.push((conn, self.now));
            }
            Step::Wait(ms) => {
                self.now += Duration::from_millis(ms);
                let now = self.now;
                let (timed_out, left): (Vec<_>, Vec<_>) = std::mem::take(&mut self.unnoticed)
                    .into_iter()
                    .partition(|&(_, since)| now.saturating_duration_since(since) >= IDLE_TIMEOUT);
                self.unnoticed = left;
                for (conn, _) in timed_out {
                    let actions = self.coordinator.disconnect(conn, self.now);
                    self.apply(actions);
                }
                let (actions, _) = self.coordinator.tick(self.now);
                self.apply(actions);
            }
            Step::Flush => self.flush(),
            Step::Restart(graceful) => {
                if graceful {
                    self.coordinator.freeze();
                    self.flush();
                }
                self.runs += 1;
                self.coordinator = Coordinator::restore(
                    policy_for_run(self.runs),
                    Estimates::default(),
                    self.store.snapshot(),
                    self.now,
                );
                for slot in &mut self.slots {
                    slot.conn = None;
                    slot.session = None;
                    let holding = std::mem::take(&mut slot.holding);
                    slot.stale.extend(holding);
                }
                self.unnoticed.clear();
            }
        }
    }

    /// Writes the journal to the store and checks that no stored result changed.
    fn flush(&mut self) {
        let journal = self.coordinator.journal();
        self.store.apply(&journal);
        let snapshot = self.store.snapshot();
        let keys: BTreeSet<&str> = snapshot.sessions.iter().map(|s| s.key.as_str()).collect();
        self.durable
            .retain(|(key, _), _| keys.contains(key.as_str()));
        for session in &snapshot.sessions {
            for (&task, row) in &session.slots {
                if let SlotState::Done(record) = &row.state {
                    let known = self
                        .durable
                        .entry((session.key.clone(), task))
                        .or_insert_with(|| record.clone());
                    assert_eq!(known, record, "a stored result changed");
                }
            }
            // And what is stored is what the coordinator holds.
            if let Some(live) = self.coordinator.sessions.get(&session.key) {
                live.check_stored(session);
            }
        }
    }

    /// After every step: consistent bookkeeping, and no task held by more than two clients
    /// (its holder and one backup copy) among those that got it on their current connection.
    fn check(&self) {
        for session in self.coordinator.sessions.values() {
            session.check_invariants();
        }
        // Every result recorded so far came from a client that really received the task.
        for (index, key) in SESSIONS.iter().enumerate() {
            let Some(session) = self.coordinator.sessions.get(*key) else {
                continue;
            };
            for (task, client) in session.records().into_iter().enumerate() {
                let Some(client) = client else { continue };
                // Not run: the session stopped at a failure (checked with the final report).
                if client.is_empty() && index == FAIL_FAST {
                    continue;
                }
                let assigned = self.assigned_to.get(&(index, task as TaskId));
                assert!(
                    assigned.is_some_and(|a| a.contains(&client)),
                    "task {task} of session {key} was recorded from {client}, \
                     but it was only ever handed to {assigned:?}"
                );
            }
        }
        let mut holders: BTreeMap<(usize, TaskId), usize> = BTreeMap::new();
        for slot in &self.slots {
            if let Some(session) = slot.session {
                for &task in &slot.holding {
                    *holders.entry((session, task)).or_default() += 1;
                }
            }
        }
        for (task, count) in holders {
            assert!(count <= 2, "{task:?} held by {count} clients");
        }
        // A connected client is leased only tasks it knows of: any other would wait for it
        // forever.
        for slot in &self.slots {
            let (Some(conn), Some(session)) = (slot.conn, slot.session) else {
                continue;
            };
            let Some(Some((_, idx))) = self
                .coordinator
                .clients
                .get(&conn)
                .map(|c| c.session.clone())
            else {
                continue;
            };
            let known = slot.claims();
            for task in self.coordinator.sessions[SESSIONS[session]].leased_to(idx) {
                assert!(
                    slot.holding.contains(&task) || known.contains(&task),
                    "task {task} is leased to a client that does not know of it"
                );
            }
        }
    }

    /// The clients still alive come back and report what they ran; then every client leaves,
    /// and one diligent client per session does whatever is left.
    fn finish(&mut self) {
        for index in 0..CLIENTS {
            if let Some((session, _)) = self.slots[index as usize].ticket {
                self.run(&Step::Join(index, session));
                self.run(&Step::Resend(index));
                self.run(&Step::Report(index, TASKS, false, true));
            }
        }
        for index in 0..CLIENTS {
            self.run(&Step::Kill(index));
        }
        self.run(&Step::Wait(policy().resume_grace.as_millis() as u64));
        for session in 0..SESSIONS.len() {
            self.run(&Step::Join(0, session));
            for _ in 0..TASKS * 4 {
                if self.reports.get(&session).is_some_and(|r| !r.is_empty()) {
                    break;
                }
                self.run(&Step::Request(0));
                self.run(&Step::Report(0, TASKS, false, true));
            }
            self.check();
            self.run(&Step::Kill(0));
        }
    }
}
fn report(task: TaskId, outcome: Outcome, executed: bool) -> TaskReport {
    TaskReport {
        task,
        result: TaskResult {
            outcome,
            exit_code: Some(0),
            duration_ms: 100 + u64::from(task) * 50,
            executed,
            log_tail: None,
            build_ms: 0,
        },
    }
}

/// How many random cases: 300, or `PROPTEST_CASES` (CI runs more; `scripts/proptest-runs.sh`
/// runs the test many times over).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn sessions_complete_with_each_result_recorded_once(
        steps in prop::collection::vec(step(), 0..120),
        // Up to three records per task: some sessions start with every duration known (warm).
        history in prop::collection::vec((0..TASKS, 1..20_000u64), 0..3 * TASKS),
    ) {
        let mut model = Model::new(&history);
        for step in &steps {
            model.run(step);
            model.check();
        }
        model.finish();
        for (session, name) in SESSIONS.iter().enumerate() {
            let reports = &model.reports[&session];
            let first = &reports[0];
            // Every client of the session got the same report...
            prop_assert!(reports.iter().all(|r| r == first));
            // ...with one record per task, in order...
            let tasks: Vec<TaskId> = first.records.iter().map(|r| r.task).collect();
            prop_assert_eq!(tasks, (0..TASKS as TaskId).collect::<Vec<_>>());
            // ...each produced by a client the task was actually assigned to, but where a
            // session that stops at its first failure did: the tasks left then were not run.
            let stopped = |r: &TaskRecord| r.client.is_empty();
            if first.records.iter().any(stopped) {
                prop_assert_eq!(session, FAIL_FAST);
                prop_assert!(first.records.iter().any(|r| r.result.outcome == Outcome::Failed));
                let not_run = first
                    .records
                    .iter()
                    .filter(|r| stopped(r))
                    .all(|r| r.result.outcome == Outcome::NoStatus && !r.result.executed);
                prop_assert!(not_run, "a task not run has a verdict");
            }
            for record in first.records.iter().filter(|r| !stopped(r)) {
                let assigned = model.assigned_to.get(&(session, record.task));
                prop_assert!(
                    assigned.is_some_and(|a| a.contains(&record.client)),
                    "task {} of session {} was recorded from {}, but it was only ever handed to {:?}",
                    record.task, name, record.client, assigned
                );
            }
        }
    }
}
