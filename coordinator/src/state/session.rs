//! One session: the tasks of one schema, who holds which, and what has finished.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use schemas::{
    Assignment, Joined, Progress, Schema, SchemaDigest, ServerMessage, SessionReport, TaskId,
    TaskRecord, TaskReport,
};

use super::history::History;
use super::scheduler::{self, Batching, Order};
use super::{Action, ConnId};

/// How a session schedules, from the coordinator's policy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scheduling {
    /// Queue order.
    pub(crate) order: Order,
    /// Batch sizing.
    pub(crate) batching: Batching,
    /// Whether idle clients get backup copies of long tasks still running elsewhere.
    pub(crate) backups: bool,
    /// The most tasks in one assignment.
    pub(crate) max_batch: u32,
}

/// Where one task stands.
#[derive(Debug, Clone)]
enum Slot {
    /// Waiting in the queue for a client.
    Queued,
    /// Handed to a client, which has not reported it yet.
    Leased {
        /// The connection holding the lease.
        holder: ConnId,
        /// When it was handed out.
        since: Instant,
        /// A second client running a backup copy; the first result wins.
        backup: Option<ConnId>,
    },
    /// Finished; the result is final.
    Done(TaskRecord),
}

/// A client in the session.
#[derive(Debug)]
struct Member {
    /// The client's chosen name, recorded next to the results it produces.
    client_id: String,
    /// `Some(request)` while the client has asked for work and not been given any.
    waiting: Option<Waiting>,
    /// The tasks of its last assignment it has not reported yet (a backup copy is only made of a
    /// task that is a batch on its own, so aborting it stops nothing else).
    running: Vec<TaskId>,
}

/// A pending request for work.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    /// The most tasks it takes at once.
    limit: u32,
    /// Its per-batch overhead, in milliseconds.
    overhead_ms: u64,
}

/// What [`Session::report`] refuses.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct UnknownTask(pub(crate) TaskId);

/// A named schema's tasks, shared by every client that joined under one session key.
#[derive(Debug)]
pub(crate) struct Session {
    /// The key clients joined under.
    key: String,
    /// The tasks, for names in logs and history.
    schema: Arc<Schema>,
    /// The schema's digest, which every later join must match.
    digest: SchemaDigest,
    /// Where the tasks' timing history is filed.
    history_scope: String,
    /// How to schedule.
    scheduling: Scheduling,
    /// Each task's duration from its history, in milliseconds; `None` where unknown.
    known: Vec<Option<u64>>,
    /// What an unknown task is expected to take before anything ran: the median of the known
    /// ones, else a default.
    initial_stand_in: u64,
    /// Sum and count of the durations executed in this session; their mean is what an unknown
    /// task is expected to take once there is one.
    observed: (u64, u64),
    /// The longest duration known from history or executed in this session so far.
    longest_seen: u64,
    /// One slot per task, indexed by task id.
    slots: Vec<Slot>,
    /// Queued task ids, next first. Returned leases go to the front: they were started first.
    queue: VecDeque<TaskId>,
    /// The known work in `queue`, in milliseconds, and how many queued tasks are unknown.
    queued: (u64, u64),
    /// The connected clients. A `BTreeMap` so that iteration order, and so every decision, is
    /// deterministic.
    members: BTreeMap<ConnId, Member>,
    /// Members waiting for work, in the order they asked.
    waiting: VecDeque<ConnId>,
    /// Tasks without a final result.
    remaining: usize,
    /// When the last result arrived; `None` while tasks remain.
    completed_at: Option<Instant>,
    /// The final report, built once when the session completes and shared by every `Complete`.
    report: Option<Arc<ServerMessage>>,
    /// When the last member left (for forgetting abandoned sessions); `None` while any is here.
    empty_since: Option<Instant>,
}

impl Session {
    /// A new session whose tasks are queued in the policy's order, using `known` durations.
    pub(crate) fn new(
        key: String,
        schema: Schema,
        digest: SchemaDigest,
        history_scope: String,
        known: &[Option<u64>],
        scheduling: Scheduling,
        now: Instant,
    ) -> Self {
        let count = schema.tasks.len();
        let (estimates, known_count) = scheduler::fill_estimates(known, DEFAULT_ESTIMATE_MS);
        let queue = scheduler::initial_queue(&estimates, scheduling.order);
        let initial_stand_in = match known.iter().position(Option::is_none) {
            Some(unknown) => estimates[unknown],
            None => DEFAULT_ESTIMATE_MS,
        };
        tracing::info!(session = %key, tasks = count, with_history = known_count, "scheduling");
        let mut session = Session {
            key,
            schema: Arc::new(schema),
            digest,
            history_scope,
            scheduling,
            queued: (
                known.iter().flatten().sum(),
                known.iter().filter(|k| k.is_none()).count() as u64,
            ),
            known: known.to_vec(),
            initial_stand_in,
            observed: (0, 0),
            longest_seen: known.iter().flatten().copied().max().unwrap_or(0),
            slots: vec![Slot::Queued; count],
            queue,
            members: BTreeMap::new(),
            waiting: VecDeque::new(),
            remaining: count,
            completed_at: None,
            report: None,
            empty_since: Some(now),
        };
        if count == 0 {
            session.complete(now);
        }
        session
    }

    /// The schema's digest.
    pub(crate) fn digest(&self) -> SchemaDigest {
        self.digest
    }

    /// The schema.
    pub(crate) fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Whether every task has a result.
    pub(crate) fn is_complete(&self) -> bool {
        self.completed_at.is_some()
    }

    /// Whether this session may be forgotten at `now`: complete, or without members, for at
    /// least `ttl`.
    pub(crate) fn is_expired(&self, now: Instant, ttl: std::time::Duration) -> bool {
        let since = match (self.completed_at, self.empty_since) {
            // A completed session still in use stays until its last client leaves and the ttl
            // has passed since the later of the two.
            (Some(done), Some(empty)) => done.max(empty),
            (Some(_), None) | (None, None) => return false,
            (None, Some(empty)) => empty,
        };
        now.saturating_duration_since(since) >= ttl
    }

    /// Adds a client. It receives `Joined`, and `Complete` at once if the session already is.
    pub(crate) fn join(&mut self, conn: ConnId, client_id: String, created: bool) -> Vec<Action> {
        self.members.insert(
            conn,
            Member {
                client_id,
                waiting: None,
                running: Vec::new(),
            },
        );
        self.empty_since = None;
        let joined = ServerMessage::Joined(Joined {
            created,
            tasks: self.slots.len() as u32,
            finished: (self.slots.len() - self.remaining) as u32,
            clients: self.members.len() as u32,
        });
        let mut actions = vec![Action::send(conn, joined)];
        if let Some(report) = &self.report {
            actions.push(Action::Send(conn, report.clone()));
        }
        actions
    }

    /// The client asks for up to `max_tasks` tasks; it gets them now or when some free up.
    pub(crate) fn request(
        &mut self,
        conn: ConnId,
        max_tasks: u32,
        overhead_ms: u32,
        now: Instant,
    ) -> Vec<Action> {
        if self.is_complete() {
            // The client has (or is about to get) `Complete`; nothing more to hand out.
            return Vec::new();
        }
        let max_batch = self.scheduling.max_batch;
        let Some(member) = self.members.get_mut(&conn) else {
            return Vec::new();
        };
        member.running.clear();
        let request = Waiting {
            limit: max_tasks.clamp(1, max_batch.max(1)),
            overhead_ms: u64::from(overhead_ms),
        };
        if member.waiting.replace(request).is_none() {
            self.waiting.push_back(conn);
        }
        self.dispatch(now)
    }

    /// Records results reported by `conn`. A result counts once: only a client running the task
    /// (its lease holder, or the one with its backup copy) may report it; the first report wins
    /// and the other copy is aborted; a late or duplicate report is ignored. Executed durations
    /// go into the timing history.
    pub(crate) fn report(
        &mut self,
        conn: ConnId,
        reports: Vec<TaskReport>,
        history: &mut dyn History,
        now: Instant,
    ) -> Result<Vec<Action>, UnknownTask> {
        if let Some(bad) = reports.iter().find(|r| r.task as usize >= self.slots.len()) {
            return Err(UnknownTask(bad.task));
        }
        let Some(member) = self.members.get_mut(&conn) else {
            return Ok(Vec::new());
        };
        member
            .running
            .retain(|t| !reports.iter().any(|r| r.task == *t));
        let client_id = member.client_id.clone();
        let mut actions = Vec::new();
        for TaskReport { task, result } in reports {
            let slot = &mut self.slots[task as usize];
            let loser = match slot {
                Slot::Leased { holder, backup, .. } if *holder == conn => backup.take(),
                Slot::Leased { holder, backup, .. } if *backup == Some(conn) => Some(*holder),
                Slot::Done(_) => {
                    tracing::debug!(session = %self.key, task, "ignored a late or duplicate result");
                    continue;
                }
                Slot::Leased { .. } | Slot::Queued => {
                    tracing::warn!(session = %self.key, task, client = %client_id,
                        "ignored a result for a task not leased to this client");
                    continue;
                }
            };
            tracing::debug!(session = %self.key, task, outcome = ?result.outcome, "result");
            if result.executed {
                let text = &self.schema.tasks[task as usize].task;
                history.record(&self.history_scope, text, result.duration_ms);
                self.observed.0 += result.duration_ms;
                self.observed.1 += 1;
                self.longest_seen = self.longest_seen.max(result.duration_ms);
            }
            *slot = Slot::Done(TaskRecord {
                task,
                result,
                client: client_id.clone(),
            });
            self.remaining -= 1;
            if let Some(loser) = loser {
                tracing::info!(session = %self.key, task, "the other copy of a task lost; aborting it");
                if let Some(member) = self.members.get_mut(&loser) {
                    member.running.retain(|t| *t != task);
                }
                actions.push(Action::send(loser, ServerMessage::Abort(vec![task])));
            }
        }
        if self.remaining == 0 && !self.is_complete() {
            self.complete(now);
            actions.extend(self.broadcast_report());
        }
        Ok(actions)
    }

    /// Removes a client. Its leased tasks go back to the front of the queue and on to any client
    /// waiting for work, at once — unless another client runs a backup copy, which then holds
    /// the lease.
    pub(crate) fn leave(&mut self, conn: ConnId, now: Instant) -> Vec<Action> {
        if self.members.remove(&conn).is_none() {
            return Vec::new();
        }
        self.waiting.retain(|&c| c != conn);
        if self.members.is_empty() {
            self.empty_since = Some(now);
        }
        let mut returned = Vec::new();
        for (task, slot) in self.slots.iter_mut().enumerate() {
            let Slot::Leased {
                holder,
                backup,
                since,
            } = slot
            else {
                continue;
            };
            if *backup == Some(conn) {
                *backup = None;
            } else if *holder == conn {
                match backup.take() {
                    Some(copy) => {
                        *holder = copy;
                        *since = now;
                    }
                    None => returned.push(task as TaskId),
                }
            }
        }
        if !returned.is_empty() {
            tracing::info!(session = %self.key, tasks = returned.len(),
                "a client left holding leases; its tasks go back to the queue");
        }
        for &task in returned.iter().rev() {
            self.slots[task as usize] = Slot::Queued;
            self.queue.push_front(task);
            self.add_queued(task, 1);
        }
        self.dispatch(now)
    }

    /// Hands queued tasks to waiting clients, oldest request first; with the queue empty, gives
    /// idle clients backup copies of long tasks still running elsewhere.
    fn dispatch(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        while let Some(&conn) = self.waiting.front() {
            let request = self.members[&conn].waiting.expect("a waiter has a request");
            let batch = if self.queue.is_empty() {
                match self.backup_candidate(conn, request.overhead_ms, now) {
                    Some(task) => {
                        if let Slot::Leased { backup, .. } = &mut self.slots[task as usize] {
                            *backup = Some(conn);
                        }
                        tracing::info!(session = %self.key, task, "handing out a backup copy of a long task");
                        vec![task]
                    }
                    None => break,
                }
            } else {
                let target = scheduler::batch_target_ms(
                    self.queued_work_ms(),
                    self.members.len(),
                    request.overhead_ms,
                    self.longest_expected(),
                );
                let len = scheduler::batch_len(
                    &self.queue,
                    |task| self.expected(task as usize),
                    target,
                    request.limit,
                    self.scheduling.batching,
                );
                let batch: Vec<TaskId> = self.queue.drain(..len).collect();
                for &task in &batch {
                    self.add_queued(task, -1);
                    self.slots[task as usize] = Slot::Leased {
                        holder: conn,
                        since: now,
                        backup: None,
                    };
                }
                batch
            };
            self.waiting.pop_front();
            let member = self.members.get_mut(&conn).expect("waiters are members");
            member.waiting = None;
            member.running = batch.clone();
            let progress = Progress {
                finished: (self.slots.len() - self.remaining) as u32,
                total: self.slots.len() as u32,
                clients: self.members.len() as u32,
            };
            actions.push(Action::send(
                conn,
                ServerMessage::Assignment(Assignment {
                    tasks: batch,
                    progress,
                }),
            ));
        }
        actions
    }

    /// The running task most worth a backup copy on `idle`: alone in its holder's batch, without
    /// a copy yet, and expected to run on for longer than it costs to start a copy. `None` when
    /// backups are off or nothing qualifies.
    fn backup_candidate(&self, idle: ConnId, overhead_ms: u64, now: Instant) -> Option<TaskId> {
        if !self.scheduling.backups {
            return None;
        }
        // Candidates are the members running a single task: look there, not at every slot.
        self.members
            .iter()
            .filter(|(holder, _)| **holder != idle)
            .filter_map(|(holder, member)| match member.running[..] {
                [task] => Some((holder, task as usize)),
                _ => None,
            })
            .filter_map(|(holder, task)| match &self.slots[task] {
                Slot::Leased {
                    holder: leased_to,
                    since,
                    backup: None,
                } if leased_to == holder
                    // Only on grounds: the task's history, or durations seen in this session.
                    && (self.known[task].is_some() || self.observed.1 > 0) =>
                {
                    let elapsed = now.saturating_duration_since(*since).as_millis() as u64;
                    let left = self.expected(task).saturating_sub(elapsed);
                    (left > 2 * overhead_ms + MIN_BACKUP_GAIN_MS).then_some((left, task as TaskId))
                }
                _ => None,
            })
            .max()
            .map(|(_, task)| task)
    }

    /// A task's expected duration: its history, else the mean of what ran in this session so
    /// far, else the initial stand-in.
    fn expected(&self, task: usize) -> u64 {
        self.known[task].unwrap_or_else(|| self.stand_in())
    }

    /// What an unknown task is expected to take now.
    fn stand_in(&self) -> u64 {
        match self.observed {
            (sum, count) if count > 0 => sum / count,
            _ => self.initial_stand_in,
        }
    }

    /// The longest any task of the session is expected to take.
    fn longest_expected(&self) -> u64 {
        if self.queued.1 > 0 {
            self.longest_seen.max(self.stand_in())
        } else {
            self.longest_seen
        }
    }

    /// The expected work in the queue, in milliseconds.
    fn queued_work_ms(&self) -> u64 {
        self.queued.0 + self.queued.1 * self.stand_in()
    }

    /// Counts `task` into (`sign` 1) or out of (-1) the queued work.
    fn add_queued(&mut self, task: TaskId, sign: i8) {
        let (known, unknown) = match self.known[task as usize] {
            Some(ms) => (ms, 0),
            None => (0, 1),
        };
        if sign > 0 {
            self.queued.0 += known;
            self.queued.1 += unknown;
        } else {
            self.queued.0 -= known;
            self.queued.1 -= unknown;
        }
    }

    fn complete(&mut self, now: Instant) {
        self.completed_at = Some(now);
        self.waiting.clear();
        for member in self.members.values_mut() {
            member.waiting = None;
            member.running.clear();
        }
        let records = self
            .slots
            .iter()
            .map(|slot| match slot {
                Slot::Done(record) => record.clone(),
                _ => unreachable!("a complete session has a result for every task"),
            })
            .collect();
        self.report = Some(Arc::new(ServerMessage::Complete(SessionReport {
            schema_name: self.schema.name.clone(),
            records,
        })));
        tracing::info!(session = %self.key, tasks = self.slots.len(), "session complete");
    }

    fn broadcast_report(&self) -> Vec<Action> {
        let report = self.report.as_ref().expect("complete");
        self.members
            .keys()
            .map(|&conn| Action::Send(conn, report.clone()))
            .collect()
    }

    /// Panics unless the session's bookkeeping is consistent: what the property test checks after
    /// every step.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        use std::collections::HashSet;
        let queued: HashSet<TaskId> = self.queue.iter().copied().collect();
        assert_eq!(queued.len(), self.queue.len(), "a task is queued twice");
        let mut not_done = 0;
        let mut unknown_queued = 0;
        let mut known_queued_ms = 0;
        for (task, slot) in self.slots.iter().enumerate() {
            let id = task as TaskId;
            match slot {
                Slot::Queued => {
                    assert!(
                        queued.contains(&id),
                        "task {task} is neither queued nor leased"
                    );
                    match self.known[task] {
                        Some(ms) => known_queued_ms += ms,
                        None => unknown_queued += 1,
                    }
                    not_done += 1;
                }
                Slot::Leased { holder, backup, .. } => {
                    assert!(!queued.contains(&id), "leased task {task} is also queued");
                    assert!(
                        self.members.contains_key(holder),
                        "task {task} leased to a non-member"
                    );
                    if let Some(copy) = backup {
                        assert_ne!(copy, holder, "a task's backup is its holder");
                        assert!(self.members.contains_key(copy), "backup with a non-member");
                    }
                    not_done += 1;
                }
                Slot::Done(record) => {
                    assert!(!queued.contains(&id), "finished task {task} is queued");
                    assert_eq!(record.task, id);
                }
            }
        }
        assert_eq!(self.remaining, not_done, "remaining count");
        assert_eq!(
            self.queued,
            (known_queued_ms, unknown_queued),
            "queued work"
        );
        assert_eq!(self.is_complete(), not_done == 0);
        for conn in &self.waiting {
            assert!(
                self.members[conn].waiting.is_some(),
                "a waiter without a request"
            );
        }
    }

    /// Tasks currently leased to `conn` (as holder), for tests.
    #[cfg(test)]
    pub(crate) fn leased_to(&self, conn: ConnId) -> Vec<TaskId> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| matches!(slot, Slot::Leased { holder, .. } if *holder == conn))
            .map(|(task, _)| task as TaskId)
            .collect()
    }
}

/// The expected duration of a task nothing is known about, when nothing in its session is known
/// either. Only its relation to the others matters: equal estimates keep the listed order.
const DEFAULT_ESTIMATE_MS: u64 = 1000;

/// A backup copy must be expected to save at least this much, beyond twice the overhead.
const MIN_BACKUP_GAIN_MS: u64 = 10;
