//! One session: the tasks of one schema, who holds which, and what has finished.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use schemas::{
    Assignment, Joined, Progress, Schema, SchemaDigest, ServerMessage, SessionReport, TaskId,
    TaskRecord, TaskReport, Ticket,
};

use super::history::Estimates;
use super::persist::{
    Journal, MemberIdx, MemberRow, SessionRow, SlotRow, SlotState, StoredSession,
};
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
        /// The member holding the lease.
        holder: MemberIdx,
        /// When it was handed out.
        since: Instant,
        /// A second member running a backup copy; the first result wins.
        backup: Option<MemberIdx>,
    },
    /// Finished; the result is final.
    Done(TaskRecord),
}

/// A client in the session, connected or not: a member that lost its connection may come back
/// with its ticket.
#[derive(Debug)]
struct Member {
    /// The client's chosen name, recorded next to the results it produces.
    client_id: String,
    /// What it presents to come back.
    ticket: Ticket,
    /// Its connection; `None` while it is away.
    conn: Option<ConnId>,
    /// For a member restored away after a restart, still holding its leases: since when they
    /// wait for it. `None` once it is back or they were released, and for a member that left
    /// (its leases went back when it did).
    holding_since: Option<Instant>,
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
    /// One slot per task, indexed by task id. A result counts only from the member holding a
    /// task's lease or its backup copy: one whose lease went back (it left, or came back not
    /// knowing of the task) may never have received it, so what it says of it is not evidence.
    slots: Vec<Slot>,
    /// Queued task ids, next first. Returned leases go to the front: they were started first.
    queue: VecDeque<TaskId>,
    /// The known work in `queue`, in milliseconds, and how many queued tasks are unknown.
    queued: (u64, u64),
    /// Every client that joined, connected or away. A `BTreeMap` so that iteration order, and
    /// so every decision, is deterministic.
    members: BTreeMap<MemberIdx, Member>,
    /// Members by ticket.
    tickets: HashMap<Ticket, MemberIdx>,
    /// How many members are connected.
    connected: usize,
    /// Members waiting for work, in the order they asked.
    waiting: VecDeque<MemberIdx>,
    /// Tasks without a final result.
    remaining: usize,
    /// When the last result arrived; `None` while tasks remain.
    completed_at: Option<Instant>,
    /// The final report, built once when the session completes and shared by every `Complete`.
    report: Option<Arc<ServerMessage>>,
    /// When the last member left (for forgetting abandoned sessions); `None` while any is here.
    empty_since: Option<Instant>,
    /// After a restart: until when queued tasks are held back while members are still away.
    /// A coordinator killed outright may not have stored the leases it handed out last; the
    /// clients running those tasks claim them back when they return (see [`Session::resume`]),
    /// and must not find them handed to someone else first.
    settling_until: Option<Instant>,
    /// What changed since the last [`Session::journal`]: whether the session is new, and which
    /// members and tasks.
    dirty: Dirty,
}

/// What of a session must be written to the store.
#[derive(Debug, Default)]
struct Dirty {
    /// The session is new: its key's old rows go, its own row is written.
    fresh: bool,
    /// Members to write.
    members: Vec<MemberIdx>,
    /// Tasks to write, each once (see `flags`).
    tasks: Vec<TaskId>,
    /// Which tasks are in `tasks`.
    flags: Vec<bool>,
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
            tickets: HashMap::new(),
            connected: 0,
            waiting: VecDeque::new(),
            remaining: count,
            completed_at: None,
            report: None,
            empty_since: Some(now),
            settling_until: None,
            dirty: Dirty {
                fresh: true,
                flags: vec![false; count],
                ..Dirty::default()
            },
        };
        if count == 0 {
            session.complete(now);
        }
        session
    }

    /// A session as it was stored, with every member away. Leases stay with their members for
    /// a while (see [`Session::release_away`]), so that jobs still running their tasks when the
    /// coordinator restarted keep them when they come back.
    pub(crate) fn restore(
        key: String,
        stored: StoredSession,
        known: &[Option<u64>],
        scheduling: Scheduling,
        settle: Duration,
        now: Instant,
    ) -> Self {
        let StoredSession {
            row,
            members,
            slots: stored_slots,
            ..
        } = stored;
        let mut session = Session::new(
            key,
            row.schema,
            row.digest,
            row.history_scope,
            known,
            scheduling,
            now,
        );
        session.dirty = Dirty {
            flags: vec![false; session.slots.len()],
            ..Dirty::default()
        };
        session.settling_until = Some(now + settle);
        for (idx, member) in members {
            session.tickets.insert(member.ticket, idx);
            session.members.insert(
                idx,
                Member {
                    client_id: member.client_id,
                    ticket: member.ticket,
                    conn: None,
                    holding_since: Some(now),
                    waiting: None,
                    running: Vec::new(),
                },
            );
        }
        let is_member = |idx: &MemberIdx| session.members.contains_key(idx);
        let mut restored = Vec::new();
        for (task, row) in stored_slots {
            let Some(slot) = session.slots.get(task as usize) else {
                continue;
            };
            debug_assert!(matches!(slot, Slot::Queued));
            let slot = match row.state {
                SlotState::Queued => Slot::Queued,
                SlotState::Leased { holder, backup } => match (is_member(&holder), backup) {
                    (true, backup) => Slot::Leased {
                        holder,
                        since: now,
                        backup: backup.filter(|b| is_member(b) && *b != holder),
                    },
                    (false, Some(copy)) if is_member(&copy) => Slot::Leased {
                        holder: copy,
                        since: now,
                        backup: None,
                    },
                    _ => Slot::Queued,
                },
                SlotState::Done(mut record) => {
                    record.task = task;
                    Slot::Done(record)
                }
            };
            restored.push((task, slot));
        }
        let taken: std::collections::HashSet<TaskId> = restored
            .iter()
            .filter(|(_, slot)| !matches!(slot, Slot::Queued))
            .map(|(task, _)| *task)
            .collect();
        session.queue.retain(|t| !taken.contains(t));
        for (task, slot) in restored {
            let index = task as usize;
            if taken.contains(&task) {
                session.add_queued(task, -1);
            }
            if matches!(slot, Slot::Done(_)) {
                session.remaining -= 1;
            }
            session.slots[index] = slot;
        }
        if session.remaining == 0 && !session.is_complete() {
            session.complete(now);
        }
        session
    }

    /// Adds what changed since the last call to `journal`.
    pub(crate) fn journal(&mut self, journal: &mut Journal) {
        let dirty = &mut self.dirty;
        if std::mem::take(&mut dirty.fresh) {
            journal.cleared.insert(self.key.clone());
            journal.sessions.insert(
                self.key.clone(),
                SessionRow {
                    schema: (*self.schema).clone(),
                    digest: self.digest,
                    history_scope: self.history_scope.clone(),
                },
            );
        }
        for idx in dirty.members.drain(..) {
            if let Some(member) = self.members.get(&idx) {
                let row = MemberRow {
                    client_id: member.client_id.clone(),
                    ticket: member.ticket,
                };
                journal.members.insert((self.key.clone(), idx), row);
            }
        }
        for task in dirty.tasks.drain(..) {
            dirty.flags[task as usize] = false;
            let index = task as usize;
            let state = match &self.slots[index] {
                Slot::Queued => SlotState::Queued,
                Slot::Leased { holder, backup, .. } => SlotState::Leased {
                    holder: *holder,
                    backup: *backup,
                },
                Slot::Done(record) => SlotState::Done(record.clone()),
            };
            let row = SlotRow { state };
            journal.slots.insert((self.key.clone(), task), row);
        }
    }

    /// Marks a task's row as changed.
    fn touch(&mut self, task: TaskId) {
        let flag = &mut self.dirty.flags[task as usize];
        if !*flag {
            *flag = true;
            self.dirty.tasks.push(task);
        }
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

    /// Adds a client as a new member. It receives `Joined` with its ticket, and `Complete` at
    /// once if the session already is complete.
    pub(crate) fn join(
        &mut self,
        conn: ConnId,
        client_id: String,
        ticket: Ticket,
        created: bool,
    ) -> (MemberIdx, Vec<Action>) {
        let idx = self.members.keys().next_back().map_or(0, |last| last + 1);
        self.members.insert(
            idx,
            Member {
                client_id,
                ticket,
                conn: None,
                holding_since: None,
                waiting: None,
                running: Vec::new(),
            },
        );
        self.tickets.insert(ticket, idx);
        self.dirty.members.push(idx);
        let actions = self.attach(idx, conn, created, false);
        (idx, actions)
    }

    /// The member holding `ticket` comes back on `conn`. It keeps the leases of the tasks it is
    /// `running` (or ran), and takes back those of them that are queued: their lease was not
    /// stored before a restart, or went back when its connection was lost. Its other leases go
    /// back to the queue: the client does not know of them, because their assignment was lost
    /// with its old connection (or never sent before a restart), so they would wait for it
    /// forever. Returns its index, the connection it had if it still had one (which the caller
    /// closes: a client runs one connection at a time, so the old one is dead or about to be),
    /// and what to send. `None` when no member of this session holds the ticket.
    pub(crate) fn resume(
        &mut self,
        conn: ConnId,
        ticket: Ticket,
        running: &[TaskId],
        now: Instant,
    ) -> Option<(MemberIdx, Option<ConnId>, Vec<Action>)> {
        let idx = *self.tickets.get(&ticket)?;
        // Each once, however often the client named it.
        let named: BTreeSet<TaskId> = running.iter().copied().collect();
        let reclaimed: BTreeSet<TaskId> = named
            .iter()
            .copied()
            .filter(|&t| matches!(self.slots.get(t as usize), Some(Slot::Queued)))
            .collect();
        if !reclaimed.is_empty() {
            tracing::info!(session = %self.key, tasks = reclaimed.len(),
                "a client came back running tasks that were queued again; they stay with it");
            self.queue.retain(|t| !reclaimed.contains(t));
        }
        for &task in &reclaimed {
            self.lease(task, idx, now);
        }
        let member = self.members.get_mut(&idx).expect("tickets name members");
        let old = member.conn.take();
        if old.is_some() {
            self.connected -= 1;
            member.waiting = None;
            self.waiting.retain(|&m| m != idx);
        }
        let mut actions = self.attach(idx, conn, false, true);
        actions.extend(self.release_if(
            idx,
            |task| !named.contains(&task),
            "a client came back without knowing of tasks leased to it; they go back to the queue",
            now,
        ));
        Some((idx, old, actions))
    }

    /// Connects member `idx` on `conn` and tells it so.
    fn attach(
        &mut self,
        idx: MemberIdx,
        conn: ConnId,
        created: bool,
        resumed: bool,
    ) -> Vec<Action> {
        let member = self.members.get_mut(&idx).expect("a member");
        member.conn = Some(conn);
        member.holding_since = None;
        let ticket = member.ticket;
        self.connected += 1;
        self.empty_since = None;
        let joined = ServerMessage::Joined(Joined {
            created,
            resumed,
            ticket,
            tasks: self.slots.len() as u32,
            finished: (self.slots.len() - self.remaining) as u32,
            clients: self.connected as u32,
        });
        let mut actions = vec![Action::send(conn, joined)];
        if let Some(report) = &self.report {
            actions.push(Action::Send(conn, report.clone()));
        }
        actions
    }

    /// A member's name.
    pub(crate) fn client_id(&self, idx: MemberIdx) -> &str {
        self.members.get(&idx).map_or("", |m| m.client_id.as_str())
    }

    /// How many members the session has, connected or away.
    pub(crate) fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Member `idx` asks for up to `max_tasks` tasks; it gets them now or when some free up.
    pub(crate) fn request(
        &mut self,
        idx: MemberIdx,
        max_tasks: u32,
        overhead_ms: u32,
        now: Instant,
    ) -> Vec<Action> {
        if self.is_complete() {
            // The client has (or is about to get) `Complete`; nothing more to hand out.
            return Vec::new();
        }
        let max_batch = self.scheduling.max_batch;
        let Some(member) = self.members.get_mut(&idx) else {
            return Vec::new();
        };
        member.running.clear();
        let request = Waiting {
            limit: max_tasks.clamp(1, max_batch.max(1)),
            overhead_ms: u64::from(overhead_ms),
        };
        if member.waiting.replace(request).is_none() {
            self.waiting.push_back(idx);
        }
        self.dispatch(now)
    }

    /// Records results reported by member `idx`. A result counts once, and only from the member
    /// holding the task's lease or its backup copy. A job that lost its connection and comes
    /// back with results claims their tasks when it rejoins (see [`Session::resume`]), so its
    /// results count if the tasks are still open and nobody else took them. The first report
    /// wins and any other copy is aborted; a late or duplicate report is ignored, and so is a
    /// report from a member whose lease went back (it may never have received the task).
    /// Executed durations go into the timing history.
    pub(crate) fn report(
        &mut self,
        idx: MemberIdx,
        reports: Vec<TaskReport>,
        history: &mut Estimates,
        now: Instant,
    ) -> Result<Vec<Action>, UnknownTask> {
        if let Some(bad) = reports.iter().find(|r| r.task as usize >= self.slots.len()) {
            return Err(UnknownTask(bad.task));
        }
        let Some(member) = self.members.get_mut(&idx) else {
            return Ok(Vec::new());
        };
        member
            .running
            .retain(|t| !reports.iter().any(|r| r.task == *t));
        let client_id = member.client_id.clone();
        let mut actions = Vec::new();
        for TaskReport { task, result } in reports {
            let index = task as usize;
            // The other copies still running, to abort.
            let losers: Vec<MemberIdx> = match &self.slots[index] {
                Slot::Done(_) => {
                    tracing::debug!(session = %self.key, task, "ignored a late or duplicate result");
                    continue;
                }
                Slot::Leased { holder, backup, .. } if *holder == idx || *backup == Some(idx) => {
                    [Some(*holder), *backup]
                        .into_iter()
                        .flatten()
                        .filter(|&m| m != idx)
                        .collect()
                }
                _ => {
                    tracing::warn!(session = %self.key, task, client = %client_id,
                        "ignored a result for a task not leased to this client");
                    continue;
                }
            };
            tracing::debug!(session = %self.key, task, outcome = ?result.outcome, "result");
            if result.executed {
                let text = &self.schema.tasks[index].task;
                history.record(&self.history_scope, text, result.duration_ms);
                self.observed.0 += result.duration_ms;
                self.observed.1 += 1;
                self.longest_seen = self.longest_seen.max(result.duration_ms);
            }
            self.slots[index] = Slot::Done(TaskRecord {
                task,
                result,
                client: client_id.clone(),
            });
            self.touch(task);
            self.remaining -= 1;
            for loser in losers {
                tracing::info!(session = %self.key, task, "another copy of a task finished first; aborting this one");
                if let Some(member) = self.members.get_mut(&loser) {
                    member.running.retain(|t| *t != task);
                    if let Some(conn) = member.conn {
                        actions.push(Action::send(conn, ServerMessage::Abort(vec![task])));
                    }
                }
            }
        }
        if self.remaining == 0 && !self.is_complete() {
            self.complete(now);
            actions.extend(self.broadcast_report());
        }
        Ok(actions)
    }

    /// Member `idx` lost its connection. Its leased tasks go back to the front of the queue and
    /// on to any client waiting for work, at once — unless another member runs a backup copy,
    /// which then holds the lease. It stays a member: it may come back with its ticket.
    pub(crate) fn leave(&mut self, idx: MemberIdx, now: Instant) -> Vec<Action> {
        let Some(member) = self.members.get_mut(&idx) else {
            return Vec::new();
        };
        if member.conn.take().is_none() {
            return Vec::new();
        }
        member.waiting = None;
        member.running.clear();
        self.connected -= 1;
        self.waiting.retain(|&m| m != idx);
        if self.connected == 0 {
            self.empty_since = Some(now);
        }
        self.release(idx, now)
    }

    /// Releases the leases of members restored away that have not come back within `grace`.
    /// Each member's leases are released once: a member that left released them as it did.
    pub(crate) fn release_away(&mut self, now: Instant, grace: Duration) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.settling_until.is_some_and(|until| now >= until) {
            self.settling_until = None;
            actions.extend(self.dispatch(now));
        }
        let overdue: Vec<MemberIdx> = self
            .members
            .iter()
            .filter(|(_, m)| {
                m.holding_since
                    .is_some_and(|since| now.saturating_duration_since(since) >= grace)
            })
            .map(|(&idx, _)| idx)
            .collect();
        for idx in overdue {
            if let Some(member) = self.members.get_mut(&idx) {
                member.holding_since = None;
            }
            actions.extend(self.release(idx, now));
        }
        actions
    }

    /// Returns the leases member `idx` holds (see [`Session::leave`]).
    fn release(&mut self, idx: MemberIdx, now: Instant) -> Vec<Action> {
        self.release_if(
            idx,
            |_| true,
            "a client left holding leases; its tasks go back to the queue",
            now,
        )
    }

    /// Returns the leases member `idx` holds of the tasks `pick` selects: a backup copy takes
    /// over where there is one, the rest go to the front of the queue. `why` is logged when
    /// any go back.
    fn release_if(
        &mut self,
        idx: MemberIdx,
        pick: impl Fn(TaskId) -> bool,
        why: &str,
        now: Instant,
    ) -> Vec<Action> {
        let mut returned = Vec::new();
        let mut changed = Vec::new();
        for (task, slot) in self.slots.iter_mut().enumerate() {
            if !pick(task as TaskId) {
                continue;
            }
            let Slot::Leased {
                holder,
                backup,
                since,
            } = slot
            else {
                continue;
            };
            if *backup == Some(idx) {
                *backup = None;
                changed.push(task as TaskId);
            } else if *holder == idx {
                match backup.take() {
                    Some(copy) => {
                        *holder = copy;
                        *since = now;
                        changed.push(task as TaskId);
                    }
                    None => returned.push(task as TaskId),
                }
            }
        }
        if !returned.is_empty() {
            tracing::info!(session = %self.key, tasks = returned.len(),
                client = %self.client_id(idx), "{why}");
        }
        for task in changed {
            self.touch(task);
        }
        for &task in returned.iter().rev() {
            self.slots[task as usize] = Slot::Queued;
            self.touch(task);
            self.queue.push_front(task);
            self.add_queued(task, 1);
        }
        self.dispatch(now)
    }

    /// Hands queued tasks to waiting clients, oldest request first; with the queue empty, gives
    /// idle clients backup copies of long tasks still running elsewhere.
    fn dispatch(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.settling_until.is_some() {
            if self.connected < self.members.len() {
                return actions;
            }
            // Everyone is back: nothing left to wait for.
            self.settling_until = None;
        }
        while let Some(&idx) = self.waiting.front() {
            let request = self.members[&idx].waiting.expect("a waiter has a request");
            let batch = if self.queue.is_empty() {
                match self.backup_candidate(idx, request.overhead_ms, now) {
                    Some(task) => {
                        if let Slot::Leased { backup, .. } = &mut self.slots[task as usize] {
                            *backup = Some(idx);
                        }
                        self.touch(task);
                        tracing::info!(session = %self.key, task, "handing out a backup copy of a long task");
                        vec![task]
                    }
                    None => break,
                }
            } else {
                let target = scheduler::batch_target_ms(
                    self.queued_work_ms(),
                    self.connected.max(1),
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
                    self.lease(task, idx, now);
                }
                batch
            };
            self.waiting.pop_front();
            let member = self.members.get_mut(&idx).expect("waiters are members");
            member.waiting = None;
            member.running = batch.clone();
            let conn = member.conn.expect("waiters are connected");
            let progress = Progress {
                finished: (self.slots.len() - self.remaining) as u32,
                total: self.slots.len() as u32,
                clients: self.connected as u32,
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

    /// Leases `task`, which has left the queue, to member `idx`.
    fn lease(&mut self, task: TaskId, idx: MemberIdx, now: Instant) {
        self.add_queued(task, -1);
        self.slots[task as usize] = Slot::Leased {
            holder: idx,
            since: now,
            backup: None,
        };
        self.touch(task);
    }

    /// The running task most worth a backup copy on `idle`: alone in its holder's batch, without
    /// a copy yet, and expected to run on for longer than it costs to start a copy. `None` when
    /// backups are off or nothing qualifies.
    fn backup_candidate(&self, idle: MemberIdx, overhead_ms: u64, now: Instant) -> Option<TaskId> {
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
            .values()
            .filter_map(|member| member.conn)
            .map(|conn| Action::Send(conn, report.clone()))
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
                    // Only a connected member, or one restored away and waited for, holds one.
                    for m in std::iter::once(holder).chain(backup) {
                        let member = &self.members[m];
                        assert!(
                            member.conn.is_some() || member.holding_since.is_some(),
                            "task {task} is held by a member that left"
                        );
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
        for idx in &self.waiting {
            assert!(
                self.members[idx].waiting.is_some(),
                "a waiter without a request"
            );
            assert!(self.members[idx].conn.is_some(), "an away waiter");
        }
        assert_eq!(
            self.connected,
            self.members.values().filter(|m| m.conn.is_some()).count(),
            "connected count"
        );
        for (idx, member) in &self.members {
            assert_eq!(self.tickets.get(&member.ticket), Some(idx), "ticket index");
        }
    }

    /// Panics unless `stored` (what the store holds after the last journal) is this session.
    #[cfg(test)]
    pub(crate) fn check_stored(&self, stored: &StoredSession) {
        assert_eq!(*self.schema, stored.row.schema);
        for (idx, member) in &self.members {
            assert_eq!(stored.members[idx].ticket, member.ticket, "stored ticket");
        }
        for (task, slot) in self.slots.iter().enumerate() {
            let row = stored.slots.get(&(task as TaskId));
            let state = row.map_or(&SlotState::Queued, |r| &r.state);
            match (slot, state) {
                (Slot::Queued, SlotState::Queued) => {}
                (Slot::Done(live), SlotState::Done(kept)) => assert_eq!(live, kept),
                (
                    Slot::Leased { holder, backup, .. },
                    SlotState::Leased {
                        holder: h,
                        backup: b,
                    },
                ) => assert_eq!((holder, backup), (h, b)),
                (live, kept) => panic!("task {task} is {live:?} but stored as {kept:?}"),
            }
            if !matches!(slot, Slot::Done(_)) {}
        }
    }

    /// Who produced each task's result so far, for tests.
    #[cfg(test)]
    pub(crate) fn records(&self) -> Vec<Option<String>> {
        self.slots
            .iter()
            .map(|slot| match slot {
                Slot::Done(record) => Some(record.client.clone()),
                _ => None,
            })
            .collect()
    }

    /// Tasks currently leased to `conn` (as holder), for tests.
    #[cfg(test)]
    pub(crate) fn leased_to(&self, idx: MemberIdx) -> Vec<TaskId> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| matches!(slot, Slot::Leased { holder, .. } if *holder == idx))
            .map(|(task, _)| task as TaskId)
            .collect()
    }
}

/// The expected duration of a task nothing is known about, when nothing in its session is known
/// either. Only its relation to the others matters: equal estimates keep the listed order.
const DEFAULT_ESTIMATE_MS: u64 = 1000;

/// A backup copy must be expected to save at least this much, beyond twice the overhead.
const MIN_BACKUP_GAIN_MS: u64 = 10;
