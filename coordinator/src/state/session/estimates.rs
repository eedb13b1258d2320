//! What the session expects tasks to take: history, else what ran in this session, else a
//! stand-in; and the expected work still queued.

use super::*;

impl Session {
    /// A task's expected duration: its history, else the mean of what ran in this session so
    /// far, else the initial stand-in.
    pub(super) fn expected(&self, task: usize) -> u64 {
        self.known[task].unwrap_or_else(|| self.stand_in())
    }

    /// What an unknown task is expected to take now.
    pub(super) fn stand_in(&self) -> u64 {
        match self.observed {
            (sum, count) if count > 0 => sum / count,
            _ => self.initial_stand_in,
        }
    }

    /// The longest any task of the session is expected to take.
    pub(super) fn longest_expected(&self) -> u64 {
        if self.queued.1 > 0 {
            self.longest_seen.max(self.stand_in())
        } else {
            self.longest_seen
        }
    }

    /// The expected work in the queue, in milliseconds.
    pub(super) fn queued_work_ms(&self) -> u64 {
        self.queued.0 + self.queued.1 * self.stand_in()
    }

    /// Counts `task` into (`sign` 1) or out of (-1) the queued work.
    pub(super) fn add_queued(&mut self, task: TaskId, sign: i8) {
        let (known, unknown) = match self.known[task as usize] {
            Some(ms) => (ms, 0),
            None => (0, 1),
        };
        if sign > 0 {
            self.queued.0 += known;
            self.queued.1 += unknown;
        } else {
            self.queued.0 -= known;
            self.queued.1 -= unknown;
        }
    }
}
