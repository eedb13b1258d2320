//! Handing out work: requests, batches sized from the expected durations, and backup copies
//! of what a straggling batch has not finished yet, for idle members.

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
    /// idle clients backup copies of the unfinished remainder of a batch still running elsewhere.
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
            // Compiling first costs an invocation more: worth it only for a build that is
            // expected to take longer than one.
            let pending_ms = self
                .pending_prerequisite_ms(idx, now)
                .filter(|&ms| ms > request.overhead_ms);
            let batch = if self.queue.is_empty() {
                match self.backup_candidate(idx, request.overhead_ms, now) {
                    Some(tasks) => {
                        for &task in &tasks {
                            if let Slot::Leased { backup, .. } = &mut self.slots[task as usize] {
                                *backup = Some(idx);
                            }
                            self.touch(task);
                            // One line per copy, naming it: tests that count executions
                            // allow one more run of each task named here.
                            tracing::info!(session = %self.key, task,
                                label = %self.schema.tasks[task as usize].task,
                                "handing out a backup copy of what a straggling batch has not finished");
                        }
                        self.counts.backups += tasks.len() as u64;
                        tasks
                    }
                    None => break,
                }
            } else {
                let target = if self.is_warm() {
                    scheduler::warm_batch_target_ms(
                        self.queued_work_ms(),
                        self.leased_work_ms(),
                        self.members[&idx].parallelism,
                        self.connected_parallelism,
                        request.overhead_ms,
                    )
                } else {
                    scheduler::job_batch_target_ms(
                        self.queued_work_ms(),
                        self.members[&idx].parallelism,
                        self.connected_parallelism,
                        request.overhead_ms,
                        self.batch_bound_ms(),
                    )
                };
                let target = match pending_ms {
                    Some(pending) => {
                        scheduler::compile_first_target_ms(target, pending, self.fair_share_ms(idx))
                    }
                    None => target,
                };
                // Near this job: the groups it has, and the group of the task it starts with.
                let groups = &self.members[&idx].groups;
                let head = self.queue.front().and_then(|&t| self.group_of[t as usize]);
                let positions = scheduler::pick_batch(
                    &self.queue,
                    |task| self.expected(task as usize),
                    target,
                    request.limit,
                    self.scheduling.batching,
                    |task| {
                        self.group_of[task as usize]
                            .is_some_and(|g| Some(g) == head || groups.contains(&g))
                    },
                );
                let batch: Vec<TaskId> = positions.iter().map(|&p| self.queue[p]).collect();
                // Positions ascend: removing from the back keeps the others in place.
                for &position in positions.iter().rev() {
                    self.queue.remove(position);
                }
                let member = self.members.get_mut(&idx).expect("waiters are members");
                member
                    .groups
                    .extend(batch.iter().filter_map(|&t| self.group_of[t as usize]));
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
                    compile_first: pending_ms.is_some(),
                }),
            ));
        }
        actions
    }

    /// Whether a prerequisite ([`schemas::Task::prerequisite`]) is being built by another
    /// member now, and if so how long the longest of them is still expected to take: member
    /// `idx` is then to compile first (see [`schemas::Assignment::compile_first`]).
    fn pending_prerequisite_ms(&self, idx: MemberIdx, now: Instant) -> Option<u64> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(task, _)| self.schema.tasks[*task].prerequisite)
            .filter_map(|(task, slot)| match slot {
                Slot::Leased { holder, since, .. } if *holder != idx => {
                    let elapsed = now.saturating_duration_since(*since).as_millis() as u64;
                    Some(self.expected(task).saturating_sub(elapsed))
                }
                _ => None,
            })
            .max()
    }

    /// Member `idx`'s share of the queued work: its slots' part of the connected jobs' slots.
    fn fair_share_ms(&self, idx: MemberIdx) -> u64 {
        let parallelism = u64::from(self.members[&idx].parallelism.max(1));
        let slots = self.connected_parallelism.max(parallelism);
        (u128::from(self.queued_work_ms()) * u128::from(parallelism) / u128::from(slots)) as u64
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

    /// The tasks most worth backup copies on `idle`: the unfinished remainder of one batch
    /// running elsewhere — the tasks its holder has not reported (results arrive per task as
    /// they finish) and nobody else copies yet — expected to run on for longer than it costs
    /// to start a copy, plus [`MIN_BACKUP_GAIN_MS`]. How long a remainder runs on is judged as
    /// its holder runs it: side by side, [`Member::parallelism`] at a time, so at least its
    /// longest task and its total work divided by that — not the total, which would make a
    /// quick remainder of a job testing on every core look long (and have it run twice). The
    /// batch with the most time left is chosen. The first result of each task wins and the
    /// other copy is aborted, so a copy of a remainder costs idle time only. `None` when
    /// backups are off or nothing qualifies.
    pub(super) fn backup_candidate(
        &self,
        idle: MemberIdx,
        overhead_ms: u64,
        now: Instant,
    ) -> Option<Vec<TaskId>> {
        if !self.scheduling.backups {
            return None;
        }
        // Candidates are the members' unreported tasks: look there, not at every slot.
        self.members
            .iter()
            .filter(|(holder, _)| **holder != idle)
            .filter_map(|(holder, member)| {
                let mut started = now;
                let (mut work, mut longest) = (0, 0);
                // Only on grounds: a task's history, or durations seen in this session.
                let mut grounds = self.observed.1 > 0;
                let mut tasks = Vec::new();
                for &task in &member.running {
                    let index = task as usize;
                    if let Slot::Leased {
                        holder: leased_to,
                        since,
                        backup: None,
                    } = &self.slots[index]
                    {
                        if leased_to == holder {
                            grounds |= self.known[index].is_some();
                            started = started.min(*since);
                            let expected = self.expected(index);
                            work += expected;
                            longest = longest.max(expected);
                            tasks.push(task);
                        }
                    }
                }
                let wall = longest.max(work.div_ceil(u64::from(member.parallelism.max(1))));
                let elapsed = now.saturating_duration_since(started).as_millis() as u64;
                let left = wall.saturating_sub(elapsed);
                (grounds && !tasks.is_empty() && left > 2 * overhead_ms + MIN_BACKUP_GAIN_MS)
                    .then_some((left, tasks))
            })
            .max()
            .map(|(_, tasks)| tasks)
    }
}
