//! What a batch's targets cost to build. Bazel's build events say how long each test ran, not
//! how long its compiling and linking took; but the batch's wall time when no test was running
//! is the invocation's fixed cost (start-up, loading, analysis: what an empty invocation costs)
//! plus building. As targets reach their verdicts, the building done since the previous verdict
//! is theirs: on a job building one thing at a time that is exact, and it stays a fair split
//! when Bazel builds several at once. Pure arithmetic, in milliseconds.

/// The split of one batch's idle time (wall time with no test running).
#[derive(Debug)]
pub(super) struct BuildTime {
    /// The invocation's fixed cost, as known before the batch: never anyone's building.
    overhead_ms: u64,
    /// Idle time given to targets so far.
    attributed_ms: u64,
}

impl BuildTime {
    pub(super) fn new(overhead_ms: u64) -> BuildTime {
        BuildTime {
            overhead_ms,
            attributed_ms: 0,
        }
    }

    /// `targets` targets just reached their verdicts, the batch having been idle for `idle_ms`
    /// so far: what each cost to build, an equal share of the idle time nobody has been given
    /// yet beyond the fixed cost.
    pub(super) fn share(&mut self, idle_ms: u64, targets: usize) -> u64 {
        if targets == 0 {
            return 0;
        }
        let free = idle_ms.saturating_sub(self.overhead_ms + self.attributed_ms);
        let each = free / targets as u64;
        self.attributed_ms += each * targets as u64;
        each
    }

    /// The invocation's fixed cost this batch measured once it ended idle for `idle_ms`: what
    /// no target was given.
    pub(super) fn fixed_ms(&self, idle_ms: u64) -> u64 {
        idle_ms.saturating_sub(self.attributed_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11: a compile-heavy batch's building is its targets' cost, not an "overhead" that
    /// every later batch would be sized by.
    #[test]
    fn building_goes_to_the_targets_that_needed_it_and_the_rest_is_overhead() {
        // A 1 s fixed cost; the first target's verdict after 21 s idle (20 s of compiling).
        let mut build = BuildTime::new(1_000);
        assert_eq!(build.share(21_000, 1), 20_000);
        // Two more after another 4 s idle: 2 s each.
        assert_eq!(build.share(25_000, 2), 2_000);
        // No idle time since: nothing built for this one.
        assert_eq!(build.share(25_000, 1), 0);
        // Bazel took 1.5 s more to exit: the fixed cost measured is 1 s + 1.5 s.
        assert_eq!(build.fixed_ms(26_500), 2_500);
        // Nothing before the fixed cost has passed.
        let mut early = BuildTime::new(3_000);
        assert_eq!(early.share(2_000, 2), 0);
        assert_eq!(early.fixed_ms(2_000), 2_000);
        assert_eq!(early.share(2_000, 0), 0);
    }
}
