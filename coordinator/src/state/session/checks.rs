//! Consistency checks and views for the tests.

use super::*;

impl Session {
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
        let undone = (0..self.slots.len())
            .filter(|&task| !matches!(self.slots[task], Slot::Done(_)))
            .map(|task| self.work_of(task as TaskId))
            .fold((0, 0), |(ms, w), (k, u)| (ms + k, w + u));
        assert_eq!(self.undone, undone, "work not done");
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
        assert_eq!(
            self.connected_parallelism,
            self.members
                .values()
                .filter(|m| m.conn.is_some())
                .map(|m| u64::from(m.parallelism))
                .sum::<u64>(),
            "connected parallelism"
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
