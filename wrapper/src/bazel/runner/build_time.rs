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

    /// The job's estimate of an invocation's fixed cost after this batch, which ended idle for
    /// `idle_ms`; `first` when there was no measured estimate before it.
    ///
    /// Only a batch that gave none of its idle time to its targets can lower a measured
    /// estimate: its whole idle time is then at most the fixed cost (the cheapest such batch
    /// says best what an empty invocation costs). When targets were given some, what is left is the estimate
    /// plus the time after the last verdict, or — if it is less — the idle time shrank after a
    /// share was handed out: a test's running time counts as idle until Bazel reports its
    /// attempt, so a verdict in between gives that time to the targets as building. Such a
    /// batch measures nothing, and taking it as the cost had the estimate fall to 0 within a
    /// few batches — every later batch was sized for no overhead, one target per invocation.
    pub(super) fn next_overhead_ms(&self, idle_ms: u64, first: bool) -> u64 {
        match (self.attributed_ms == 0, first) {
            (true, true) => idle_ms,
            (true, false) => idle_ms.min(self.overhead_ms),
            // The assumed cost and what came after the last verdict.
            (false, true) => self.fixed_ms(idle_ms).max(self.overhead_ms),
            (false, false) => self.overhead_ms,
        }
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

    /// Regression (the compiled benchmark: 48–56 invocations for 67 targets on one job): a
    /// verdict that came while a test was running, not yet reported, gave that test's running
    /// time to the targets as building; when its attempt arrived the batch's idle time shrank,
    /// what was left for the fixed cost was 18 ms where the estimate had been 401 ms, and the
    /// next batch took it — then 0, and one target per invocation from there on.
    #[test]
    fn regression_a_batch_whose_idle_time_shrank_does_not_lower_the_overhead() {
        let mut build = BuildTime::new(401);
        // 4.0 s idle at a verdict (a running test's 0.4 s included), 3.6 s at the end.
        assert_eq!(build.share(4_000, 8), 449);
        assert_eq!(build.fixed_ms(3_640), 48);
        assert_eq!(build.next_overhead_ms(3_640, false), 401);
        // A consistent batch that gave its targets some: the estimate stands.
        let mut build = BuildTime::new(401);
        build.share(2_000, 2);
        assert_eq!(build.next_overhead_ms(2_300, false), 401);
        // One that gave them nothing: all its idle time is at most the fixed cost.
        let build = BuildTime::new(401);
        assert_eq!(build.next_overhead_ms(350, false), 350);
        assert_eq!(build.next_overhead_ms(900, false), 401);
        // The first measurement replaces the assumed one, up or down.
        assert_eq!(BuildTime::new(1_000).next_overhead_ms(700, true), 700);
        let mut first = BuildTime::new(1_000);
        first.share(5_000, 1);
        assert_eq!(first.next_overhead_ms(5_300, true), 1_300);
    }
}
