//! What the session expects tasks to take: history, else what ran in this session, else a
//! stand-in; and the expected work still queued.

use super::*;

impl Session {
    /// A task's expected duration: its history, else its weight times what a unit of weight
    /// took in this session so far, else times the initial stand-in.
    pub(super) fn expected(&self, task: usize) -> u64 {
        self.known[task].unwrap_or_else(|| self.weight(task) * self.stand_in())
    }

    /// A task's weight (its prior; 1 unless the schema gave one).
    pub(super) fn weight(&self, task: usize) -> u64 {
        u64::from(self.schema.tasks[task].weight_or_one())
    }

    /// What an unknown task of weight 1 is expected to take now.
    pub(super) fn stand_in(&self) -> u64 {
        match self.observed {
            (sum, count) if count > 0 => sum / count,
            _ => self.initial_stand_in,
        }
    }

    /// The longest any task of the session is expected to take.
    pub(super) fn longest_expected(&self) -> u64 {
        if self.queued.1 > 0 {
            self.longest_seen
                .max(self.heaviest_unknown * self.stand_in())
        } else {
            self.longest_seen
        }
    }

    /// The most work one batch may hold beyond what [`scheduler::job_batch_target_ms`] gives:
    /// the longest task expected, until the session's first result. The bound keeps the first
    /// job to join, which cannot know how many will, from taking a large share before the
    /// others arrive; once a task has been built, run and reported, the jobs that started
    /// together have joined, and from then on the bound only multiplies invocations (batches
    /// of one long task's length, each paying the invocation's fixed cost: one job of the
    /// compiled benchmark's workspace ran 12 to 16 batches with it, 7 without). A job that joins later still
    /// gets its share: batches stay within a fair share of the queue, and the unfinished
    /// remainder of a long batch is backed up on idle jobs.
    pub(super) fn batch_bound_ms(&self) -> u64 {
        if self.remaining == self.slots.len() {
            self.longest_expected()
        } else {
            u64::MAX
        }
    }

    /// Whether batches can be sized from history ([`scheduler::warm_batch_target_ms`]): every
    /// queued task's duration is known, and a first result has come in (until then the jobs
    /// that start together may not all have joined; see [`Session::batch_bound_ms`]).
    pub(super) fn is_warm(&self) -> bool {
        self.queued.1 == 0 && self.remaining < self.slots.len()
    }

    /// The expected work handed out and not done yet: leased to members (connected or away),
    /// without their results. What is left to do is this and the queue.
    pub(super) fn leased_work_ms(&self) -> u64 {
        let undone = self.undone.0 + self.undone.1 * self.stand_in();
        undone.saturating_sub(self.queued_work_ms())
    }

    /// The expected work in the queue, in milliseconds (`queued` holds the known durations and
    /// the unknown tasks' weights).
    pub(super) fn queued_work_ms(&self) -> u64 {
        self.queued.0 + self.queued.1 * self.stand_in()
    }

    /// Counts `task` into (`sign` 1) or out of (-1) the queued work.
    pub(super) fn add_queued(&mut self, task: TaskId, sign: i8) {
        let (known, unknown) = self.work_of(task);
        if sign > 0 {
            self.queued.0 += known;
            self.queued.1 += unknown;
        } else {
            self.queued.0 -= known;
            self.queued.1 -= unknown;
        }
    }

    /// Counts `task`, which has its result now, out of the work not done.
    pub(super) fn count_done(&mut self, task: TaskId) {
        let (known, unknown) = self.work_of(task);
        self.undone.0 -= known;
        self.undone.1 -= unknown;
        self.remaining -= 1;
    }

    /// What `task` adds to `queued` or `undone`: its known duration, else its weight.
    pub(super) fn work_of(&self, task: TaskId) -> (u64, u64) {
        match self.known[task as usize] {
            Some(ms) => (ms, 0),
            None => (0, self.weight(task as usize)),
        }
    }
}
