//! Timing history: how long each task took when it last actually ran, by scope (repository or
//! schema) and task text, so the next run can put long tasks first and size batches.
//!
//! The state machine holds every estimate in memory ([`Estimates`]): the server loads them from
//! the durable store ([`crate::history_store`]) before it starts, and writes what changed
//! ([`Estimates::take_changes`]) outside the state's lock, as it does the sessions' journal. So
//! no decision waits on a disk.

use std::collections::{BTreeSet, HashMap, VecDeque};

use schemas::{Outcome, Task};

use super::view::{ScopeHistory, Variability};

/// The most recent results remembered per scope, for the dashboard's history.
const RECENT_PER_SCOPE: usize = 1000;
/// The most scopes whose recent results are remembered; the least recently used goes first.
const RECENT_SCOPES: usize = 200;
/// The most tasks each list of the history shows.
const LISTED: usize = 10;

/// One result, remembered for the history page.
#[derive(Debug, Clone, PartialEq)]
struct RecentResult {
    task: String,
    outcome: Outcome,
    duration_ms: u64,
    executed: bool,
}

/// A scope's recent results, newest last.
#[derive(Debug, Clone, Default, PartialEq)]
struct Recent {
    /// When the scope last had a result, as a count of results in every scope.
    last_used: u64,
    results: VecDeque<RecentResult>,
}

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
    /// The latest results by scope, in memory only (a restart forgets them): what the history
    /// page lists as variable, flaky or failing.
    recent: HashMap<String, Recent>,
    /// Results noted so far, to order scopes by use.
    noted: u64,
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

    /// Remembers a counted result of `task` in `scope` for the history page.
    pub fn note(&mut self, scope: &str, task: &str, result: &schemas::TaskResult) {
        self.noted += 1;
        if !self.recent.contains_key(scope) && self.recent.len() >= RECENT_SCOPES {
            let oldest = self
                .recent
                .iter()
                .min_by_key(|(_, r)| r.last_used)
                .map(|(s, _)| s.clone());
            if let Some(oldest) = oldest {
                self.recent.remove(&oldest);
            }
        }
        let recent = self.recent.entry(scope.to_string()).or_default();
        recent.last_used = self.noted;
        if recent.results.len() == RECENT_PER_SCOPE {
            recent.results.pop_front();
        }
        recent.results.push_back(RecentResult {
            task: task.to_string(),
            outcome: result.outcome,
            duration_ms: result.duration_ms,
            executed: result.executed,
        });
    }

    /// The history of the `limit` most recently used scopes, most recent first.
    pub fn view(&self, limit: usize) -> Vec<ScopeHistory> {
        let mut scopes: Vec<(&String, &Recent)> = self.recent.iter().collect();
        scopes.sort_by_key(|(_, r)| std::cmp::Reverse(r.last_used));
        scopes
            .into_iter()
            .take(limit)
            .map(|(scope, recent)| self.scope_view(scope, recent))
            .collect()
    }

    fn scope_view(&self, scope: &str, recent: &Recent) -> ScopeHistory {
        let mut slowest: Vec<(String, u64)> = self
            .by_scope
            .get(scope)
            .into_iter()
            .flatten()
            .map(|(task, ms)| (task.clone(), *ms))
            .collect();
        slowest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        slowest.truncate(LISTED);
        let mut durations: HashMap<&str, Vec<u64>> = HashMap::new();
        let mut flaky: HashMap<&str, u32> = HashMap::new();
        let mut failing: HashMap<&str, u32> = HashMap::new();
        for result in &recent.results {
            if result.executed {
                durations
                    .entry(&result.task)
                    .or_default()
                    .push(result.duration_ms);
            }
            match result.outcome {
                Outcome::Flaky => *flaky.entry(&result.task).or_default() += 1,
                outcome if !outcome.is_success() => *failing.entry(&result.task).or_default() += 1,
                _ => {}
            }
        }
        let mut most_variable: Vec<Variability> = durations
            .into_iter()
            .filter(|(_, runs)| runs.len() >= 2)
            .map(|(task, runs)| {
                let n = runs.len() as f64;
                let mean = runs.iter().sum::<u64>() as f64 / n;
                let variance = runs.iter().map(|&d| (d as f64 - mean).powi(2)).sum::<f64>() / n;
                Variability {
                    task: task.to_string(),
                    mean_ms: mean as u64,
                    spread_ms: variance.sqrt() as u64,
                    runs: runs.len() as u32,
                }
            })
            .filter(|v| v.spread_ms > 0)
            .collect();
        most_variable.sort_by(|a, b| {
            b.spread_ms
                .cmp(&a.spread_ms)
                .then_with(|| a.task.cmp(&b.task))
        });
        most_variable.truncate(LISTED);
        ScopeHistory {
            scope: scope.to_string(),
            slowest,
            most_variable,
            flaky: most_often(flaky),
            failing: most_often(failing),
        }
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

/// The tasks counted most often, at most [`LISTED`].
fn most_often(counts: HashMap<&str, u32>) -> Vec<(String, u32)> {
    let mut counts: Vec<(String, u32)> = counts
        .into_iter()
        .map(|(t, n)| (t.to_string(), n))
        .collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts.truncate(LISTED);
    counts
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

    #[test]
    fn the_history_lists_slow_variable_flaky_and_failing_tasks() {
        let mut estimates = Estimates::default();
        let result = |outcome, duration_ms, executed| schemas::TaskResult {
            outcome,
            exit_code: None,
            duration_ms,
            executed,
            log_tail: None,
            build_ms: 0,
        };
        for (task, outcome, ms) in [
            ("steady", Outcome::Passed, 100),
            ("steady", Outcome::Passed, 100),
            ("wobbly", Outcome::Passed, 100),
            ("wobbly", Outcome::Flaky, 500),
            ("broken", Outcome::Failed, 10),
            ("broken", Outcome::TimedOut, 10),
        ] {
            estimates.record("s", task, ms);
            estimates.note("s", task, &result(outcome, ms, true));
        }
        estimates.note("other", "x", &result(Outcome::Passed, 1, false));
        let view = estimates.view(10);
        assert_eq!(view[0].scope, "other", "most recent first");
        let s = &view[1];
        assert_eq!(s.slowest[0], ("wobbly".to_string(), 300));
        assert_eq!(s.most_variable.len(), 1, "{:?}", s.most_variable);
        assert_eq!(
            (
                s.most_variable[0].task.as_str(),
                s.most_variable[0].spread_ms
            ),
            ("wobbly", 200)
        );
        assert_eq!(s.flaky, [("wobbly".to_string(), 1)]);
        assert_eq!(s.failing, [("broken".to_string(), 2)]);
        assert_eq!(estimates.view(1).len(), 1);
    }
}
