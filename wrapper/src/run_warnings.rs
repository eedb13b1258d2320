//! Warnings that this job's run did not share its work as its jobs meant to (issue 10).
//!
//! Jobs share a session when they compute the same key, and the key covers what they run: jobs
//! of one run whose commit, options or targets differ split into several sessions, each running
//! all of its own work. The coordinator counts the sessions of a run ([`schemas::Joined`] and
//! `Complete` say how many), and each job says so at its join and again at the end, where the
//! summary is. A job that joins a session already complete (a run id used again) ran nothing:
//! it says so, since the verdict it prints is that of other jobs.

use schemas::Joined;

use crate::client::Event;

/// What a job has learnt of its run, from its session's events.
#[derive(Debug, Clone)]
pub struct RunWarnings {
    /// The run id, as the job's other lines show it.
    run_id: String,
    /// What the job shards (e.g. `bazel test`), to say which sessions are counted.
    what: String,
    /// The most sessions of the run the coordinator told of.
    sessions: u32,
}

impl RunWarnings {
    /// For a job of run `run_id` sharding `what` (e.g. `bazel test`).
    pub fn new(run_id: impl Into<String>, what: impl Into<String>) -> Self {
        RunWarnings {
            run_id: run_id.into(),
            what: what.into(),
            sessions: 0,
        }
    }

    /// The warnings `event` calls for, to print at once.
    pub fn on_event(&mut self, event: &Event) -> Vec<String> {
        let mut lines = Vec::new();
        match event {
            Event::Joined(joined) => {
                if already_complete(joined) {
                    lines.push(self.already_complete());
                }
                if self.learn(joined.run_sessions) {
                    lines.push(self.split());
                }
            }
            Event::Rejoined(joined) => {
                if self.learn(joined.run_sessions) {
                    lines.push(self.split());
                }
            }
            // Said at the end, by `at_end`, with the summary.
            Event::Completed { run_sessions } => {
                self.learn(*run_sessions);
            }
            Event::Assigned(..)
            | Event::Aborted(_)
            | Event::Reported(_)
            | Event::Reconnecting(_) => {}
        }
        lines
    }

    /// The warnings to print after the summary: the split again, where the verdict is read.
    pub fn at_end(&self) -> Vec<String> {
        if self.sessions > 1 {
            vec![self.split()]
        } else {
            Vec::new()
        }
    }

    /// Takes in a count of the run's sessions; whether it shows a split not told of yet.
    fn learn(&mut self, sessions: u32) -> bool {
        let news = sessions > self.sessions.max(1);
        self.sessions = self.sessions.max(sessions);
        news
    }

    fn split(&self) -> String {
        format!(
            "task-sharding: warning: run {} has {} sessions of `{}`: jobs whose commit, options \
             or targets differ from this one's do not share its work, and each runs all of its \
             own (compare their \"sharding ...\" lines)",
            self.run_id, self.sessions, self.what
        )
    }

    fn already_complete(&self) -> String {
        format!(
            "task-sharding: warning: run {}'s session was already complete when this job \
             joined: nothing ran here, and the verdict is that of the earlier jobs (a new run \
             needs a new run id: another TASK_SHARDING_RUN_ID, or the CI system's re-run \
             attempt)",
            self.run_id
        )
    }
}

/// Whether a first join found its session already complete. A session is created with work to
/// do, so only a join of an existing one can.
fn already_complete(joined: &Joined) -> bool {
    !joined.created && !joined.resumed && joined.tasks > 0 && joined.finished == joined.tasks
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::Ticket;

    fn joined(finished: u32, run_sessions: u32) -> Joined {
        Joined {
            created: false,
            resumed: false,
            ticket: Ticket([0; 16]),
            tasks: 3,
            finished,
            clients: 2,
            run_sessions,
        }
    }

    /// Regression (issue 10): jobs of one run whose options differed split into separate
    /// sessions, each saying it shards "with the other jobs", and nobody said otherwise.
    #[test]
    fn a_split_is_told_at_the_join_and_at_the_end() {
        let mut warnings = RunWarnings::new("r1", "bazel test");
        let at_join = warnings.on_event(&Event::Joined(joined(0, 2)));
        assert_eq!(at_join.len(), 1, "{at_join:?}");
        assert!(
            at_join[0].starts_with("task-sharding: warning: run r1 has 2 sessions of `bazel test`"),
            "{}",
            at_join[0]
        );
        assert!(at_join[0].contains("commit, options or targets"));
        // Not again while nothing new is learnt; a third session is news.
        assert!(warnings.on_event(&Event::Rejoined(joined(1, 2))).is_empty());
        assert_eq!(warnings.on_event(&Event::Rejoined(joined(1, 3))).len(), 1);
        assert!(warnings
            .on_event(&Event::Completed { run_sessions: 3 })
            .is_empty());
        let at_end = warnings.at_end();
        assert_eq!(at_end.len(), 1);
        assert!(at_end[0].contains("has 3 sessions"), "{}", at_end[0]);
    }

    /// The first job joined before the others split off: only the report tells it.
    #[test]
    fn the_first_job_learns_of_the_split_from_the_report() {
        let mut warnings = RunWarnings::new("r1", "bazel test");
        let created = Joined {
            created: true,
            ..joined(0, 1)
        };
        assert!(warnings.on_event(&Event::Joined(created)).is_empty());
        assert!(warnings.at_end().is_empty());
        assert!(warnings
            .on_event(&Event::Completed { run_sessions: 2 })
            .is_empty());
        assert!(warnings.at_end()[0].contains("run r1 has 2 sessions"));
    }

    #[test]
    fn one_session_or_no_run_says_nothing() {
        for sessions in [0, 1] {
            let mut warnings = RunWarnings::new("r1", "bazel test");
            assert!(warnings
                .on_event(&Event::Joined(joined(0, sessions)))
                .is_empty());
            warnings.on_event(&Event::Completed {
                run_sessions: sessions,
            });
            assert!(warnings.at_end().is_empty());
        }
    }

    /// Regression (issue 10): a reused run id printed an old verdict ("2 done") without saying
    /// that nothing ran.
    #[test]
    fn a_session_already_complete_at_the_join_is_told() {
        let mut warnings = RunWarnings::new("r1", "bazel test");
        let lines = warnings.on_event(&Event::Joined(joined(3, 1)));
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains("run r1's session was already complete when this job joined"),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains("TASK_SHARDING_RUN_ID"));
        // Coming back to a session that completed meanwhile is not that.
        let resumed = Joined {
            resumed: true,
            ..joined(3, 1)
        };
        assert!(RunWarnings::new("r1", "x")
            .on_event(&Event::Joined(resumed))
            .is_empty());
        assert!(RunWarnings::new("r1", "x")
            .on_event(&Event::Rejoined(joined(3, 1)))
            .is_empty());
    }
}
