//! The durable timing history: a redb file under the coordinator's state directory, so that
//! history survives restarts. Recorded durations are buffered in memory and written in one
//! transaction per [`History::flush`].

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context as _, Result};
use redb::{Database, ReadableDatabase as _, TableDefinition};
use schemas::Task;

use crate::state::history::{blend, History};

/// Estimates in milliseconds by `scope \0 task`.
const ESTIMATES: TableDefinition<&str, u64> = TableDefinition::new("estimates_v1");

/// Timing history in a redb file.
pub struct HistoryStore {
    /// The database.
    db: Database,
    /// Recorded but not yet written: the blended estimate by key.
    pending: HashMap<String, u64>,
}

impl std::fmt::Debug for HistoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryStore")
            .field("pending", &self.pending.len())
            .finish()
    }
}

/// The most memory redb keeps as cache for one of the coordinator's files. redb's default may
/// grow to 1 GiB; the sessions are written, not read, and a session's history is read once when
/// it is created, so a little keeps the hot pages without letting a long-running coordinator's
/// memory creep up with its files.
const CACHE_BYTES: usize = 1 << 20;

/// Opens (or creates) one of the coordinator's redb files, `what` naming it in errors.
pub(crate) fn open_database(path: &Path, what: &str) -> Result<Database> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::private_dir::create(dir)?;
    }
    // It holds session tickets (sessions.redb) or what the repositories' tests are
    // (history.redb): the coordinator's user only.
    crate::private_dir::private_file(path)?;
    redb::Builder::new()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .with_context(|| format!("cannot open {what} {}", path.display()))
}

fn key(scope: &str, task: &str) -> String {
    format!("{scope}\0{task}")
}

impl HistoryStore {
    /// Opens (or creates) the history file.
    pub fn open(path: &Path) -> Result<HistoryStore> {
        let db = open_database(path, "the timing history")?;
        Ok(HistoryStore {
            db,
            pending: HashMap::new(),
        })
    }

    fn stored(&self, keys: &[String]) -> Result<Vec<Option<u64>>, redb::Error> {
        let txn = self.db.begin_read()?;
        let table = match txn.open_table(ESTIMATES) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![None; keys.len()]),
            Err(e) => return Err(e.into()),
        };
        keys.iter()
            .map(|k| Ok(table.get(k.as_str())?.map(|v| v.value())))
            .collect()
    }
}

impl History for HistoryStore {
    fn lookup(&self, scope: &str, tasks: &[Task]) -> Vec<Option<u64>> {
        let keys: Vec<String> = tasks.iter().map(|t| key(scope, &t.task)).collect();
        let stored = self.stored(&keys).unwrap_or_else(|e| {
            tracing::warn!("cannot read the timing history: {e}");
            vec![None; keys.len()]
        });
        keys.iter()
            .zip(stored)
            .map(|(k, stored)| self.pending.get(k).copied().or(stored))
            .collect()
    }

    fn record(&mut self, scope: &str, task: &str, duration_ms: u64) {
        let key = key(scope, task);
        let previous = match self.pending.get(&key) {
            Some(&pending) => Some(pending),
            None => self
                .stored(std::slice::from_ref(&key))
                .ok()
                .and_then(|v| v[0]),
        };
        self.pending.insert(key, blend(previous, duration_ms));
    }

    fn flush(&mut self) -> Result<(), String> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let write = || -> Result<(), redb::Error> {
            let txn = self.db.begin_write()?;
            {
                let mut table = txn.open_table(ESTIMATES)?;
                for (key, estimate) in &self.pending {
                    table.insert(key.as_str(), *estimate)?;
                }
            }
            txn.commit()?;
            Ok(())
        };
        write().map_err(|e| e.to_string())?;
        self.pending.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.redb");
        let tasks = [Task::new("a"), Task::new("b")];
        {
            let mut store = HistoryStore::open(&path).unwrap();
            assert_eq!(store.lookup("s", &tasks), [None, None]);
            store.record("s", "a", 100);
            // Visible before it is flushed...
            assert_eq!(store.lookup("s", &tasks), [Some(100), None]);
            store.flush().unwrap();
            store.record("s", "a", 300);
            store.flush().unwrap();
        }
        // ...and after a restart, blended, and only in its own scope.
        let store = HistoryStore::open(&path).unwrap();
        assert_eq!(store.lookup("s", &tasks), [Some(200), None]);
        assert_eq!(store.lookup("other", &tasks), [None, None]);
    }
}
