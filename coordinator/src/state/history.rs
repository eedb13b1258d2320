//! Timing history: how long each task took when it last actually ran, by scope (repository or
//! schema) and task text, so the next run can put long tasks first and size batches.
//!
//! The state machine holds every estimate in memory ([`Estimates`]): the server loads them from
//! the durable store ([`crate::history_store`]) before it starts, and writes what changed
//! ([`Estimates::take_changes`]) outside the state's lock, as it does the sessions' journal. So
//! no decision waits on a disk.

use std::collections::{BTreeSet, HashMap};

use schemas::Task;

/// Folds a new measurement into an estimate: recent runs count most, one odd run does not
/// erase what was known.
pub fn blend(previous: Option<u64>, measured: u64) -> u64 {
    match previous {
        Some(old) => (old + measured) / 2,
        None => measured,
    }
}

/// Every known estimate, in milliseconds, by scope and task text, and which changed since they
/// were last written.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Estimates {
    /// Estimates by scope, then task text.
    by_scope: HashMap<String, HashMap<String, u64>>,
    /// Changed since the last [`Estimates::take_changes`]: (scope, task) to write, each once.
    changed: BTreeSet<(String, String)>,
}

/// Estimates to write: (scope, task text, milliseconds).
pub type HistoryChanges = Vec<(String, String, u64)>;

impl Estimates {
    /// Estimates as stored, with nothing to write.
    pub fn from_stored(rows: impl IntoIterator<Item = (String, String, u64)>) -> Self {
        let mut estimates = Estimates::default();
        for (scope, task, ms) in rows {
            estimates
                .by_scope
                .entry(scope)
                .or_default()
                .insert(task, ms);
        }
        estimates
    }

    /// The expected duration of each task in `scope`, in milliseconds, where known.
    pub fn lookup(&self, scope: &str, tasks: &[Task]) -> Vec<Option<u64>> {
        let known = self.by_scope.get(scope);
        tasks
            .iter()
            .map(|t| known.and_then(|k| k.get(&t.task)).copied())
            .collect()
    }

    /// Records that `task` in `scope` actually ran for `duration_ms`.
    pub fn record(&mut self, scope: &str, task: &str, duration_ms: u64) {
        let tasks = self.by_scope.entry(scope.to_string()).or_default();
        let previous = tasks.get(task).copied();
        tasks.insert(task.to_string(), blend(previous, duration_ms));
        self.changed.insert((scope.to_string(), task.to_string()));
    }

    /// What changed since the last call, each estimate once, for the store.
    pub fn take_changes(&mut self) -> HistoryChanges {
        std::mem::take(&mut self.changed)
            .into_iter()
            .filter_map(|(scope, task)| {
                let ms = *self.by_scope.get(&scope)?.get(&task)?;
                Some((scope, task, ms))
            })
            .collect()
    }

    /// How many estimates are known.
    pub fn len(&self) -> usize {
        self.by_scope.values().map(HashMap::len).sum()
    }

    /// Whether nothing is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tasks(names: &[&str]) -> Vec<Task> {
        schemas::Schema::new("s", names.iter().copied())
            .unwrap()
            .tasks
    }

    #[test]
    fn estimates_blend_and_each_change_is_written_once() {
        let mut estimates = Estimates::from_stored([("scope".into(), "a".into(), 100)]);
        assert!(
            estimates.take_changes().is_empty(),
            "loaded rows are not changes"
        );
        estimates.record("scope", "a", 300);
        estimates.record("scope", "a", 200);
        estimates.record("other", "a", 7);
        assert_eq!(
            estimates.lookup("scope", &tasks(&["a", "b"])),
            vec![Some(200), None]
        );
        assert_eq!(
            estimates.take_changes(),
            vec![
                ("other".into(), "a".into(), 7),
                ("scope".into(), "a".into(), 200)
            ]
        );
        assert!(estimates.take_changes().is_empty());
    }
}
