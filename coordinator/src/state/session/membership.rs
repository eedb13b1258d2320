//! Who is in a session: members joining, coming back with their ticket, leaving; and the
//! leases that go back to the queue when they leave.

use super::*;

impl Session {
    /// Adds a client as a new member. It receives `Joined` with its ticket (and the run's
    /// `run_sessions`), and `Complete` at once if the session already is complete.
    pub(crate) fn join(
        &mut self,
        conn: ConnId,
        client_id: String,
        ticket: Ticket,
        created: bool,
        run_sessions: u32,
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
                groups: BTreeSet::new(),
                parallelism: 1,
            },
        );
        self.tickets.insert(ticket, idx);
        self.dirty.members.push(idx);
        let actions = self.attach(idx, conn, created, false, run_sessions);
        (idx, actions)
    }

    /// Member `idx` runs `parallelism` tasks at once (0 read as 1, and at most
    /// [`MAX_PARALLELISM`]: a peer cannot make its batches look shorter than one task each).
    pub(crate) fn set_parallelism(&mut self, idx: MemberIdx, parallelism: u32) {
        if let Some(member) = self.members.get_mut(&idx) {
            let old = std::mem::replace(
                &mut member.parallelism,
                parallelism.clamp(1, MAX_PARALLELISM),
            );
            if member.conn.is_some() {
                self.connected_parallelism =
                    self.connected_parallelism - u64::from(old) + u64::from(member.parallelism);
            }
        }
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
        run_sessions: u32,
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
            self.connected_parallelism -= u64::from(member.parallelism);
            member.waiting = None;
            self.waiting.retain(|&m| m != idx);
        }
        self.counts.reconnects += 1;
        let mut actions = self.attach(idx, conn, false, true, run_sessions);
        actions.extend(self.release_if(
            idx,
            |task| !named.contains(&task),
            "a client came back without knowing of tasks leased to it; they go back to the queue",
            now,
        ));
        Some((idx, old, actions))
    }

    /// Connects member `idx` on `conn` and tells it so, and how many sessions its run has.
    pub(super) fn attach(
        &mut self,
        idx: MemberIdx,
        conn: ConnId,
        created: bool,
        resumed: bool,
        run_sessions: u32,
    ) -> Vec<Action> {
        let member = self.members.get_mut(&idx).expect("a member");
        member.conn = Some(conn);
        member.holding_since = None;
        let ticket = member.ticket;
        self.connected += 1;
        self.connected_parallelism += u64::from(member.parallelism);
        self.empty_since = None;
        let joined = ServerMessage::Joined(Joined {
            created,
            resumed,
            ticket,
            tasks: self.slots.len() as u32,
            finished: (self.slots.len() - self.remaining) as u32,
            clients: self.connected as u32,
            run_sessions,
        });
        let mut actions = vec![Action::send(conn, joined)];
        if let Some(report) = &self.report {
            actions.push(Action::Send(conn, report.clone()));
        }
        actions
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
        self.connected_parallelism -= u64::from(member.parallelism);
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
    pub(super) fn release(&mut self, idx: MemberIdx, now: Instant) -> Vec<Action> {
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
    pub(super) fn release_if(
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
}
