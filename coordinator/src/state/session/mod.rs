//! One session: the tasks of one schema, who holds which, and what has finished.
//!
//! The state is one struct, [`Session`]; its methods are grouped by job, one module each:
//! [`membership`] (joining, coming back with a ticket, leaving, leases going back),
//! [`dispatch`] (requests, batches, backup copies), [`results`] (which reports count, the final
//! report), [`estimates`] (expected durations and queued work) and [`store`] (restoring from
//! stored rows, the journal of changes). Every rule about a lease lives in one of them; the
//! fields are private to this module and its children.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use schemas::{
    Assignment, Joined, Outcome, Progress, Schema, SchemaDigest, ServerMessage, SessionReport,
    TaskId, TaskRecord, TaskReport, TaskResult, Ticket,
};

use super::history::Estimates;
use super::persist::{
    Journal, MemberIdx, MemberRow, SessionRow, SlotRow, SlotState, StoredSession,
};
use super::scheduler::{self, Batching, Order};
use super::{Action, ConnId};

#[cfg(test)]
mod checks;
mod dispatch;
mod estimates;
mod membership;
mod results;
mod store;
mod view;

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
    /// The tasks of its last assignment it has not reported yet (clients report each task as it
    /// finishes): what is left of its batch, which an idle member may copy.
    running: Vec<TaskId>,
    /// The groups of the tasks it was handed (see [`schemas::Task::group`]): it has built
    /// what they share, so it is preferably given more of them.
    groups: BTreeSet<u32>,
    /// How many of its tasks it runs at once (see [`schemas::Join::parallelism`]), as its
    /// latest join said; 1 until it joins (a member restored after a restart).
    parallelism: u32,
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
    /// The CI run its creator named ([`schemas::Join::run`]): the coordinator counts a run's
    /// sessions, so that jobs of one run that split into several are told.
    run: Option<String>,
    /// Whether the session stops at its first failing task (see [`schemas::Join::fail_fast`]).
    fail_fast: bool,
    /// How to schedule.
    scheduling: Scheduling,
    /// Each task's group, as an index into the schema's distinct groups.
    group_of: Vec<Option<u32>>,
    /// Each task's duration from its history, in milliseconds; `None` where unknown.
    known: Vec<Option<u64>>,
    /// What an unknown task of weight 1 is expected to take before anything ran: the median
    /// per unit of weight of the known ones, else a default.
    initial_stand_in: u64,
    /// The largest weight of a task without history (1 when there is none).
    heaviest_unknown: u64,
    /// Sum of the durations executed in this session and of those tasks' weights; their
    /// quotient is what an unknown task of weight 1 is expected to take once there is one.
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
    /// The same for every task without a result, queued or leased: what is left to do.
    undone: (u64, u64),
    /// Every client that joined, connected or away. A `BTreeMap` so that iteration order, and
    /// so every decision, is deterministic.
    members: BTreeMap<MemberIdx, Member>,
    /// Members by ticket.
    tickets: HashMap<Ticket, MemberIdx>,
    /// How many members are connected.
    connected: usize,
    /// How many tasks the connected members run at once, together (the sum of their
    /// [`Member::parallelism`]): the slots batches are sized against. Kept beside `connected`,
    /// as it is, so that handing out work need not walk every member.
    connected_parallelism: u64,
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
    /// Bytes of failing tasks' log tails kept so far (see [`MAX_SESSION_LOG_BYTES`]).
    log_bytes: usize,
    /// When the session was created (or restored): the origin of its timeline.
    created_at: Instant,
    /// Each counted result's lease, by the time it was handed out and reported: what the
    /// dashboard draws. At most one per task. Not stored: a restarted coordinator's timeline
    /// starts at the restart.
    spans: Vec<Span>,
    /// What it did, for the coordinator's metrics.
    counts: crate::state::view::Counts,
}

/// One task's time with the member whose result counted, for the timeline.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span {
    /// Which task.
    pub(crate) task: TaskId,
    /// Who ran it.
    pub(crate) member: MemberIdx,
    /// When its lease was handed out: tasks of one batch share it.
    pub(crate) leased: Instant,
    /// When its result arrived.
    pub(crate) reported: Instant,
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
    /// A new session of `row`'s tasks, queued in the policy's order, using `known` durations.
    pub(crate) fn new(
        key: String,
        row: SessionRow,
        known: &[Option<u64>],
        scheduling: Scheduling,
        now: Instant,
    ) -> Self {
        let SessionRow {
            schema,
            digest,
            history_scope,
            run,
            fail_fast,
        } = row;
        let count = schema.tasks.len();
        let schema_groups: Vec<Option<String>> =
            schema.tasks.iter().map(|t| t.group.clone()).collect();
        let weights: Vec<u32> = schema.tasks.iter().map(|t| t.weight_or_one()).collect();
        let (estimates, known_count, initial_stand_in) =
            scheduler::fill_estimates(known, &weights, DEFAULT_ESTIMATE_MS);
        let prerequisites: Vec<bool> = schema.tasks.iter().map(|t| t.prerequisite).collect();
        let queue = scheduler::initial_queue(&estimates, &prerequisites, scheduling.order);
        let heaviest_unknown = known
            .iter()
            .zip(&weights)
            .filter(|(k, _)| k.is_none())
            .map(|(_, &w)| u64::from(w))
            .max()
            .unwrap_or(1);
        tracing::info!(session = %key, tasks = count, with_history = known_count, "scheduling");
        let work = (
            known.iter().flatten().sum(),
            known
                .iter()
                .zip(&weights)
                .filter(|(k, _)| k.is_none())
                .map(|(_, &w)| u64::from(w))
                .sum(),
        );
        let mut session = Session {
            key,
            schema: Arc::new(schema),
            digest,
            history_scope,
            run,
            fail_fast,
            scheduling,
            queued: work,
            undone: work,
            known: known.to_vec(),
            initial_stand_in,
            heaviest_unknown,
            observed: (0, 0),
            longest_seen: known.iter().flatten().copied().max().unwrap_or(0),
            slots: vec![Slot::Queued; count],
            queue,
            members: BTreeMap::new(),
            tickets: HashMap::new(),
            connected: 0,
            connected_parallelism: 0,
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
            log_bytes: 0,
            created_at: now,
            spans: Vec::new(),
            group_of: group_indices(&schema_groups),
            counts: crate::state::view::Counts {
                sessions_created: 1,
                ..Default::default()
            },
        };
        if count == 0 {
            let run_sessions = u32::from(session.run.is_some());
            session.complete(run_sessions, now);
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

    /// The CI run its creator named.
    pub(crate) fn run(&self) -> Option<&str> {
        self.run.as_deref()
    }

    /// When it was created (or restored) and when it completed (`now` while it runs): sessions
    /// of one run whose lifetimes overlap are jobs that split, where one after the other are a
    /// job's successive commands.
    pub(crate) fn lifetime(&self, now: Instant) -> (Instant, Instant) {
        (self.created_at, self.completed_at.unwrap_or(now))
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

    /// A member's name.
    pub(crate) fn client_id(&self, idx: MemberIdx) -> &str {
        self.members.get(&idx).map_or("", |m| m.client_id.as_str())
    }

    /// How many members the session has, connected or away.
    pub(crate) fn member_count(&self) -> usize {
        self.members.len()
    }
}

/// The expected duration of a task nothing is known about, when nothing in its session is known
/// either. Only its relation to the others matters: equal estimates keep the listed order.
const DEFAULT_ESTIMATE_MS: u64 = 1000;

/// The most bytes of log tails one session keeps: 64 full tails. Every member receives all of
/// them in the final report, and the coordinator holds them for the session's life.
pub(crate) const MAX_SESSION_LOG_BYTES: usize = 4 << 20;

/// A backup copy must be expected to save at least this much, beyond twice the overhead: a
/// copy runs the same work twice, worth it for a straggler, not to shave a moment off a task
/// about to finish (whose estimate is no more precise than that).
const MIN_BACKUP_GAIN_MS: u64 = 1_000;

/// The most tasks one member is taken to run at once (see [`Member::parallelism`]).
pub(crate) const MAX_PARALLELISM: u32 = 1024;

/// Each task's group as a small number: the same text, the same number.
fn group_indices(groups: &[Option<String>]) -> Vec<Option<u32>> {
    let mut ids: HashMap<&str, u32> = HashMap::new();
    groups
        .iter()
        .map(|group| {
            let group = group.as_deref()?;
            let next = ids.len() as u32;
            Some(*ids.entry(group).or_insert(next))
        })
        .collect()
}
