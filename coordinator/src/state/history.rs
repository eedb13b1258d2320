//! Timing history: how long each task took when it last actually ran, by scope (repository or
//! schema) and task text, so the next run can put long tasks first and size batches.
//!
//! The state machine reads and writes it through [`History`]; the server plugs in the durable
//! store ([`crate::history_store`]), tests the in-memory one.

use std::collections::HashMap;

use schemas::Task;

/// Where timing history lives.
pub trait History: Send + std::fmt::Debug {
    /// The expected duration of each task in `scope`, in milliseconds, where known.
    fn lookup(&self, scope: &str, tasks: &[Task]) -> Vec<Option<u64>>;
    /// Records that `task` in `scope` actually ran for `duration_ms`.
    fn record(&mut self, scope: &str, task: &str, duration_ms: u64);
    /// Makes what was recorded durable. Called now and then, and at shutdown, rather than per
    /// result, so that recording costs nothing on the hot path.
    fn flush(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// Folds a new measurement into an estimate: recent runs count most, one odd run does not
/// erase what was known.
pub fn blend(previous: Option<u64>, measured: u64) -> u64 {
    match previous {
        Some(old) => (old + measured) / 2,
        None => measured,
    }
}

/// History kept in memory only (tests, or a coordinator without a state directory).
#[derive(Debug, Default)]
pub struct MemoryHistory {
    /// Estimates by (scope, task).
    estimates: HashMap<(String, String), u64>,
}

impl History for MemoryHistory {
    fn lookup(&self, scope: &str, tasks: &[Task]) -> Vec<Option<u64>> {
        tasks
            .iter()
            .map(|t| {
                self.estimates
                    .get(&(scope.to_string(), t.task.clone()))
                    .copied()
            })
            .collect()
    }

    fn record(&mut self, scope: &str, task: &str, duration_ms: u64) {
        let key = (scope.to_string(), task.to_string());
        let blended = blend(self.estimates.get(&key).copied(), duration_ms);
        self.estimates.insert(key, blended);
    }
}
