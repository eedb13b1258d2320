//! The durable sessions: a redb file under the coordinator's state directory holding the rows of
//! [`crate::state::persist`], so that a restarted coordinator resumes every session where it was.
//! Rows are bincode, the same encoding as the wire protocol; the tables' names carry the rows'
//! version (v2: results carry log tails, protocol version 3; v3: sessions carry their run,
//! protocol version 4; v4: sessions say whether they stop at the first failure, protocol
//! version 5), so a file from another version starts empty rather than misread.

use std::path::Path;

use redb::{Database, ReadOnlyTable, ReadableDatabase as _, ReadableTable as _, TableDefinition};
use schemas::frame::{decode_payload, encode_payload};

use crate::history_store::StoreError;
use crate::state::persist::{self, Journal, Snapshot};

/// Session rows by key.
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions_v4");
/// Member rows by (session key, member index).
const MEMBERS: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("members_v4");
/// Task rows by (session key, task id).
const SLOTS: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("slots_v4");

/// Sessions in a redb file.
pub struct SessionStore {
    db: Database,
}

impl std::fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStore").finish_non_exhaustive()
    }
}

impl SessionStore {
    /// Opens (or creates) the file.
    pub fn open(path: &Path) -> Result<SessionStore, StoreError> {
        let db = crate::history_store::open_database(path, "the session store")?;
        Ok(SessionStore { db })
    }

    /// Writes a journal in one transaction: all of it or, if the process dies first, none.
    pub fn apply(&self, journal: &Journal) -> Result<(), StoreError> {
        if journal.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write()?;
        {
            let mut sessions = txn.open_table(SESSIONS)?;
            let mut members = txn.open_table(MEMBERS)?;
            let mut slots = txn.open_table(SLOTS)?;
            for key in &journal.cleared {
                sessions.remove(key.as_str())?;
                let all = (key.as_str(), 0)..=(key.as_str(), u32::MAX);
                members.retain_in(all.clone(), |_, _| false)?;
                slots.retain_in(all, |_, _| false)?;
            }
            for (key, row) in &journal.sessions {
                sessions.insert(key.as_str(), encode_payload(row)?.as_slice())?;
            }
            for ((key, idx), row) in &journal.members {
                members.insert((key.as_str(), *idx), encode_payload(row)?.as_slice())?;
            }
            for ((key, task), row) in &journal.slots {
                slots.insert((key.as_str(), *task), encode_payload(row)?.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Reads every stored session. A row that does not decode (a file from another version, or
    /// damaged) is skipped with a warning: losing one session is better than not starting.
    pub fn load(&self) -> Result<Snapshot, StoreError> {
        let txn = self.db.begin_read()?;
        let sessions = match txn.open_table(SESSIONS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Snapshot::default()),
            Err(e) => return Err(e.into()),
        };
        let members = txn.open_table(MEMBERS)?;
        let slots = txn.open_table(SLOTS)?;
        let mut session_rows = Vec::new();
        for entry in sessions.iter()? {
            let (key, value) = entry?;
            match decode_payload(value.value()) {
                Ok(row) => session_rows.push((key.value().to_owned(), row)),
                Err(e) => tracing::warn!(session = key.value(), "skipped a stored session: {e}"),
            }
        }
        Ok(persist::assemble(
            session_rows,
            rows_by_session(&members)?,
            rows_by_session(&slots)?,
        ))
    }
}

/// A row of a table keyed by (session key, index).
type IndexedRow<R> = ((String, u32), R);

/// The rows of a table keyed by (session key, index) that decode; the others are skipped (their
/// session then treats them as never written: a member that cannot come back, a queued task).
fn rows_by_session<R: serde::de::DeserializeOwned>(
    table: &ReadOnlyTable<(&'static str, u32), &'static [u8]>,
) -> Result<Vec<IndexedRow<R>>, StoreError> {
    let mut rows = Vec::new();
    for entry in table.iter()? {
        let (key, value) = entry?;
        let (session, index) = key.value();
        if let Ok(row) = decode_payload(value.value()) {
            rows.push(((session.to_owned(), index), row));
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::persist::{MemberRow, MemoryStore, SessionRow, SlotRow, SlotState};
    use schemas::{Outcome, Schema, TaskRecord, TaskResult, Ticket};

    /// The file store and the in-memory one (which the state machine's tests use) agree.
    #[test]
    fn the_file_reads_back_what_the_memory_store_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.redb");
        let schema = Schema::new("s", ["a", "b", "c"]).unwrap();
        let row = SessionRow {
            digest: schema.digest(),
            schema,
            history_scope: "run:s".into(),
            run: Some("bazel/r/test".into()),
            fail_fast: true,
        };
        let mut first = Journal::default();
        for key in ["k", "k2", "other"] {
            first.sessions.insert(key.into(), row.clone());
            first.members.insert(
                (key.into(), 0),
                MemberRow {
                    client_id: "job-1".into(),
                    ticket: Ticket([3; 16]),
                },
            );
            first.slots.insert(
                (key.into(), 2),
                SlotRow {
                    state: SlotState::Leased {
                        holder: 0,
                        backup: None,
                    },
                },
            );
        }
        let mut second = Journal::default();
        second.cleared.insert("k".into());
        second.sessions.insert("k".into(), row.clone());
        second.slots.insert(
            ("k2".into(), 1),
            SlotRow {
                state: SlotState::Done(TaskRecord {
                    task: 1,
                    result: TaskResult {
                        outcome: Outcome::Passed,
                        exit_code: Some(0),
                        duration_ms: 5,
                        executed: true,
                        log_tail: None,
                        build_ms: 0,
                    },
                    client: "job-1".into(),
                }),
            },
        );
        let mut memory = MemoryStore::default();
        {
            let store = SessionStore::open(&path).unwrap();
            assert_eq!(store.load().unwrap(), Snapshot::default());
            for journal in [&first, &second] {
                store.apply(journal).unwrap();
                memory.apply(journal);
            }
        }
        let loaded = SessionStore::open(&path).unwrap().load().unwrap();
        assert_eq!(loaded, memory.snapshot());
        // "k" was started again: its old member and task rows are gone; "k2" kept both.
        assert!(loaded.sessions[0].members.is_empty());
        assert_eq!(loaded.sessions[1].slots.len(), 2);
    }
}
