//! Both halves of the protocol, modelled together: the real client state machines
//! ([`wrapper::client::machine::Machine`]) against the real coordinator state machine
//! ([`coordinator::state::Coordinator`]), through a simulated network, with no sockets, clocks or
//! tasks, so that every interleaving replays exactly from its seed.
//!
//! The network is QUIC's: each connection is a reliable, ordered stream in each direction, but
//! messages stay in flight for as long as the case likes while others move (on other connections
//! and for other clients), a connection can die with messages in flight both ways, the
//! coordinator may notice a death only much later (after the client came back on a new
//! connection), and the coordinator restarts from what it had stored (gracefully, or killed with
//! its last changes unwritten) while clients run on. Messages are duplicated by the clients
//! themselves: they re-send every result after coming back.
//!
//! Checked after every step: no client starts a task it was not handed; a task's stored result
//! never changes and was reported by a client that was handed it; every report a client receives
//! is the same, with each task once, each by a client that was handed it. At the end of each case
//! the network delivers everything fairly and time passes until every client has finished, within
//! a bounded number of rounds: nothing hangs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use coordinator::state::history::Estimates;
use coordinator::state::persist::{MemoryStore, SlotState};
use coordinator::state::{Action as ServerAction, ConnId, Coordinator, Policy};
use proptest::prelude::*;
use schemas::{
    ClientInfo, ClientMessage, Hello, Outcome, Schema, ServerMessage, SessionReport, TaskId,
    TaskReport, TaskResult, PROTOCOL_VERSION,
};
use wrapper::client::machine::{Action, Config, Event, Input, Machine};
use wrapper::ClientError;

const CLIENTS: usize = 3;
const TASKS: usize = 8;
/// How long the coordinator takes to notice a connection that died silently.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The most rounds the final, fair phase may take before the case counts as hung.
const DRAIN_ROUNDS: usize = 3_000;

#[derive(Debug, Clone)]
enum Step {
    /// The oldest message in flight from the client to the coordinator arrives.
    Deliver(usize),
    /// The oldest message in flight from the coordinator to the client arrives.
    Receive(usize),
    /// The connection the client asked for is made.
    Connected(usize),
    /// The client's batch ends (the first `n` tasks reported, if it was told to stop).
    FinishBatch(usize, usize),
    /// The next task of the client's batch finishes and is reported at once, the batch running
    /// on (as the Bazel runner reports each target from the build events).
    FinishTask(usize),
    /// The client's connection dies; the coordinator notices at once or only after the idle
    /// timeout.
    Cut(usize, bool),
    /// Time passes.
    Wait(u64),
    /// The coordinator writes its journal to the store.
    Flush,
    /// The coordinator restarts from the store: after writing it (graceful) or not (killed).
    Restart(bool),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..CLIENTS).prop_map(Step::Deliver),
        6 => (0..CLIENTS).prop_map(Step::Receive),
        3 => (0..CLIENTS).prop_map(Step::Connected),
        3 => (0..CLIENTS, 0..3usize).prop_map(|(c, n)| Step::FinishBatch(c, n)),
        3 => (0..CLIENTS).prop_map(Step::FinishTask),
        1 => (0..CLIENTS, any::<bool>()).prop_map(|(c, noticed)| Step::Cut(c, noticed)),
        1 => prop_oneof![0..3_000u64, 0..40_000u64].prop_map(Step::Wait),
        1 => Just(Step::Flush),
        1 => any::<bool>().prop_map(Step::Restart),
    ]
}

/// One connection as the network holds it.
#[derive(Debug, Default)]
struct Link {
    /// Client to coordinator, in order.
    up: VecDeque<ClientMessage>,
    /// Coordinator to client, in order; `None` is the coordinator closing the connection.
    down: VecDeque<Option<ServerMessage>>,
}

/// A client: its machine and what the test knows of it.
#[derive(Debug)]
struct Client {
    machine: Machine,
    /// Its connection and what is in flight on it.
    conn: Option<(ConnId, Link)>,
    /// Whether it asked for a connection that is not made yet.
    connecting: bool,
    /// The batch it runs, and whether it was told to stop.
    batch: Option<(Vec<TaskId>, bool)>,
    /// How many of the batch's tasks it reported as they finished (the first ones).
    streamed: usize,
    /// Every task the coordinator handed it.
    handed: BTreeSet<TaskId>,
    /// Whether it joined the session (before that, any failure but a refusal for load ends its
    /// run, and the caller decides what to do: see `wrapper::Outcome::Unavailable`).
    joined: bool,
    /// How its run ended.
    finished: Option<Result<SessionReport, String>>,
}

struct Model {
    coordinator: Coordinator,
    store: MemoryStore,
    /// How many times the coordinator started; seeds its tickets.
    runs: u64,
    now: Instant,
    next_conn: u64,
    clients: Vec<Client>,
    /// Connections that died without the coordinator noticing, and when.
    unnoticed: Vec<(ConnId, Instant)>,
    /// Each stored result, as first seen: it must never change.
    durable: BTreeMap<TaskId, (String, TaskResult)>,
    /// The first final report any client received.
    report: Option<SessionReport>,
}

/// The coordinator's rules, tickets drawn from a fixed seed per run. Sessions are remembered
/// for longer than any case lasts: forgetting them is the coordinator model's business
/// (`coordinator/src/state/properties.rs`), and a client away for longer than the ttl rightly
/// starts the session again.
fn policy(run: u64) -> Policy {
    Policy {
        rng_seed: Some(run),
        session_ttl: Duration::from_secs(86_400),
        ..Policy::default()
    }
}

fn client_id(client: usize) -> String {
    format!("client-{client}")
}

/// What `client` reports for `task`: told apart from every other client's, so that the report
/// shows whose result was recorded.
fn result_of(client: usize, task: TaskId) -> TaskResult {
    TaskResult {
        outcome: if task.is_multiple_of(3) {
            Outcome::Failed
        } else {
            Outcome::Passed
        },
        exit_code: Some(0),
        duration_ms: 1_000 * client as u64 + u64::from(task),
        executed: true,
        log_tail: None,
        build_ms: 0,
    }
}

fn schema() -> Schema {
    let mut schema = Schema::new("model", (0..TASKS).map(|i| format!("task-{i}"))).unwrap();
    // A prerequisite has the others told to compile first; nothing else may change.
    schema.tasks[1].prerequisite = true;
    schema
}

impl Model {
    fn new(max_batches: &[u32]) -> Model {
        let now = Instant::now();
        let mut model = Model {
            coordinator: Coordinator::new(policy(0)),
            store: MemoryStore::default(),
            runs: 0,
            now,
            next_conn: 1,
            clients: Vec::new(),
            unnoticed: Vec::new(),
            durable: BTreeMap::new(),
            report: None,
        };
        for (client, &max_batch) in max_batches.iter().enumerate() {
            let config = Config {
                session_key: "session".into(),
                history_scope: "scope".into(),
                run: Some("run".into()),
                fail_fast: false,
                parallelism: 1,
                schema: schema(),
                max_batch,
                // Never given up on within a case: a connection asked for is made or cut.
                reconnect_for: Duration::from_secs(86_400),
                busy_retry_for: Duration::from_secs(10),
            };
            let conn = model.open(client);
            model.clients.push(Client {
                machine: Machine::new(config, Duration::ZERO, now),
                conn: Some((conn, Link::default())),
                connecting: false,
                batch: None,
                streamed: 0,
                handed: BTreeSet::new(),
                joined: false,
                finished: None,
            });
        }
        for client in 0..CLIENTS {
            model.take_actions(client).unwrap();
        }
        model
    }

    /// Opens a connection for `client` and greets the coordinator on it.
    fn open(&mut self, client: usize) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.coordinator.connect(conn);
        let hello = ClientMessage::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client_id: client_id(client),
            token: None,
            info: ClientInfo::default(),
        });
        let answer = self.coordinator.handle(conn, hello, self.now);
        assert!(
            matches!(&answer[..], [ServerAction::Send(c, m)] if *c == conn && matches!(**m, ServerMessage::Welcome(_))),
            "{answer:?}"
        );
        conn
    }

    /// Takes the actions `client`'s machine queued, and checks them.
    fn take_actions(&mut self, client: usize) -> Result<(), TestCaseError> {
        while let Some(action) = self.clients[client].machine.poll() {
            let c = &mut self.clients[client];
            match action {
                Action::Send(message) => {
                    if let Some((_, link)) = &mut c.conn {
                        link.up.push_back(message);
                    }
                }
                Action::Connect => {
                    self.drop_connection(client, false);
                    self.clients[client].connecting = true;
                }
                Action::StartBatch(tasks, _) => {
                    let ids: Vec<TaskId> = tasks.iter().map(|t| t.id).collect();
                    for id in &ids {
                        prop_assert!(
                            c.handed.contains(id),
                            "client {client} started task {id}, which it was never handed"
                        );
                    }
                    prop_assert!(c.batch.is_none(), "client {client} started a second batch");
                    c.batch = Some((ids, false));
                    c.streamed = 0;
                }
                Action::AbortBatch => {
                    if let Some((_, stop)) = &mut c.batch {
                        *stop = true;
                    }
                }
                Action::Emit(Event::Joined(_)) => c.joined = true,
                Action::Emit(_) => {}
                Action::Finish(result) => {
                    prop_assert!(
                        c.batch.is_none(),
                        "client {client} finished with a batch running"
                    );
                    if let Ok(report) = &result {
                        self.check_report(report)?;
                    }
                    let c = &mut self.clients[client];
                    c.finished = Some(result.map_err(|e: ClientError| e.to_string()));
                    self.drop_connection(client, true);
                }
            }
        }
        Ok(())
    }

    /// `client`'s connection goes away (the coordinator notices now or later).
    fn drop_connection(&mut self, client: usize, noticed: bool) {
        if let Some((conn, _)) = self.clients[client].conn.take() {
            if noticed {
                let actions = self.coordinator.disconnect(conn, self.now);
                self.apply(actions);
            } else {
                self.unnoticed.push((conn, self.now));
            }
        }
    }

    /// Carries the coordinator's actions onto the network.
    fn apply(&mut self, actions: Vec<ServerAction>) {
        for action in actions {
            let (conn, message) = match action {
                ServerAction::Send(conn, message) => (conn, Some((*message).clone())),
                ServerAction::Close(conn) => (conn, None),
            };
            let link = self.clients.iter_mut().find_map(|c| match &mut c.conn {
                Some((id, link)) if *id == conn => Some(link),
                _ => None,
            });
            // A connection that died: what is sent on it is lost.
            if let Some(link) = link {
                link.down.push_back(message);
            }
        }
    }

    /// Checks a final report: every task once, each by a client that was handed it, the same
    /// report for everyone.
    fn check_report(&mut self, report: &SessionReport) -> Result<(), TestCaseError> {
        let tasks: Vec<TaskId> = report.records.iter().map(|r| r.task).collect();
        prop_assert_eq!(tasks, (0..TASKS as TaskId).collect::<Vec<_>>());
        for record in &report.records {
            let client = (0..CLIENTS).find(|&c| client_id(c) == record.client);
            let Some(client) = client else {
                return Err(TestCaseError::fail(format!("{record:?}: no such client")));
            };
            prop_assert!(
                self.clients[client].handed.contains(&record.task),
                "task {} recorded from {}, which was never handed it",
                record.task,
                record.client
            );
            prop_assert_eq!(&record.result, &result_of(client, record.task));
        }
        match &self.report {
            Some(first) => prop_assert_eq!(first, report, "clients received different reports"),
            None => self.report = Some(report.clone()),
        }
        Ok(())
    }

    fn step(&mut self, step: &Step) -> Result<(), TestCaseError> {
        match *step {
            Step::Deliver(client) => self.deliver(client),
            Step::Receive(client) => self.receive(client)?,
            Step::Connected(client) => self.connected(client),
            Step::FinishBatch(client, n) => self.finish_batch(client, n),
            Step::FinishTask(client) => self.finish_task(client),
            Step::Cut(client, noticed) => {
                if self.clients[client].conn.is_some() {
                    self.drop_connection(client, noticed);
                    self.clients[client]
                        .machine
                        .handle(Input::Failed(lost()), self.now);
                }
            }
            Step::Wait(ms) => self.wait(Duration::from_millis(ms)),
            Step::Flush => self.flush()?,
            Step::Restart(graceful) => self.restart(graceful)?,
        }
        for client in 0..CLIENTS {
            self.take_actions(client)?;
        }
        Ok(())
    }

    fn deliver(&mut self, client: usize) {
        let Some((conn, link)) = &mut self.clients[client].conn else {
            return;
        };
        let conn = *conn;
        if let Some(message) = link.up.pop_front() {
            let actions = self.coordinator.handle(conn, message, self.now);
            self.apply(actions);
        }
    }

    fn receive(&mut self, client: usize) -> Result<(), TestCaseError> {
        let c = &mut self.clients[client];
        let Some((_, link)) = &mut c.conn else {
            return Ok(());
        };
        match link.down.pop_front() {
            Some(Some(message)) => {
                if let ServerMessage::Assignment(assignment) = &message {
                    c.handed.extend(assignment.tasks.iter().copied());
                }
                c.machine.handle(Input::Received(message), self.now);
            }
            // Closed by the coordinator, which knows.
            Some(None) => {
                let (conn, _) = c.conn.take().expect("connected");
                c.machine.handle(Input::Failed(lost()), self.now);
                let actions = self.coordinator.disconnect(conn, self.now);
                self.apply(actions);
            }
            None => {}
        }
        Ok(())
    }

    fn connected(&mut self, client: usize) {
        if !self.clients[client].connecting || self.clients[client].finished.is_some() {
            return;
        }
        let conn = self.open(client);
        let c = &mut self.clients[client];
        c.connecting = false;
        c.conn = Some((conn, Link::default()));
        c.machine.handle(Input::Connected, self.now);
    }

    fn finish_batch(&mut self, client: usize, n: usize) {
        let c = &mut self.clients[client];
        let Some((tasks, stop)) = c.batch.take() else {
            return;
        };
        // A batch told to stop reports what reached a verdict; one left alone reports all.
        let reported = if stop {
            n.min(tasks.len())
        } else {
            tasks.len()
        };
        let reports = tasks[..reported]
            .iter()
            .map(|&task| TaskReport {
                task,
                result: result_of(client, task),
            })
            .collect();
        c.machine.handle(
            Input::BatchFinished {
                reports,
                overhead: Duration::ZERO,
            },
            self.now,
        );
    }

    fn finish_task(&mut self, client: usize) {
        let c = &mut self.clients[client];
        let Some((tasks, false)) = &c.batch else {
            return;
        };
        let Some(&task) = tasks.get(c.streamed) else {
            return;
        };
        c.streamed += 1;
        let report = TaskReport {
            task,
            result: result_of(client, task),
        };
        c.machine.handle(Input::TaskFinished(report), self.now);
    }

    fn wait(&mut self, by: Duration) {
        self.now += by;
        let now = self.now;
        let (late, left): (Vec<_>, Vec<_>) = self
            .unnoticed
            .drain(..)
            .partition(|&(_, since)| since + IDLE_TIMEOUT <= now);
        self.unnoticed = left;
        for (conn, _) in late {
            let actions = self.coordinator.disconnect(conn, now);
            self.apply(actions);
        }
        let (actions, _) = self.coordinator.tick(now);
        self.apply(actions);
        for c in &mut self.clients {
            if c.machine.timeout().is_some_and(|at| at <= now) {
                c.machine.handle_timeout(now);
            }
        }
    }

    /// Writes the journal to the store and checks that no stored result changed, and that each
    /// came from a client that was handed the task.
    fn flush(&mut self) -> Result<(), TestCaseError> {
        let journal = self.coordinator.journal();
        self.store.apply(&journal);
        for session in self.store.snapshot().sessions {
            for (&task, row) in &session.slots {
                let SlotState::Done(record) = &row.state else {
                    continue;
                };
                let client = (0..CLIENTS).find(|&c| client_id(c) == record.client);
                prop_assert!(
                    client.is_some_and(|c| self.clients[c].handed.contains(&task)),
                    "task {task} stored from {}, which was never handed it",
                    record.client
                );
                let seen = self
                    .durable
                    .entry(task)
                    .or_insert_with(|| (record.client.clone(), record.result.clone()));
                prop_assert_eq!(
                    &*seen,
                    &(record.client.clone(), record.result.clone()),
                    "task {}'s stored result changed",
                    task
                );
            }
        }
        Ok(())
    }

    fn restart(&mut self, graceful: bool) -> Result<(), TestCaseError> {
        if graceful {
            self.coordinator.freeze();
            self.flush()?;
        }
        self.runs += 1;
        self.coordinator = Coordinator::restore(
            policy(self.runs),
            Estimates::default(),
            self.store.snapshot(),
            self.now,
        );
        self.unnoticed.clear();
        for c in &mut self.clients {
            if c.conn.take().is_some() {
                c.machine.handle(Input::Failed(lost()), self.now);
            }
        }
        Ok(())
    }

    /// Delivers everything fairly, finishes every batch and lets time pass, until every client
    /// has finished; fails if that takes more than [`DRAIN_ROUNDS`].
    fn drain(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..DRAIN_ROUNDS {
            if self.clients.iter().all(|c| c.finished.is_some()) {
                return Ok(());
            }
            let mut moved = false;
            for client in 0..CLIENTS {
                let c = &self.clients[client];
                let steps = [
                    (c.connecting, Step::Connected(client)),
                    (
                        c.conn.as_ref().is_some_and(|(_, l)| !l.up.is_empty()),
                        Step::Deliver(client),
                    ),
                    (
                        c.conn.as_ref().is_some_and(|(_, l)| !l.down.is_empty()),
                        Step::Receive(client),
                    ),
                    (c.batch.is_some(), Step::FinishBatch(client, usize::MAX)),
                ];
                for (due, step) in steps {
                    if due {
                        moved = true;
                        self.step(&step)?;
                    }
                }
            }
            if !moved {
                self.step(&Step::Wait(1_000))?;
            }
        }
        let stuck: Vec<String> = self
            .clients
            .iter()
            .enumerate()
            .filter(|(_, c)| c.finished.is_none())
            .map(|(i, c)| format!("client {i}: {:?}", c.machine))
            .collect();
        Err(TestCaseError::fail(format!(
            "hung: not finished after {DRAIN_ROUNDS} rounds: {stuck:#?}"
        )))
    }
}

fn lost() -> ClientError {
    ClientError::Lost(wrapper::connection::LostReason::StreamEnded)
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300)
}

/// Runs one case: the steps, then the fair drain, then the end checks.
fn run(max_batches: &[u32], steps: &[Step]) -> Result<(), TestCaseError> {
    let mut model = Model::new(max_batches);
    for step in steps {
        model.step(step)?;
    }
    model.drain()?;
    for (i, c) in model.clients.iter().enumerate() {
        match c.finished.as_ref().expect("drained") {
            Ok(report) => prop_assert_eq!(Some(report), model.report.as_ref()),
            // Unavailable: it never joined, so it holds nothing and others do its share.
            Err(_) if !c.joined => prop_assert!(c.handed.is_empty()),
            Err(e) => return Err(TestCaseError::fail(format!("client {i} failed: {e}"))),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn clients_and_coordinator_agree_on_each_result_once(
        max_batches in prop::collection::vec(1..4u32, CLIENTS),
        steps in prop::collection::vec(step(), 0..150),
    ) {
        run(&max_batches, &steps)?;
    }
}
