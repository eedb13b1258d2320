//! What the dashboard shows, as plain data: the state machine copies it out under the hub's lock
//! (bounded work: a session's tasks at most), and the HTTP layer renders it after letting go.
//! Times are milliseconds since the session was created, so that nothing here reads a clock.

use serde::Serialize;

/// One session, for the list of sessions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionSummary {
    /// A short digest of the key, which names the session in URLs. The key itself is not shown:
    /// with a run secret it is what lets a client join the run (see SECURITY.md).
    pub id: String,
    /// The key with its seal (the run secret's hash) left out.
    pub label: String,
    /// The schema's name.
    pub schema_name: String,
    /// Where its timing history is filed.
    pub scope: String,
    /// Tasks in the session.
    pub tasks: u32,
    /// Tasks with a result.
    pub finished: u32,
    /// Members connected now.
    pub connected: u32,
    /// Members that ever joined.
    pub members: u32,
    /// How long ago it was created.
    pub age_ms: u64,
    /// How long it took, once complete.
    pub duration_ms: Option<u64>,
    /// Tasks that failed so far.
    pub failed: u32,
    /// Once complete: whether every task succeeded.
    pub passed: Option<bool>,
}

/// One session in detail, for its timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionDetail {
    /// The summary line.
    pub summary: SessionSummary,
    /// Every member, in the order they joined: one lane each.
    pub jobs: Vec<JobView>,
    /// Every batch handed out whose results arrived, or that is still running.
    pub batches: Vec<BatchView>,
    /// `max(work executed / members, longest task)`: the makespan a perfect split would reach.
    pub ideal_makespan_ms: u64,
    /// The failing tasks, with their logs.
    pub failing: Vec<FailingTask>,
    /// Tasks still queued.
    pub queued: u32,
}

/// One member of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobView {
    /// The client id it joined with.
    pub name: String,
    /// Whether it is connected now.
    pub connected: bool,
}

/// Tasks handed to one member at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchView {
    /// The member's index in [`SessionDetail::jobs`].
    pub job: usize,
    /// When it was handed out.
    pub start_ms: u64,
    /// When its last result arrived, or now while it runs.
    pub end_ms: u64,
    /// Whether results are still expected.
    pub running: bool,
    /// Its tasks.
    pub tasks: Vec<TaskBar>,
}

/// One task of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskBar {
    /// The task's text.
    pub task: String,
    /// Its outcome's label (`PASSED`, `FAILED`...), `None` while running.
    pub outcome: Option<&'static str>,
    /// Whether that outcome is a success.
    pub success: bool,
    /// The duration its job reported.
    pub duration_ms: u64,
    /// Whether it actually ran, rather than coming from a cache.
    pub executed: bool,
    /// When its result arrived.
    pub reported_ms: u64,
}

/// A failing task and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailingTask {
    /// The task's text.
    pub task: String,
    /// Its outcome's label.
    pub outcome: &'static str,
    /// The job that ran it.
    pub job: String,
    /// The end of its log, when its job sent one.
    pub log_tail: Option<String>,
}

/// One scope's history, for `/history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScopeHistory {
    /// The scope (a repository, or `run:` and a schema's name).
    pub scope: String,
    /// The tasks expected to take longest, and how long, in milliseconds.
    pub slowest: Vec<(String, u64)>,
    /// The tasks whose recent executed durations spread the most.
    pub most_variable: Vec<Variability>,
    /// Tasks recently flaky, and how many times.
    pub flaky: Vec<(String, u32)>,
    /// Tasks recently failing (failed, timed out, not built), and how many times.
    pub failing: Vec<(String, u32)>,
}

/// How much a task's duration varies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Variability {
    /// The task.
    pub task: String,
    /// Its mean duration over the recent runs.
    pub mean_ms: u64,
    /// Their standard deviation.
    pub spread_ms: u64,
    /// How many runs.
    pub runs: u32,
}

/// What the coordinator has done since it started, for `/metrics`. Counts only grow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Sessions created.
    pub sessions_created: u64,
    /// Tasks handed out, backup copies included.
    pub tasks_handed: u64,
    /// Backup copies handed out.
    pub backups: u64,
    /// Results counted, by outcome label.
    pub results: std::collections::BTreeMap<&'static str, u64>,
    /// Members that came back with their ticket.
    pub reconnects: u64,
}

impl Counts {
    /// Adds `other` to these.
    pub fn add(&mut self, other: &Counts) {
        self.sessions_created += other.sessions_created;
        self.tasks_handed += other.tasks_handed;
        self.backups += other.backups;
        for (outcome, n) in &other.results {
            *self.results.entry(outcome).or_default() += n;
        }
        self.reconnects += other.reconnects;
    }
}

/// `key` without its seal (`KEY/sealed-HASH`: the hash of the run secret and the key): knowing
/// the whole key lets a token holder join the run, which the seal is there to prevent.
pub fn label_of(key: &str) -> String {
    let shown = match key.split_once("/sealed-") {
        Some((open, _)) => format!("{open}/sealed-…"),
        None => key.to_string(),
    };
    let mut end = shown.len().min(200);
    while !shown.is_char_boundary(end) {
        end -= 1;
    }
    shown[..end].chars().filter(|c| !c.is_control()).collect()
}

/// The id that names a session in URLs: a digest of its key, so that the key is not shown.
pub fn id_of(key: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("task-sharding dashboard\0{key}").as_bytes());
    hex::encode(&digest[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_key_is_shown_without_its_seal() {
        assert_eq!(label_of("gh/1/2/sealed-abcdef"), "gh/1/2/sealed-…");
        assert_eq!(label_of("plain"), "plain");
        assert_ne!(id_of("a"), id_of("b"));
        assert_eq!(id_of("a").len(), 16);
    }
}
