//! Handing out work: requests, batches sized from the expected durations, and backup copies
//! of long tasks for idle members.

use super::*;

impl Session {
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

    /// Hands queued tasks to waiting clients, oldest request first; with the queue empty, gives
    /// idle clients backup copies of long tasks still running elsewhere.
    pub(super) fn dispatch(&mut self, now: Instant) -> Vec<Action> {
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
                        self.counts.backups += 1;
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
            self.counts.tasks_handed += batch.len() as u64;
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
    pub(super) fn lease(&mut self, task: TaskId, idx: MemberIdx, now: Instant) {
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
    pub(super) fn backup_candidate(
        &self,
        idle: MemberIdx,
        overhead_ms: u64,
        now: Instant,
    ) -> Option<TaskId> {
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
}
