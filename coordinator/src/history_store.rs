//! The durable timing history: a redb file under the coordinator's state directory, so that
//! history survives restarts. It is read whole before the coordinator starts, and the state
//! machine's changes are written in one transaction now and then, outside its lock.

use std::path::Path;

use std::path::PathBuf;

use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};

use crate::state::history::{Estimates, HistoryChanges};

/// Estimates in milliseconds by `scope \0 task`.
const ESTIMATES: TableDefinition<&str, u64> = TableDefinition::new("estimates_v1");

/// Timing history in a redb file.
pub struct HistoryStore {
    /// The database.
    db: Database,
}

impl std::fmt::Debug for HistoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryStore").finish_non_exhaustive()
    }
}

/// The most memory redb keeps as cache for one of the coordinator's files. redb's default may
/// grow to 1 GiB; the sessions are written, not read, and a session's history is read once when
/// it is created, so a little keeps the hot pages without letting a long-running coordinator's
/// memory creep up with its files.
const CACHE_BYTES: usize = 1 << 20;

/// What went wrong with one of the coordinator's redb files (the timing history, the sessions).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file or its directory could not be created private.
    #[error(transparent)]
    Private(#[from] crate::private_dir::PrivateError),
    /// The file could not be opened or created.
    #[error("cannot open {what} {}", path.display())]
    Open {
        /// Which file it is.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: redb::DatabaseError,
    },
    /// Reading or writing failed.
    #[error(transparent)]
    Database(#[from] redb::Error),
    /// A row could not be encoded.
    #[error("cannot encode a stored row")]
    Encode(#[from] schemas::FrameError),
}

/// `?` on redb's per-operation errors, each kept whole inside [`redb::Error`].
macro_rules! through_redb_error {
    ($($error:ty),*) => {$(
        impl From<$error> for StoreError {
            fn from(error: $error) -> Self {
                StoreError::Database(error.into())
            }
        }
    )*};
}
through_redb_error!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Opens (or creates) one of the coordinator's redb files, `what` naming it in errors.
pub(crate) fn open_database(path: &Path, what: &'static str) -> Result<Database, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::private_dir::create(dir)?;
    }
    // It holds session tickets (sessions.redb) or what the repositories' tests are
    // (history.redb): the coordinator's user only.
    crate::private_dir::private_file(path)?;
    redb::Builder::new()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .map_err(|source| StoreError::Open {
            what,
            path: path.to_path_buf(),
            source,
        })
}

fn key(scope: &str, task: &str) -> String {
    format!("{scope}\0{task}")
}

impl HistoryStore {
    /// Opens (or creates) the history file.
    pub fn open(path: &Path) -> Result<HistoryStore, StoreError> {
        let db = open_database(path, "the timing history")?;
        Ok(HistoryStore { db })
    }

    /// Every stored estimate: what the state machine starts from. Read once, before the
    /// coordinator serves anyone.
    pub fn load(&self) -> Result<Estimates, StoreError> {
        let read = || -> Result<Vec<(String, String, u64)>, redb::Error> {
            let txn = self.db.begin_read()?;
            let table = match txn.open_table(ESTIMATES) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            let mut rows = Vec::new();
            for entry in table.iter()? {
                let (key, value) = entry?;
                if let Some((scope, task)) = key.value().split_once('\0') {
                    rows.push((scope.to_string(), task.to_string(), value.value()));
                }
            }
            Ok(rows)
        };
        let rows = read()?;
        Ok(Estimates::from_stored(rows))
    }

    /// Writes changed estimates in one transaction. Called by the server outside the state's
    /// lock, a few times a second and at shutdown.
    pub fn write(&self, changes: &HistoryChanges) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let write = || -> Result<(), redb::Error> {
            let txn = self.db.begin_write()?;
            {
                let mut table = txn.open_table(ESTIMATES)?;
                for (scope, task, estimate) in changes {
                    table.insert(key(scope, task).as_str(), *estimate)?;
                }
            }
            txn.commit()?;
            Ok(())
        };
        Ok(write()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::Task;

    #[test]
    fn history_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.redb");
        let tasks = [Task::new("a"), Task::new("b")];
        {
            let store = HistoryStore::open(&path).unwrap();
            let mut estimates = store.load().unwrap();
            assert_eq!(estimates.lookup("s", &tasks), [None, None]);
            estimates.record("s", "a", 100);
            store.write(&estimates.take_changes()).unwrap();
            estimates.record("s", "a", 300);
            store.write(&estimates.take_changes()).unwrap();
        }
        // After a restart: blended, and only in its own scope.
        let estimates = HistoryStore::open(&path).unwrap().load().unwrap();
        assert_eq!(estimates.lookup("s", &tasks), [Some(200), None]);
        assert_eq!(estimates.lookup("other", &tasks), [None, None]);
    }
}
