//! One session: the tasks of one schema, who holds which, and what has finished.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use schemas::{
    Assignment, Joined, Progress, Schema, SchemaDigest, ServerMessage, SessionReport, TaskId,
    TaskRecord, TaskReport,
};

use super::{Action, ConnId};

/// Where one task stands.
#[derive(Debug, Clone)]
enum Slot {
    /// Waiting in the queue for a client.
    Queued,
    /// Handed to a client, which has not reported it yet.
    Leased {
        /// The connection holding the lease.
        holder: ConnId,
    },
    /// Finished; the result is final.
    Done(TaskRecord),
}

/// A client in the session.
#[derive(Debug)]
struct Member {
    /// The client's chosen name, recorded next to the results it produces.
    client_id: String,
    /// `Some(max_tasks)` while the client has asked for work and not been given any.
    waiting: Option<u32>,
}

/// What [`Session::report`] refuses.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct UnknownTask(pub(crate) TaskId);

/// A named schema's tasks, shared by every client that joined under one session key.
#[derive(Debug)]
pub(crate) struct Session {
    /// The key clients joined under.
    key: String,
    /// The tasks, for names in logs.
    schema: Arc<Schema>,
    /// The schema's digest, which every later join must match.
    digest: SchemaDigest,
    /// One slot per task, indexed by task id.
    slots: Vec<Slot>,
    /// Queued task ids, next first. Returned leases go to the front: they were started first.
    queue: VecDeque<TaskId>,
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
    /// A new session whose tasks are all queued, in schema order.
    pub(crate) fn new(key: String, schema: Schema, digest: SchemaDigest, now: Instant) -> Self {
        let count = schema.tasks.len();
        let mut session = Session {
            key,
            schema: Arc::new(schema),
            digest,
            slots: vec![Slot::Queued; count],
            queue: (0..count as TaskId).collect(),
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
    pub(crate) fn request(&mut self, conn: ConnId, max_tasks: u32, policy_max: u32) -> Vec<Action> {
        if self.is_complete() {
            // The client has (or is about to get) `Complete`; nothing more to hand out.
            return Vec::new();
        }
        let Some(member) = self.members.get_mut(&conn) else {
            return Vec::new();
        };
        let limit = max_tasks.clamp(1, policy_max.max(1));
        if member.waiting.replace(limit).is_none() {
            self.waiting.push_back(conn);
        }
        self.dispatch()
    }

    /// Records results reported by `conn`. A result counts once: only the client holding the
    /// task's lease may report it, and a late or duplicate report is ignored.
    pub(crate) fn report(
        &mut self,
        conn: ConnId,
        reports: Vec<TaskReport>,
        now: Instant,
    ) -> Result<Vec<Action>, UnknownTask> {
        if let Some(bad) = reports.iter().find(|r| r.task as usize >= self.slots.len()) {
            return Err(UnknownTask(bad.task));
        }
        let Some(member) = self.members.get(&conn) else {
            return Ok(Vec::new());
        };
        let client_id = member.client_id.clone();
        for TaskReport { task, result } in reports {
            let slot = &mut self.slots[task as usize];
            match slot {
                Slot::Leased { holder } if *holder == conn => {
                    tracing::debug!(session = %self.key, task, outcome = ?result.outcome, "result");
                    *slot = Slot::Done(TaskRecord {
                        task,
                        result,
                        client: client_id.clone(),
                    });
                    self.remaining -= 1;
                }
                Slot::Done(_) => {
                    tracing::debug!(session = %self.key, task, "ignored a late or duplicate result")
                }
                Slot::Leased { .. } | Slot::Queued => {
                    tracing::warn!(session = %self.key, task, client = %client_id,
                        "ignored a result for a task not leased to this client")
                }
            }
        }
        if self.remaining == 0 && !self.is_complete() {
            self.complete(now);
            return Ok(self.broadcast_report());
        }
        Ok(Vec::new())
    }

    /// Removes a client. Its leased tasks go back to the front of the queue and on to any client
    /// waiting for work, at once.
    pub(crate) fn leave(&mut self, conn: ConnId, now: Instant) -> Vec<Action> {
        if self.members.remove(&conn).is_none() {
            return Vec::new();
        }
        self.waiting.retain(|&c| c != conn);
        if self.members.is_empty() {
            self.empty_since = Some(now);
        }
        let returned: Vec<TaskId> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| matches!(slot, Slot::Leased { holder } if *holder == conn))
            .map(|(task, _)| task as TaskId)
            .collect();
        if !returned.is_empty() {
            tracing::info!(session = %self.key, tasks = returned.len(),
                "a client left holding leases; its tasks go back to the queue");
        }
        for &task in returned.iter().rev() {
            self.slots[task as usize] = Slot::Queued;
            self.queue.push_front(task);
        }
        self.dispatch()
    }

    /// Hands queued tasks to waiting clients, oldest request first.
    fn dispatch(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        while !self.queue.is_empty() {
            let Some(conn) = self.waiting.pop_front() else {
                break;
            };
            let member = self.members.get_mut(&conn).expect("waiters are members");
            let limit = member.waiting.take().expect("a waiter has a limit");
            let size = batch_size(self.queue.len(), self.members.len(), limit);
            let batch: Vec<TaskId> = self.queue.drain(..size).collect();
            for &task in &batch {
                self.slots[task as usize] = Slot::Leased { holder: conn };
            }
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

    fn complete(&mut self, now: Instant) {
        self.completed_at = Some(now);
        self.waiting.clear();
        for member in self.members.values_mut() {
            member.waiting = None;
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

    /// Tasks currently leased to `conn`, for tests and logs.
    #[cfg(test)]
    pub(crate) fn leased_to(&self, conn: ConnId) -> Vec<TaskId> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| matches!(slot, Slot::Leased { holder } if *holder == conn))
            .map(|(task, _)| task as TaskId)
            .collect()
    }
}

/// Guided self-scheduling: a share of what is queued that shrinks as the queue drains, so early
/// batches save round trips and the last tasks spread evenly across the clients.
fn batch_size(queued: usize, members: usize, limit: u32) -> usize {
    let share = queued.div_ceil(2 * members.max(1));
    share.clamp(1, limit as usize).min(queued)
}

#[cfg(test)]
mod tests {
    use super::batch_size;

    #[test]
    fn batches_shrink_as_the_queue_drains() {
        assert_eq!(batch_size(100, 2, 50), 25);
        assert_eq!(batch_size(100, 2, 10), 10);
        assert_eq!(batch_size(3, 4, 50), 1);
        assert_eq!(batch_size(1, 1, 50), 1);
        assert_eq!(batch_size(5, 1, 1), 1);
        assert_eq!(batch_size(0, 1, 5), 0);
    }
}
