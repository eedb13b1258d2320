//! What of a session survives a restart: restoring it from stored rows, and the journal of
//! what changed since the last write.

use super::*;

impl Session {
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
        let mut session = Session::new(key, row, known, scheduling, now);
        session.dirty = Dirty {
            flags: vec![false; session.slots.len()],
            ..Dirty::default()
        };
        session.settling_until = Some(now + settle);
        // Restored, not created: the count of sessions created is this process's.
        session.counts.sessions_created = 0;
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
                    groups: BTreeSet::new(),
                    parallelism: 1,
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
                    session.log_bytes += record.result.log_tail.as_ref().map_or(0, String::len);
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
                session.count_done(task);
            }
            session.slots[index] = slot;
        }
        if session.remaining == 0 && !session.is_complete() {
            // The other sessions of its run are being restored too: its report counts itself
            // only, and a job joining it later learns the run's count from its `Joined`.
            let run_sessions = u32::from(session.run.is_some());
            session.complete(run_sessions, now);
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
                    run: self.run.clone(),
                    fail_fast: self.fail_fast,
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
    pub(super) fn touch(&mut self, task: TaskId) {
        let flag = &mut self.dirty.flags[task as usize];
        if !*flag {
            *flag = true;
            self.dirty.tasks.push(task);
        }
    }
}
