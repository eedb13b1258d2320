//! Results: which count (the holder's or the backup's, once), and the final report.

use super::*;

impl Session {
    /// Records results reported by member `idx`. A result counts once, and only from the member
    /// holding the task's lease or its backup copy. A job that lost its connection and comes
    /// back with results claims their tasks when it rejoins (see [`Session::resume`]), so its
    /// results count if the tasks are still open and nobody else took them. The first report
    /// wins and any other copy is aborted; a late or duplicate report is ignored, and so is a
    /// report from a member whose lease went back (it may never have received the task).
    /// Executed durations go into the timing history. `run_sessions` goes into the final
    /// report, should these results complete the session.
    pub(crate) fn report(
        &mut self,
        idx: MemberIdx,
        reports: Vec<TaskReport>,
        history: &mut Estimates,
        run_sessions: u32,
        now: Instant,
    ) -> Result<Vec<Action>, UnknownTask> {
        if let Some(bad) = reports.iter().find(|r| r.task as usize >= self.slots.len()) {
            return Err(UnknownTask(bad.task));
        }
        let Some(member) = self.members.get_mut(&idx) else {
            return Ok(Vec::new());
        };
        member
            .running
            .retain(|t| !reports.iter().any(|r| r.task == *t));
        let client_id = member.client_id.clone();
        let mut actions = Vec::new();
        let mut failed = false;
        for TaskReport { task, result } in reports {
            let index = task as usize;
            // The other copies still running, to abort.
            let (losers, leased): (Vec<MemberIdx>, Instant) = match &self.slots[index] {
                Slot::Done(_) => {
                    tracing::debug!(session = %self.key, task, "ignored a late or duplicate result");
                    continue;
                }
                Slot::Leased {
                    holder,
                    backup,
                    since,
                } if *holder == idx || *backup == Some(idx) => (
                    [Some(*holder), *backup]
                        .into_iter()
                        .flatten()
                        .filter(|&m| m != idx)
                        .collect(),
                    *since,
                ),
                _ => {
                    tracing::warn!(session = %self.key, task, client = %client_id,
                        "ignored a result for a task not leased to this client");
                    continue;
                }
            };
            tracing::debug!(session = %self.key, task, outcome = ?result.outcome, "result");
            let result = self.bound_log(result);
            // What it cost (its test and what was built for it) is what the next run expects.
            if let Some(cost) = result.cost_ms() {
                let text = &self.schema.tasks[index].task;
                history.record(&self.history_scope, text, cost);
                self.observed.0 += cost;
                self.observed.1 += self.weight(index);
                self.longest_seen = self.longest_seen.max(cost);
            }
            *self
                .counts
                .results
                .entry(result.outcome.label())
                .or_default() += 1;
            failed |= matches!(result.outcome, Outcome::Failed | Outcome::TimedOut);
            history.note(&self.history_scope, &self.schema.tasks[index].task, &result);
            self.slots[index] = Slot::Done(TaskRecord {
                task,
                result,
                client: client_id.clone(),
            });
            self.touch(task);
            self.spans.push(Span {
                task,
                member: idx,
                leased,
                reported: now,
            });
            self.count_done(task);
            for loser in losers {
                tracing::info!(session = %self.key, task, "another copy of a task finished first; aborting this one");
                if let Some(member) = self.members.get_mut(&loser) {
                    member.running.retain(|t| *t != task);
                    if let Some(conn) = member.conn {
                        actions.push(Action::send(conn, ServerMessage::Abort(vec![task])));
                    }
                }
            }
        }
        if failed && self.fail_fast && self.remaining > 0 {
            self.stop_unfinished(&client_id);
        }
        if self.remaining == 0 && !self.is_complete() {
            self.complete(run_sessions, now);
            actions.extend(self.broadcast_report());
        }
        Ok(actions)
    }

    /// A task failed in a session that stops at the first failure (Bazel's
    /// `--notest_keep_going`): every task without a result is recorded as not run — NO STATUS,
    /// as Bazel reports the tests it did not get to, with no exit code and no client — so that
    /// the session completes now and every job, told so, stops its batch and reports the same.
    fn stop_unfinished(&mut self, failed_on: &str) {
        tracing::info!(session = %self.key, client = %failed_on, left = self.remaining,
            "a task failed and the session stops at the first failure: the rest is not run");
        for index in 0..self.slots.len() {
            if matches!(self.slots[index], Slot::Done(_)) {
                continue;
            }
            if matches!(self.slots[index], Slot::Queued) {
                self.add_queued(index as TaskId, -1);
            }
            self.slots[index] = Slot::Done(TaskRecord {
                task: index as TaskId,
                result: TaskResult {
                    outcome: Outcome::NoStatus,
                    exit_code: None,
                    duration_ms: 0,
                    executed: false,
                    log_tail: None,
                    build_ms: 0,
                },
                client: String::new(),
            });
            self.touch(index as TaskId);
        }
        self.queue.clear();
        self.undone = (0, 0);
        self.remaining = 0;
    }

    /// `result` with its log tail cut to what one result may carry and what is left of the
    /// session's log budget: every member receives every tail in the final report, which must
    /// stay well within a frame. A success carries none.
    fn bound_log(&mut self, mut result: TaskResult) -> TaskResult {
        let Some(log) = result.log_tail.take() else {
            return result;
        };
        if result.outcome.is_success() {
            return result;
        }
        let log = schemas::log_tail::bound(log);
        let left = MAX_SESSION_LOG_BYTES.saturating_sub(self.log_bytes);
        result.log_tail = Some(if log.len() <= left {
            self.log_bytes += log.len();
            log
        } else {
            format!(
                "(log not kept: this session's failing tasks already sent {} bytes of logs, \
                 the most a session keeps)",
                self.log_bytes
            )
        });
        result
    }

    /// Builds the final report, which says that its run had `run_sessions` sessions.
    pub(super) fn complete(&mut self, run_sessions: u32, now: Instant) {
        self.completed_at = Some(now);
        self.waiting.clear();
        for member in self.members.values_mut() {
            member.waiting = None;
            member.running.clear();
        }
        let records = self
            .slots
            .iter()
            .map(|slot| match slot {
                Slot::Done(record) => record.clone(),
                _ => unreachable!("a complete session has a result for every task"),
            })
            .collect();
        self.report = Some(Arc::new(ServerMessage::Complete {
            report: SessionReport {
                schema_name: self.schema.name.clone(),
                records,
            },
            run_sessions,
        }));
        tracing::info!(session = %self.key, tasks = self.slots.len(), "session complete");
    }

    pub(super) fn broadcast_report(&self) -> Vec<Action> {
        let report = self.report.as_ref().expect("complete");
        self.members
            .values()
            .filter_map(|member| member.conn)
            .map(|conn| Action::Send(conn, report.clone()))
            .collect()
    }
}
