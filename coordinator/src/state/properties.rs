//! Property test of the state machine: under random interleavings of joins, requests, reports
//! (including late, duplicate and foreign ones), disconnects and time passing, the bookkeeping
//! stays consistent, no task is held by more than its holder and one backup copy, every session
//! completes once its clients do the work, each task's result is recorded once, and every client
//! of a session receives the same report.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use schemas::{
    ClientInfo, Outcome, Schema, SessionReport, TaskId, TaskReport, TaskResult, WorkRequest,
};

use super::*;

const CLIENTS: u8 = 4;
const TASKS: usize = 12;
const SESSIONS: [&str; 2] = ["a", "b"];

#[derive(Debug, Clone)]
enum Step {
    /// Client slot connects (if it is not) and joins one of the sessions.
    Join(u8, usize),
    /// Client slot asks for work.
    Request(u8),
    /// Client slot reports the first `n` tasks it holds, with this outcome and executed flag.
    Report(u8, usize, bool, bool),
    /// Client slot reports a task it may not hold (late, duplicate, or never assigned).
    ReportAny(u8, TaskId),
    /// Client slot's connection ends.
    Disconnect(u8),
    /// Time passes.
    Wait(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..CLIENTS, 0..SESSIONS.len()).prop_map(|(c, s)| Step::Join(c, s)),
        (0..CLIENTS).prop_map(Step::Request),
        (0..CLIENTS, 1..4usize, any::<bool>(), any::<bool>())
            .prop_map(|(c, n, failed, executed)| Step::Report(c, n, failed, executed)),
        (0..CLIENTS, 0..TASKS as TaskId).prop_map(|(c, t)| Step::ReportAny(c, t)),
        (0..CLIENTS).prop_map(Step::Disconnect),
        (0..3_000u64).prop_map(Step::Wait),
    ]
}

/// What the test knows of one client slot.
#[derive(Debug, Default)]
struct Slot {
    /// Its current connection, if connected.
    conn: Option<ConnId>,
    /// The session it joined on that connection.
    session: Option<usize>,
    /// Tasks assigned to it and not yet reported, aborted or lost.
    holding: BTreeSet<TaskId>,
}

struct Model {
    coordinator: Coordinator,
    now: Instant,
    next_conn: u64,
    slots: Vec<Slot>,
    schemas: Vec<Schema>,
    /// Every client id ever assigned each (session, task).
    assigned_to: BTreeMap<(usize, TaskId), BTreeSet<String>>,
    /// The reports received, per session.
    reports: BTreeMap<usize, Vec<SessionReport>>,
}

fn client_id(slot: u8) -> String {
    format!("client-{slot}")
}

impl Model {
    fn new(history: &[(usize, u64)]) -> Model {
        let mut coordinator = Coordinator::new(Policy::default());
        for &(task, ms) in history {
            coordinator
                .history_mut()
                .record("scope", &format!("task-{task}"), ms);
        }
        Model {
            coordinator,
            now: Instant::now(),
            next_conn: 1,
            slots: (0..CLIENTS).map(|_| Slot::default()).collect(),
            schemas: SESSIONS
                .iter()
                .map(|name| Schema::new(*name, (0..TASKS).map(|i| format!("task-{i}"))).unwrap())
                .collect(),
            assigned_to: BTreeMap::new(),
            reports: BTreeMap::new(),
        }
    }

    fn slot_of(&self, conn: ConnId) -> Option<usize> {
        self.slots.iter().position(|s| s.conn == Some(conn))
    }

    /// Carries out the coordinator's actions on the model.
    fn apply(&mut self, actions: Vec<Action>) {
        let mut closed = Vec::new();
        for action in actions {
            match action {
                Action::Send(conn, message) => {
                    let Some(index) = self.slot_of(conn) else {
                        continue;
                    };
                    let slot = &mut self.slots[index];
                    match &*message {
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
                            }
                        }
                        ServerMessage::Complete(report) => {
                            let session = slot.session.expect("complete before joining");
                            self.reports
                                .entry(session)
                                .or_default()
                                .push(report.clone());
                            slot.holding.clear();
                        }
                        ServerMessage::NeedSchema => {
                            // Join again, with the schema.
                            let session = slot.session.expect("asked for a schema");
                            let join = Join::new(
                                SESSIONS[session].into(),
                                &self.schemas[session],
                                "scope".into(),
                                true,
                            );
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
            self.disconnect_conn(conn);
        }
    }

    fn disconnect_conn(&mut self, conn: ConnId) {
        if let Some(index) = self.slot_of(conn) {
            self.slots[index] = Slot::default();
        }
        let actions = self.coordinator.disconnect(conn, self.now);
        self.apply(actions);
    }

    fn run(&mut self, step: &Step) {
        match *step {
            Step::Join(index, session) => {
                if self.slots[index as usize].conn.is_some() {
                    return;
                }
                let conn = ConnId(self.next_conn);
                self.next_conn += 1;
                self.coordinator.connect(conn);
                let hello = ClientMessage::Hello(Hello {
                    protocol_version: PROTOCOL_VERSION,
                    client_id: client_id(index),
                    token: None,
                    info: ClientInfo::default(),
                });
                let actions = self.coordinator.handle(conn, hello, self.now);
                self.slots[index as usize] = Slot {
                    conn: Some(conn),
                    session: Some(session),
                    holding: BTreeSet::new(),
                };
                self.apply(actions);
                let join = Join::new(
                    SESSIONS[session].into(),
                    &self.schemas[session],
                    "scope".into(),
                    false,
                );
                let actions = self
                    .coordinator
                    .handle(conn, ClientMessage::Join(join), self.now);
                self.apply(actions);
            }
            Step::Request(index) => {
                let Some(conn) = self.slots[index as usize].conn else {
                    return;
                };
                let request = ClientMessage::Request(WorkRequest {
                    max_tasks: 3,
                    overhead_ms: 10,
                });
                let actions = self.coordinator.handle(conn, request, self.now);
                self.apply(actions);
            }
            Step::Report(index, n, failed, executed) => {
                let slot = &mut self.slots[index as usize];
                let Some(conn) = slot.conn else {
                    return;
                };
                let tasks: Vec<TaskId> = slot.holding.iter().take(n).copied().collect();
                for task in &tasks {
                    slot.holding.remove(task);
                }
                let outcome = if failed {
                    Outcome::Failed
                } else {
                    Outcome::Passed
                };
                let reports = tasks
                    .iter()
                    .map(|&task| report(task, outcome, executed))
                    .collect();
                let actions =
                    self.coordinator
                        .handle(conn, ClientMessage::Results(reports), self.now);
                self.apply(actions);
            }
            Step::ReportAny(index, task) => {
                let Some(conn) = self.slots[index as usize].conn else {
                    return;
                };
                let reports = vec![report(task, Outcome::Passed, true)];
                let actions =
                    self.coordinator
                        .handle(conn, ClientMessage::Results(reports), self.now);
                self.apply(actions);
            }
            Step::Disconnect(index) => {
                if let Some(conn) = self.slots[index as usize].conn {
                    self.disconnect_conn(conn);
                }
            }
            Step::Wait(ms) => {
                self.now += Duration::from_millis(ms);
            }
        }
    }

    /// After every step: consistent bookkeeping, and no task held by more than two clients
    /// (its holder and one backup copy).
    fn check(&self) {
        for session in self.coordinator.sessions.values() {
            session.check_invariants();
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
    }

    /// Every client leaves; one diligent client per session then does whatever is left.
    fn finish(&mut self) {
        for index in 0..CLIENTS {
            self.run(&Step::Disconnect(index));
        }
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
            self.run(&Step::Disconnect(0));
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
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn sessions_complete_with_each_result_recorded_once(
        steps in prop::collection::vec(step(), 0..120),
        history in prop::collection::vec((0..TASKS, 1..20_000u64), 0..6),
    ) {
        let mut model = Model::new(&history);
        for step in &steps {
            model.run(step);
            model.check();
        }
        model.finish();
        for session in 0..SESSIONS.len() {
            let reports = &model.reports[&session];
            let first = &reports[0];
            // Every client of the session got the same report...
            prop_assert!(reports.iter().all(|r| r == first));
            // ...with one record per task, in order...
            let tasks: Vec<TaskId> = first.records.iter().map(|r| r.task).collect();
            prop_assert_eq!(tasks, (0..TASKS as TaskId).collect::<Vec<_>>());
            // ...each produced by a client the task was actually assigned to.
            for record in &first.records {
                let assigned = &model.assigned_to[&(session, record.task)];
                prop_assert!(assigned.contains(&record.client), "{record:?} vs {assigned:?}");
            }
        }
    }
}
