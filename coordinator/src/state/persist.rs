//! What of the coordinator's state survives a restart, as rows: one per session, one per member,
//! one per task that left the queue. Pure data; the redb store (`crate::session_store`) writes
//! and reads these rows, and [`MemoryStore`] does the same in memory for tests.
//!
//! The state machine does not write as it goes: it marks what changed, and the server collects
//! the changed rows into a [`Journal`] a few times a second and commits them in one transaction.
//! A coordinator killed between two commits loses at most the last fraction of a second; clients
//! re-send the results they reported when they resume, so even those are not lost.

use std::collections::{BTreeMap, BTreeSet};

use schemas::{Schema, SchemaDigest, TaskId, TaskRecord, Ticket};
use serde::{Deserialize, Serialize};

/// A member's index in its session.
pub type MemberIdx = u32;

/// A session's fixed facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRow {
    /// The tasks.
    pub schema: Schema,
    /// The schema's digest.
    pub digest: SchemaDigest,
    /// Where the tasks' timing history is filed.
    pub history_scope: String,
    /// The CI run it belongs to (see [`schemas::Join::run`]).
    pub run: Option<String>,
    /// Whether it stops at its first failing task (see [`schemas::Join::fail_fast`]).
    pub fail_fast: bool,
}

/// A client that joined a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberRow {
    /// Its name, recorded next to its results.
    pub client_id: String,
    /// Its proof of membership when it comes back.
    pub ticket: Ticket,
}

/// Where a task stands. A task without a row is queued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SlotState {
    /// Waiting for a client.
    Queued,
    /// Leased to `holder`, and perhaps copied to `backup`.
    Leased {
        /// The member holding the lease.
        holder: MemberIdx,
        /// The member running a backup copy.
        backup: Option<MemberIdx>,
    },
    /// Finished.
    Done(TaskRecord),
}

/// One task's row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotRow {
    /// Where it stands.
    pub state: SlotState,
}

/// Changes not yet stored: rows to delete, then rows to write.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Journal {
    /// Sessions whose stored rows (session, members, tasks) must all go before anything below
    /// is written: forgotten sessions, and new sessions reusing a key.
    pub cleared: BTreeSet<String>,
    /// Session rows to write.
    pub sessions: BTreeMap<String, SessionRow>,
    /// Member rows to write.
    pub members: BTreeMap<(String, MemberIdx), MemberRow>,
    /// Task rows to write.
    pub slots: BTreeMap<(String, TaskId), SlotRow>,
}

impl Journal {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.cleared.is_empty()
            && self.sessions.is_empty()
            && self.members.is_empty()
            && self.slots.is_empty()
    }

    /// How many rows it writes or clears, for logs.
    pub fn len(&self) -> usize {
        self.cleared.len() + self.sessions.len() + self.members.len() + self.slots.len()
    }
}

/// Everything stored: what a restarted coordinator starts from.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Snapshot {
    /// Every stored session.
    pub sessions: Vec<StoredSession>,
}

/// One stored session.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSession {
    /// Its key.
    pub key: String,
    /// Its fixed facts.
    pub row: SessionRow,
    /// Its members, by index.
    pub members: BTreeMap<MemberIdx, MemberRow>,
    /// Its tasks that are not simply queued, by id.
    pub slots: BTreeMap<TaskId, SlotRow>,
}

/// The store's tables in memory: for tests of restarts without a disk.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    sessions: BTreeMap<String, SessionRow>,
    members: BTreeMap<(String, MemberIdx), MemberRow>,
    slots: BTreeMap<(String, TaskId), SlotRow>,
}

impl MemoryStore {
    /// Writes a journal, as one transaction.
    pub fn apply(&mut self, journal: &Journal) {
        for key in &journal.cleared {
            self.sessions.remove(key);
            self.members.retain(|(k, _), _| k != key);
            self.slots.retain(|(k, _), _| k != key);
        }
        self.sessions.extend(journal.sessions.clone());
        self.members.extend(journal.members.clone());
        self.slots.extend(journal.slots.clone());
    }

    /// What a restarted coordinator would read.
    pub fn snapshot(&self) -> Snapshot {
        assemble(
            self.sessions.clone(),
            self.members.clone(),
            self.slots.clone(),
        )
    }
}

/// Groups rows by session. Member and task rows of sessions without a session row (which a
/// consistent store never has) are dropped.
pub fn assemble(
    sessions: impl IntoIterator<Item = (String, SessionRow)>,
    members: impl IntoIterator<Item = ((String, MemberIdx), MemberRow)>,
    slots: impl IntoIterator<Item = ((String, TaskId), SlotRow)>,
) -> Snapshot {
    let mut by_key: BTreeMap<String, StoredSession> = sessions
        .into_iter()
        .map(|(key, row)| {
            let stored = StoredSession {
                key: key.clone(),
                row,
                members: BTreeMap::new(),
                slots: BTreeMap::new(),
            };
            (key, stored)
        })
        .collect();
    for ((key, idx), row) in members {
        if let Some(session) = by_key.get_mut(&key) {
            session.members.insert(idx, row);
        }
    }
    for ((key, task), row) in slots {
        if let Some(session) = by_key.get_mut(&key) {
            session.slots.insert(task, row);
        }
    }
    Snapshot {
        sessions: by_key.into_values().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str) -> SessionRow {
        let schema = Schema::new(name, ["a", "b"]).unwrap();
        SessionRow {
            digest: schema.digest(),
            schema,
            history_scope: "s".into(),
            run: None,
            fail_fast: false,
        }
    }

    #[test]
    fn clearing_a_key_drops_its_old_rows_before_new_ones_are_written() {
        let mut store = MemoryStore::default();
        let mut first = Journal::default();
        first.sessions.insert("k".into(), row("old"));
        first.members.insert(
            ("k".into(), 0),
            MemberRow {
                client_id: "a".into(),
                ticket: Ticket([1; 16]),
            },
        );
        first.slots.insert(
            ("k".into(), 1),
            SlotRow {
                state: SlotState::Queued,
            },
        );
        first.sessions.insert("other".into(), row("other"));
        store.apply(&first);
        let mut second = Journal::default();
        second.cleared.insert("k".into());
        second.sessions.insert("k".into(), row("new"));
        store.apply(&second);
        let snapshot = store.snapshot();
        assert_eq!(snapshot.sessions.len(), 2);
        let k = &snapshot.sessions[0];
        assert_eq!((k.key.as_str(), k.row.schema.name.as_str()), ("k", "new"));
        assert!(k.members.is_empty() && k.slots.is_empty());
    }
}
